package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// watchGrace is how long Watch streams are left open after shutdown has
// turned health NOT_SERVING, so that their clients hear it.
const watchGrace = 250 * time.Millisecond

// LivenessService is the health service name that is SERVING for as long
// as the gRPC server runs, whatever the database does: a liveness probe
// asks for it, so that a database outage takes pods out of rotation (the
// readiness probe asks for "") without restarting them all.
const LivenessService = "liveness"

// Health is the grpc.health.v1 service of the server ("") and of
// UsersService. Both start NOT_SERVING: only a database that answers makes
// the service ready (see DatabaseWatch). LivenessService starts SERVING.
type Health struct {
	*health.Server

	mu           sync.Mutex
	shuttingDown bool // once set, the database's status is NOT_SERVING for good

	shutdownOnce sync.Once
	shutdown     context.Context // done once Watch streams are to end
	endWatches   context.CancelFunc
}

func newHealth() *Health {
	h := &Health{Server: health.NewServer()}
	h.shutdown, h.endWatches = context.WithCancel(context.Background())
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

// Shutdown turns the server and UsersService NOT_SERVING for good and,
// once watchers have had watchGrace to hear it, ends their Watch streams:
// left open, they would hold a graceful stop until its timeout.
// LivenessService stays SERVING: the drain is the process working, and a
// liveness probe failing through it would kill the calls it waits for.
// (health.Server's own Shutdown would turn every service NOT_SERVING.)
//
// The status and the flag that keeps it are set in one step, under the
// lock that set takes: a database check landing in between would
// otherwise turn health SERVING again for the whole drain.
func (h *Health) Shutdown() {
	h.shutdownOnce.Do(func() {
		h.mu.Lock()
		h.shuttingDown = true
		h.setLocked(healthpb.HealthCheckResponse_NOT_SERVING)
		h.mu.Unlock()
		time.AfterFunc(watchGrace, h.endWatches)
	})
}

// endWatchesOnShutdown is the stream interceptor that lets Shutdown end
// Watch streams, by cancelling their context.
func (h *Health) endWatchesOnShutdown(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != healthpb.Health_Watch_FullMethodName {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(h.shutdown, cancel)()
	return handler(srv, &middleware.WrappedServerStream{ServerStream: ss, WrappedContext: ctx})
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
