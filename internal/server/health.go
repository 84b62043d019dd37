package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// watchGrace is how long Watch streams are left open after Shutdown has
// turned health NOT_SERVING, so that their clients hear it.
const watchGrace = 250 * time.Millisecond

// LivenessService is the health service name that is SERVING for as long
// as the gRPC server runs, whatever the database does: a liveness probe
// asks for it, so that a database outage takes pods out of rotation (the
// readiness probe asks for "") without restarting them all.
const LivenessService = "liveness"

// errShuttingDown ends a streaming call that was waiting for the client's
// next message when the drain began: the client may retry elsewhere.
var errShuttingDown = status.Error(codes.Unavailable, "the server is shutting down")

// Health is the grpc.health.v1 service of the server ("") and of
// UsersService. Both start NOT_SERVING: only a database that answers makes
// the service ready (see DatabaseWatch). LivenessService starts SERVING.
//
// It also ends the server's streaming calls when the drain starts (see
// EndStreams), since a Watch stream is what a shutting-down server must
// end last.
type Health struct {
	*health.Server

	mu           sync.Mutex
	shuttingDown bool      // once set, the database's status is NOT_SERVING for good
	shutdownAt   time.Time // when Shutdown set shuttingDown

	ended      context.Context // done once streaming calls are to end
	endStreams context.CancelFunc
}

func newHealth() *Health {
	h := &Health{Server: health.NewServer()}
	h.ended, h.endStreams = context.WithCancel(context.Background())
	h.set(healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
	return h
}

// set is the database's status, unless Shutdown came first.
func (h *Health) set(status healthpb.HealthCheckResponse_ServingStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shuttingDown {
		return
	}
	h.setLocked(status)
}

func (h *Health) setLocked(status healthpb.HealthCheckResponse_ServingStatus) {
	h.SetServingStatus("", status)
	h.SetServingStatus(usersv1.UsersService_ServiceDesc.ServiceName, status)
}

// Shutdown turns the server and UsersService NOT_SERVING for good, so that
// balancers and clients' health checks stop sending calls; the server goes
// on serving those that still come. LivenessService stays SERVING: the
// drain is the process working, and a liveness probe failing through it
// would kill the calls it waits for. (health.Server's own Shutdown would
// turn every service NOT_SERVING.)
//
// The status and the flag that keeps it are set in one step, under the
// lock that set takes: a database check landing in between would
// otherwise turn health SERVING again for the whole drain.
func (h *Health) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shuttingDown {
		return
	}
	h.shuttingDown = true
	h.shutdownAt = time.Now()
	h.setLocked(healthpb.HealthCheckResponse_NOT_SERVING)
}

// EndStreams ends every streaming call of the server, open or still to
// come: health Watch, reflection, and any other. Call it when the drain
// starts: nothing else ends them, and an open one holds a graceful stop
// until its timeout. Watch streams are first left what remains of
// watchGrace since Shutdown, so that their clients hear NOT_SERVING.
func (h *Health) EndStreams() {
	h.mu.Lock()
	wait := watchGrace - time.Since(h.shutdownAt)
	if !h.shuttingDown {
		wait = 0
	}
	h.mu.Unlock()
	time.AfterFunc(max(wait, 0), h.endStreams)
}

// endStreamsOnDrain is the stream interceptor that lets EndStreams end
// every streaming call. A handler that watches its context (health Watch)
// sees it cancelled; one that waits for the client's next message
// (reflection) has that wait end with UNAVAILABLE.
func (h *Health) endStreamsOnDrain(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(h.ended, cancel)()
	wrapped := middleware.WrappedServerStream{ServerStream: ss, WrappedContext: ctx}
	return handler(srv, &endableStream{WrappedServerStream: wrapped, ended: h.ended})
}

// endableStream is a server stream whose RecvMsg returns once ended is
// done. gRPC's own RecvMsg waits on the transport stream alone, which
// outlives the context a handler is given.
type endableStream struct {
	middleware.WrappedServerStream
	ended context.Context
}

func (s *endableStream) RecvMsg(m any) error {
	if s.ended.Err() != nil {
		return errShuttingDown
	}
	received := make(chan error, 1)
	// Once RecvMsg has returned early, this goroutine ends with the
	// stream: gRPC closes it when the handler returns. The handler gets
	// an error and does not call RecvMsg again, so no two receive at once.
	go func() { received <- s.WrappedServerStream.RecvMsg(m) }()
	select {
	case err := <-received:
		return err
	case <-s.ended.Done():
		return errShuttingDown
	}
}

// Pinger is the database as the health check sees it. Give it a pool of
// its own (one connection is plenty): on the service's pool, a ping waits
// for a free connection, and a busy service would look unreachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// DatabaseWatch keeps Health in step with the database: NOT_SERVING while
// a ping fails, SERVING once one succeeds. Without it a probe would call
// the service ready while every RPC fails.
type DatabaseWatch struct {
	db       Pinger
	health   *Health
	interval time.Duration // between pings, and the bound on each
	log      *slog.Logger

	reachable *bool // nil until the first ping
}

// NewDatabaseWatch returns a watch that pings db every interval.
func NewDatabaseWatch(db Pinger, h *Health, interval time.Duration, log *slog.Logger) *DatabaseWatch {
	return &DatabaseWatch{db: db, health: h, interval: interval, log: log}
}

// Check pings once and sets the health status from the answer.
func (w *DatabaseWatch) Check(ctx context.Context) {
	pingCtx, cancel := context.WithTimeout(ctx, w.interval)
	err := w.db.Ping(pingCtx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	ok := err == nil
	if w.reachable != nil && *w.reachable == ok {
		return
	}
	w.reachable = &ok
	if ok {
		w.log.Info("database reachable")
		w.health.set(healthpb.HealthCheckResponse_SERVING)
	} else {
		w.log.Warn("database unreachable", "error", err)
		w.health.set(healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// Run checks every interval until ctx ends. Not safe to run twice at once.
func (w *DatabaseWatch) Run(ctx context.Context) {
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			w.Check(ctx)
		}
	}
}

// Ready reports whether the server is SERVING: the database answered the
// last ping and shutdown has not begun. /readyz serves it.
func (h *Health) Ready() bool {
	resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}
