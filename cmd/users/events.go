package main

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/outbox"
	"github.com/agynio/users/internal/telemetry"
)

// startEvents starts what empties the outbox of change events: the relay
// to NATS JetStream when NATS_URL is set, else the pruner. It returns a
// function that stops it and waits until it has: a relay ends its round,
// deleting what JetStream acknowledged, and closes its session, which
// frees the lock for another replica at once.
func startEvents(cfg config.Config, pool *pgxpool.Pool, metrics *telemetry.Metrics, log *slog.Logger) (stop func(), err error) {
	m := outbox.NewMetrics(metrics.Registry, db.New(pool), cfg.DBTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if !cfg.Events.Relay() {
		log.Info("events not relayed (NATS_URL unset); the outbox is pruned", "retention", cfg.Events.OutboxRetention.String())
		wg.Go(func() {
			outbox.Prune(ctx, db.New(db.NewBounded(pool, cfg.DBTimeout, cfg.DBTimeout)), cfg.Events.OutboxRetention, outbox.PruneInterval, m, log)
		})
		return func() { cancel(); wg.Wait() }, nil
	}

	// The client reads the credentials at each connection attempt, in the
	// background: a file that cannot be read would only ever show as a
	// NATS that does not answer.
	if f := cfg.Events.NATSCredsFile; f != "" {
		if _, err := os.ReadFile(f); err != nil {
			cancel()
			return nil, config.Errorf("NATS_CREDS_FILE", "cannot be read: %v", err)
		}
	}
	js, closeNATS, err := outbox.ConnectNATS(cfg.Events.NATSURL, cfg.Events.NATSCredsFile, log)
	if err != nil {
		cancel()
		// Not the error's text: it may quote the URL, password and all.
		return nil, config.Errorf("NATS_URL", "is not what the NATS client accepts: nats://[user:password@]host:port, comma-separated for several servers")
	}
	relay := outbox.NewRelay(outbox.RelayConfig{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return db.Connect(ctx, cfg.DatabaseURL) },
		Stream: jetstream.StreamConfig{
			Name:     cfg.Events.Stream,
			Subjects: []string{outbox.Subjects},
			MaxAge:   cfg.Events.StreamMaxAge,
			Storage:  jetstream.FileStorage,
		},
		DBTimeout: cfg.DBTimeout,
	}, js, m, log)
	wg.Go(func() { relay.Run(ctx) })
	return func() { cancel(); wg.Wait(); closeNATS() }, nil
}
