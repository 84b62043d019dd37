package outbox_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agynio/users/internal/db"
	eventsv1 "github.com/agynio/users/internal/gen/agynio/users/events/v1"
	"github.com/agynio/users/internal/outbox"
	"github.com/agynio/users/internal/testing/natstest"
)

// NATS goes away during a burst of writes and comes back after it: the
// writes go on, and once NATS is back every event arrives, each id once,
// each user's events in the order of the user's changes.
func TestEventsSurviveANATSOutage(t *testing.T) {
	t.Parallel()
	pool, url := newDatabase(t)
	q := db.New(pool)
	ns := natstest.Start(t)
	reg := prometheus.NewRegistry()
	startRelay(t, url, ns, reg, pool)

	const users, updates = 20, 50
	ids := make([]uuid.UUID, users)
	for i := range ids {
		ids[i] = newUser(t, q, fmt.Sprintf("user-%02d", i))
	}
	var done atomic.Int64
	errs := make(chan error, users)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			for k := range updates {
				name := fmt.Sprintf("n-%03d", k)
				_, err := q.UpdateUserProfile(t.Context(), db.UpdateUserProfileParams{
					IdentityID: id, Name: &name, ActorService: &testActor, ChangedFields: []string{"name"},
				})
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
				time.Sleep(time.Millisecond) // spread the burst over the outage
			}
		})
	}
	// NATS stops a quarter of the way in, and starts again after.
	deadline := time.Now().Add(20 * time.Second)
	for done.Load() < users*updates/4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ns.Stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a write while NATS was away: %v", err)
	}
	pending := outboxRows(t, pool)
	if pending == 0 {
		t.Fatal("no event was pending when NATS came back: the outage was not seen")
	}
	t.Logf("%d events pending when NATS came back", pending)
	// The metrics tell of the outage: the backlog, its age, the failures.
	m := gather(t, reg)
	if m["users_events_pending"] != float64(pending) || m["users_events_oldest_pending_age_seconds"] <= 0 ||
		m["users_events_publish_failures_total"] == 0 || m["users_events_relay_leader"] != 1 {
		t.Errorf("metrics during the outage: %v, want %d pending, an age, failures and the leader", m, pending)
	}
	ns.Restart()

	msgs := ns.Read(t, testStream, users*(1+updates), 30*time.Second, time.Second)
	if len(msgs) != users*(1+updates) {
		t.Fatalf("%d events, want %d", len(msgs), users*(1+updates))
	}
	seen := make(map[string]bool)
	names := make(map[string][]string) // by user: created, then each update's name
	for _, m := range msgs {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if seen[id] {
			t.Errorf("event %s arrived twice", id)
		}
		seen[id] = true
		switch m.Subject() {
		case "agyn.users.user.created":
			var ev eventsv1.UserCreated
			if err := proto.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			names[ev.GetEvent().GetIdentityId()] = append(names[ev.GetEvent().GetIdentityId()], "created")
		case "agyn.users.user.updated":
			var ev eventsv1.UserUpdated
			if err := proto.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			names[ev.GetEvent().GetIdentityId()] = append(names[ev.GetEvent().GetIdentityId()], ev.GetUser().GetName())
		default:
			t.Errorf("unexpected subject %s", m.Subject())
		}
	}
	want := []string{"created"}
	for k := range updates {
		want = append(want, fmt.Sprintf("n-%03d", k))
	}
	for _, id := range ids {
		if got := names[id.String()]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("user %s's events in this order: %v, want %v", id, got, want)
		}
	}
	waitOutboxEmpty(t, pool)
	if m := gather(t, reg); m["users_events_published_total"] != users*(1+updates) || m["users_events_pending"] != 0 {
		t.Errorf("metrics once drained: %v, want every event published and none pending", m)
	}
}

