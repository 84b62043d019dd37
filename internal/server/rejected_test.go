package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/syncbuf"
)

// payloadMarker fills the requests of these tests: finding it in a log
// would mean the log holds a payload.
const payloadMarker = "payload-marker-"

// rejectedCounter is users_grpc_rejected_total as telemetry makes it.
func rejectedCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "users_grpc_rejected_total"},
		[]string{"grpc_service", "grpc_method", "grpc_code"})
}

// logLines returns the JSON log lines of logs whose msg is msg.
func logLines(t *testing.T, logs string, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// sumOf adds up the samples of family in reg whose labels include labels.
func sumOf(t *testing.T, reg *prometheus.Registry, family string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// Every call that the server refuses, however hostile, shows on the
// server exactly once: in the call log ("finished call") and
// grpc_server_handled_total if it got as far as the interceptors, else in
// a "rejected call" line and users_grpc_rejected_total, by method and
// code, with its status message and never its payload. The calls that gRPC
// refuses itself (a request over the size limit, a method the server does
// not have) otherwise showed nowhere.
func TestEveryRefusedCallShowsOnce(t *testing.T) {
	t.Parallel()
	oversized := strings.Repeat(payloadMarker, server.MaxRequestBytes/len(payloadMarker)+1)
	undecodable := []byte("\x0a\x7f" + payloadMarker)
	const health, users = "grpc.health.v1.Health", "agynio.api.users.v1.UsersService"
	for _, tc := range []struct {
		name            string
		call            func(cc *grpc.ClientConn) error
		service, method string // as labelled
		wantCode        codes.Code
		rejected        bool // by gRPC itself; false: either way
	}{
		{
			name: "a UsersService request over the size limit",
			call: func(cc *grpc.ClientConn) error {
				_, err := usersv1.NewUsersServiceClient(cc).GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: oversized})
				return err
			},
			service: users, method: "GetUser", wantCode: codes.ResourceExhausted, rejected: true,
		},
		{
			name: "a health check over the size limit",
			call: func(cc *grpc.ClientConn) error {
				_, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{Service: oversized})
				return err
			},
			service: health, method: "Check", wantCode: codes.ResourceExhausted, rejected: true,
		},
		{
			name: "a method the server does not have",
			call: func(cc *grpc.ClientConn) error {
				var reply []byte
				return cc.Invoke(t.Context(), "/"+users+"/DeleteEverything", []byte(payloadMarker), &reply, grpc.ForceCodecV2(rawCodec{}))
			},
			service: "unknown", method: "unknown", wantCode: codes.Unimplemented, rejected: true,
		},
		{
			name: "a health check that does not decode",
			call: func(cc *grpc.ClientConn) error {
				var reply []byte
				return cc.Invoke(t.Context(), healthpb.Health_Check_FullMethodName, undecodable, &reply, grpc.ForceCodecV2(rawCodec{}))
			},
			service: health, method: "Check",
		},
		{
			name: "a reflection request that does not decode",
			call: func(cc *grpc.ClientConn) error {
				stream, err := cc.NewStream(t.Context(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
					reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
				if err != nil {
					return err
				}
				if err := stream.SendMsg(undecodable); err != nil {
					return err
				}
				var reply []byte
				return stream.RecvMsg(&reply)
			},
			service: "grpc.reflection.v1.ServerReflection", method: "ServerReflectionInfo",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &syncbuf.Buffer{}
			reg := prometheus.NewRegistry()
			handled := grpcprom.NewServerMetrics()
			rejected := rejectedCounter()
			reg.MustRegister(handled, rejected)
			// At debug, where the call log puts health checks.
			log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			gs, _, cc := serveInMemory(t, log, server.WithMetrics(handled), server.WithRejectedCounter(rejected))

			err := tc.call(cc)
			code := status.Code(err)
			if code == codes.OK || (tc.wantCode != codes.OK && code != tc.wantCode) {
				t.Fatalf("call: %v; want %v", err, tc.wantCode)
			}
			cc.Close()
			gs.GracefulStop() // every call is counted and logged by now

			labels := map[string]string{"grpc_service": tc.service, "grpc_method": tc.method, "grpc_code": code.String()}
			counted := map[string]float64{
				"rejected": sumOf(t, reg, "users_grpc_rejected_total", labels),
				"handled":  sumOf(t, reg, "grpc_server_handled_total", labels),
			}
			logged := map[string][]map[string]any{
				"rejected": logLines(t, logs.String(), "rejected call"),
				"handled":  logLines(t, logs.String(), "finished call"),
			}
			if counted["rejected"]+counted["handled"] != 1 || len(logged["rejected"])+len(logged["handled"]) != 1 {
				t.Fatalf("counted %v and logged %d rejected, %d finished call lines; want the call once\n%s",
					counted, len(logged["rejected"]), len(logged["handled"]), logs)
			}
			if tc.rejected && (counted["rejected"] != 1 || len(logged["rejected"]) != 1) {
				t.Errorf("counted %v, want it in users_grpc_rejected_total and a rejected call line: gRPC refused it itself", counted)
			}
			line := append(logged["rejected"], logged["handled"]...)[0]
			want := map[string]any{"grpc.code": code.String(), "grpc.error": status.Convert(err).Message()}
			if tc.service != "unknown" {
				want["grpc.service"], want["grpc.method"] = tc.service, tc.method
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("log line: %s = %v, want %v", k, line[k], v)
				}
			}
			if strings.Contains(logs.String(), payloadMarker) {
				t.Errorf("the log holds the request's payload:\n%.2000s", logs)
			}
		})
	}
}

