package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// anyCaller calls as some user: SearchUsers needs a caller, whoever it is.
func anyCaller(t *testing.T) context.Context {
	return asCaller(t.Context(), uuid.NewString())
}

func TestSearchUsersNeedsACaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"a call without x-identity-id is unauthenticated", t.Context()},
		{"a call with an x-identity-id that is no UUID is unauthenticated", asCaller(t.Context(), "alice")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The prefix is malformed too: who calls is asked first.
			_, err := e.client.SearchUsers(tc.ctx, &usersv1.SearchUsersRequest{Prefix: "A"})
			wantCode(t, err, codes.Unauthenticated)
		})
	}
}

func TestSearchUsersValidatesPrefixAndLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		req    *usersv1.SearchUsersRequest
		fields []string
	}{
		{"an empty prefix is refused", &usersv1.SearchUsersRequest{Prefix: ""}, []string{"prefix"}},
		{"a prefix of 33 characters is refused", &usersv1.SearchUsersRequest{Prefix: strings.Repeat("a", 33)}, []string{"prefix"}},
		{"an upper-case prefix is refused", &usersv1.SearchUsersRequest{Prefix: "Al"}, []string{"prefix"}},
		{"a prefix with a space is refused", &usersv1.SearchUsersRequest{Prefix: "a b"}, []string{"prefix"}},
		{"a prefix with a LIKE wildcard is refused", &usersv1.SearchUsersRequest{Prefix: "a%"}, []string{"prefix"}},
		{"a prefix with the range's upper bound is refused", &usersv1.SearchUsersRequest{Prefix: "a~"}, []string{"prefix"}},
		{"a prefix with a non-ASCII letter is refused", &usersv1.SearchUsersRequest{Prefix: "zoë"}, []string{"prefix"}},
		{"a limit of 21 is refused", &usersv1.SearchUsersRequest{Prefix: "a", Limit: 21}, []string{"limit"}},
		{"a limit of -1 is refused", &usersv1.SearchUsersRequest{Prefix: "a", Limit: -1}, []string{"limit"}},
		{"the least limit is refused", &usersv1.SearchUsersRequest{Prefix: "a", Limit: math.MinInt32}, []string{"limit"}},
		{"a bad prefix and a bad limit are both named", &usersv1.SearchUsersRequest{Prefix: "A", Limit: 100}, []string{"prefix", "limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.SearchUsers(anyCaller(t), tc.req)
			wantViolations(t, err, tc.fields...)
		})
	}
}

func TestSearchUsersPutsTheExactMatchFirstThenByUsername(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Created out of order, so that no result's order is the order of
	// creation; "ak", "am" and "bal" are near misses.
	entries := map[string]*usersv1.UserDirectoryEntry{}
	for _, name := range []string{"alb", "al_x", "ak", "ala", "al-2", "am", "bal", "al"} {
		u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{
			OidcSubject:       "auth0|" + name,
			PreferredUsername: new(name),
			Name:              "Name of " + name,
			Email:             name + "@example.com",
			PhotoUrl:          "https://example.com/" + name + ".png",
		})
		entries[name] = &usersv1.UserDirectoryEntry{
			IdentityId: u.GetMeta().GetId(),
			Username:   u.GetUsername(),
			Name:       u.GetName(),
			PhotoUrl:   u.GetPhotoUrl(),
		}
	}
	for _, tc := range []struct {
		name   string
		prefix string
		limit  int32
		want   []string
	}{
		// Byte order: "-" < "_" < letters, and the exact match is the least
		// of all that start with it.
		{"the exact match comes first, then byte order", "al", 0, []string{"al", "al-2", "al_x", "ala", "alb"}},
		{"the limit keeps the first in order", "al", 2, []string{"al", "al-2"}},
		{"a limit of 1 is the exact match", "al", 1, []string{"al"}},
		{"a prefix without an exact match starts at the next", "a", 0, []string{"ak", "al", "al-2", "al_x", "ala", "alb", "am"}},
		{"an underscore in the prefix is itself, not a wildcard", "al_", 0, []string{"al_x"}},
		{"a dash in the prefix is itself", "al-", 0, []string{"al-2"}},
		{"a whole username finds only itself when nothing extends it", "alb", 0, []string{"alb"}},
		{"a prefix that matches nothing finds nothing", "zz", 0, nil},
		{"a prefix longer than any username finds nothing", "alb-and-more", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client.SearchUsers(anyCaller(t), &usersv1.SearchUsersRequest{Prefix: tc.prefix, Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			// Whole entries: they hold the id, username, name and photo,
			// and none of what only the user or an administrator sees
			// (subject, email).
			var want []*usersv1.UserDirectoryEntry
			for _, name := range tc.want {
				want = append(want, entries[name])
			}
			if diff := cmp.Diff(want, resp.GetUsers(), protocmp.Transform()); diff != "" {
				t.Errorf("SearchUsers(%q, %d) (-want +got):\n%s", tc.prefix, tc.limit, diff)
			}
		})
	}
}

func TestSearchUsersLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	names := []string{"many"}
	for i := 1; i <= 24; i++ {
		names = append(names, fmt.Sprintf("many-%02d", i))
	}
	seedUsernames(t, e, names...)
	for _, tc := range []struct {
		name  string
		limit int32
		want  []string
	}{
		{"a limit of 0 means 10", 0, names[:10]},
		{"a limit of 20 is taken", 20, names[:20]},
		{"a limit of 1 is taken", 1, names[:1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client.SearchUsers(anyCaller(t), &usersv1.SearchUsersRequest{Prefix: "many", Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range resp.GetUsers() {
				got = append(got, u.GetUsername())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("usernames (-want +got):\n%s", diff)
			}
		})
	}
}

// recordingConn records the text of every query run through it: the plan
// test explains exactly what the service sends.
type recordingConn struct {
	db.DBTX
	mu      sync.Mutex
	queries []string
}

func (r *recordingConn) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.mu.Lock()
	r.queries = append(r.queries, sql)
	r.mu.Unlock()
	return r.DBTX.Query(ctx, sql, args...)
}

func (r *recordingConn) find(t *testing.T, name string) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.queries {
		if strings.HasPrefix(q, "-- name: "+name+" ") {
			return q
		}
	}
	t.Fatalf("no query %s was run; ran %q", name, r.queries)
	return ""
}

// The directory must stay an index range scan however many users there
// are: a sequential scan would read the whole table at every keystroke of
// an @-mention. Both plans PostgreSQL may use for the service's prepared
// statement are checked: the custom plan of each call's values, and the
// generic plan it switches to after five calls when that looks no worse.
func TestSearchUsersPlanIsAnIndexRangeScan(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	rec := &recordingConn{DBTX: pool}
	e := newEnvFor(t, pool, func(log *slog.Logger) *server.Server { return server.New(rec, randomIDs{}, log) })

	// Usernames are given, which skips deriving one per row. As the
	// table's owner: the service's role ends a statement after 10 s and
	// may not ANALYZE.
	const rows = 200_000
	owner := asOwner(t, pool)
	if _, err := owner.Exec(t.Context(), `
		INSERT INTO users (identity_id, oidc_subject, username)
		SELECT gen_random_uuid(), 'plan|' || i, 'u' || i FROM generate_series(1, $1::int) i`, rows); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(t.Context(), "ANALYZE users"); err != nil {
		t.Fatal(err)
	}

	resp, err := e.client.SearchUsers(anyCaller(t), &usersv1.SearchUsersRequest{Prefix: "u19999"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range resp.GetUsers() {
		got = append(got, u.GetUsername())
	}
	want := []string{"u19999", "u199990", "u199991", "u199992", "u199993", "u199994", "u199995", "u199996", "u199997", "u199998"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SearchUsers(u19999) (-want +got):\n%s", diff)
	}
	query := rec.find(t, "SearchUsers")

	// A connection of its own, out of the pool, for its session settings.
	pc, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn := pc.Hijack()
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), "PREPARE search AS "+query); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := conn.Exec(t.Context(), "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		// From a prefix every username has to one none has.
		for _, prefix := range []string{"u", "u1", "u1999", "u199999", "zz"} {
			for _, limit := range []int{1, 20} {
				var plan string
				err := conn.QueryRow(t.Context(), fmt.Sprintf("EXPLAIN (FORMAT JSON) EXECUTE search('%s', %d)", prefix, limit)).Scan(&plan)
				if err != nil {
					t.Fatal(err)
				}
				if problem := notAUsernameRangeScan(t, plan); problem != "" {
					t.Errorf("%s, prefix %q, limit %d: %s; plan:\n%s", mode, prefix, limit, problem, plan)
				}
			}
		}
	}
}

