package server_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agynio/users/internal/apitoken"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
)

var tokenFormat = regexp.MustCompile(`^agyn_[0-9A-Za-z]{44}$`)

// tokenOwner logs a new user in and returns a context calling as them.
func (e *env) tokenOwner(t *testing.T, subject string) (context.Context, string) {
	t.Helper()
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject})
	return asCaller(t.Context(), u.GetMeta().GetId()), u.GetMeta().GetId()
}

func (e *env) createToken(t *testing.T, ctx context.Context, req *usersv1.CreateAPITokenRequest) *usersv1.CreateAPITokenResponse {
	t.Helper()
	resp, err := e.client.CreateAPIToken(ctx, req)
	if err != nil {
		t.Fatalf("CreateAPIToken(%q): %v", req.GetName(), err)
	}
	return resp
}

func (e *env) resolve(t *testing.T, plaintext string) *usersv1.ResolveAPITokenResponse {
	t.Helper()
	resp, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(plaintext)})
	if err != nil {
		t.Fatalf("ResolveAPIToken: %v", err)
	}
	return resp
}

// storedLastUsed is the token's last_used_at in the database; zero for
// NULL.
func (e *env) storedLastUsed(t *testing.T, tokenID string) time.Time {
	t.Helper()
	var at *time.Time
	if err := e.conn.QueryRow(context.Background(), "SELECT last_used_at FROM api_tokens WHERE id = $1", tokenID).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if at == nil {
		return time.Time{}
	}
	return *at
}

func TestCreateAPIToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, owner := e.tokenOwner(t, "alice")
	expires := time.Now().Add(24 * time.Hour).Truncate(time.Microsecond)
	before := time.Now().Add(-time.Minute)

	resp := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "ci deploys", ExpiresAt: timestamppb.New(expires)})

	plaintext := resp.GetPlaintextToken()
	if !tokenFormat.MatchString(plaintext) {
		t.Fatalf("plaintext token does not match %s", tokenFormat)
	}
	tok := resp.GetToken()
	if _, err := uuid.Parse(tok.GetId()); err != nil {
		t.Errorf("id %q is not a UUID", tok.GetId())
	}
	want := &usersv1.APIToken{
		Id:          tok.GetId(),
		IdentityId:  owner,
		Name:        "ci deploys",
		TokenPrefix: plaintext[:8],
		ExpiresAt:   timestamppb.New(expires),
		CreatedAt:   tok.GetCreatedAt(),
	}
	if diff := cmp.Diff(want, tok, protocmp.Transform()); diff != "" {
		t.Errorf("token (-want +got):\n%s", diff)
	}
	if c := tok.GetCreatedAt().AsTime(); c.Before(before) || c.After(time.Now().Add(time.Minute)) {
		t.Errorf("created_at = %s, want about now", c)
	}

	// What is stored: the hash and the prefix, nothing that holds the
	// token (the env checks every table for it when the test ends).
	var hash, prefix string
	if err := e.conn.QueryRow(t.Context(), "SELECT token_hash, token_prefix FROM api_tokens WHERE id = $1", tok.GetId()).Scan(&hash, &prefix); err != nil {
		t.Fatal(err)
	}
	if hash != apitoken.Hash(plaintext) || prefix != plaintext[:8] {
		t.Errorf("stored hash and prefix are not the token's SHA-256 in hex and its first 8 characters")
	}

	// It resolves to its owner, and a token without expires_at does too.
	if got := e.resolve(t, plaintext).GetIdentityId(); got != owner {
		t.Errorf("resolved identity_id = %s, want %s", got, owner)
	}
	forever := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "forever"})
	if forever.GetToken().GetExpiresAt() != nil {
		t.Errorf("expires_at = %v, want unset", forever.GetToken().GetExpiresAt())
	}
	if got := e.resolve(t, forever.GetPlaintextToken()).GetToken().GetId(); got != forever.GetToken().GetId() {
		t.Errorf("resolved token %s, want %s", got, forever.GetToken().GetId())
	}
}

