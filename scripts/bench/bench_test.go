package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestPgbenchStatements checks that every workload's statement is in the
// query file and comes out for pgbench with no sqlc parameter left, and a
// parameter that appears twice bound once.
func TestPgbenchStatements(t *testing.T) {
	stmts, err := queries(filepath.Join("..", "..", "sql", "queries", "users.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range workloads {
		sql, ok := stmts[w.query]
		if !ok {
			t.Fatalf("%s: no query %s in users.sql", w.name, w.query)
		}
		for _, stmt := range []string{sql, w.cheapest} {
			got := pgbenchStatement(stmt, w.pgbench)
			if sqlcParam.MatchString(got) {
				t.Errorf("%s: a sqlc parameter is left:\n%s", w.name, got)
			}
			if !strings.HasSuffix(got, ";") {
				t.Errorf("%s: statement does not end with ';':\n%s", w.name, got)
			}
		}
	}

}

// TestPgbenchStatementBindsEachParameterOnce: pgbench numbers its variables
// $1, $2... in order, so a parameter's second appearance must name the
// first's number, and an expression must wrap each appearance.
func TestPgbenchStatementBindsEachParameterOnce(t *testing.T) {
	t.Parallel()
	sql := `WITH x AS (SELECT 1 FROM users WHERE oidc_subject = @oidc_subject)
INSERT INTO users (identity_id, oidc_subject, name) SELECT @identity_id, @oidc_subject, sqlc.narg(name)
WHERE identity_id = ANY(@identity_ids::uuid[]) OR identity_id = @identity_id;`
	got := pgbenchStatement(sql, pgbenchBinding{params: map[string]string{"identity_id": uuidFromNumber, "name": "NULL::text"}})
	want := `WITH x AS (SELECT 1 FROM users WHERE oidc_subject = :oidc_subject)
INSERT INTO users (identity_id, oidc_subject, name) SELECT lpad(to_hex(:identity_id::bigint), 32, '0')::uuid, $1, NULL::text
WHERE identity_id = ANY(:identity_ids::uuid[]) OR identity_id = lpad(to_hex($2::bigint), 32, '0')::uuid;`
	if got != want {
		t.Errorf("pgbenchStatement:\n%s\nwant:\n%s", got, want)
	}
}

func TestKeysAgreeWithTheSeed(t *testing.T) {
	// lpad(to_hex(255), 32, '0')::uuid
	if got, want := identityID(255), "00000000-0000-0000-0000-0000000000ff"; got != want {
		t.Errorf("identityID(255) = %q, want %q", got, want)
	}
	if got := subject(1234); got != "1234" {
		t.Errorf("subject(1234) = %q, want %q", got, "1234")
	}
	// lpad(to_hex(255), 64, '0')
	if got, want := tokenHash(255), strings.Repeat("0", 62)+"ff"; got != want {
		t.Errorf("tokenHash(255) = %q, want %q", got, want)
	}
}

// TestTokensAgreeWithTheSeed: the token pgbench finds by the hash it
// spells for user n is the one the seed gave user n, and its hash is the
// one the load generator sends.
func TestTokensAgreeWithTheSeed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dbURL := testdb.URL(t)
	const users = 300 // more than 255: a hash of three hex digits
	if err := seed(ctx, testdb.AsSuperuser(t, dbURL), users); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var count int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM api_tokens").Scan(&count); err != nil || count != users {
		t.Errorf("%d tokens seeded (%v), want one per user: %d", count, err, users)
	}
	byNumber := "SELECT identity_id::text, token_hash, name, token_prefix FROM api_tokens WHERE token_hash = " +
		fmt.Sprintf(tokenHashFromNumber, "$1")
	for _, n := range []int64{1, 7, 255, users} {
		var id, hash, name, prefix string
		if err := conn.QueryRow(ctx, byNumber, n).Scan(&id, &hash, &name, &prefix); err != nil {
			t.Errorf("user %d's token, by the hash pgbench spells: %v", n, err)
			continue
		}
		if id != identityID(n) || hash != tokenHash(n) || name != tokenName(n) || prefix != tokenPrefix(n) {
			t.Errorf("user %d's token: %s %s %q %s; the bench computes %s %s %q %s",
				n, id, hash, name, prefix, identityID(n), tokenHash(n), tokenName(n), tokenPrefix(n))
		}
	}
}

func TestFreshSubjectsAreNew(t *testing.T) {
	seen := map[string]bool{}
	// Each run has subjects of its own: a later round's first logins are
	// first logins too.
	for _, run := range []int{0, 1, 999_999} {
		src, err := newFreshSubjectSource(loginRequest, run)
		if err != nil {
			t.Fatal(err)
		}
		w := &worker{rng: rand.New(rand.NewPCG(1, 2))}
		for range 3 {
			var req usersv1.ResolveOrCreateUserRequest
			if err := proto.Unmarshal(src.next(w).msg.Materialize(), &req); err != nil {
				t.Fatal(err)
			}
			s := req.GetOidcSubject()
			if len(s) != newSubjectDigits || s < "2" || s >= "3" || seen[s] {
				t.Errorf("run %d: subject %q: want a new 19-digit number in the service's range", run, s)
			}
			seen[s] = true
			if req.GetName() != loginName || req.GetEmail() != loginEmail(s) {
				t.Errorf("claims: %v, want the email of the subject's own", &req)
			}
		}
	}
}

// TestLatencyPercentiles: the load generator's percentiles are within
// 0.1% of the true ones from a microsecond up, and a call slower than the
// histogram's range counts at its top rather than not at all.
func TestLatencyPercentiles(t *testing.T) {
	t.Parallel()
	h := newLatencies()
	for i := 1; i <= 990; i++ {
		recordLatency(h, time.Duration(i)*time.Microsecond)
	}
	for range 10 {
		recordLatency(h, time.Hour)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{50, 500 * time.Microsecond}, {99, 990 * time.Microsecond}, {100, maxLatency}} {
		got := time.Duration(h.ValueAtQuantile(c.q))
		if diff := float64(got-c.want) / float64(c.want); diff < -0.001 || diff > 0.001 {
			t.Errorf("p%v = %v, want %v within 0.1%%", c.q, got, c.want)
		}
	}
}

func TestParsePgbenchReadsTheSummary(t *testing.T) {
	t.Parallel()
	out := `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: users-bench-1.sql
scaling factor: 1
query mode: prepared
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 86530
number of failed transactions: 3 (0.003%)
latency average = 3.698 ms
initial connection time = 21.506 ms
tps = 8653.123456 (without initial connection time)
`
	got, err := parsePgbench(out)
	if err != nil {
		t.Fatal(err)
	}
	want := pgbenchResult{TPS: 8653.123456, LatencyAverage: 3698 * time.Microsecond, Transactions: 86530, Failed: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parsePgbench (-want +got):\n%s", diff)
	}
	if _, err := parsePgbench("pgbench: error: connection refused\n"); err == nil {
		t.Error("no error for an output without tps")
	}
}
