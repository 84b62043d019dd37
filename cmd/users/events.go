package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
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

	nc, err := connectNATS(cfg.Events, log)
	if err != nil {
		cancel()
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(outbox.DefaultAckTimeout))
	if err != nil {
		cancel()
		nc.Close()
		return nil, fmt.Errorf("NATS: %w", err)
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
	return func() { cancel(); wg.Wait(); nc.Close() }, nil
}

// connectNATS connects to NATS_URL, or keeps trying in the background
// while it cannot be reached: the service serves, and writes events to
// the outbox, whether NATS is there or not. A publish while disconnected
// fails at once (no reconnect buffer), for the relay to try again later.
// Neither the URL, which may hold a password, nor the credentials are
// logged.
func connectNATS(e config.Events, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("users"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if e.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(e.NATSCredsFile))
	}
	nc, err := nats.Connect(e.NATSURL, opts...)
	if err != nil {
		return nil, config.Errorf("NATS_URL", "cannot connect: %v", err)
	}
	return nc, nil
}
