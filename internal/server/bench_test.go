package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// benchUsers is how many users the RPC benchmarks' database holds.
const benchUsers = 10_000

// benchClient serves a Server over bufconn, with the gRPC server the
// binary builds, on a new test database seeded with users 1..benchUsers
// (identity id n in hexadecimal, subject n in decimal, as make bench seeds
// them). It is newEnv for benchmarks, with the service's log discarded,
// and the pool the binary makes (db.NewPool: uuids in binary, among
// others), so that the figures are the binary's.
func benchClient(b *testing.B) usersv1.UsersServiceClient {
	b.Helper()
	pool, err := db.NewPool(b.Context(), testdb.URL(b), db.PoolOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	_, err = pool.Exec(b.Context(), `INSERT INTO users (identity_id, oidc_subject, name, email, photo_url)
SELECT lpad(to_hex(n), 32, '0')::uuid, n::text, 'Bench User ' || n, 'user' || n || '@bench.example',
       'https://bench.example/photos/' || n || '.png'
FROM generate_series(1, $1::int) AS n`, benchUsers)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(b.Context(), "VACUUM (ANALYZE) users"); err != nil {
		b.Fatal(err)
	}

	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	gs, _ := server.NewGRPCServer(server.New(pool, identity.Local{}, log), log)
	lis := bufconn.Listen(1 << 20)
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	b.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return usersv1.NewUsersServiceClient(cc)
}

// benchID is the identity id of seeded user n.
func benchID(n int) string {
	h := fmt.Sprintf("%032x", n)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// BenchmarkRPC makes one call at a time through the whole stack: the
// client, gRPC over an in-memory connection, the server's interceptors
// and handler, and a statement on a local PostgreSQL. Time per op is a
// call's latency; allocations are the client's and the server's together.
// make bench measures throughput under concurrency instead.
func BenchmarkRPC(b *testing.B) {
	client := benchClient(b)
	ctx := context.Background()
	ids, subjects := make([]string, benchUsers+1), make([]string, benchUsers+1)
	for n := 1; n <= benchUsers; n++ {
		ids[n], subjects[n] = benchID(n), strconv.Itoa(n)
	}
	key := 0
	next := func() int { key = key%benchUsers + 1; return key }
	newSubjects := 0 // across runs of the sub-benchmark (-count)

	b.Run("GetUser", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: ids[next()]}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GetUserByOIDCSubject", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: subjects[next()]}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("BatchGetUsers/100", func(b *testing.B) {
		batch := make([]string, 100)
		b.ReportAllocs()
		for b.Loop() {
			for i := range batch {
				batch[i] = ids[next()]
			}
			resp, err := client.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: batch})
			if err != nil || len(resp.GetUsers()) != len(batch) {
				b.Fatalf("%d users, err %v", len(resp.GetUsers()), err)
			}
		}
	})
	b.Run("ResolveOrCreateUser/existing", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: subjects[next()], Name: "Bench User", Email: "login@bench.example",
			})
			if err != nil || resp.GetCreated() {
				b.Fatalf("created=%v err=%v", resp.GetCreated(), err)
			}
		}
	})
	b.Run("ResolveOrCreateUser/new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			newSubjects++
			resp, err := client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: "bench|new-" + strconv.Itoa(newSubjects), Name: "Bench User", Email: "login@bench.example",
			})
			if err != nil || !resp.GetCreated() {
				b.Fatalf("created=%v err=%v", resp.GetCreated(), err)
			}
		}
	})
	b.Run("UpdateUser", func(b *testing.B) {
		name := "Renamed"
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: ids[next()], Name: &name}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
