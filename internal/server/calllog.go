package server

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callLog writes one line per call, when it finishes (a call that
// succeeds only at debug, see finished): service, method,
// code, duration in milliseconds, peer, the status message of a failed
// call, and the trace id when tracing is on. Never a payload: requests
// hold names, emails and OIDC subjects.
//
// It is a few lines rather than go-grpc-middleware's logging interceptor,
// which builds its fields with fmt and interface slices on every call:
// on the login path that was a sixth of the service's CPU.
type callLog struct{ log *slog.Logger }

func (l callLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	l.finished(ctx, info.FullMethod, start, err)
	return resp, err
}

func (l callLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	l.finished(ss.Context(), info.FullMethod, start, err)
	return err
}

func (l callLog) finished(ctx context.Context, fullMethod string, start time.Time, err error) {
	st := status.Convert(err)
	// Codes map to levels as go-grpc-middleware's do (the client's
	// mistakes at info, the service's trouble at warn and error), except
	// that a call that succeeds is logged at debug only: at info, its line
	// cost 10 to 25 us of the 110 to 145 us of service CPU of a point read
	// or a known user's login in make bench, and the metrics count every
	// call anyway. A failed call always has its line.
	level := slog.Level(logging.DefaultServerCodeToLevel(st.Code()))
	if st.Code() == codes.OK {
		level = slog.LevelDebug
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.code", st.Code().String()),
		// As a string: slog's JSON handler encodes a float64 through
		// encoding/json's reflection, which cost 8% of a GetUser.
		slog.String("grpc.time_ms", strconv.FormatFloat(float64(time.Since(start).Microseconds())/1000, 'f', -1, 64)),
	)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", clip(st.Message(), maxLoggedMessage)))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	l.log.LogAttrs(ctx, level, "finished call", attrs...)
}

// maxLoggedMessage bounds the status message in a log line. The service's
// own messages are far shorter; the bound holds whatever produced one.
const maxLoggedMessage = 1 << 10

// clip cuts s to at most n bytes, at a character boundary, saying how long
// it was: whatever a client sent, a log line stays short.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "... (truncated from " + strconv.Itoa(len(s)) + " bytes)"
}
