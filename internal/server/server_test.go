package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// ignoreMeta compares users by content; meta is checked separately.
var ignoreMeta = protocmp.IgnoreFields(&usersv1.User{}, "meta")

func TestResolveOrCreateUserCreatesThenResolves(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	req := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: "auth0|alice",
		Name:        "Alice",
		Email:       "alice@example.com",
		PhotoUrl:    "https://example.com/alice.png",
	}

	before := time.Now().Add(-time.Minute)
	first, err := e.client.ResolveOrCreateUser(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !first.GetCreated() {
		t.Error("first call: created = false, want true")
	}
	// With no preferred_username claim, the username comes from the
	// email's local part.
	want := &usersv1.User{OidcSubject: "auth0|alice", Name: "Alice", Email: "alice@example.com", PhotoUrl: "https://example.com/alice.png", Username: "alice"}
	if diff := cmp.Diff(want, first.GetUser(), protocmp.Transform(), ignoreMeta); diff != "" {
		t.Errorf("created user (-want +got):\n%s", diff)
	}
	id, err := uuid.Parse(first.GetUser().GetMeta().GetId())
	if err != nil || id.Version() != 7 {
		t.Errorf("identity id %q: want a UUIDv7 (err %v)", first.GetUser().GetMeta().GetId(), err)
	}
	if c := first.GetUser().GetMeta().GetCreatedAt().AsTime(); c.Before(before) {
		t.Errorf("created_at %v is implausible", c)
	}

	// A second login with different claims returns the stored user as it
	// was: claims are taken only at first login.
	req2 := proto.CloneOf(req)
	req2.Name, req2.Email, req2.PhotoUrl = "Mallory", "mallory@example.com", ""
	second, err := e.client.ResolveOrCreateUser(t.Context(), req2)
	if err != nil {
		t.Fatal(err)
	}
	if second.GetCreated() {
		t.Error("second call: created = true, want false")
	}
	if diff := cmp.Diff(first.GetUser(), second.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("second call changed the user (-first +second):\n%s", diff)
	}
	if n := e.countUsers(t); n != 1 {
		t.Errorf("users rows = %d, want 1", n)
	}
}

func TestResolveOrCreateUserAcceptsMinimalClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
	// With no claim to derive it from, the username comes from the subject.
	want := &usersv1.User{OidcSubject: "s", Username: derivedFromSubject("s")}
	if diff := cmp.Diff(want, u, protocmp.Transform(), ignoreMeta); diff != "" {
		t.Errorf("user (-want +got):\n%s", diff)
	}
}

// Every first login of one subject racing the others succeeds with the
// same identity id, and exactly one reports created.
func TestResolveOrCreateUserConcurrentFirstLogins(t *testing.T) {
	t.Parallel()
	const n = 64
	// As many connections as callers, so that they really race in the
	// database rather than queue for a connection.
	pool, err := pgxpool.New(t.Context(), testdb.WithQuery(t, testdb.URL(t), "pool_max_conns", "64"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnvOn(t, pool)

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		resps   = make([]*usersv1.ResolveOrCreateUserResponse, n)
		errs    = make([]error, n)
		subject = "google-oauth2|" + uuid.NewString()
	)
	for i := range n {
		wg.Go(func() {
			<-start
			resps[i], errs[i] = e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: subject, Name: "Racer",
			})
		})
	}
	close(start)
	wg.Wait()

	created := 0
	ids := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if resps[i].GetCreated() {
			created++
		}
		ids[resps[i].GetUser().GetMeta().GetId()]++
	}
	if created != 1 {
		t.Errorf("%d calls reported created, want exactly 1", created)
	}
	if len(ids) != 1 {
		t.Errorf("calls returned %d distinct identity ids, want 1: %v", len(ids), ids)
	}
	if got := e.countUsers(t); got != 1 {
		t.Errorf("users rows = %d, want 1", got)
	}
}