// gather is reg's metrics by name (each has one sample here).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[f.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// The relay's database session ends under it (a failover, an
// administrator's pg_terminate_backend): the relay opens another, takes
// the lock again and goes on, and no event is lost.
func TestRelayOutlivesItsSession(t *testing.T) {
	t.Parallel()
	pool, url := newDatabase(t)
	q := db.New(pool)
	ns := natstest.Start(t)
	startRelay(t, url, ns, prometheus.NewRegistry(), pool)

	before := newUser(t, q, "before")
	_ = ns.Read(t, testStream, 1, 10*time.Second, 0)
	var ended int
	if err := pool.QueryRow(t.Context(),
		"SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").
		Scan(&ended); err != nil {
		t.Fatal(err)
	}
	if ended != 1 {
		t.Fatalf("ended %d sessions holding an advisory lock, want the relay's one", ended)
	}
	after := newUser(t, q, "after")
	msgs := ns.Read(t, testStream, 2, 10*time.Second, 500*time.Millisecond)
	var got []string
	for _, m := range msgs {
		var ev eventsv1.UserCreated
		if err := proto.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.GetEvent().GetIdentityId())
	}
	if want := []string{before.String(), after.String()}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events for users %v, want %v", got, want)
	}
}

// An outbox row that is no event of its kind (written by hand, say)
// stays where it is and holds back only its own user's events: the other
// users' events are published past it, as they come, with no backoff.
func TestABadRowHoldsBackOnlyItsUser(t *testing.T) {
	t.Parallel()
	pool, url := newDatabase(t)
	q := db.New(pool)
	ns := natstest.Start(t)
	bad := uuid.New()
	if _, err := pool.Exec(t.Context(), `INSERT INTO outbox (kind, identity_id, actor_service, data)
		VALUES ('user.updated', $1, 'by hand', '{"created_at": "yesterday"}')`, bad); err != nil {
		t.Fatal(err)
	}
	// The backoff after failed publishes as serve has it: were the bad
	// row a failure, the good events would wait up to 5 s each.
	startRelay(t, url, ns, prometheus.NewRegistry(), pool, func(c *outbox.RelayConfig) { c.MaxBackoff = outbox.DefaultMaxBackoff })

	const good = 20
	for i := range good {
		newUser(t, q, fmt.Sprintf("good-%d", i))
		time.Sleep(100 * time.Millisecond)
	}
	// Each within a second of its write: the last too.
	msgs := ns.Read(t, testStream, good, time.Second, 300*time.Millisecond)
	if len(msgs) != good {
		t.Fatalf("%d events published within a second of the last write, want the %d good users'", len(msgs), good)
	}
	for _, m := range msgs {
		var ev eventsv1.UserCreated
		if err := proto.Unmarshal(m.Data(), &ev); err != nil || ev.GetEvent().GetIdentityId() == bad.String() {
			t.Errorf("published %v (%v), want only the good users' events", ev.GetEvent(), err)
		}
	}
	// The good events' rows go a moment after the consumer read them.
	for deadline := time.Now().Add(5 * time.Second); outboxRows(t, pool) > 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	var left []uuid.UUID
	rows, err := pool.Query(t.Context(), "SELECT identity_id FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if len(left) != 1 || left[0] != bad {
		t.Errorf("the outbox holds events of %v, want the bad row's user alone", left)
	}
}

// One user's long backlog, more than a round reads, drains in order
// without holding back the users whose events come after it: a round
// publishes the user's events one after another, each once the one
// before is in the stream.
func TestOneUsersBacklogDrainsInOrder(t *testing.T) {
	t.Parallel()
	pool, url := newDatabase(t)
	q := db.New(pool)
	ns := natstest.Start(t)
	busy := newUser(t, q, "busy")
	const updates = 1500
	for k := range updates {
		name := fmt.Sprintf("n-%04d", k)
		if _, err := q.UpdateUserProfile(t.Context(), db.UpdateUserProfileParams{
			IdentityID: busy, Name: &name, ActorService: &testActor, ChangedFields: []string{"name"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	others := make(map[string]bool)
	for i := range 10 {
		others[newUser(t, q, fmt.Sprintf("other-%d", i)).String()] = true
	}
	startRelay(t, url, ns, prometheus.NewRegistry(), pool)

	msgs := ns.Read(t, testStream, 1+updates+len(others), 30*time.Second, 500*time.Millisecond)
	if len(msgs) != 1+updates+len(others) {
		t.Fatalf("%d events, want %d", len(msgs), 1+updates+len(others))
	}
	var names []string
	for _, m := range msgs {
		if m.Subject() != "agyn.users.user.updated" {
			continue
		}
		var ev eventsv1.UserUpdated
		if err := proto.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		names = append(names, ev.GetUser().GetName())
	}
	for k, name := range names {
		if want := fmt.Sprintf("n-%04d", k); name != want {
			t.Fatalf("update %d of the busy user arrived as %s: out of order", k, name)
		}
	}
}
