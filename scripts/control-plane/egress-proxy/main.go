// egress-proxy is the end-to-end suite's stand-in for a cluster network: kube-apiserver's
// "cluster" egress selector sends every call to a webhook Service through it (HTTP CONNECT
// over a Unix socket), and it forwards the call to the local process that the routes file
// names for that Service's ClusterIP:port. So the webhook configuration keeps
// clientConfig.service exactly as shipped, and no packet leaves 127.0.0.1.
//
// usage: egress-proxy SOCKET ROUTES
// ROUTES: lines "CLUSTER_IP:PORT 127.0.0.1:PORT", re-read on every CONNECT.
package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: egress-proxy SOCKET ROUTES")
	}
	socket, routes := os.Args[1], os.Args[2]
	_ = os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatal(err)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(conn, routes)
	}
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

func serve(conn net.Conn, routes string) {
	defer conn.Close()
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
	backend, ok := lookup(routes, req.Host)
	if !ok || !strings.HasPrefix(backend, "127.0.0.1:") {
		log.Printf("no route for %s", req.Host)
		fmt.Fprintf(conn, "HTTP/1.1 503 No Route To %s\r\n\r\n", req.Host)
		return
	}
	up, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		log.Printf("%s -> %s: %v", req.Host, backend, err)
		fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	if _, err := fmt.Fprint(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
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
