package outbox_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/natstest"
)

// BenchmarkRelayDrain measures the relay publishing a backlog of user
// updates, b.N of them over 1000 users: its cost per event, in the
// process and in the database, beside the writes that made them.
func BenchmarkRelayDrain(b *testing.B) {
	pool, url := newDatabase(b)
	q := db.New(pool)
	ns := natstest.Start(b)
	const users = 1000
	for i := range users {
		newUser(b, q, fmt.Sprintf("user-%d", i))
	}
	if _, err := pool.Exec(b.Context(), `INSERT INTO outbox (kind, identity_id, actor_service, changed_fields, data)
		SELECT 'user.updated', u.identity_id, 'bench', ARRAY['name'], to_jsonb(u)
		FROM users u, generate_series(1, $1::int / 1000 + 1) g ORDER BY g, u.identity_id`, b.N); err != nil {
		b.Fatal(err)
	}
	pending := outboxRows(b, pool)
	b.ResetTimer()
	stop := startRelay(b, url, ns, prometheus.NewRegistry(), pool)
	deadline := time.Now().Add(5 * time.Minute)
	for outboxRows(b, pool) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	stop()
	b.ReportMetric(float64(pending)/float64(b.N), "events/op")
}
