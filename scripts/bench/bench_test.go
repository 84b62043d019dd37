package main

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
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
		got := pgbenchStatement(sql, w.pgbench)
		if sqlcParam.MatchString(got) {
			t.Errorf("%s: a sqlc parameter is left:\n%s", w.name, got)
		}
		if !strings.HasSuffix(got, ";") {
			t.Errorf("%s: statement does not end with ';':\n%s", w.name, got)
		}
	}

	// pgbench numbers its variables $1, $2... in order: the second
	// appearance must name the first's number.
	batch := pgbenchStatement(stmts["BatchGetUsers"], pgbenchBinding{})
	if !strings.Contains(batch, "ANY(:identity_ids::uuid[])") || !strings.Contains(batch, "array_position($1::uuid[]") {
		t.Errorf("BatchGetUsers for pgbench:\n%s", batch)
	}
	login := pgbenchStatement(stmts["ResolveOrCreateUser"], pgbenchBinding{params: map[string]string{"identity_id": uuidFromNumber}})
	if !strings.Contains(login, "VALUES (lpad(to_hex(:identity_id::bigint), 32, '0')::uuid, :oidc_subject,") ||
		!strings.Contains(login, "WHERE oidc_subject = $2") {
		t.Errorf("ResolveOrCreateUser for pgbench:\n%s", login)
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
}

func TestFreshSubjectsAreNew(t *testing.T) {
	src, err := newFreshSubjectSource(loginRequest)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{rng: rand.New(rand.NewPCG(1, 2))}
	seen := map[string]bool{}
	for range 3 {
		var req usersv1.ResolveOrCreateUserRequest
		if err := proto.Unmarshal(src.next(w).Materialize(), &req); err != nil {
			t.Fatal(err)
		}
		s := req.GetOidcSubject()
		if len(s) != newSubjectDigits || s < "2" || s >= "3" || seen[s] {
			t.Errorf("subject %q: want a new 19-digit number in the service's range", s)
		}
		seen[s] = true
		if req.GetName() != loginName || req.GetEmail() != loginEmail {
			t.Errorf("claims changed: %v", &req)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}} {
		got := h.quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff < -0.02 || diff > 0.02 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", c.q, got, c.want)
		}
	}
}
