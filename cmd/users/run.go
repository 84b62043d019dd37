package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/agynio/users/internal/admin"
	"github.com/agynio/users/internal/buildinfo"
	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/grpctls"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/telemetry"
)

// healthInterval is how often the health service pings the database, and
// the bound on each ping. A test build may shorten it (healthinterval.go).
var healthInterval = 2 * time.Second

// acquireTimeout bounds the wait for a pool connection (DB_TIMEOUT if that
// is shorter): a call that cannot get one in a second is better answered
// UNAVAILABLE, for the client to retry elsewhere, than queued.
const acquireTimeout = time.Second

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch {
	case cmd == "serve" && len(args) == 0:
	case cmd == "migrate" && len(args) == 1 && (args[0] == "up" || args[0] == "down" || args[0] == "status"),
		cmd == "migrate" && len(args) == 2 && args[0] == "down" && args[1] == "--force":
	case cmd == "help" || cmd == "-h" || cmd == "-help" || cmd == "--help":
		return writeHelp(os.Stdout)
	case cmd == "version" && len(args) == 0:
		return writeVersion(os.Stdout)
	default:
		return usageError{fmt.Sprintf("unknown command %q", strings.Join(append([]string{cmd}, args...), " "))}
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(os.Stdout, cfg.LogLevel)

	if cmd == "migrate" {
		return runMigrate(ctx, cfg, strings.Join(args, " "))
	}
	return serve(ctx, cfg, log)
}

func runMigrate(ctx context.Context, cfg config.Config, action string) error {
	switch action {
	case "up":
		return migrate.UpAndGrant(ctx, cfg.DatabaseURL, cfg.ServeRole, os.Stdout)
	case "down":
		err := migrate.Down(ctx, cfg.DatabaseURL, os.Stdout)
		if errors.Is(err, migrate.ErrDataLoss) {
			return fmt.Errorf("migrate down: %w. To roll back anyway, deleting that data: users migrate down --force", err)
		}
		return err
	case "down --force":
		return migrate.ForceDown(ctx, cfg.DatabaseURL, os.Stdout)
	default: // "status"; run has checked the action
		_, err := migrate.Status(ctx, cfg.DatabaseURL, os.Stdout)
		return err
	}
}

