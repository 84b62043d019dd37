package lastused_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/lastused"
)

// writes records what each write was given.
type writes struct {
	calls []map[uuid.UUID]time.Time
	fail  error
}

func (w *writes) write(_ context.Context, ids []uuid.UUID, at []time.Time) error {
	if len(ids) != len(at) {
		panic("ids and times differ in length")
	}
	batch := map[uuid.UUID]time.Time{}
	for i, id := range ids {
		batch[id] = at[i]
	}
	w.calls = append(w.calls, batch)
	return w.fail
}

func TestUseIsLaterEachTime(t *testing.T) {
	r := lastused.New((&writes{}).write)
	id := uuid.New()
	now := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)

	first := r.Use(id, nil, now)
	if want := now.Truncate(time.Microsecond); !first.Equal(want) {
		t.Errorf("first use = %s, want now to the microsecond %s", first, want)
	}
	// The same instant, and an earlier one (a clock step back): each a
	// microsecond after the last.
	if got := r.Use(id, nil, now); !got.Equal(first.Add(time.Microsecond)) {
		t.Errorf("second use at the same instant = %s, want %s", got, first.Add(time.Microsecond))
	}
	if got := r.Use(id, nil, now.Add(-time.Hour)); !got.Equal(first.Add(2 * time.Microsecond)) {
		t.Errorf("use after a clock step back = %s, want %s", got, first.Add(2*time.Microsecond))
	}
	// After a stored use later than now (another replica's, or a
	// flushed one), a microsecond after that.
	stored := now.Add(time.Minute)
	if got := r.Use(uuid.New(), &stored, now); !got.Equal(stored.Add(time.Microsecond)) {
		t.Errorf("use after a later stored one = %s, want %s", got, stored.Add(time.Microsecond))
	}
}

func TestFlushWritesOnceAndOnlyWhatIsNew(t *testing.T) {
	w := &writes{}
	r := lastused.New(w.write)
	a, b := uuid.New(), uuid.New()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := range 100 {
		r.Use(a, nil, now.Add(time.Duration(i)*time.Millisecond))
	}
	last := r.Use(b, nil, now)

	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(w.calls) != 1 || len(w.calls[0]) != 2 {
		t.Fatalf("writes = %v, want one write of two tokens", w.calls)
	}
	if got, want := w.calls[0][a], now.Add(99*time.Millisecond); !got.Equal(want) {
		t.Errorf("written use of a = %s, want its latest %s", got, want)
	}
	if !w.calls[0][b].Equal(last) {
		t.Errorf("written use of b = %s, want %s", w.calls[0][b], last)
	}
	if _, ok := r.Latest(a); ok {
		t.Errorf("a use is still pending after the flush wrote it")
	}
	if err := r.Flush(t.Context()); err != nil || len(w.calls) != 1 {
		t.Errorf("a flush with nothing new: %v, writes = %d, want none", err, len(w.calls))
	}
}

// A failed write keeps its uses for the next flush, unless a later use of
// the same token came meanwhile.
func TestFailedFlushKeepsTheUses(t *testing.T) {
	w := &writes{fail: errors.New("database away")}
	r := lastused.New(w.write)
	a, b := uuid.New(), uuid.New()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	useA := r.Use(a, nil, now)
	r.Use(b, nil, now)

	if err := r.Flush(t.Context()); err == nil {
		t.Fatal("flush succeeded with a failing write")
	}
	laterB := r.Use(b, nil, now.Add(time.Second))
	w.fail = nil
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := w.calls[len(w.calls)-1]
	if !got[a].Equal(useA) || !got[b].Equal(laterB) {
		t.Errorf("retried write = %v, want a at %s and b at its later use %s", got, useA, laterB)
	}
}

// The ids go to the write in ascending order, whatever order they were
// used in, so that two replicas' writes lock rows in the same order.
func TestFlushWritesInIDOrder(t *testing.T) {
	var got []uuid.UUID
	r := lastused.New(func(_ context.Context, ids []uuid.UUID, _ []time.Time) error {
		got = ids
		return nil
	})
	now := time.Now()
	for range 500 {
		r.Use(uuid.New(), nil, now)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 500 || !slices.IsSortedFunc(got, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }) {
		t.Errorf("wrote %d ids, sorted %v; want 500 in ascending order", len(got), slices.IsSortedFunc(got, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }))
	}
}

// A flush that starts while another is writing waits for it: when that
// write fails (as the periodic one may at shutdown), the later flush
// writes the uses it gave back, rather than finding nothing to write
// while they are out.
func TestFlushWaitsForTheFlushUnderWay(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls [][]uuid.UUID
	first := true
	r := lastused.New(func(_ context.Context, ids []uuid.UUID, _ []time.Time) error {
		calls = append(calls, ids)
		if first {
			first = false
			close(entered)
			<-release
			return errors.New("cancelled")
		}
		return nil
	})
	id := uuid.New()
	r.Use(id, nil, time.Now())

	firstDone := make(chan error, 1)
	go func() { firstDone <- r.Flush(t.Context()) }()
	<-entered
	secondDone := make(chan error, 1)
	go func() { secondDone <- r.Flush(t.Context()) }()
	select {
	case err := <-secondDone:
		t.Fatalf("the second flush returned (%v) while the first was writing", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-firstDone; err == nil {
		t.Fatal("the first flush succeeded; want its write's error")
	}
	if err := <-secondDone; err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || len(calls[1]) != 1 || calls[1][0] != id {
		t.Errorf("writes = %v, want the second to write the use the first gave back", calls)
	}
	if _, ok := r.Latest(id); ok {
		t.Errorf("the use is still pending after the second flush wrote it")
	}
}
