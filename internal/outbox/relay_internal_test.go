package outbox

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
)

// A round publishes only the first pending event of each user, in seq
// order: a later one of the same user waits for the next round, so that a
// failed publish cannot be overtaken by the user's next event.
func TestFirstOfEachUser(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	events := []db.Outbox{
		{Seq: 1, IdentityID: a}, {Seq: 2, IdentityID: b}, {Seq: 3, IdentityID: a}, {Seq: 4, IdentityID: uuid.New()}, {Seq: 5, IdentityID: b},
	}
	var got []int64
	for _, e := range firstOfEachUser(events) {
		got = append(got, e.Seq)
	}
	if fmt.Sprint(got) != "[1 2 4]" {
		t.Errorf("a round publishes seqs %v, want [1 2 4]", got)
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
