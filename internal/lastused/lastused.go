// Package lastused keeps when each API token was last used. A resolve is
// a read: its use is recorded here, in memory, and written with the
// others, one statement for every token used since the last write, once
// per interval and once more at shutdown. A crash loses at most the uses
// of one interval.
package lastused

import (
	"context"
	"log/slog"
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
// write, or none if there are none. If the write fails, the uses are kept
// for the next flush (a later use of the same token replacing its own).
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[uuid.UUID]time.Time, len(batch))
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(batch))
	at := make([]time.Time, 0, len(batch))
	for id, t := range batch {
		ids = append(ids, id)
		at = append(at, t)
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
// caller does, once no more uses can be recorded.
func (r *Recorder) Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
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