// planNode is what the plan test reads of a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Index     string     `json:"Index Name"`
	IndexCond string     `json:"Index Cond"`
	Filter    string     `json:"Filter"`
	Plans     []planNode `json:"Plans"`
}

// notAUsernameRangeScan says what keeps plan from reading users by one
// range of users_username_key, bounded on both sides, and nothing else;
// "" if nothing does. A scan of the index in order with the bounds as a
// filter would have no Seq Scan either, but read the index from its start.
func notAUsernameRangeScan(t *testing.T, plan string) string {
	t.Helper()
	var root []struct{ Plan planNode }
	if err := json.Unmarshal([]byte(plan), &root); err != nil || len(root) != 1 {
		t.Fatalf("EXPLAIN output: %v", err)
	}
	var scans []planNode
	var visit func(n planNode)
	visit = func(n planNode) {
		if n.Relation != "" {
			scans = append(scans, n)
		}
		for _, c := range n.Plans {
			visit(c)
		}
	}
	visit(root[0].Plan)
	switch {
	case len(scans) != 1:
		return fmt.Sprintf("%d scans of tables, want 1", len(scans))
	case scans[0].NodeType != "Index Scan" && scans[0].NodeType != "Index Only Scan":
		return fmt.Sprintf("a %s, want an Index Scan", scans[0].NodeType)
	case scans[0].Index != "users_username_key":
		return fmt.Sprintf("a scan of %q, want users_username_key", scans[0].Index)
	case !strings.Contains(scans[0].IndexCond, "username >=") || !strings.Contains(scans[0].IndexCond, "username <"):
		return fmt.Sprintf("index condition %q, want both bounds of the range", scans[0].IndexCond)
	case scans[0].Filter != "":
		return fmt.Sprintf("a filter %q on the scan, want none", scans[0].Filter)
	}
	return ""
}

// randomIDs allocates version 4 ids, spread over the whole key space,
// where the service's own are time-ordered: new users then land before
// and after a ListUsers walk's position, not only at its end.
type randomIDs struct{}

func (randomIDs) NewIdentityID(context.Context, string) (uuid.UUID, error) { return uuid.New(), nil }

// newListEnv serves with the declared administrator "root", logged in,
// and n more users inserted directly; it returns the administrator's
// context.
func newListEnv(t *testing.T, n int) (*env, context.Context) {
	t.Helper()
	conn := testdb.New(t)
	e := newEnvFor(t, conn, func(log *slog.Logger) *server.Server {
		return server.New(conn, randomIDs{}, log, server.WithDeclaredAdmins([]string{"root"}))
	})
	ctx := e.admin(t, "root")
	if _, err := conn.Exec(t.Context(), `
		INSERT INTO users (identity_id, oidc_subject, username, name)
		SELECT gen_random_uuid(), 'list|' || i, 'l' || i, 'User ' || i FROM generate_series(1, $1::int) i`, n); err != nil {
		t.Fatal(err)
	}
	return e, ctx
}

