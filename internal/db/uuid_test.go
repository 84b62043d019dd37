package db_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/testdb"
)

// The service's pool reads a uuid column from its 16 bytes straight into
// a uuid.UUID, not through its text form (see uuidCodec), and reads it
// right: the value back as it went in, NULL an error.
func TestPoolScansUUIDsInBinary(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := db.NewPool(ctx, testdb.URL(t), db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if !db.ScansUUIDsInBinary(conn.Conn().TypeMap()) {
		t.Error("a uuid.UUID is not scanned from the binary form directly")
	}

	want := uuid.Must(uuid.NewV7())
	var got uuid.UUID
	if err := pool.QueryRow(ctx, "SELECT $1::uuid", want).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("scanned %s, want %s", got, want)
	}
	var ids []uuid.UUID
	if err := pool.QueryRow(ctx, "SELECT ARRAY[$1::uuid, $2::uuid]", want, uuid.Nil).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != want || ids[1] != uuid.Nil {
		t.Errorf("scanned %v, want [%s %s]", ids, want, uuid.Nil)
	}
	if err := pool.QueryRow(ctx, "SELECT NULL::uuid").Scan(&got); err == nil {
		t.Error("NULL scanned into a uuid.UUID without an error")
	}
}
