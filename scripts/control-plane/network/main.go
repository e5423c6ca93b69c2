// network is the end-to-end suite's stand-in for a cluster network. The node (kubelet,
// containerd, pods) lives in a network namespace of its own; the control plane and the
// tests live on the host's 127.0.0.1. Nothing routes between the two: each path below is a
// process in one namespace joined to one in the other by a Unix socket (a path in the file
// system, reachable from both), so no packet ever leaves 127.0.0.1 or the node's namespace.
//
//	network egress SOCKET ROUTES DIALER APISERVER CA CERT KEY      (host namespace)
//	    kube-apiserver's "cluster" egress selector (HTTP CONNECT on SOCKET): webhook calls
//	    and kubelet connections. A target named in ROUTES ("TARGET BACKEND" lines, re-read on
//	    every CONNECT) goes to BACKEND: "127.0.0.1:PORT" on the host (a webhook the test runs)
//	    or "node:ADDR" inside the node. Otherwise a Service's ClusterIP:port is resolved the
//	    way kube-proxy does, to a random ready endpoint of its EndpointSlices (asked of the
//	    apiserver on every connection), and that pod address, like any other target, is
//	    dialled inside the node through DIALER.
//	network dialer SOCKET                                          (node namespace)
//	    HTTP CONNECT on SOCKET, dialled from the node's namespace.
//	network forward TO FROM...                                     (either namespace)
//	    every connection accepted on a FROM ("tcp:ADDR" or "unix:PATH") joined to a new
//	    one to TO: the pods' and the kubelet's way to the apiserver.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "egress":
		if len(args) != 7 {
			usage()
		}
		c, err := newCluster(args[3], args[4], args[5], args[6])
		if err != nil {
			log.Fatal(err)
		}
		e := &egress{routes: args[1], dialer: args[2], cluster: c}
		serveConnect(args[0], e.dial)
	case "dialer":
		if len(args) != 1 {
			usage()
		}
		serveConnect(args[0], func(target string) (net.Conn, error) {
			return net.DialTimeout("tcp", target, 5*time.Second)
		})
	case "forward":
		if len(args) < 2 {
			usage()
		}
		for _, from := range args[1:] {
			go forward(listen(from), args[0])
		}
		select {}
	default:
		usage()
	}
}

func usage() {
	log.Fatal("usage: network egress SOCKET ROUTES DIALER APISERVER CA CERT KEY | dialer SOCKET | forward TO FROM...")
}

// listen: "tcp:ADDR" or "unix:PATH" (a stale socket file is replaced).
func listen(spec string) net.Listener {
	kind, addr, _ := strings.Cut(spec, ":")
	if kind == "unix" {
		_ = os.Remove(addr)
	}
	ln, err := net.Listen(kind, addr)
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

// accept hands each connection to handle in a goroutine of its own, which closes it after.
func accept(ln net.Listener, handle func(conn net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer conn.Close()
			handle(conn)
		}()
	}
}

func forward(ln net.Listener, to string) {
	kind, addr, _ := strings.Cut(to, ":")
	accept(ln, func(conn net.Conn) {
		up, err := net.DialTimeout(kind, addr, 5*time.Second)
		if err != nil {
			log.Printf("forward %s: %v", to, err)
			return
		}
		defer up.Close()
		join(conn, bufio.NewReader(conn), up)
	})
}

