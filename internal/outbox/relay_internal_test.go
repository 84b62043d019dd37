package outbox

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
)

// A round publishes each user's events in their order, one wave after
// another: byUser keeps each user's in order, the users in the order of
// their first event.
func TestByUser(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	events := []db.Outbox{
		{Seq: 1, IdentityID: a}, {Seq: 2, IdentityID: b}, {Seq: 3, IdentityID: a}, {Seq: 4, IdentityID: c}, {Seq: 5, IdentityID: b}, {Seq: 6, IdentityID: a},
	}
	var got [][]int64
	for _, q := range byUser(events) {
		var seqs []int64
		for _, e := range q {
			seqs = append(seqs, e.Seq)
		}
		got = append(got, seqs)
	}
	if fmt.Sprint(got) != "[[1 3 6] [2 5] [4]]" {
		t.Errorf("by user: %v, want [[1 3 6] [2 5] [4]]", got)
	}
}

// A row that cannot be read as its kind's event is an error, never an
// empty event.
func TestMessageOfABadRow(t *testing.T) {
	for name, e := range map[string]db.Outbox{
		"unknown kind": {Kind: "user.renamed", Data: []byte(`{}`)},
		"not JSON":     {Kind: "user.updated", Data: []byte(`{`)},
		"wrong shape":  {Kind: "api_token.created", Data: []byte(`{"id": 7}`)},
	} {
		if _, _, err := Message(e); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
