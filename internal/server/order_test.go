package server

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
)

// BatchGetUsers' statement returns each matching row once, in whatever
// order PostgreSQL reads them; the API promises request order.
func TestInRequestOrder(t *testing.T) {
	t.Parallel()
	a, b, c := testRow(1), testRow(2), testRow(3)
	missing := uuid.MustParse("00000000-0000-0000-0000-0000000000ff")

	tests := []struct {
		name string
		ids  []uuid.UUID
		rows []db.User
		want []db.User
	}{
		{"no rows give no users", []uuid.UUID{a.IdentityID}, nil, nil},
		{"one row is returned as it is", []uuid.UUID{missing, b.IdentityID}, []db.User{b}, []db.User{b}},
		{"rows in index order come back in request order", []uuid.UUID{c.IdentityID, a.IdentityID, b.IdentityID}, []db.User{a, b, c}, []db.User{c, a, b}},
		{"ids with no row are skipped", []uuid.UUID{missing, b.IdentityID, missing, a.IdentityID}, []db.User{a, b}, []db.User{b, a}},
		{"a repeated id yields its row once, at its first occurrence", []uuid.UUID{b.IdentityID, a.IdentityID, b.IdentityID, a.IdentityID}, []db.User{a, b}, []db.User{b, a}},
		{"a repeated id after every other keeps its first place", []uuid.UUID{a.IdentityID, c.IdentityID, b.IdentityID, a.IdentityID}, []db.User{c, b, a}, []db.User{a, c, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, inRequestOrder(tt.ids, tt.rows)); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
		})
	}
}

// Random batches of up to 100 ids, with repeats and ids that have no row,
// against the order the API defines: each user at the position of its
// id's first occurrence (what ORDER BY array_position gave).
func TestInRequestOrderMatchesFirstOccurrence(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		pool := make([]db.User, 1+rng.IntN(60))
		for i := range pool {
			pool[i] = testRow(i + 1)
		}
		ids := make([]uuid.UUID, rng.IntN(101))
		for i := range ids {
			if rng.IntN(5) == 0 {
				ids[i] = uuid.New() // no row
			} else {
				ids[i] = pool[rng.IntN(len(pool))].IdentityID
			}
		}
		// The database's answer: each matching row once, shuffled.
		var rows []db.User
		for _, u := range pool {
			if slices.Contains(ids, u.IdentityID) {
				rows = append(rows, u)
			}
		}
		want := slices.Clone(rows)
		slices.SortFunc(want, func(x, y db.User) int {
			return slices.Index(ids, x.IdentityID) - slices.Index(ids, y.IdentityID)
		})
		rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })

		if diff := cmp.Diff(want, inRequestOrder(ids, rows)); diff != "" {
			t.Fatalf("ids %v: users (-want +got):\n%s", ids, diff)
		}
	}
}

// What putting a full batch in order costs, beside the statement's
// database time it replaces.
func BenchmarkInRequestOrder(b *testing.B) {
	ids := make([]uuid.UUID, 100)
	rows := make([]db.User, 100)
	for i := range rows {
		rows[i] = testRow(i + 1)
		ids[i] = rows[i].IdentityID
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	b.ReportAllocs()
	for b.Loop() {
		sinkRows = inRequestOrder(ids, rows)
	}
}

var sinkRows []db.User

// testRow is a user whose identity id is n.
func testRow(n int) db.User {
	var id uuid.UUID
	id[14], id[15] = byte(n>>8), byte(n)
	return db.User{IdentityID: id, OidcSubject: id.String(), Name: "User " + id.String()[30:]}
}
