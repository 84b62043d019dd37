package main

// The change events, end to end: serve processes relaying the outbox to a
// NATS server of the test's own, through a relay killed in the middle of
// a round, a leader stopped under a second replica, and NATS away.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	eventsv1 "github.com/agynio/users/internal/gen/agynio/users/events/v1"
	"github.com/agynio/users/internal/testing/natstest"
	"github.com/agynio/users/internal/testing/testdb"
)

// eventsStream is the stream serve creates when NATS_STREAM is unset.
const eventsStream = "USERS"

// A relay SIGKILLed between JetStream's acknowledgements of a round and
// the delete of those events, while a backlog of 2000 changes over 10
// users drains, loses no event and publishes none twice: the next relay
// publishes the rest, each user's events in the order they were made,
// and the events it publishes again JetStream drops by their
// Nats-Msg-Id.
func TestEventsSurviveARelayKilledMidRound(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	ns := natstest.Start(t)

	// The backlog, written with no relay (NATS_URL unset, the outbox
	// pruned only after a day): 10 users, 200 changes of each, so 201
	// rounds of the relay, each publishing one event of every user.
	writer, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	made := newChanges()
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = made.login(t, users, fmt.Sprintf("killed-relay-%d", i))
	}
	made.renameEach(t, users, ids, 200)
	writer.terminate(t)
	if code := writer.wait(t, waitTimeout); code != 0 {
		t.Fatalf("the writer exited with %d", code)
	}

	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// pg_stat_activity is read on a session of its own: within the lock's
	// transaction, it would show what it showed at its first read.
	watch, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	if n := outboxRows(t, conn); n != made.total() {
		t.Fatalf("outbox holds %d events after %d changes", n, made.total())
	}

	env := map[string]string{"DATABASE_URL": dbURL, "NATS_URL": ns.URL()}
	first, _ := startServe(t, env)
	within(t, 20*time.Second, "the first relay published nothing", func() bool {
		return eventsMetric(t, first, "users_events_published_total") > 0
	})
	// Mid-drain, hold its next delete: a lock that lets the relay read the
	// outbox but not delete from it, so that it stops with a round
	// acknowledged and still in the outbox. Then kill it there. Its
	// session's waiting DELETE would still run once the lock is gone, so
	// it is ended too: as if the crash had come before the DELETE reached
	// the database.
	tx, err := conn.Begin(rpcContext(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // rolled back below, or the test failed
	if _, err := tx.Exec(rpcContext(t), "LOCK TABLE outbox IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	var deleting int32
	within(t, 4*time.Second, "the first relay's delete never waited on the lock", func() bool {
		err := watch.QueryRow(rpcContext(t), `SELECT pid FROM pg_stat_activity
			WHERE $1::int = ANY(pg_blocking_pids(pid)) AND query LIKE '%DELETE FROM outbox%'`,
			conn.PgConn().PID()).Scan(&deleting)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return err == nil
	})
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(t, waitTimeout)
	var ended bool
	if err := watch.QueryRow(rpcContext(t), "SELECT pg_terminate_backend($1, 5000)", deleting).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending the killed relay's session: %v, %v", ended, err)
	}
	if err := tx.Rollback(rpcContext(t)); err != nil {
		t.Fatal(err)
	}

	// The kill came mid-drain, and some events are both in the stream and
	// in the outbox: published again, they must not be there twice.
	pending := outboxRows(t, conn)
	info, err := streamInfo(t, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("at the kill: %d events in the stream, %d in the outbox, of %d", info.State.Msgs, pending, made.total())
	if pending == 0 || info.State.Msgs == 0 {
		t.Fatalf("killed with %d events in the stream and %d in the outbox: not mid-drain", info.State.Msgs, pending)
	}
	if int(info.State.Msgs)+pending <= made.total() {
		t.Fatalf("killed with %d events in the stream and %d in the outbox, of %d: none acknowledged and not deleted",
			info.State.Msgs, pending, made.total())
	}

	second, _ := startServe(t, env)
	within(t, 20*time.Second, "the second relay left events in the outbox", func() bool {
		return eventsMetric(t, second, "users_events_pending") == 0
	})
	made.check(t, ns.Read(t, eventsStream, made.total(), 10*time.Second, 500*time.Millisecond))
}

// Two replicas on one database and one NATS: one relays (reports
// users_events_relay_leader 1, and publishes every event), the other
// waits. When the one relaying stops, the other takes over within a few
// seconds, and every change through either arrives once.
func TestEventsRelayedByOneReplicaAtATime(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	ns := natstest.Start(t)
	env := map[string]string{"DATABASE_URL": dbURL, "NATS_URL": ns.URL()}
	a, addrA := startServe(t, env)
	b, addrB := startServe(t, env)
	clients := map[*proc]usersv1.UsersServiceClient{
		a: usersv1.NewUsersServiceClient(dial(t, addrA)),
		b: usersv1.NewUsersServiceClient(dial(t, addrB)),
	}

	var leader, other *proc
	within(t, 10*time.Second, "neither replica relays", func() bool {
		leader, other = relayLeader(t, a, b)
		return leader != nil
	})

	made := newChanges()
	var ids []string
	for i, p := range []*proc{a, b, a, b} {
		ids = append(ids, made.login(t, clients[p], fmt.Sprintf("replicas-%d", i)))
	}
	made.renameEach(t, clients[a], ids[:2], 5)
	made.renameEach(t, clients[b], ids[2:], 5)
	made.check(t, ns.Read(t, eventsStream, made.total(), 10*time.Second, 300*time.Millisecond))
	if l, _ := relayLeader(t, a, b); l != leader {
		t.Fatal("the replica relaying changed with both running")
	}
	// Counted once deleted from the outbox, a moment after the stream has
	// them.
	within(t, 5*time.Second, "the replica relaying did not count every event published", func() bool {
		return eventsMetric(t, leader, "users_events_published_total") == float64(made.total())
	})
	if got := eventsMetric(t, other, "users_events_published_total"); got != 0 {
		t.Errorf("the replica not relaying published %v events, want 0", got)
	}

	before := made.total()
	leader.terminate(t)
	if code := leader.wait(t, waitTimeout); code != 0 {
		t.Fatalf("the replica relaying exited with %d", code)
	}
	ids = append(ids, made.login(t, clients[other], "replicas-after"))
	made.renameEach(t, clients[other], ids, 3)
	within(t, 5*time.Second, "the replica left did not take the relay over", func() bool {
		return eventsMetric(t, other, "users_events_relay_leader") == 1
	})
	made.check(t, ns.Read(t, eventsStream, made.total(), 10*time.Second, 300*time.Millisecond))
	within(t, 5*time.Second, "the replica that took over did not count the events made since", func() bool {
		return eventsMetric(t, other, "users_events_published_total") == float64(made.total()-before)
	})
}

// With NATS away, serve is ready and takes writes, their events waiting in
// the outbox; once NATS is back they arrive.
func TestEventsWaitForNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ns.Stop()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "NATS_URL": ns.URL()})
	waitForStatus(t, p, "/readyz", http.StatusOK)
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	made := newChanges()
	id := made.login(t, users, "nats-away")
	made.renameEach(t, users, []string{id}, 1)
	if got := eventsMetric(t, p, "users_events_pending"); got != 2 {
		t.Errorf("users_events_pending = %v with NATS away, want the 2 events made", got)
	}
	if code, body := adminGet(t, p, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with NATS away: %d %q, want 200", code, body)
	}

	ns.Restart()
	made.check(t, ns.Read(t, eventsStream, made.total(), 20*time.Second, 300*time.Millisecond))
	within(t, 5*time.Second, "events left in the outbox once published", func() bool {
		return eventsMetric(t, p, "users_events_pending") == 0
	})
}

