package server_test

import (
	"context"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testctx"
	"github.com/agynio/users/internal/testing/testdb"
)

// gate is a pgx tracer that counts statements and can hold the next one
// at its start, on the connection it was given, until the test lets it
// go: it fills the service's one read slot, so that the calls after it
// queue and are coalesced.
type gate struct {
	statementCounter
	mu       sync.Mutex
	hold     chan struct{} // the next statement waits until it is closed
	held     chan struct{} // receives once that statement waits
	lastArgs []any         // the arguments of the last statement
}

func newGate() *gate { return &gate{held: make(chan struct{}, 1)} }

func (g *gate) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	ctx = g.statementCounter.TraceQueryStart(ctx, conn, data)
	g.mu.Lock()
	hold := g.hold
	g.hold = nil
	g.lastArgs = data.Args
	g.mu.Unlock()
	if hold != nil {
		g.held <- struct{}{}
		<-hold
	}
	return ctx
}

// holdNext makes the next statement wait until release.
func (g *gate) holdNext() (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.hold = ch
	g.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (g *gate) args() []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastArgs
}

// newCoalescingEnv serves with one point read of each kind at a time, on
// a pool of url traced by g.
func newCoalescingEnv(t *testing.T, url string, g *gate) *env {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = g
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return newEnvFor(t, pool, func(log *slog.Logger) *server.Server {
		return server.New(pool, identity.Local{}, log, server.WithReadsInFlight(1))
	})
}

// waitQueued waits until n point reads are queued.
func waitQueued(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for server.QueuedReads(e.srv) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads queued, want %d", server.QueuedReads(e.srv), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// outcome is what a call returned.
type outcome[T any] struct {
	resp T
	err  error
}

func async[T any](f func() (T, error)) <-chan outcome[T] {
	ch := make(chan outcome[T], 1)
	go func() {
		resp, err := f()
		ch <- outcome[T]{resp, err}
	}()
	return ch
}

// TestCoalescedGetUserAnswersEachCallerAsAlone queues GetUser calls behind
// a held one and checks that each caller gets what an unqueued call would
// have: its user, NOT_FOUND, or its own deadline or cancellation, at once;
// and that the queue costs one statement, which leaves out the callers
// that have gone.
func TestCoalescedGetUserAnswersEachCallerAsAlone(t *testing.T) {
	t.Parallel()
	g := newGate()
	e := newCoalescingEnv(t, testdb.URL(t), g)
	alice := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|alice", Name: "Alice"})
	bob := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|bob", Name: "Bob"})
	get := func(ctx context.Context, id string) func() (*usersv1.GetUserResponse, error) {
		return func() (*usersv1.GetUserResponse, error) {
			return e.srv.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: id})
		}
	}

	release := g.holdNext()
	defer release()
	first := async(get(t.Context(), alice.GetMeta().GetId()))
	<-g.held

	shortCtx := testctx.NewExpiring(t.Context())
	goneCtx, cancelGone := context.WithCancel(t.Context())
	short := async(get(shortCtx, bob.GetMeta().GetId()))
	gone := async(get(goneCtx, bob.GetMeta().GetId()))
	forAlice := async(get(t.Context(), alice.GetMeta().GetId()))
	forBob := async(get(t.Context(), bob.GetMeta().GetId()))
	missing := async(get(t.Context(), uuid.Must(uuid.NewV7()).String()))
	waitQueued(t, e, 5)

	// Gone while queued, the statement before them still held: they
	// answer now, as an unqueued call whose statement ran too long would.
	cancelGone()
	shortCtx.Expire()
	wantCode(t, (<-gone).err, codes.Canceled)
	wantCode(t, (<-short).err, codes.DeadlineExceeded)

	statements, _ := g.counted(func() {
		release()
		for _, c := range []struct {
			got  <-chan outcome[*usersv1.GetUserResponse]
			want *usersv1.User
		}{{first, alice}, {forAlice, alice}, {forBob, bob}} {
			o := <-c.got
			if o.err != nil {
				t.Fatalf("GetUser(%s): %v", c.want.GetName(), o.err)
			}
			if diff := cmp.Diff(c.want, o.resp.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("GetUser(%s) (-want +got):\n%s", c.want.GetName(), diff)
			}
		}
		wantCode(t, (<-missing).err, codes.NotFound)
	})
	if statements != 1 {
		t.Errorf("%d statements after the held one, want 1 for the three queued callers left", statements)
	}
	if args := g.args(); len(args) != 1 || len(args[0].([]uuid.UUID)) != 3 {
		t.Errorf("the coalesced statement read %v, want the 3 ids of the callers still waiting", args)
	}
}