// Every refusal of the token RPCs, with its code, and for a bad field
// the field it names. No message quotes the hash it was given.
func TestAPITokenStatuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, _ := e.tokenOwner(t, "alice")
	live := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "live"})
	revoked := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "revoked"})
	if _, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: revoked.GetToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	noCaller := t.Context()
	badCaller := asCaller(t.Context(), "not-a-uuid")
	unknownCaller := asCaller(t.Context(), uuid.NewString())
	past := timestamppb.New(time.Now().Add(-time.Second))
	unknownHash := apitoken.Hash(apitoken.New().Plaintext)

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		fields []string // for INVALID_ARGUMENT
	}{
		{"create without a caller", func() error {
			_, err := e.client.CreateAPIToken(noCaller, &usersv1.CreateAPITokenRequest{Name: "x"})
			return err
		}, codes.Unauthenticated, nil},
		{"create with a malformed caller", func() error {
			_, err := e.client.CreateAPIToken(badCaller, &usersv1.CreateAPITokenRequest{Name: "x"})
			return err
		}, codes.Unauthenticated, nil},
		{"create for an unknown caller", func() error {
			_, err := e.client.CreateAPIToken(unknownCaller, &usersv1.CreateAPITokenRequest{Name: "x"})
			return err
		}, codes.NotFound, nil},
		{"create without a name", func() error {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{})
			return err
		}, codes.InvalidArgument, []string{"name"}},
		{"create with a 101-character name", func() error {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: strings.Repeat("é", 101)})
			return err
		}, codes.InvalidArgument, []string{"name"}},
		{"create with a control character in the name", func() error {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "two\nlines"})
			return err
		}, codes.InvalidArgument, []string{"name"}},
		{"create expiring in the past", func() error {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "x", ExpiresAt: past})
			return err
		}, codes.InvalidArgument, []string{"expires_at"}},
		{"create with an invalid expires_at, and no name", func() error {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{ExpiresAt: &timestamppb.Timestamp{Seconds: 1 << 62}})
			return err
		}, codes.InvalidArgument, []string{"name", "expires_at"}},
		{"list without a caller", func() error {
			_, err := e.client.ListAPITokens(noCaller, &usersv1.ListAPITokensRequest{})
			return err
		}, codes.Unauthenticated, nil},
		{"revoke without a caller", func() error {
			_, err := e.client.RevokeAPIToken(noCaller, &usersv1.RevokeAPITokenRequest{TokenId: live.GetToken().GetId()})
			return err
		}, codes.Unauthenticated, nil},
		{"revoke a malformed id", func() error {
			_, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: "42"})
			return err
		}, codes.InvalidArgument, []string{"token_id"}},
		{"revoke an unknown token", func() error {
			_, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: uuid.NewString()})
			return err
		}, codes.NotFound, nil},
		{"revoke a revoked token", func() error {
			_, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: revoked.GetToken().GetId()})
			return err
		}, codes.NotFound, nil},
		{"resolve an empty hash", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{})
			return err
		}, codes.InvalidArgument, []string{"token_hash"}},
		{"resolve 63 hex digits", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: unknownHash[:63]})
			return err
		}, codes.InvalidArgument, []string{"token_hash"}},
		{"resolve 64 characters that are not all hex", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: unknownHash[:63] + "g"})
			return err
		}, codes.InvalidArgument, []string{"token_hash"}},
		{"resolve the plaintext instead of its hash", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: live.GetPlaintextToken()})
			return err
		}, codes.InvalidArgument, []string{"token_hash"}},
		{"resolve an unknown hash", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: unknownHash})
			return err
		}, codes.NotFound, nil},
		{"resolve a revoked token", func() error {
			_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(revoked.GetPlaintextToken())})
			return err
		}, codes.NotFound, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.code == codes.InvalidArgument {
				wantViolations(t, err, tc.fields...)
			} else {
				wantCode(t, err, tc.code)
			}
			for _, secret := range []string{unknownHash, unknownHash[:63], apitoken.Hash(live.GetPlaintextToken()), live.GetPlaintextToken()} {
				if strings.Contains(status.Convert(err).String(), secret) {
					t.Errorf("status %s quotes a token or hash", status.Convert(err).Message())
				}
			}
		})
	}

	// The refusals changed nothing: two tokens were created, one is left.
	list, err := e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTokens()) != 1 || list.GetTokens()[0].GetId() != live.GetToken().GetId() {
		t.Errorf("tokens after the refusals: %v, want only %q", list.GetTokens(), "live")
	}
	// Upper-case hex digits are the same hash.
	resp, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: strings.ToUpper(apitoken.Hash(live.GetPlaintextToken()))})
	if err != nil || resp.GetToken().GetId() != live.GetToken().GetId() {
		t.Errorf("resolving the upper-case hash: %v, %v; want the token", resp, err)
	}
}

func TestListAPITokensNewestFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, _ := e.tokenOwner(t, "alice")
	other, _ := e.tokenOwner(t, "bob")
	e.createToken(t, other, &usersv1.CreateAPITokenRequest{Name: "bob's"})

	var created []*usersv1.APIToken
	for _, name := range []string{"first", "second", "third"} {
		created = append(created, e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: name}).GetToken())
	}
	list, err := e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []*usersv1.APIToken{created[2], created[1], created[0]}
	if diff := cmp.Diff(want, list.GetTokens(), protocmp.Transform()); diff != "" {
		t.Errorf("ListAPITokens, newest first, only the caller's (-want +got):\n%s", diff)
	}

	// A revoked token leaves the list.
	if _, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: created[1].GetId()}); err != nil {
		t.Fatal(err)
	}
	list, err = e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want = []*usersv1.APIToken{created[2], created[0]}
	if diff := cmp.Diff(want, list.GetTokens(), protocmp.Transform()); diff != "" {
		t.Errorf("ListAPITokens after a revoke (-want +got):\n%s", diff)
	}
}

// Someone else's token is NOT_FOUND to revoke, exactly as an unknown one
// is, and stays as it was.
func TestRevokeAnotherUsersAPIToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, _ := e.tokenOwner(t, "alice")
	mallory, _ := e.tokenOwner(t, "mallory")
	tok := e.createToken(t, alice, &usersv1.CreateAPITokenRequest{Name: "alice's"})

	_, errOther := e.client.RevokeAPIToken(mallory, &usersv1.RevokeAPITokenRequest{TokenId: tok.GetToken().GetId()})
	_, errUnknown := e.client.RevokeAPIToken(mallory, &usersv1.RevokeAPITokenRequest{TokenId: uuid.NewString()})
	wantCode(t, errOther, codes.NotFound)
	if !proto.Equal(status.Convert(errOther).Proto(), status.Convert(errUnknown).Proto()) {
		t.Errorf("revoking another's token: %v; an unknown one: %v; want the same answer", errOther, errUnknown)
	}
	e.resolve(t, tok.GetPlaintextToken())
	list, err := e.client.ListAPITokens(alice, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTokens()) != 1 {
		t.Errorf("alice's tokens after mallory's revoke: %d, want 1", len(list.GetTokens()))
	}
}

// A token is valid up to its expires_at and expired from that instant
// on, by the service's clock; creating one needs an expires_at after it.
func TestAPITokenExpiryBoundary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clock atomic.Pointer[time.Time]
	setClock := func(at time.Time) { clock.Store(&at) }
	server.SetClock(e.srv, func() time.Time { return *clock.Load() })
	ctx, _ := e.tokenOwner(t, "alice")
	start := time.Now().Truncate(time.Microsecond)
	setClock(start)
	expires := start.Add(time.Hour)

	_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "now", ExpiresAt: timestamppb.New(start)})
	wantViolations(t, err, "expires_at")
	// A microsecond ahead is in the future, by the clock the service
	// expires tokens by, whatever the database's says: the database
	// does not check it again.
	soon := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "soon", ExpiresAt: timestamppb.New(start.Add(time.Microsecond))})
	if _, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: soon.GetToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	tok := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "an hour", ExpiresAt: timestamppb.New(expires)})
	hash := apitoken.Hash(tok.GetPlaintextToken())

	for _, tc := range []struct {
		at   time.Time
		want codes.Code
	}{
		{expires.Add(-time.Microsecond), codes.OK},
		{expires, codes.Unauthenticated},
		{expires.Add(time.Microsecond), codes.Unauthenticated},
		{expires.Add(365 * 24 * time.Hour), codes.Unauthenticated},
	} {
		setClock(tc.at)
		_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: hash})
		if got := status.Code(err); got != tc.want {
			t.Errorf("resolve at expires_at%+v: %s (%v), want %s", tc.at.Sub(expires), got, err, tc.want)
		}
	}
	// An expired token is still listed, with its expires_at, until revoked.
	list, err := e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTokens()) != 1 || !list.GetTokens()[0].GetExpiresAt().AsTime().Equal(expires) {
		t.Errorf("tokens listed after expiry: %v, want the expired one", list.GetTokens())
	}
}

