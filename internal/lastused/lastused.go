// Package lastused keeps when each API token was last used. A resolve is
// a read: its use is recorded here, in memory, and written with the
// others, one statement for every token used since the last write, once
// per interval and once more at shutdown. A crash loses the uses since
// the last write that succeeded: one interval's, while the database
// answers.
package lastused

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Write stores the last uses: ids[i] was last used at at[i].
type Write func(ctx context.Context, ids []uuid.UUID, at []time.Time) error

// A Recorder records token uses and writes them in batches.
type Recorder struct {
	write Write

	mu      sync.Mutex
	pending map[uuid.UUID]time.Time // the latest unwritten use of each token

	// flushing makes flushes one at a time: a flush that starts while
	// another writes waits for it, and so sees the uses it gives back if
	// its write fails (the last flush at shutdown, for one).
	flushing sync.Mutex
}

// New returns a Recorder that writes with write.
func New(write Write) *Recorder {
	return &Recorder{write: write, pending: map[uuid.UUID]time.Time{}}
}

// Use records a use of token id at now, and returns the time recorded:
// now to the microsecond (what PostgreSQL keeps), but at least a
// microsecond after the token's last use known here, stored (the row's
// last_used_at, nil for none) or not yet written. So each use of a token
// through one replica reads a later last_used_at than the one before,
// however close together, and what a use returns is what is stored.
func (r *Recorder) Use(id uuid.UUID, stored *time.Time, now time.Time) time.Time {
	at := now.Truncate(time.Microsecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	if stored != nil && !at.After(*stored) {
		at = stored.Add(time.Microsecond)
	}
	if prev, ok := r.pending[id]; ok && !at.After(prev) {
		at = prev.Add(time.Microsecond)
	}
	r.pending[id] = at
	return at
}

// Latest is the last use of token id recorded here and not yet written,
// if any.
func (r *Recorder) Latest(id uuid.UUID) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.pending[id]
	return at, ok
}

// Flush writes the uses recorded since the last flush, in one call of
// write, or none if there are none; one flush at a time. If the write
// fails, the uses are kept for the next flush (a later use of the same
// token replacing its own).
//
// The ids go to write in ascending order, so that the rows of two
// replicas' concurrent writes are locked in the same order: in the order
// of Go's map they deadlocked, in 24 of 40 concurrent writes of the same
// 2,000 tokens.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[uuid.UUID]time.Time, len(batch))
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ids := slices.SortedFunc(maps.Keys(batch), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	at := make([]time.Time, len(ids))
	for i, id := range ids {
		at[i] = batch[id]
	}
	err := r.write(ctx, ids, at)
	if err != nil {
		r.mu.Lock()
		for id, t := range batch {
			if later, ok := r.pending[id]; !ok || t.After(later) {
				r.pending[id] = t
			}
		}
		r.mu.Unlock()
	}
	return err
}

// Run flushes every interval until ctx ends, logging a failed flush,
// whose uses the next one writes. It does not flush at the end: the
// caller does, once no more uses can be recorded. A write under way when
// ctx ends goes on to its end (the write's own timeout bounds it), and
// the caller's last Flush waits for it.
func (r *Recorder) Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := r.Flush(context.WithoutCancel(ctx)); err != nil {
				log.Warn("writing API tokens' last use; will retry", "tokens", r.pendingCount(), "error", err)
			}
		}
	}
}

func (r *Recorder) pendingCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}