// With NATS_URL unset, serve deletes the events older than
// OUTBOX_RETENTION, from its start on, so that the outbox stays bounded
// with no relay to empty it; younger ones stay.
func TestEventsPrunedWithoutNATS(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	writer, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	made := newChanges()
	made.login(t, users, "pruned")
	writer.terminate(t)
	if code := writer.wait(t, waitTimeout); code != 0 {
		t.Fatalf("the writer exited with %d", code)
	}
	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if n := outboxRows(t, conn); n != 1 {
		t.Fatalf("the outbox holds %d events after a first login with no relay, want 1", n)
	}

	time.Sleep(1100 * time.Millisecond) // the event is older than a second now
	pruner, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "OUTBOX_RETENTION": "1s"})
	within(t, 10*time.Second, "the event older than OUTBOX_RETENTION still in the outbox", func() bool { return outboxRows(t, conn) == 0 })
	if got := eventsMetric(t, pruner, "users_events_pruned_total"); got != 1 {
		t.Errorf("users_events_pruned_total = %v, want 1", got)
	}
	// A change now is younger than the retention, and stays until the
	// next pruning, a minute on.
	made.login(t, usersv1.NewUsersServiceClient(dial(t, addr)), "kept")
	if n := outboxRows(t, conn); n != 1 {
		t.Errorf("the outbox holds %d events after a new change, want 1", n)
	}
}