// allIDs returns every identity id in the table, in id order.
func (e *env) allIDs(t *testing.T) []string {
	t.Helper()
	rows, err := e.conn.Query(t.Context(), "SELECT identity_id::text FROM users ORDER BY identity_id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestListUsersIsForAdministrators(t *testing.T) {
	t.Parallel()
	e, admin := newListEnv(t, 0)
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain"})
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"a call without a caller is unauthenticated", t.Context(), codes.Unauthenticated},
		{"a call from a malformed identity is unauthenticated", asCaller(t.Context(), "root"), codes.Unauthenticated},
		{"a call from a user who is no administrator is denied", asCaller(t.Context(), plain.GetMeta().GetId()), codes.PermissionDenied},
		{"a call from an unknown identity is denied", anyCaller(t), codes.PermissionDenied},
		{"a call from an administrator is answered", admin, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.ListUsers(tc.ctx, &usersv1.ListUsersRequest{})
			if tc.want == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tc.want)
		})
	}
}

func TestListUsersPageSize(t *testing.T) {
	t.Parallel()
	e, admin := newListEnv(t, 150) // 151 users with root
	for _, tc := range []struct {
		name string
		size int32
		want int
	}{
		{"a page size of 0 means 50", 0, 50},
		{"a page size of 1 is taken", 1, 1},
		{"a page size of 100 is taken", 100, 100},
		{"a page size of 101 is cut to 100", 101, 100},
		{"a page size of 1000 is cut to 100", 1000, 100},
		{"the greatest page size is cut to 100", math.MaxInt32, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(resp.GetUsers()); n != tc.want {
				t.Errorf("users = %d, want %d", n, tc.want)
			}
			if resp.GetNextPageToken() == "" {
				t.Error("next_page_token is empty, want one: more users follow")
			}
		})
	}
	for _, size := range []int32{-1, math.MinInt32} {
		t.Run(fmt.Sprintf("a page size of %d is refused", size), func(t *testing.T) {
			t.Parallel()
			_, err := e.client.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: size})
			wantViolations(t, err, "page_size")
		})
	}
}

// walkList lists every page of size from ListUsers, calling between (if not
// nil) after each page but the last, and returns the users and the pages'
// sizes.
func walkList(t *testing.T, e *env, ctx context.Context, size int32, between func()) ([]*usersv1.User, []int) {
	t.Helper()
	var (
		users []*usersv1.User
		sizes []int
		token string
	)
	for page := 0; ; page++ {
		if page > 10_000 {
			t.Fatal("the walk does not end")
		}
		resp, err := e.client.ListUsers(ctx, &usersv1.ListUsersRequest{PageSize: size, PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		users = append(users, resp.GetUsers()...)
		sizes = append(sizes, len(resp.GetUsers()))
		token = resp.GetNextPageToken()
		if token == "" {
			return users, sizes
		}
		if between != nil {
			between()
		}
	}
}

func listedIDs(users []*usersv1.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.GetMeta().GetId()
	}
	return out
}

func TestListUsersWalksInIdentityIDOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		users int // besides root
		size  int32
		pages []int
	}{
		{"the last page holds what is left", 19, 7, []int{7, 7, 6}},
		{"a full last page has no token after it", 20, 7, []int{7, 7, 7}},
		{"one page holds all when they fit", 4, 0, []int{5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, admin := newListEnv(t, tc.users)
			users, sizes := walkList(t, e, admin, tc.size, nil)
			if diff := cmp.Diff(tc.pages, sizes); diff != "" {
				t.Errorf("page sizes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(e.allIDs(t), listedIDs(users)); diff != "" {
				t.Errorf("walk in id order (-want +got):\n%s", diff)
			}
			// Each user as GetUser has it: the list is no lesser view.
			for _, u := range users {
				got, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(got.GetUser(), u, protocmp.Transform()); diff != "" {
					t.Errorf("listed user (-GetUser +ListUsers):\n%s", diff)
				}
			}
		})
	}
}

