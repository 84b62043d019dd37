package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/agynio/users/internal/db"
)

// DefaultRetention is how long the outbox keeps an event when no relay
// publishes it (NATS_URL unset). A day: long enough to turn the relay on
// after a day's writes and still publish them, short enough that the
// table holds at most a day of changes.
const DefaultRetention = 24 * time.Hour

// PruneInterval is how often the pruner looks for events past the
// retention, and pruneBatch the most it deletes in one statement.
const (
	PruneInterval = time.Minute
	pruneBatch    = 10000
)

// Prune deletes the events older than retention every interval, until ctx
// ends: the outbox's bound when no relay empties it. Replicas may prune
// at once; each deletes what is left.
func Prune(ctx context.Context, q *db.Queries, retention, interval time.Duration, metrics *Metrics, log *slog.Logger) {
	for {
		n, err := PruneOnce(ctx, q, retention)
		metrics.pruned.Add(float64(n))
		if err != nil && ctx.Err() == nil {
			log.Warn("pruning the event outbox; trying again", "error", err, "in", interval.String())
		}
		if !sleep(ctx, interval) {
			return
		}
	}
}

// PruneOnce deletes the events older than retention, pruneBatch at a
// time, and returns how many it deleted.
func PruneOnce(ctx context.Context, q *db.Queries, retention time.Duration) (int64, error) {
	var total int64
	for {
		n, err := q.PruneEvents(ctx, db.PruneEventsParams{Max: pruneBatch, RetentionSeconds: retention.Seconds()})
		total += n
		if err != nil || n < pruneBatch {
			return total, err
		}
	}
}