// outboxRows counts the outbox's rows, through conn.
func outboxRows(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(rpcContext(t), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// changes records the changes a test makes, to compare with the events
// the stream holds: each user's, in the order made, as the subject and
// the name the change left the user with. Every change gives its user a
// name of its own, "n-0000" at the first login, then "n-0001", ...
type changes struct {
	mu     sync.Mutex
	byUser map[string][]string
}

func newChanges() *changes { return &changes{byUser: map[string][]string{}} }

func (c *changes) record(id, subject, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byUser[id] = append(c.byUser[id], subject+" "+name)
}

// next is the name the user's next change gives it.
func (c *changes) next(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("n-%04d", len(c.byUser[id]))
}

func (c *changes) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, events := range c.byUser {
		n += len(events)
	}
	return n
}

// login makes a user by its first login and returns its id.
func (c *changes) login(t *testing.T, users usersv1.UsersServiceClient, subject string) string {
	t.Helper()
	id := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Name: "n-0000"}).GetMeta().GetId()
	c.record(id, "agyn.users.user.created", "n-0000")
	return id
}

// renameEach renames each user n times: the users side by side, each
// user's renames one after the other.
func (c *changes) renameEach(t *testing.T, users usersv1.UsersServiceClient, ids []string, n int) {
	t.Helper()
	ctx := rpcContext(t)
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() {
			for range n {
				name := c.next(id)
				if _, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: id, Name: &name}); err != nil {
					errs[i] = fmt.Errorf("UpdateUser(%s, name %s): %w", id, name, err)
					return
				}
				c.record(id, "agyn.users.user.updated", name)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// check compares the stream's messages with the changes made: each event
// once, its id its Nats-Msg-Id, and each user's in the order made.
func (c *changes) check(t *testing.T, msgs []jetstream.Msg) {
	t.Helper()
	got := map[string][]string{}
	seen := map[string]bool{}
	var twice, misnamed []string
	for _, m := range msgs {
		var payload interface {
			proto.Message
			GetEvent() *eventsv1.Event
			GetUser() *eventsv1.User
		}
		switch m.Subject() {
		case "agyn.users.user.created":
			payload = &eventsv1.UserCreated{}
		case "agyn.users.user.updated":
			payload = &eventsv1.UserUpdated{}
		default:
			t.Fatalf("a message on %s, which no change of the test publishes", m.Subject())
		}
		if err := proto.Unmarshal(m.Data(), payload); err != nil {
			t.Fatalf("%s: %v", m.Subject(), err)
		}
		id := payload.GetEvent().GetId()
		if seen[id] {
			twice = append(twice, id)
		}
		seen[id] = true
		if msgID := m.Headers().Get(jetstream.MsgIDHeader); msgID != id {
			misnamed = append(misnamed, fmt.Sprintf("%s with Nats-Msg-Id %q", id, msgID))
		}
		user := payload.GetEvent().GetIdentityId()
		got[user] = append(got[user], m.Subject()+" "+payload.GetUser().GetName())
	}
	if len(twice) > 0 {
		t.Errorf("%d events in the stream more than once, the first %s", len(twice), twice[0])
	}
	if len(misnamed) > 0 {
		t.Errorf("%d events whose Nats-Msg-Id is not their id, the first %s", len(misnamed), misnamed[0])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if diff := cmp.Diff(c.byUser, got); diff != "" {
		t.Errorf("each user's events in the stream, %d messages (-want +got):\n%s", len(msgs), diff)
	}
}

// eventsMetric is the value of one of the outbox's metrics, which have no
// labels, on p's /metrics.
func eventsMetric(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	v, ok := metricValue(scrapeMetrics(t, p), name, nil)
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	return v
}

// relayLeader is the one of a and b that reports it relays, and the
// other; nil and nil if neither does. It fails the test if both do.
func relayLeader(t *testing.T, a, b *proc) (leader, other *proc) {
	t.Helper()
	la, lb := eventsMetric(t, a, "users_events_relay_leader"), eventsMetric(t, b, "users_events_relay_leader")
	switch {
	case la == 1 && lb == 1:
		t.Fatal("both replicas report users_events_relay_leader 1")
	case la == 1 && lb == 0:
		return a, b
	case lb == 1 && la == 0:
		return b, a
	case la != 0 || lb != 0:
		t.Fatalf("users_events_relay_leader %v and %v, want 0 or 1", la, lb)
	}
	return nil, nil
}

func streamInfo(t *testing.T, ns *natstest.Server) (*jetstream.StreamInfo, error) {
	t.Helper()
	s, err := ns.JetStream(t).Stream(rpcContext(t), eventsStream)
	if err != nil {
		return nil, err
	}
	return s.Info(rpcContext(t))
}