// What a client puts in its headers reaches the log only bounded: a
// compression name of 10 KiB, refused UNIMPLEMENTED with the name in the
// status message, and a method name of 10 KiB.
func TestRejectedCallLogLinesAreBounded(t *testing.T) {
	t.Parallel()
	logs := &syncbuf.Buffer{}
	addr := serveTCP(t, slog.New(slog.NewJSONHandler(logs, nil)))

	long := strings.Repeat("x", 10<<10)
	for _, tc := range []struct {
		name, path, encoding string
		maxLine              int // the status message is cut at 1 KiB, a method name at 256 bytes
	}{
		{"a long compression name", healthpb.Health_Check_FullMethodName, long, 2 << 10},
		{"a long method name", "/" + long + "/Check", "", 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(logLines(t, logs.String(), "rejected call"))
			rawCall(t, addr, tc.path, tc.encoding)
			var lines []map[string]any
			eventually(t, "the rejected call is not logged", func() bool {
				lines = logLines(t, logs.String(), "rejected call")
				return len(lines) > before
			})
			line := lines[len(lines)-1]
			if line["grpc.code"] != codes.Unimplemented.String() {
				t.Errorf("grpc.code = %v, want Unimplemented", line["grpc.code"])
			}
			encoded, err := json.Marshal(line)
			if err != nil {
				t.Fatal(err)
			}
			if len(encoded) > tc.maxLine {
				t.Errorf("a rejected call line of %d bytes, want at most %d: %.300s...", len(encoded), tc.maxLine, encoded)
			}
		})
	}
}

// rawCall sends one request over HTTP/2 as a gRPC client would, with the
// given path and grpc-encoding (none if empty), and waits for the answer's
// end: what no well-behaved gRPC client library would send.
func rawCall(t *testing.T, addr, path, encoding string) {
	t.Helper()
	fr := dialHTTP2(t, addr)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	fields := [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "test"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	}
	if encoding != "" {
		fields = append(fields, [2]string{"grpc-encoding", encoding})
	}
	for _, f := range fields {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// An empty message, compressed flag off, ending the request.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck() //nolint:errcheck // the server may hang up
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return
			}
		case *http2.RSTStreamFrame:
			return
		}
	}
}
