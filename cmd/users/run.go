package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/server"
)

// healthInterval is how often the health service pings the database.
const healthInterval = 2 * time.Second

const usage = "usage: users [serve] | users migrate up|down|status"

// usageError is a bad command line; like a configuration error it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + "\n" + usage }

func isUsageError(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch {
	case cmd == "serve" && len(args) == 0:
	case cmd == "migrate" && len(args) == 1 && (args[0] == "up" || args[0] == "down" || args[0] == "status"):
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Println(usage)
		return nil
	default:
		return usageError{fmt.Sprintf("unknown command %q", strings.Join(append([]string{cmd}, args...), " "))}
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))

	if cmd == "migrate" {
		return runMigrate(ctx, cfg, args[0])
	}
	return serve(ctx, cfg, log)
}

func runMigrate(ctx context.Context, cfg config.Config, action string) error {
	switch action {
	case "up":
		return migrate.Up(ctx, cfg.DatabaseURL, os.Stdout)
	case "down":
		return migrate.Down(ctx, cfg.DatabaseURL, os.Stdout)
	default: // "status"; run has checked the action
		_, err := migrate.Status(ctx, cfg.DatabaseURL, os.Stdout)
		return err
	}
}

// serve runs the gRPC server until ctx is cancelled (SIGINT/SIGTERM), then
// shuts down in order: health NOT_SERVING, in-flight RPCs drain for up to
// cfg.ShutdownTimeout, the database pool closes.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	// Database. The pool connects lazily: the service starts, and answers
	// UNAVAILABLE, while the database is still coming up.
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()

	// gRPC server, with health and reflection.
	lis, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		return fmt.Errorf("listen on GRPC_ADDRESS %s: %w", cfg.GRPCAddress, err)
	}
	srv, healthSrv := server.NewGRPCServer(server.New(pool, identity.Local{}, log), log)

	// Health: its own one-connection pool, so that a busy service pool
	// does not read as an unreachable database; one check before serving,
	// so the first probe already has an answer.
	healthPoolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	healthPoolCfg.MaxConns, healthPoolCfg.MinConns = 1, 0
	healthPool, err := pgxpool.NewWithConfig(ctx, healthPoolCfg)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer healthPool.Close()
	watch := server.NewDatabaseWatch(healthPool, healthSrv, healthInterval, log)
	watch.Check(ctx)
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	go watch.Run(watchCtx)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("serving", "address", lis.Addr().String())

	// Shutdown.
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	stopWatch()
	healthSrv.Shutdown() // NOT_SERVING for good, so balancers stop sending; Watch streams end
	drained := make(chan struct{})
	go func() { srv.GracefulStop(); close(drained) }()
	select {
	case <-drained:
		log.Info("drained")
	case <-time.After(cfg.ShutdownTimeout):
		log.Warn("shutdown timeout: cancelling in-flight RPCs")
		srv.Stop()
		<-drained
	}
	return nil
}
