package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agynio/users/internal/db"
)

// Relay publishes the outbox's events to JetStream. Of the replicas that
// run one, only the one whose session holds the relay's advisory lock
// (TryRelayLock) relays; the others try for it every TakeoverInterval,
// so that one takes over within about that long of the holder's session
// ending.
//
// Each round reads the oldest events (PendingEvents), publishes the first
// of each user's among them at once, waits for their acknowledgements and
// deletes the acknowledged ones; the user's next event waits for the next
// round. So one user's events reach the stream in the order they were
// committed even when a publish fails and is tried again later, while
// the events of different users go out side by side. Every event is
// published with its id as Nats-Msg-Id: an event published again, after
// a crash between the acknowledgement and the delete, is dropped by
// JetStream as a duplicate within the stream's duplicate window.
type Relay struct {
	cfg     RelayConfig
	js      jetstream.JetStream
	metrics *Metrics
	log     *slog.Logger
}

// RelayConfig is what a Relay needs besides a JetStream context.
type RelayConfig struct {
	// Connect opens the relay's own database session, which holds the
	// lock and runs the relay's statements: if it is lost, so is the
	// lock, and the relay's next statement fails rather than relay
	// beside another replica.
	Connect func(context.Context) (*pgx.Conn, error)
	// Stream is created, if no stream of its name exists, with Subjects
	// as its subjects; an existing one is used as it is.
	Stream jetstream.StreamConfig
	// DBTimeout bounds each statement.
	DBTimeout time.Duration
	// Batch is the most events read in a round; 0 means DefaultBatch.
	Batch int32
	// Poll is how long the relay waits for new events after a round that
	// found fewer than Batch, each its user's first; 0 means
	// DefaultPoll.
	Poll time.Duration
	// TakeoverInterval is how often a replica that does not hold the lock
	// tries for it; 0 means DefaultTakeoverInterval.
	TakeoverInterval time.Duration
	// AckTimeout bounds the wait for a round's acknowledgements; 0 means
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// MaxBackoff is the longest wait before a publish is tried again
	// after failures; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
}

// The relay's defaults. An idle relay looks for events every 200 ms, one
// index probe; an event waits that long at most before it is published.
// Under load the wait gathers more events into each round: with UpdateUser
// at full load, events on ran at 0.91x events off against 0.88x with 50 ms
// (make bench, README: Performance). Backoff after a failed publish
// doubles from 100 ms to 5 s, so that the backlog starts to drain within
// 5 s of NATS coming back.
const (
	DefaultBatch            = 1000
	DefaultPoll             = 200 * time.Millisecond
	DefaultTakeoverInterval = time.Second
	DefaultAckTimeout       = 5 * time.Second
	DefaultMaxBackoff       = 5 * time.Second
	minBackoff              = 100 * time.Millisecond
)

// NewRelay returns a relay publishing through js.
func NewRelay(cfg RelayConfig, js jetstream.JetStream, metrics *Metrics, log *slog.Logger) *Relay {
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.TakeoverInterval == 0 {
		cfg.TakeoverInterval = DefaultTakeoverInterval
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	return &Relay{cfg: cfg, js: js, metrics: metrics, log: log}
}

// Run relays while this replica holds the lock, and waits for it while
// another does, until ctx ends. Its session, and with it the lock, ends
// with it.
func (r *Relay) Run(ctx context.Context) {
	for {
		conn, err := r.lead(ctx)
		if err != nil {
			return // ctx ended
		}
		r.metrics.leader.Set(1)
		r.log.Info("relaying events to NATS", "stream", r.cfg.Stream.Name)
		err = r.relay(ctx, conn)
		r.metrics.leader.Set(0)
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("event relay lost its database session; trying for the lock again", "error", err)
	}
}

// lead returns a session that holds the relay's lock, once it has one:
// it tries every TakeoverInterval, keeping one session meanwhile.
func (r *Relay) lead(ctx context.Context) (*pgx.Conn, error) {
	var conn *pgx.Conn
	for {
		if conn == nil || conn.IsClosed() {
			c, err := r.cfg.Connect(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Debug("event relay: no database session", "error", err)
			}
			conn = c
		}
		if conn != nil {
			locked, err := r.tryLock(ctx, conn)
			if locked {
				return conn, nil
			}
			if err != nil {
				closeConn(conn)
				conn = nil
			}
		}
		if !sleep(ctx, r.cfg.TakeoverInterval) {
			if conn != nil {
				closeConn(conn)
			}
			return nil, ctx.Err()
		}
	}
}

func (r *Relay) tryLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
	defer cancel()
	return db.New(conn).TryRelayLock(ctx)
}

