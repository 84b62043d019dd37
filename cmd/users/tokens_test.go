package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/apitoken"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// Two replicas on one database: a token revoked through one stops
// resolving through the other at once, with no wait in between. A use
// through one is written while it runs, within its interval; then the
// other is stopped, and its shutdown writes the last use it recorded.
func TestAPITokensAcrossReplicas(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	_, addrA := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	b, addrB := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	usersA := usersv1.NewUsersServiceClient(dial(t, addrA))
	usersB := usersv1.NewUsersServiceClient(dial(t, addrB))

	owner := createUser(t, usersA, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "replicas"})
	ctx := metadata.AppendToOutgoingContext(rpcContext(t), server.IdentityHeader, owner.GetMeta().GetId())

	resolveOnB := func(plaintext string) (*usersv1.ResolveAPITokenResponse, error) {
		return usersB.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(plaintext)})
	}
	for i := range 20 {
		tok, err := usersA.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "replicated"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resolveOnB(tok.GetPlaintextToken()); err != nil {
			t.Fatalf("token %d created through A, resolved through B: %v", i, err)
		}
		if _, err := usersA.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: tok.GetToken().GetId()}); err != nil {
			t.Fatal(err)
		}
		if _, err := resolveOnB(tok.GetPlaintextToken()); status.Code(err) != codes.NotFound {
			t.Fatalf("token %d revoked through A, resolved through B right after: %v, want %s", i, err, codes.NotFound)
		}
	}

	kept, err := usersA.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	stored := func() time.Time {
		var at *time.Time
		if err := conn.QueryRow(rpcContext(t), "SELECT last_used_at FROM api_tokens WHERE id = $1", kept.GetToken().GetId()).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if at == nil {
			return time.Time{}
		}
		return *at
	}

	// A running replica writes a use within its interval of a second.
	usedOnA, err := usersA.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(kept.GetPlaintextToken())})
	if err != nil {
		t.Fatal(err)
	}
	want := usedOnA.GetToken().GetLastUsedAt().AsTime()
	deadline := time.Now().Add(3 * time.Second)
	for !stored().Equal(want) {
		if time.Now().After(deadline) {
			t.Fatalf("last_used_at = %v 3 s after a use through A, want the use, %s", stored(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A stopping replica writes what it has not yet.
	usedOnB, err := resolveOnB(kept.GetPlaintextToken())
	if err != nil {
		t.Fatal(err)
	}
	b.terminate(t)
	if code := b.wait(t, waitTimeout); code != 0 {
		t.Fatalf("B exited with %d", code)
	}
	if got, want := stored(), usedOnB.GetToken().GetLastUsedAt().AsTime(); !got.Equal(want) {
		t.Errorf("last_used_at after B's shutdown = %s, want the use B recorded, %s", got, want)
	}
}

// callWithTokens makes the token calls, for the checks that no token
// and no hash reaches a log line or a span: a create, a list, a resolve,
// a resolve of a malformed hash that quotes the token, a revoke and a
// resolve of the revoked token. It returns the calls as method and code,
// and the strings that must appear nowhere: the plaintext, its secret
// part and its hash.
func callWithTokens(t *testing.T, users usersv1.UsersServiceClient, identityID string) (calls, secrets []string) {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(rpcContext(t), server.IdentityHeader, identityID)
	tok, err := users.CreateAPIToken(ctx, &usersv1.CreateAPITokenRequest{Name: "logged nowhere"})
	if err != nil {
		t.Fatalf("CreateAPIToken: %v", err)
	}
	plaintext := tok.GetPlaintextToken()
	hash := apitoken.Hash(plaintext)
	if _, err := users.ListAPITokens(ctx, &usersv1.ListAPITokensRequest{}); err != nil {
		t.Fatalf("ListAPITokens: %v", err)
	}
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: hash}); err != nil {
		t.Fatalf("ResolveAPIToken: %v", err)
	}
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: plaintext}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ResolveAPIToken of the plaintext: %v, want %s", err, codes.InvalidArgument)
	}
	if _, err := users.RevokeAPIToken(ctx, &usersv1.RevokeAPITokenRequest{TokenId: tok.GetToken().GetId()}); err != nil {
		t.Fatalf("RevokeAPIToken: %v", err)
	}
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: hash}); status.Code(err) != codes.NotFound {
		t.Fatalf("ResolveAPIToken of a revoked token: %v, want %s", err, codes.NotFound)
	}
	return []string{
			"CreateAPIToken OK", "ListAPITokens OK", "ResolveAPIToken OK", "ResolveAPIToken InvalidArgument",
			"RevokeAPIToken OK", "ResolveAPIToken NotFound",
		}, []string{
			plaintext, plaintext[len(apitoken.Prefix):], hash,
		}
}