// serve runs the gRPC server until ctx is cancelled (SIGINT/SIGTERM), then
// shuts down in order: health NOT_SERVING, calls still served for
// cfg.DrainDelay, in-flight RPCs drain for up to cfg.ShutdownTimeout, the
// admin listener closes, the API tokens' last uses are written, the event
// relay stops, and the database pools close. Each resource is closed
// where it is created, by a defer that also covers an early return.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	// Configuration is loaded and validated (config.Load); what remains
	// are the runtime settings: the memory limit and tracing.
	setMemoryLimit(log)
	tracing, err := telemetry.StartTracing(ctx, cfg.Tracing)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer flushSpans(ctx, tracing, log)

	// Database. The pools connect lazily: the service starts, and answers
	// UNAVAILABLE, while the database is still coming up. Health has its
	// own one-connection pool, so that a busy service pool does not read as
	// an unreachable database.
	pool, err := db.NewPool(ctx, cfg.DatabaseURL, db.PoolOptions{Tracer: tracing.QueryTracer(), MaxConns: cfg.DBMaxConns})
	if err != nil {
		return err
	}
	defer pool.Close()
	healthPool, err := db.NewPool(ctx, cfg.DatabaseURL, db.PoolOptions{MaxConns: 1})
	if err != nil {
		return err
	}
	defer healthPool.Close()
	metrics := telemetry.NewMetrics(pool)

	// Change events: written by the same statements as the changes, and
	// relayed (or pruned) in the background, whatever the drain; stopped
	// last, once no call writes any more. First, so that a NATS setting
	// the client refuses stops the program before anything else runs.
	stopEvents, err := startEvents(cfg, pool, metrics, log)
	if err != nil {
		return err
	}
	defer stopEvents()

	// gRPC server, with health and reflection, and TLS when configured.
	opts := grpcOptions(cfg, metrics, tracing)
	if cfg.TLS.Enabled() {
		creds, err := grpctls.New(cfg.TLS, grpctls.DefaultRefresh, log)
		if err != nil {
			return err
		}
		defer creds.Close()
		opts = append(opts, server.WithCredentials(creds))
		log.Info("gRPC TLS on", "mutual", cfg.TLS.ClientCAFile != "")
	} else {
		log.Warn("gRPC serves plaintext, fit for local development only: set GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE")
	}
	if cfg.TLS.ClientCAFile != "" {
		opts = append(opts, server.WithIdentityAssertingClients(cfg.IdentityAssertingClients))
	}
	users := usersServer(cfg, pool, metrics, log)
	srv, healthSrv := server.NewGRPCServer(users, log, opts...)
	defer srv.Stop() // for a return before the drain below; after it, a no-op

	// Health: one check before serving, so that the first probe already
	// has an answer, then one every healthInterval until shutdown.
	watch := server.NewDatabaseWatch(db.NewReadiness(healthPool), healthSrv, healthInterval, log)
	metrics.ObserveReadiness(healthSrv.Ready)
	watch.Check(ctx)
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	go watch.Run(watchCtx)
	go promoteDeclaredAdmins(watchCtx, users, log)
	// Token uses are written every tokenUseInterval while calls are
	// served, the drain included, and once more when serve returns, after
	// the drain or on a failure.
	usageCtx, stopUsage := context.WithCancel(context.WithoutCancel(ctx))
	go users.RecordTokenUse(usageCtx, tokenUseInterval)
	defer func() {
		stopUsage()
		flushTokenUse(ctx, users, cfg.DBTimeout, log)
	}()

	// Listeners, and the admin HTTP server: up before gRPC serves and down
	// after it, so that readiness and metrics are there for the whole life
	// of the service, drain included.
	lis, err := listen("GRPC_ADDRESS", cfg.GRPCAddress)
	if err != nil {
		return err
	}
	defer lis.Close() // Serve closes it too; this one is for a return before serving
	adminLis, err := listen("ADMIN_ADDRESS", cfg.AdminAddress)
	if err != nil {
		return err
	}
	defer adminLis.Close()
	adminSrv := adminServer(healthSrv, metrics, log)
	go adminSrv.Serve(adminLis) //nolint:errcheck // ends with Close below
	defer adminSrv.Close()

	// Serving, until a signal or a failure of the gRPC listener.
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("serving", "address", lis.Addr().String(), "admin_address", adminLis.Addr().String(),
		"version", buildinfo.Version, "tracing", tracing.Enabled())
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Shutdown: the drain delay, then the drain under ShutdownTimeout; the
	// defers above then close the admin server and the pools.
	log.Info("shutting down", "drain_delay", cfg.DrainDelay.String(), "timeout", cfg.ShutdownTimeout.String())
	stopWatch()
	if err := drainDelay(cfg.DrainDelay, healthSrv, serveErr); err != nil {
		return err
	}
	drain(srv, healthSrv, cfg.ShutdownTimeout, log)
	return nil
}

// tokenUseInterval is how often the API tokens' last uses are written:
// while the database answers, at most this much of last_used_at is lost
// if the process dies without its shutdown (which writes what is left).
const tokenUseInterval = time.Second

// flushTokenUse writes the token uses still in memory, once the drain
// has ended every call, within timeout; a periodic write under way ends
// first.
func flushTokenUse(ctx context.Context, users *server.Server, timeout time.Duration, log *slog.Logger) {
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := users.FlushTokenUse(flushCtx); err != nil {
		log.Warn("API tokens' last uses lost at exit", "error", err)
	}
}

// setMemoryLimit sets a soft memory limit at 90% of the container's memory
// limit (unless GOMEMLIMIT is set), so that the collector works harder
// before the kernel kills the pod; outside a container, 90% of the
// machine's. The runtime sets GOMAXPROCS from a CPU limit by itself.
func setMemoryLimit(log *slog.Logger) {
	if _, err := memlimit.Set(memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem))); err != nil {
		log.Warn("GOMEMLIMIT not set from the memory limit", "error", err)
	}
}

// flushSpans exports the spans still buffered, for up to five seconds even
// though ctx, the signal's, is done by then.
func flushSpans(ctx context.Context, tracing *telemetry.Tracing, log *slog.Logger) {
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tracing.Shutdown(flushCtx); err != nil {
		log.Warn("tracing: spans lost at exit", "error", err)
	}
}