// relay publishes rounds of events until a statement fails (the session,
// and the lock, may be gone) or ctx ends.
func (r *Relay) relay(ctx context.Context, conn *pgx.Conn) error {
	q := db.New(conn)
	streamReady := false
	backoff := minBackoff
	for {
		if !streamReady {
			if err := r.ensureStream(ctx); err != nil {
				r.log.Warn("event relay: cannot reach the stream; trying again", "stream", r.cfg.Stream.Name, "error", err, "in", backoff.String())
				if !sleep(ctx, backoff) {
					return ctx.Err()
				}
				backoff = min(2*backoff, r.cfg.MaxBackoff)
				// The session must stay usable while NATS is away.
				if err := conn.Ping(ctx); err != nil {
					return err
				}
				continue
			}
			streamReady = true
		}

		events, err := r.pending(ctx, q)
		if err != nil {
			return err
		}
		round := firstOfEachUser(events)
		acked, pubErr := r.publish(ctx, round)
		if len(acked) > 0 {
			if err := r.delete(ctx, q, acked); err != nil {
				return err
			}
			r.metrics.published.Add(float64(len(acked)))
		}
		if pubErr != nil {
			r.metrics.failed.Add(float64(len(round) - len(acked)))
			r.log.Warn("event relay: publish failed; trying again", "events", len(round)-len(acked), "error", pubErr, "in", backoff.String())
			streamReady = false // it may have been deleted
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			continue
		}
		backoff = minBackoff
		if len(round) == len(events) && len(events) < int(r.cfg.Batch) && !sleep(ctx, r.cfg.Poll) {
			return ctx.Err()
		}
	}
}

// ensureStream creates the stream unless one of its name exists.
func (r *Relay) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	_, err := r.js.Stream(ctx, r.cfg.Stream.Name)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err = r.js.CreateStream(ctx, r.cfg.Stream)
	if err == nil {
		r.log.Info("event stream created", "stream", r.cfg.Stream.Name, "subjects", r.cfg.Stream.Subjects, "max_age", r.cfg.Stream.MaxAge.String())
	}
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another replica's, a moment ago
		err = nil
	}
	return err
}

func (r *Relay) pending(ctx context.Context, q *db.Queries) ([]db.Outbox, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
	defer cancel()
	return q.PendingEvents(ctx, r.cfg.Batch)
}

func (r *Relay) delete(ctx context.Context, q *db.Queries, seqs []int64) error {
	// Not cut short by ctx: what JetStream has acknowledged is deleted
	// even at shutdown, so that the next relay does not publish it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.DBTimeout)
	defer cancel()
	_, err := q.DeleteEvents(ctx, seqs)
	return err
}

// firstOfEachUser are the events, in order, that are the first of their
// user's among events: those a round publishes.
func firstOfEachUser(events []db.Outbox) []db.Outbox {
	seen := make(map[[16]byte]bool, len(events))
	out := make([]db.Outbox, 0, len(events))
	for _, e := range events {
		if !seen[e.IdentityID] {
			seen[e.IdentityID] = true
			out = append(out, e)
		}
	}
	return out
}

// publish sends the events at once and waits, up to AckTimeout, for their
// acknowledgements. It returns the seqs of the events acknowledged, and
// the first error if any event was not.
func (r *Relay) publish(ctx context.Context, events []db.Outbox) ([]int64, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	sent := make([]int64, 0, len(events)) // the seq of each future's event
	var firstErr error
	for _, e := range events {
		msg, err := natsMsg(e)
		if err != nil {
			// A row that is no event of its kind stays, holding back its
			// user's later events, and is reported at every round (the
			// oldest pending age grows); the other users' go on.
			r.log.Error("event relay: an outbox row is not an event; it stays in the outbox", "seq", e.Seq, "error", err)
			firstErr = cmpErr(firstErr, err)
			continue
		}
		f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(e.ID.String()))
		if err != nil { // NATS itself: the rest would fail alike
			firstErr = cmpErr(firstErr, err)
			break
		}
		futures = append(futures, f)
		sent = append(sent, e.Seq)
	}
	acked := make([]int64, 0, len(futures))
	timeout := time.NewTimer(r.cfg.AckTimeout)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, sent[i])
		case err := <-f.Err():
			firstErr = cmpErr(firstErr, err)
		case <-timeout.C:
			return acked, cmpErr(firstErr, fmt.Errorf("no acknowledgement within %s", r.cfg.AckTimeout))
		case <-ctx.Done():
			return acked, cmpErr(firstErr, ctx.Err())
		}
	}
	return acked, firstErr
}

// natsMsg is the NATS message of an event.
func natsMsg(e db.Outbox) (*nats.Msg, error) {
	subject, payload, err := Message(e)
	if err != nil {
		return nil, err
	}
	data, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set("Content-Type", "application/protobuf")
	return msg, nil
}

// cmpErr is the first of two errors that is not nil.
func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// closeConn ends a session, releasing its lock, within a second.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx) //nolint:errcheck // the session ends either way
}
