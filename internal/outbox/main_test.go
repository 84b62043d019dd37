package outbox_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/outbox"
	"github.com/agynio/users/internal/testing/natstest"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestMain(m *testing.M) {
	os.Exit(testdb.Run(m))
}

const testStream = "USERS_TEST"

// testActor is the actor of the changes these tests make.
var testActor = "outbox tests"

// newDatabase is a pool on a database of the test's own, and its URL.
func newDatabase(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	url := testdb.URL(t)
	pool, err := db.NewPool(t.Context(), url, db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, url
}

// startRelay runs a relay on the database at url, publishing to ns, as
// serve runs it (ConnectNATS included), until stop is called or the test
// ends. Its waits are short, so that tests wait little; edits change its
// configuration.
func startRelay(t testing.TB, url string, ns *natstest.Server, reg prometheus.Registerer, pool *pgxpool.Pool, edits ...func(*outbox.RelayConfig)) (stop func()) {
	t.Helper()
	js, closeNATS, err := outbox.ConnectNATS(ns.URL(), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cfg := outbox.RelayConfig{
		Connect:          func(ctx context.Context) (*pgx.Conn, error) { return db.Connect(ctx, url) },
		Stream:           jetstream.StreamConfig{Name: testStream, Subjects: []string{outbox.Subjects}},
		DBTimeout:        5 * time.Second,
		Poll:             10 * time.Millisecond,
		MaxBackoff:       200 * time.Millisecond,
		TakeoverInterval: 100 * time.Millisecond,
		AckTimeout:       time.Second,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	relay := outbox.NewRelay(cfg, js, outbox.NewMetrics(reg, db.New(pool), time.Second), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { relay.Run(ctx) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait(); closeNATS() }) }
	t.Cleanup(stop)
	return stop
}

// newUser logs a new user in with the service's own statement.
func newUser(t testing.TB, q *db.Queries, subject string) uuid.UUID {
	t.Helper()
	row, err := q.ResolveOrCreateUser(t.Context(), db.ResolveOrCreateUserParams{
		IdentityID: uuid.Must(uuid.NewV7()), OidcSubject: subject, ActorService: &testActor,
	})
	if err != nil {
		t.Fatal(err)
	}
	return row.IdentityID
}

// outboxRows counts the outbox's rows.
func outboxRows(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitOutboxEmpty waits, up to 5 s, for the relay to delete every event
// it published: a consumer may read an event a moment before the relay
// has its acknowledgement and deletes it.
func waitOutboxEmpty(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n := outboxRows(t, pool); n != 0; n = outboxRows(t, pool) {
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d rows 5s after their events were read", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