// Each resolve returns its own use as last_used_at, later than the last;
// the database has them only after a flush, which writes the latest.
func TestAPITokenLastUsedAt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, _ := e.tokenOwner(t, "alice")
	tok := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "t"})
	id := tok.GetToken().GetId()

	first := e.resolve(t, tok.GetPlaintextToken()).GetToken().GetLastUsedAt()
	second := e.resolve(t, tok.GetPlaintextToken()).GetToken().GetLastUsedAt()
	if first == nil || !second.AsTime().After(first.AsTime()) {
		t.Fatalf("last_used_at of two uses: %v then %v, want set and later", first, second)
	}
	if d := time.Since(second.AsTime()); d < 0 || d > time.Minute {
		t.Errorf("last_used_at = %s, want about now", second.AsTime())
	}
	if got := e.storedLastUsed(t, id); !got.IsZero() {
		t.Errorf("stored last_used_at before a flush = %s, want NULL: a resolve must not write", got)
	}
	// The list shows the use not yet written.
	list, err := e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := list.GetTokens()[0].GetLastUsedAt(); !proto.Equal(got, second) {
		t.Errorf("listed last_used_at = %v, want the last use %v", got, second)
	}

	if err := e.srv.FlushTokenUse(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.storedLastUsed(t, id); !got.Equal(second.AsTime()) {
		t.Errorf("stored last_used_at after a flush = %s, want the last use %s", got, second.AsTime())
	}
	// A later use, after the flush, is later than what is stored.
	third := e.resolve(t, tok.GetPlaintextToken()).GetToken().GetLastUsedAt()
	if !third.AsTime().After(second.AsTime()) {
		t.Errorf("last_used_at after the flush = %s, want later than %s", third.AsTime(), second.AsTime())
	}
}

// updateCounter counts the UPDATE statements run on api_tokens, by a
// statement-level trigger of the test's own database. The trigger's
// function runs as its owner (SECURITY DEFINER): the service's role,
// whose statements fire it, may not write the count.
func updateCounter(t *testing.T, e *env) func() int {
	t.Helper()
	owner := asOwner(t, e.conn)
	for _, stmt := range []string{
		"CREATE TABLE token_updates (n integer NOT NULL)",
		"INSERT INTO token_updates VALUES (0)",
		`CREATE FUNCTION count_token_update() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
		 BEGIN UPDATE token_updates SET n = n + 1; RETURN NULL; END $$`,
		"CREATE TRIGGER count_token_update AFTER UPDATE ON api_tokens FOR EACH STATEMENT EXECUTE FUNCTION count_token_update()",
	} {
		if _, err := owner.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	return func() int {
		var n int
		if err := owner.QueryRow(context.Background(), "SELECT n FROM token_updates").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// 100 concurrent resolves of one token write nothing; the flush that
// follows writes once, the latest use. Resolving without pause while the
// flusher runs every 50 ms, the writes are at most one per interval.
func TestConcurrentResolvesWriteOncePerFlush(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, _ := e.tokenOwner(t, "alice")
	tok := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "busy"})
	updates := updateCounter(t, e)
	hash := apitoken.Hash(tok.GetPlaintextToken())

	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[time.Time]bool{}
	var latest time.Time
	for range 100 {
		wg.Go(func() {
			resp, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: hash})
			if err != nil {
				t.Errorf("ResolveAPIToken: %v", err)
				return
			}
			at := resp.GetToken().GetLastUsedAt().AsTime()
			mu.Lock()
			defer mu.Unlock()
			if seen[at] {
				t.Errorf("two resolves returned last_used_at %s", at)
			}
			seen[at] = true
			if at.After(latest) {
				latest = at
			}
		})
	}
	wg.Wait()
	if n := updates(); n != 0 {
		t.Fatalf("%d updates after 100 resolves, before any flush; want 0", n)
	}
	if err := e.srv.FlushTokenUse(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := updates(); n != 1 {
		t.Errorf("%d updates after a flush, want 1", n)
	}
	if got := e.storedLastUsed(t, tok.GetToken().GetId()); !got.Equal(latest) {
		t.Errorf("stored last_used_at = %s, want the latest use %s", got, latest)
	}
	// Nothing used since: the next flush writes nothing.
	if err := e.srv.FlushTokenUse(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := updates(); n != 1 {
		t.Errorf("%d updates after a flush with no use since, want still 1", n)
	}

	// The flusher running, under a steady stream of resolves.
	const interval = 50 * time.Millisecond
	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	start := time.Now()
	go func() { e.srv.RecordTokenUse(runCtx, interval); close(done) }()
	for time.Since(start) < 10*interval {
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() { e.resolve(t, tok.GetPlaintextToken()) })
		}
		wg.Wait()
	}
	stop()
	<-done
	elapsed := time.Since(start)
	maxWrites := 1 + int(elapsed/interval)
	if n := updates() - 1; n < 1 || n > maxWrites {
		t.Errorf("%d updates in %s of resolves with a %s flush interval, want 1 to %d", n, elapsed, interval, maxWrites)
	}
}

