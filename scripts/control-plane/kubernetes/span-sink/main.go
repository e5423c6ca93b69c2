// span-sink receives kube-apiserver's OpenTelemetry traces (OTLP over gRPC, as its
// --tracing-config-file endpoint) and appends the spans with the given names to a file, one
// JSON object a line, so the end-to-end suite can read how long the apiserver's own calls to
// the webhook took: its metrics' smallest bucket (5 ms) cannot show that.
//
// usage: span-sink LISTEN_ADDR OUT_FILE SPAN_NAME...
// Each line: {"name", "start_ns", "end_ns", "attributes": {string attributes},
// "events": [{"name", "time_ns"}]}; times are Unix nanoseconds.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"net"
	"os"
	"sync"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

type event struct {
	Name   string `json:"name"`
	TimeNs uint64 `json:"time_ns"`
}

type span struct {
	Name       string            `json:"name"`
	StartNs    uint64            `json:"start_ns"`
	EndNs      uint64            `json:"end_ns"`
	Attributes map[string]string `json:"attributes"`
	Events     []event           `json:"events"`
}

type sink struct {
	coltrace.UnimplementedTraceServiceServer
	keep map[string]bool
	mu   sync.Mutex
	out  *os.File
}

func (s *sink) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if !s.keep[sp.GetName()] {
					continue
				}
				out := span{Name: sp.GetName(), StartNs: sp.GetStartTimeUnixNano(), EndNs: sp.GetEndTimeUnixNano(),
					Attributes: map[string]string{}, Events: []event{}}
				for _, kv := range sp.GetAttributes() {
					out.Attributes[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				for _, ev := range sp.GetEvents() {
					out.Events = append(out.Events, event{Name: ev.GetName(), TimeNs: ev.GetTimeUnixNano()})
				}
				if err := enc.Encode(out); err != nil {
					return nil, err
				}
			}
		}
	}
	// One write per export, so a reader never sees half a batch's line.
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.out.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func main() {
	if len(os.Args) < 4 {
		log.Fatal("usage: span-sink LISTEN_ADDR OUT_FILE SPAN_NAME...")
	}
	out, err := os.OpenFile(os.Args[2], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	keep := map[string]bool{}
	for _, name := range os.Args[3:] {
		keep[name] = true
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, &sink{keep: keep, out: out})
	log.Fatal(srv.Serve(ln))
}