// TestCoalescedGetUserByOIDCSubjectIsOneStatement does the same for the
// gateway's read: one statement for the whole queue, each caller its own
// user or NOT_FOUND.
func TestCoalescedGetUserByOIDCSubjectIsOneStatement(t *testing.T) {
	t.Parallel()
	g := newGate()
	e := newCoalescingEnv(t, testdb.URL(t), g)
	subjects := []string{"auth0|a", "auth0|b", "auth0|c"}
	want := map[string]*usersv1.User{}
	for _, s := range subjects {
		want[s] = e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: s})
	}
	get := func(subject string) func() (*usersv1.GetUserByOIDCSubjectResponse, error) {
		return func() (*usersv1.GetUserByOIDCSubjectResponse, error) {
			return e.client.GetUserByOIDCSubject(t.Context(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: subject})
		}
	}

	release := g.holdNext()
	defer release()
	first := async(get("auth0|a"))
	<-g.held
	queued := map[string]<-chan outcome[*usersv1.GetUserByOIDCSubjectResponse]{}
	for _, s := range append(subjects, "auth0|nobody") {
		queued[s] = async(get(s))
	}
	waitQueued(t, e, len(queued))

	statements, _ := g.counted(func() {
		release()
		if o := <-first; o.err != nil {
			t.Fatal(o.err)
		}
		for s, ch := range queued {
			o := <-ch
			if want[s] == nil {
				wantCode(t, o.err, codes.NotFound)
				continue
			}
			if o.err != nil {
				t.Fatalf("GetUserByOIDCSubject(%s): %v", s, o.err)
			}
			if diff := cmp.Diff(want[s], o.resp.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("GetUserByOIDCSubject(%s) (-want +got):\n%s", s, diff)
			}
		}
	})
	if statements != 1 {
		t.Errorf("%d statements after the held one, want 1 for the queue of %d", statements, len(queued))
	}
}

// TestCoalescedReadGetsTheDatabasesErrorAsAlone cuts the database while
// calls are queued: each gets UNAVAILABLE, as a call that is not queued
// does.
func TestCoalescedReadGetsTheDatabasesErrorAsAlone(t *testing.T) {
	t.Parallel()
	real, err := url.Parse(testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpproxy.Start(real.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	viaProxy := *real
	viaProxy.Host = proxy.Addr()
	g := newGate()
	e := newCoalescingEnv(t, testdb.WithQuery(t, viaProxy.String(), "connect_timeout", "1"), g)
	alice := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|alice"})
	get := func() (*usersv1.GetUserResponse, error) {
		return e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: alice.GetMeta().GetId()})
	}

	release := g.holdNext()
	defer release()
	first := async(get)
	<-g.held
	queued := []<-chan outcome[*usersv1.GetUserResponse]{async(get), async(get)}
	waitQueued(t, e, len(queued))
	proxy.Cut()
	release()

	wantCode(t, (<-first).err, codes.Unavailable)
	for _, ch := range queued {
		wantCode(t, (<-ch).err, codes.Unavailable)
	}
	_, err = get() // alone
	wantCode(t, err, codes.Unavailable)
}

// TestCoalescedLoginsReadKnownSubjectsTogether queues logins behind a held
// one: the known subjects are answered by one shared read, with the
// stored profile and created = false; a new subject runs its own upsert
// and is created; a caller that has gone is answered at once.
func TestCoalescedLoginsReadKnownSubjectsTogether(t *testing.T) {
	t.Parallel()
	g := newGate()
	e := newCoalescingEnv(t, testdb.URL(t), g)
	alice := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|alice", Name: "Alice"})
	bob := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|bob", Name: "Bob"})
	login := func(ctx context.Context, subject, name string) func() (*usersv1.ResolveOrCreateUserResponse, error) {
		return func() (*usersv1.ResolveOrCreateUserResponse, error) {
			return e.srv.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Name: name})
		}
	}

	release := g.holdNext()
	defer release()
	first := async(login(t.Context(), "auth0|alice", "Not Alice"))
	<-g.held
	goneCtx, cancelGone := context.WithCancel(t.Context())
	gone := async(login(goneCtx, "auth0|carol", "Carol"))
	forAlice := async(login(t.Context(), "auth0|alice", "Not Alice"))
	forBob := async(login(t.Context(), "auth0|bob", "Not Bob"))
	forDave := async(login(t.Context(), "auth0|dave", "Dave"))
	waitQueued(t, e, 4)
	cancelGone()
	wantCode(t, (<-gone).err, codes.Canceled)

	statements, _ := g.counted(func() {
		release()
		for _, c := range []struct {
			got  <-chan outcome[*usersv1.ResolveOrCreateUserResponse]
			want *usersv1.User
		}{{first, alice}, {forAlice, alice}, {forBob, bob}} {
			o := <-c.got
			if o.err != nil {
				t.Fatalf("login of %s: %v", c.want.GetName(), o.err)
			}
			if o.resp.GetCreated() {
				t.Errorf("login of %s: created = true for a known subject", c.want.GetName())
			}
			if diff := cmp.Diff(c.want, o.resp.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("login of %s: not the stored user (-want +got):\n%s", c.want.GetName(), diff)
			}
		}
		o := <-forDave
		if o.err != nil || !o.resp.GetCreated() || o.resp.GetUser().GetName() != "Dave" {
			t.Errorf("first login of dave = %v, %v; want Dave, created", o.resp, o.err)
		}
	})
	if statements != 2 {
		t.Errorf("%d statements after the held one, want 2: one read for the queue, dave's own upsert", statements)
	}
	if n := e.countUsers(t); n != 3 {
		t.Errorf("%d users, want 3: carol's login had gone before it ran", n)
	}
}