// The cap holds under a burst: with 90 live tokens, 30 concurrent
// creates make exactly 10 more, and the other 20 are FAILED_PRECONDITION
// naming the limit. Expired tokens do not count.
func TestAPITokenCapUnderABurst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, owner := e.tokenOwner(t, "alice")
	// Expired tokens, as they would be after their time: they do not
	// count towards the live cap. Backdated as the tables' owner: the
	// service's role writes no created_at.
	tables := asOwner(t, e.conn)
	if _, err := tables.Exec(t.Context(), `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, expires_at, created_at)
		SELECT gen_random_uuid(), $1, 'expired', encode(sha256(convert_to(g::text, 'UTF8')), 'hex'), 'agyn_abc', now() - interval '1 day', now() - interval '2 days'
		FROM generate_series(1, 20) g`, owner); err != nil {
		t.Fatal(err)
	}
	for i := range 90 {
		e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "before " + string(rune('a'+i%26))})
	}
	// Every insert from now on takes 20 ms between the cap's count and
	// its commit (triggers fire in name order, this one after the cap's),
	// so that concurrent creates overlap there, as under load.
	for _, stmt := range []string{
		`CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$`,
		"CREATE TRIGGER api_tokens_zz_slow BEFORE INSERT ON api_tokens FOR EACH ROW EXECUTE FUNCTION slow_insert()",
	} {
		if _, err := tables.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 30 {
		wg.Go(func() {
			_, err := e.client.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "burst"})
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.FailedPrecondition:
				refused.Add(1)
				if msg := status.Convert(err).Message(); !strings.Contains(msg, "100") {
					t.Errorf("refusal %q does not name the limit", msg)
				}
			default:
				t.Errorf("CreateAPIToken in the burst: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || refused.Load() != 20 {
		t.Errorf("burst of 30 creates at 90 live tokens: %d created, %d refused; want 10 and 20", ok.Load(), refused.Load())
	}
	var live int
	if err := e.conn.QueryRow(t.Context(), "SELECT count(*) FROM api_tokens WHERE identity_id = $1 AND expires_at IS NULL", owner).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != server.MaxLiveTokens {
		t.Errorf("live tokens = %d, want %d", live, server.MaxLiveTokens)
	}

	// Revoking one makes room for one.
	list, err := e.client.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: list.GetTokens()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "after a revoke"})
}

