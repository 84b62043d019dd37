package server

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// maxRejectedMethod bounds the method name a client asked for in a
// "rejected call" line (the status message has maxLoggedMessage): it may be
// anything, and a hostile client must not write what it likes into the
// logs.
const maxRejectedMethod = 256

// unknownMethod labels the calls to a method the server does not have: the
// client's name for it would make a new series per name.
const unknownMethod = "unknown"

// rejections counts and logs the calls that gRPC ends before any
// interceptor sees them, and so before the per-method metrics and the
// call log do: a request larger than MaxRequestBytes (RESOURCE_EXHAUSTED),
// a compression the server lacks or a method it does not have
// (UNIMPLEMENTED), a client that left before its request arrived
// (CANCELED). (A request that does not decode gets past: requestCodec
// turns it into an INVALID_ARGUMENT that the interceptors answer.) Those would otherwise show
// nowhere on the server, however many a client sent.
//
// It is a gRPC stats handler, which sees every call, together with the
// first interceptor of each chain, which marks the call as one that got
// past gRPC's checks; a call that ends unmarked was rejected. The mark
// lives in the state the handler itself attaches to each call (TagRPC).
type rejections struct {
	counter *prometheus.CounterVec // by grpc_service, grpc_method, grpc_code; nil counts nothing
	log     *slog.Logger
	// Every registered service and full method name, set before Serve.
	services, methods map[string]bool
}

type callStateKey struct{}

// callState is what rejections knows of one call.
type callState struct {
	method string
	served atomic.Bool // the interceptors got the call
}

func (r *rejections) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, callStateKey{}, &callState{method: info.FullMethodName})
}

func (r *rejections) HandleRPC(ctx context.Context, s stats.RPCStats) {
	switch s := s.(type) {
	case *stats.InHeader:
		// gRPC answers a method it does not have without a stats.End.
		if r.methods != nil && !r.methods[s.FullMethod] {
			r.reject(ctx, s.FullMethod, r.unknown(s.FullMethod))
		}
	case *stats.End:
		c, ok := ctx.Value(callStateKey{}).(*callState)
		if !ok || c.served.Load() || s.Error == nil {
			return
		}
		r.reject(ctx, c.method, status.Convert(s.Error))
	}
}

func (*rejections) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (*rejections) HandleConn(context.Context, stats.ConnStats) {}

func (r *rejections) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	markServed(ctx)
	return handler(ctx, req)
}

func (r *rejections) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	markServed(ss.Context())
	return handler(srv, ss)
}

func markServed(ctx context.Context) {
	if c, ok := ctx.Value(callStateKey{}).(*callState); ok {
		c.served.Store(true)
	}
}

// reject counts and logs one rejected call: never its payload, and its
// status message only up to maxLoggedMessage.
func (r *rejections) reject(ctx context.Context, fullMethod string, st *status.Status) {
	service, method := unknownMethod, unknownMethod
	if r.methods[fullMethod] {
		service, method, _ = strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	}
	if r.counter != nil {
		r.counter.With(prometheus.Labels{"grpc_service": service, "grpc_method": method, "grpc_code": st.Code().String()}).Inc()
	}

	// The client's doing, not the service's trouble: never an error.
	level := slog.LevelWarn
	if st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded {
		level = slog.LevelInfo
	}
	if !r.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs,
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.code", st.Code().String()),
		slog.String("grpc.error", clip(st.Message(), maxLoggedMessage)),
	)
	if method == unknownMethod {
		attrs = append(attrs, slog.String("grpc.requested_method", clip(fullMethod, maxRejectedMethod)))
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	r.log.LogAttrs(ctx, level, "rejected call", attrs...)
}

// unknown is the status gRPC answers a call to a method the server does
// not have with, in gRPC's words, but with the client's name for it cut to
// maxRejectedMethod.
func (r *rejections) unknown(fullMethod string) *status.Status {
	name := clip(strings.TrimPrefix(fullMethod, "/"), maxRejectedMethod)
	i := strings.LastIndex(name, "/") // gRPC splits at the last slash
	service, method := name[:max(i, 0)], name[i+1:]
	if !r.services[service] {
		return status.Newf(codes.Unimplemented, "unknown service %v", service)
	}
	return status.Newf(codes.Unimplemented, "unknown method %v for service %v", method, service)
}

// learnServices notes what srv serves, for rejections to know an unknown
// method from a known one. Call it once every service is registered.
func (r *rejections) learnServices(srv *grpc.Server) {
	r.services, r.methods = map[string]bool{}, map[string]bool{}
	for service, info := range srv.GetServiceInfo() {
		r.services[service] = true
		for _, m := range info.Methods {
			r.methods["/"+service+"/"+m.Name] = true
		}
	}
}