// A first login that meets another one's uncommitted insert of the same
// subject, made deterministic: the other insert is still open when the
// login starts, so the login's statement snapshot cannot see it, and the
// login's INSERT waits for it. If it commits, the login lost the race and
// the fallback read must return the winner's row; if it rolls back, the
// login's own insert goes ahead and creates the user.
func TestResolveOrCreateUserMeetingAConcurrentFirstLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		commit      bool
		wantCreated bool
		wantName    string
	}{
		{"a winner that commits is returned, not created", true, false, "Winner"},
		{"a winner that rolls back leaves the login to create the user", false, true, "Loser"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			pool := e.conn.(*pgxpool.Pool)
			winner := uuid.Must(uuid.NewV7())

			tx, err := pool.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background()) //nolint:errcheck // ended below
			if _, err := tx.Exec(t.Context(), "INSERT INTO users (identity_id, oidc_subject, name) VALUES ($1, 'racer', 'Winner')", winner); err != nil {
				t.Fatal(err)
			}

			type result struct {
				resp *usersv1.ResolveOrCreateUserResponse
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "racer", Name: "Loser"})
				done <- result{resp, err}
			}()

			// Wait until the login's INSERT is blocked on the winner's row.
			deadline := time.Now().Add(10 * time.Second)
			for blocked := false; !blocked; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the login never blocked on the uncommitted insert")
				}
				if err := pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&blocked); err != nil {
					t.Fatal(err)
				}
			}
			end := tx.Rollback
			if tt.commit {
				end = tx.Commit
			}
			if err := end(t.Context()); err != nil {
				t.Fatal(err)
			}

			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			got := r.resp
			if got.GetCreated() != tt.wantCreated || got.GetUser().GetName() != tt.wantName ||
				(got.GetUser().GetMeta().GetId() == winner.String()) != tt.commit {
				t.Errorf("got created=%v %v, want created=%v and the row named %q (the winner's id %s: %v)",
					got.GetCreated(), got.GetUser(), tt.wantCreated, tt.wantName, winner, tt.commit)
			}
			if n := e.countUsers(t); n != 1 {
				t.Errorf("users rows = %d, want 1", n)
			}
		})
	}
}

func TestGetUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "sub-1", Name: "One"})

	resp, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u, resp.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("GetUser (-want +got):\n%s", diff)
	}

	_, err = e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	wantCode(t, err, codes.NotFound)
}

func TestGetUserByOIDCSubject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "github|42", Email: "x@example.org"})

	resp, err := e.client.GetUserByOIDCSubject(t.Context(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "github|42"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u, resp.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("GetUserByOIDCSubject (-want +got):\n%s", diff)
	}

	_, err = e.client.GetUserByOIDCSubject(t.Context(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "github|43"})
	wantCode(t, err, codes.NotFound)
}

func TestBatchGetUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "a", Name: "A"})
	b := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "b", Name: "B"})
	c := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c", Name: "C"})
	id := func(u *usersv1.User) string { return u.GetMeta().GetId() }
	missing := uuid.NewString()

	tests := []struct {
		name string
		ids  []string
		want []*usersv1.User
	}{
		{"an empty list returns no users", nil, nil},
		{"users come back in request order, not insertion order", []string{id(c), id(a), id(b)}, []*usersv1.User{c, a, b}},
		{"missing ids are omitted", []string{missing, id(b), uuid.NewString()}, []*usersv1.User{b}},
		{"a duplicated id returns its user once, at its first occurrence", []string{id(b), id(a), id(b), id(a)}, []*usersv1.User{b, a}},
		{"only missing ids return no users", []string{missing}, nil},
		{"upper-case ids are accepted", []string{strings.ToUpper(id(a))}, []*usersv1.User{a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client.BatchGetUsers(t.Context(), &usersv1.BatchGetUsersRequest{IdentityIds: tt.ids})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, resp.GetUsers(), protocmp.Transform()); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
		})
	}
}

// A full batch: 40 users asked for in shuffled order, each of them twice,
// among 20 ids with no user, come back once each in the order of their
// first occurrence, whatever order the statement read them in.
func TestBatchGetUsersTakesAHundredIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	users := make([]*usersv1.User, 40)
	for i := range users {
		users[i] = e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("user-%d", i)})
	}
	var ids []string
	for _, u := range users {
		ids = append(ids, u.GetMeta().GetId(), u.GetMeta().GetId())
	}
	for range 20 {
		ids = append(ids, uuid.NewString())
	}
	rng := rand.New(rand.NewPCG(7, 7))
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })

	byID := map[string]*usersv1.User{}
	for _, u := range users {
		byID[u.GetMeta().GetId()] = u
	}
	var want []*usersv1.User
	for _, id := range ids {
		if u, ok := byID[id]; ok {
			want = append(want, u)
			delete(byID, id)
		}
	}

	resp, err := e.client.BatchGetUsers(t.Context(), &usersv1.BatchGetUsersRequest{IdentityIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, resp.GetUsers(), protocmp.Transform()); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}
}