func TestListUsersOfOneUserIsOnePage(t *testing.T) {
	t.Parallel()
	e, admin := newListEnv(t, 0)
	first, err := e.client.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetUsers()) != 1 || first.GetNextPageToken() != "" {
		t.Errorf("the only user's page: %d users, next_page_token %q; want 1 user and no token", len(first.GetUsers()), first.GetNextPageToken())
	}
}

func TestListUsersRefusesMalformedPageTokens(t *testing.T) {
	t.Parallel()
	e, admin := newListEnv(t, 3)
	page, err := e.client.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	valid := page.GetNextPageToken()
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatalf("next_page_token %q: %v", valid, err)
	}
	flipped := append([]byte{}, raw...)
	flipped[len(flipped)/2] ^= 0x80
	random := make([]byte, len(raw))
	rand.Read(random)
	id := uuid.MustParse(page.GetUsers()[0].GetMeta().GetId())

	for _, tc := range []struct {
		name, token string
	}{
		{"a token that is not base64 is refused", "!!!"},
		{"random base64 of a token's length is refused", base64.RawURLEncoding.EncodeToString(random)},
		{"a token with a flipped byte is refused", base64.RawURLEncoding.EncodeToString(flipped)},
		{"the base64 of a UUID alone is refused", base64.RawURLEncoding.EncodeToString(id[:])},
		{"a UUID as text is refused", id.String()},
		{"a token cut short is refused", valid[:len(valid)-2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: 1, PageToken: tc.token})
			wantViolations(t, err, "page_token")
		})
	}
}

// A keyset page starts after an id, not at an offset: a walk returns
// every user present throughout it exactly once, whatever is created or
// deleted meanwhile, before or after its position.
func TestListUsersWalkUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	e, admin := newListEnv(t, 300)
	initial := e.allIDs(t)

	var (
		ops     atomic.Int64 // creates and deletes done
		mu      sync.Mutex
		created = map[string]bool{}
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	doomed := make(chan string, 1000)
	writeErrs := make(chan error, 2)
	// Bounded: at most maxCreates new users, and only while the walk runs.
	const maxCreates = 400
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(doomed)
		for i := range maxCreates {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("new|%d", i)})
			if err != nil {
				writeErrs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			mu.Lock()
			created[resp.GetUser().GetMeta().GetId()] = true
			mu.Unlock()
			ops.Add(1)
			if i%2 == 0 {
				doomed <- resp.GetUser().GetMeta().GetId()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for id := range doomed {
			if _, err := e.client.DeleteUser(admin, &usersv1.DeleteUserRequest{IdentityId: id}); err != nil {
				writeErrs <- fmt.Errorf("delete %s: %w", id, err)
				return
			}
			ops.Add(1)
		}
	}()

	writersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(writersDone)
	}()

	// Between pages, wait for a few writes, so that every page sees a
	// table changed since the one before; unless the writers are done.
	var before int64
	users, _ := walkList(t, e, admin, 5, func() {
		deadline := time.After(5 * time.Second)
		for ops.Load() < before+3 {
			select {
			case <-writersDone:
				return
			case <-deadline:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
		before = ops.Load()
	})
	writesDuringWalk := ops.Load()
	close(stop)
	<-writersDone
	close(writeErrs)
	for err := range writeErrs {
		t.Error(err)
	}
	if writesDuringWalk < 100 {
		t.Fatalf("only %d writes ran during the walk: it proves little", writesDuringWalk)
	}

	seen := map[string]int{}
	for _, id := range listedIDs(users) {
		seen[id]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("user %s listed %d times", id, n)
		}
		if !slices.Contains(initial, id) && !created[id] {
			t.Errorf("user %s listed, but never existed", id)
		}
	}
	for _, id := range initial {
		if seen[id] != 1 {
			t.Errorf("user %s, present throughout, listed %d times, want 1", id, seen[id])
		}
	}
	if !slices.IsSorted(listedIDs(users)) {
		t.Error("the walk is not in identity id order")
	}
	t.Logf("%d writes during a walk of %d users (%d present throughout)", writesDuringWalk, len(users), len(initial))
}
