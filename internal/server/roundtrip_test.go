package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/apitoken"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// statementCounter is a pgx tracer that counts what a pool sends to the
// database: statements run, and statements prepared (a round trip of its
// own, the first time a connection sees a statement).
type statementCounter struct {
	queries  atomic.Int64
	prepares atomic.Int64
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *statementCounter) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	c.prepares.Add(1)
	return ctx
}

func (c *statementCounter) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// counted returns how many statements fn ran and prepared.
func (c *statementCounter) counted(fn func()) (queries, prepares int64) {
	q0, p0 := c.queries.Load(), c.prepares.Load()
	fn()
	return c.queries.Load() - q0, c.prepares.Load() - p0
}

// TestOneRoundTripPerCall holds each RPC of the hot paths to one statement
// per call, once the connection has prepared it: a batch is one query,
// not one per id, a login, of a known or a new subject, is one upsert,
// not a lookup and then an insert, a token's resolve is its read alone,
// and a change is one statement that writes its event too.
func TestOneRoundTripPerCall(t *testing.T) {
	t.Parallel()
	counter := &statementCounter{}
	cfg, err := pgxpool.ParseConfig(testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = counter
	// One connection, so that the warm-up call has prepared the statement
	// on the connection that the measured call uses.
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnvOn(t, pool)
	ctx := t.Context()

	var ids []string
	for i := range 101 {
		u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("auth0|user-%d", i)})
		ids = append(ids, u.GetMeta().GetId())
	}
	owner := asCaller(ctx, ids[9])
	tokensMade := 0
	token, err := e.client.CreateAPIToken(owner, &usersv1.CreateAPITokenRequest{Name: "hot path"})
	if err != nil {
		t.Fatal(err)
	}
	// Two tokens to revoke: the warm-up call's and the measured one's.
	var revocable []string
	for i := range 2 {
		tok, err := e.client.CreateAPIToken(owner, &usersv1.CreateAPITokenRequest{Name: fmt.Sprintf("revocable %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		revocable = append(revocable, tok.GetToken().GetId())
	}
	newSubject := 0
	rpcs := []struct {
		name string
		call func() error
	}{
		{"BatchGetUsers of 100", func() error {
			resp, err := e.client.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: ids[:100]})
			if err == nil && len(resp.GetUsers()) != 100 {
				err = fmt.Errorf("%d users, want 100", len(resp.GetUsers()))
			}
			return err
		}},
		{"ResolveOrCreateUser of a known subject", func() error {
			resp, err := e.client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|user-7"})
			if err == nil && resp.GetCreated() {
				err = fmt.Errorf("created = true for a known subject")
			}
			return err
		}},
		{"ResolveOrCreateUser of a new subject", func() error {
			newSubject++
			resp, err := e.client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("auth0|new-%d", newSubject)})
			if err == nil && !resp.GetCreated() {
				err = fmt.Errorf("created = false for a new subject")
			}
			return err
		}},
		{"GetUser", func() error {
			_, err := e.client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: ids[100]})
			return err
		}},
		{"GetUserByOIDCSubject", func() error {
			_, err := e.client.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "auth0|user-3"})
			return err
		}},
		{"UpdateUser", func() error {
			name := "Renamed"
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: ids[5], Name: &name})
			return err
		}},
		{"UpdateMe", func() error {
			name := "Me, renamed"
			_, err := e.client.UpdateMe(owner, &usersv1.UpdateMeRequest{Name: &name})
			return err
		}},
		{"RevokeAPIToken", func() error {
			id := revocable[0]
			revocable = revocable[1:]
			_, err := e.client.RevokeAPIToken(owner, &usersv1.RevokeAPITokenRequest{TokenId: id})
			return err
		}},
		// A read, which writes nothing: the use waits for the flush.
		{"ResolveAPIToken", func() error {
			_, err := e.client.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(token.GetPlaintextToken())})
			return err
		}},
		// The insert, its cap checked by the table's trigger.
		{"CreateAPIToken", func() error {
			tokensMade++
			_, err := e.client.CreateAPIToken(owner, &usersv1.CreateAPITokenRequest{Name: fmt.Sprintf("token %d", tokensMade)})
			return err
		}},
	}
	for _, rpc := range rpcs {
		t.Run(rpc.name, func(t *testing.T) {
			if err := rpc.call(); err != nil { // prepares the statement
				t.Fatalf("warm-up call: %v", err)
			}
			var err error
			queries, prepares := counter.counted(func() { err = rpc.call() })
			if err != nil {
				t.Fatal(err)
			}
			if queries != 1 || prepares != 0 {
				t.Errorf("%d statements run and %d prepared, want 1 run and none prepared", queries, prepares)
			}
		})
	}
}