// serveConnect answers HTTP CONNECT requests on a Unix socket with connections from dial.
func serveConnect(socket string, dial func(target string) (net.Conn, error)) {
	accept(listen("unix:"+socket), func(conn net.Conn) {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Time{})
		if req.Method != http.MethodConnect {
			fmt.Fprint(conn, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
			return
		}
		up, err := dial(req.Host)
		if err != nil {
			log.Printf("CONNECT %s: %v", req.Host, err)
			fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		if _, err := fmt.Fprint(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		join(conn, br, up)
	})
}

// join copies both ways until both sides are done.
func join(conn net.Conn, br *bufio.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); closeWrite(conn); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

type egress struct {
	routes, dialer string
	cluster        *cluster
}

func (e *egress) dial(target string) (net.Conn, error) {
	backend, ok := lookup(e.routes, target)
	switch {
	case ok && strings.HasPrefix(backend, "127.0.0.1:"):
		return net.DialTimeout("tcp", backend, 5*time.Second)
	case ok && strings.HasPrefix(backend, "node:"):
		return e.inNode(strings.TrimPrefix(backend, "node:"))
	case ok:
		return nil, fmt.Errorf("route %s: backend %q is neither 127.0.0.1:PORT nor node:ADDR", target, backend)
	}
	endpoint, err := e.cluster.endpoint(target)
	if err != nil {
		return nil, err
	}
	log.Printf("CONNECT %s: %s", target, endpoint)
	return e.inNode(endpoint)
}

// inNode: a connection to addr made from the node's network namespace.
func (e *egress) inNode(addr string) (net.Conn, error) {
	conn, err := net.DialTimeout("unix", e.dialer, 5*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || br.Buffered() != 0 {
		conn.Close()
		return nil, fmt.Errorf("%s from the node: %s", addr, resp.Status)
	}
	return conn, nil
}

func lookup(routes, target string) (string, bool) {
	data, err := os.ReadFile(routes)
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == target {
			return f[1], true
		}
	}
	return "", false
}

// cluster answers kube-proxy's question from the apiserver: which pod serves a ClusterIP:port.
type cluster struct {
	url    string
	client *http.Client
}

func newCluster(apiserver, ca, cert, key string) (*cluster, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, errors.New(ca + ": no certificate")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}
	return &cluster{url: apiserver, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}, nil
}

func (c *cluster) get(path string, query url.Values, into any) error {
	resp, err := c.client.Get(c.url + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

func (c *cluster) endpoint(target string) (string, error) {
	ip, portText, err := net.SplitHostPort(target)
	if err != nil {
		return "", err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return "", err
	}
	var services struct {
		Items []struct {
			Metadata struct{ Name, Namespace string }
			Spec     struct {
				Ports []struct {
					Name string
					Port int
				}
			}
		}
	}
	if err := c.get("/api/v1/services", url.Values{"fieldSelector": {"spec.clusterIP=" + ip}}, &services); err != nil {
		return "", err
	}
	if len(services.Items) != 1 {
		// Not a Service: a pod address, dialled as it is.
		return target, nil
	}
	svc := services.Items[0]
	portName, found := "", false
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			portName, found = p.Name, true
		}
	}
	if !found {
		return "", fmt.Errorf("service %s/%s has no port %d", svc.Metadata.Namespace, svc.Metadata.Name, port)
	}
	var slices struct {
		Items []struct {
			Ports []struct {
				Name string
				Port int
			}
			Endpoints []struct {
				Addresses  []string
				Conditions struct{ Ready *bool }
			}
		}
	}
	path := "/apis/discovery.k8s.io/v1/namespaces/" + svc.Metadata.Namespace + "/endpointslices"
	if err := c.get(path, url.Values{"labelSelector": {"kubernetes.io/service-name=" + svc.Metadata.Name}}, &slices); err != nil {
		return "", err
	}
	var ready []string
	for _, s := range slices.Items {
		for _, p := range s.Ports {
			if p.Name != portName {
				continue
			}
			for _, ep := range s.Endpoints {
				// A missing condition means ready (the EndpointSlice API's rule).
				if len(ep.Addresses) > 0 && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
					ready = append(ready, net.JoinHostPort(ep.Addresses[0], strconv.Itoa(p.Port)))
				}
			}
		}
	}
	if len(ready) == 0 {
		return "", fmt.Errorf("service %s/%s has no ready endpoint", svc.Metadata.Namespace, svc.Metadata.Name)
	}
	return ready[rand.IntN(len(ready))], nil
}