func TestUpdateUser(t *testing.T) {
	t.Parallel()
	orig := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: "subject", Name: "Old Name", Email: "old@example.com", PhotoUrl: "http://example.com/old.png",
	}
	tests := []struct {
		name string
		req  *usersv1.UpdateUserRequest
		want *usersv1.User
	}{
		{
			name: "setting one field leaves the others alone",
			req:  &usersv1.UpdateUserRequest{Name: proto.String("New Name")},
			want: &usersv1.User{OidcSubject: "subject", Name: "New Name", Email: "old@example.com", PhotoUrl: "http://example.com/old.png", Username: "old"},
		},
		{
			name: "setting every field replaces them all",
			req: &usersv1.UpdateUserRequest{
				Name: proto.String("N"), Email: proto.String("n@example.com"), PhotoUrl: proto.String("https://cdn.example.com/n.jpg"),
				Nickname: proto.String("Nick"), Username: proto.String("n_2"),
			},
			want: &usersv1.User{OidcSubject: "subject", Name: "N", Email: "n@example.com", PhotoUrl: "https://cdn.example.com/n.jpg", Nickname: "Nick", Username: "n_2"},
		},
		{
			name: "setting the username the user has already is no conflict",
			req:  &usersv1.UpdateUserRequest{Username: proto.String("old")},
			want: &usersv1.User{OidcSubject: "subject", Name: "Old Name", Email: "old@example.com", PhotoUrl: "http://example.com/old.png", Username: "old"},
		},
		{
			name: "a field set to the empty string is cleared",
			req:  &usersv1.UpdateUserRequest{Email: proto.String(""), PhotoUrl: proto.String("")},
			want: &usersv1.User{OidcSubject: "subject", Name: "Old Name", Username: "old"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			u := e.createUser(t, orig)
			tt.req.IdentityId = u.GetMeta().GetId()

			resp, err := e.client.UpdateUser(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := resp.GetUser()
			if diff := cmp.Diff(tt.want, got, protocmp.Transform(), ignoreMeta); diff != "" {
				t.Errorf("updated user (-want +got):\n%s", diff)
			}
			if got.GetMeta().GetId() != u.GetMeta().GetId() {
				t.Errorf("identity id changed: %s -> %s", u.GetMeta().GetId(), got.GetMeta().GetId())
			}
			if !got.GetMeta().GetCreatedAt().AsTime().Equal(u.GetMeta().GetCreatedAt().AsTime()) {
				t.Errorf("created_at changed: %v -> %v", u.GetMeta().GetCreatedAt().AsTime(), got.GetMeta().GetCreatedAt().AsTime())
			}
			if !got.GetMeta().GetUpdatedAt().AsTime().After(u.GetMeta().GetUpdatedAt().AsTime()) {
				t.Errorf("updated_at did not move forward: %v -> %v", u.GetMeta().GetUpdatedAt().AsTime(), got.GetMeta().GetUpdatedAt().AsTime())
			}

			// The change is stored, not just echoed.
			stored, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, stored.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("stored user differs from the response (-response +stored):\n%s", diff)
			}
		})
	}
}

// updated_at never goes backwards, even after the server's clock has: a
// stored updated_at ahead of now() (as after such a step) still advances.
func TestUpdateUserMovesUpdatedAtForwardPastAClockStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := e.conn.Exec(t.Context(), "UPDATE users SET updated_at = $1", future); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.UpdateUser(t.Context(), &usersv1.UpdateUserRequest{IdentityId: u.GetMeta().GetId(), Name: proto.String("n")})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetUser().GetMeta().GetUpdatedAt().AsTime(); !got.After(future) {
		t.Errorf("updated_at = %v, want after %v", got, future)
	}
}

func TestUpdateUserNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.client.UpdateUser(t.Context(), &usersv1.UpdateUserRequest{IdentityId: uuid.NewString(), Name: proto.String("x")})
	wantCode(t, err, codes.NotFound)
	if n := e.countUsers(t); n != 0 {
		t.Errorf("users rows = %d, want 0", n)
	}
}