// grpcOptions are the gRPC server's metrics, tracing and connection ages;
// serve adds the credentials.
func grpcOptions(cfg config.Config, metrics *telemetry.Metrics, tracing *telemetry.Tracing) []server.Option {
	return []server.Option{
		server.WithMetrics(metrics.GRPC),
		server.WithRejectedCounter(metrics.RejectedCalls),
		server.WithStatsHandler(tracing.GRPCStatsHandler()),
		// An aged connection's calls finish within the grace: a call waits
		// on at most four database statements in turn, each bounded by
		// DB_TIMEOUT (a queued first login: the login running before it,
		// the shared read, its own upsert, and the read of a race's
		// winner; an administrator's call: the read of the caller, queued
		// the same way, then its write). Only a first login that keeps
		// losing its username to concurrent ones runs more.
		server.WithMaxConnectionAge(server.MaxConnectionAge, max(server.MaxConnectionAgeGrace, 4*cfg.DBTimeout+5*time.Second)),
	}
}

// usersServer is UsersService over pool: each database call bounded by
// DB_TIMEOUT, its wait for a connection by acquireTimeout as well, and
// point reads coalesced past DB_READS_IN_FLIGHT (the server's default
// when it is not set).
func usersServer(cfg config.Config, pool *pgxpool.Pool, metrics *telemetry.Metrics, log *slog.Logger) *server.Server {
	queries := db.NewBounded(pool, min(acquireTimeout, cfg.DBTimeout), cfg.DBTimeout)
	opts := []server.HandlerOption{
		server.WithDeclaredAdmins(cfg.ClusterAdminSubjects),
		server.WithDroppedClaimsCounter(metrics.DroppedClaims),
		server.WithReadsInFlight(cfg.DBReadsInFlight),
	}
	return server.New(queries, identity.Local{}, log, opts...)
}

// promoteDeclaredAdmins stores the administrator role of the
// CLUSTER_ADMIN_SUBJECTS users who exist, trying again every few seconds
// while the database cannot be reached, until it succeeds or ctx ends.
// Until then those users are administrators all the same (the service
// reads CLUSTER_ADMIN_SUBJECTS on every call); only the count of
// administrators that keeps the last one from being demoted waits for it.
func promoteDeclaredAdmins(ctx context.Context, users *server.Server, log *slog.Logger) {
	const retry = 5 * time.Second
	for {
		n, err := users.PromoteDeclaredAdmins(ctx)
		if err == nil {
			if n > 0 {
				log.Info("declared cluster administrators promoted", "users", n)
			}
			return
		}
		log.Warn("promoting declared cluster administrators; trying again", "error", err, "in", retry.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// listen listens on addr, the value of variable, which the error names.
func listen(variable, addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w", variable, addr, err)
	}
	return lis, nil
}

// adminServer serves /healthz, /readyz (health's readiness) and /metrics.
func adminServer(health *server.Health, metrics *telemetry.Metrics, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           admin.Handler(health.Ready, metrics.Registry),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// drainDelay turns health NOT_SERVING for good, so that balancers and
// clients' health checks stop sending, and goes on serving for delay:
// calls, new connections included, from those that have not heard yet
// (endpoints are updated after the signal, not before). A second signal
// ends the process at once (see main). It returns early, with the error,
// if the gRPC server stops serving meanwhile.
func drainDelay(delay time.Duration, health *server.Health, serveErr <-chan error) error {
	health.Shutdown()
	if delay <= 0 {
		return nil
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}

// drain stops srv gracefully: no new connections or calls, and the
// streaming calls (health Watch, reflection), which would hold the drain,
// ended. In-flight calls have timeout to finish; then they are cancelled.
func drain(srv *grpc.Server, health *server.Health, timeout time.Duration, log *slog.Logger) {
	health.EndStreams()
	drained := make(chan struct{})
	go func() { srv.GracefulStop(); close(drained) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-drained:
		log.Info("drained")
	case <-timer.C:
		log.Warn("shutdown timeout: cancelling in-flight RPCs")
		srv.Stop()
		<-drained
	}
}