// A user holds at most MaxTokens tokens, expired ones included, so that
// the table stays bounded. At that bound a new token is still made (a
// script that makes a short-lived token every run is never locked out),
// and the token that expired longest ago makes room for it.
func TestAPITokensBoundedInAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, owner := e.tokenOwner(t, "alice")
	// Token g expired g minutes ago; its hash is the SHA-256 of g.
	// Backdated as the tables' owner: the service's role writes no
	// created_at.
	if _, err := asOwner(t, e.conn).Exec(t.Context(), `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, expires_at, created_at)
		SELECT gen_random_uuid(), $1, 'expired', encode(sha256(convert_to(g::text, 'UTF8')), 'hex'), 'agyn_abc',
		       now() - g * interval '1 minute', now() - interval '1 year'
		FROM generate_series(1, $2::int) g`, owner, server.MaxTokens); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: fmt.Sprintf("after %d", i)})
	}
	var held int
	if err := e.conn.QueryRow(t.Context(), "SELECT count(*) FROM api_tokens WHERE identity_id = $1", owner).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != server.MaxTokens {
		t.Errorf("tokens held = %d, want %d", held, server.MaxTokens)
	}
	// Each eviction is an api_token.revoked event, the service itself
	// its actor, before the created event of the token it made room for.
	rows, err := e.conn.Query(t.Context(), `SELECT kind || ' ' || COALESCE(actor_service, 'user') || ' ' || (data->>'name') FROM outbox
		WHERE kind LIKE 'api_token.%' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	events, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 3 {
		want = append(want, "api_token.revoked users expired", fmt.Sprintf("api_token.created user after %d", i))
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("token events in the outbox (-want +got):\n%s", diff)
	}
	// The three that expired longest ago are gone; the next is not.
	for g, want := range map[int]codes.Code{
		server.MaxTokens: codes.NotFound, server.MaxTokens - 1: codes.NotFound, server.MaxTokens - 2: codes.NotFound,
		server.MaxTokens - 3: codes.Unauthenticated, 1: codes.Unauthenticated,
	} {
		_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(strconv.Itoa(g))})
		if got := status.Code(err); got != want {
			t.Errorf("resolving the token that expired %d minutes ago: %s, want %s", g, got, want)
		}
	}
}

// DeleteUser takes the user's tokens with it: they resolve no more, and
// no row is left.
func TestDeleteUserRemovesAPITokens(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	ctx, owner := e.tokenOwner(t, "leaver")
	tok := e.createToken(t, ctx, &usersv1.CreateAPITokenRequest{Name: "t"})
	e.resolve(t, tok.GetPlaintextToken())

	if _, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: owner}); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(tok.GetPlaintextToken())})
	wantCode(t, err, codes.NotFound)
	var n int
	if err := e.conn.QueryRow(t.Context(), "SELECT count(*) FROM api_tokens").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("api_tokens rows after DeleteUser = %d, want 0", n)
	}
	// The pending use of the deleted token is dropped by the flush, not
	// an error.
	if err := e.srv.FlushTokenUse(t.Context()); err != nil {
		t.Errorf("flush after the token's owner was deleted: %v", err)
	}
}

// Two replicas writing the last uses of the same tokens at the same
// moment lock the rows in the same order, so neither write deadlocks.
func TestConcurrentFlushesOfTwoReplicas(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	b := newEnvOn(t, a.conn)
	// 20 users with 50 tokens each; the hash of token g is the SHA-256
	// of g.
	if _, err := a.conn.Exec(t.Context(), `
		WITH owners AS (
			INSERT INTO users (identity_id, oidc_subject)
			SELECT gen_random_uuid(), o::text FROM generate_series(1, 20) o
			RETURNING identity_id, oidc_subject::int AS o
		)
		INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix)
		SELECT gen_random_uuid(), identity_id, 't', encode(sha256(convert_to(((o - 1) * 50 + g)::text, 'UTF8')), 'hex'), 'agyn_abc'
		FROM owners, generate_series(1, 50) g`); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		for _, e := range []*env{a, b} {
			for g := 1; g <= 1000; g++ {
				if _, err := e.client.ResolveAPIToken(t.Context(), &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(strconv.Itoa(g))}); err != nil {
					t.Fatalf("resolve token %d: %v", g, err)
				}
			}
		}
		var wg sync.WaitGroup
		for _, e := range []*env{a, b} {
			wg.Go(func() {
				if err := e.srv.FlushTokenUse(t.Context()); err != nil {
					t.Errorf("round %d: flush: %v", round, err)
				}
			})
		}
		wg.Wait()
	}
}
