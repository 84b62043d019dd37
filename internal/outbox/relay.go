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
// Each round reads the oldest events (PendingEvents) and publishes them
// in waves: the first of each user's at once, then, once JetStream has
// acknowledged a user's event, the user's next; then it deletes the
// acknowledged ones. An event is published only after the one before it
// of its user is in the stream, so one user's events reach the stream in
// the order they were committed, also when a publish fails and is tried
// again later, while the events of different users go out side by side.
// Every event is published with its id as Nats-Msg-Id: an event published
// again, after a crash between the acknowledgement and the delete, is
// dropped by JetStream as a duplicate within the stream's duplicate
// window.
type Relay struct {
	cfg     RelayConfig
	js      jetstream.JetStream
	metrics *Metrics
	log     *slog.Logger
	// reported are the seqs of the rows that are no event, each logged
	// once while this replica relays.
	reported map[int64]bool
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
		r.reported = make(map[int64]bool)
		r.log.Info("relaying events to NATS", "stream", r.cfg.Stream.Name)
		err = r.relay(ctx, conn)
		r.metrics.leader.Set(0)
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
		// A pause, so that a failure that will recur (a missing table, a
		// statement that times out) does not reconnect in a tight loop.
		r.log.Warn("event relay stopped on a database error; trying for the lock again", "error", err, "in", r.cfg.TakeoverInterval.String())
		if !sleep(ctx, r.cfg.TakeoverInterval) {
			return
		}
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
	// While NATS is away, a failure every few seconds: logged when its
	// reason changes, not each time.
	failures := &changeLog{log: r.log, msg: "event relay: cannot publish; trying again with a backoff up to " + r.cfg.MaxBackoff.String()}
	for {
		if !streamReady {
			if err := r.ensureStream(ctx); err != nil {
				failures.note(fmt.Errorf("stream %s: %w", r.cfg.Stream.Name, err))
				if !sleep(ctx, backoff) {
					return ctx.Err()
				}
				backoff = min(2*backoff, r.cfg.MaxBackoff)
				// The session must stay usable while NATS is away.
				if err := r.ping(ctx, conn); err != nil {
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
		res := r.publish(ctx, events)
		if len(res.acked) > 0 {
			if err := r.delete(ctx, q, res.acked); err != nil {
				return err
			}
			r.metrics.published.Add(float64(len(res.acked)))
		}
		if ctx.Err() != nil { // a stop, not a failure
			return ctx.Err()
		}
		if res.err != nil {
			r.metrics.failed.Add(float64(res.failed))
			failures.note(res.err)
			streamReady = false // it may have been deleted
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			continue
		}
		backoff = minBackoff
		failures.reset()
		// Fewer than a batch: all there was; or nothing published (rows
		// that are no event): wait for more.
		if (len(events) < int(r.cfg.Batch) || len(res.acked) == 0) && !sleep(ctx, r.cfg.Poll) {
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

func (r *Relay) ping(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
	defer cancel()
	return conn.Ping(ctx)
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

// byUser splits events, in order, into each user's, in order, the users
// in the order of their first event.
func byUser(events []db.Outbox) [][]db.Outbox {
	index := make(map[[16]byte]int, len(events))
	var out [][]db.Outbox
	for _, e := range events {
		i, ok := index[e.IdentityID]
		if !ok {
			i = len(out)
			index[e.IdentityID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], e)
	}
	return out
}

// published is what a round's publishing did.
type published struct {
	acked  []int64 // the seqs JetStream acknowledged
	failed int     // events whose publish failed
	err    error   // the first publish failure
}

// publish publishes events in waves: the first event of each user's at
// once, then the next of each user whose event JetStream acknowledged,
// and so on; each wave waits up to AckTimeout for its acknowledgements,
// also once ctx is done, and none starts after. A user's events stop at
// one that fails, for a later round to publish from there, and at a row
// that is no event, which stays in the outbox, logged once: the other
// users' go on. A publish that NATS refuses at once ends the round.
func (r *Relay) publish(ctx context.Context, events []db.Outbox) published {
	var res published
	queues := byUser(events)
	for ctx.Err() == nil && len(queues) > 0 {
		futures := make([]jetstream.PubAckFuture, 0, len(queues))
		sent := make([][]db.Outbox, 0, len(queues)) // the queue of each future's event
		refused := false
		for _, q := range queues {
			msg, err := natsMsg(q[0])
			if err != nil {
				r.reportBad(q[0], err)
				continue
			}
			f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(q[0].ID.String()))
			if err != nil { // NATS itself: the rest would fail alike
				res.failed++
				res.err = cmpErr(res.err, err)
				refused = true
				break
			}
			futures = append(futures, f)
			sent = append(sent, q)
		}
		next := queues[:0]
		timeout := time.NewTimer(r.cfg.AckTimeout)
		for i, f := range futures {
			select {
			case <-f.Ok():
				res.acked = append(res.acked, sent[i][0].Seq)
				if len(sent[i]) > 1 {
					next = append(next, sent[i][1:])
				}
			case err := <-f.Err():
				res.failed++
				res.err = cmpErr(res.err, err)
			case <-timeout.C:
				res.failed += len(futures) - i
				res.err = cmpErr(res.err, fmt.Errorf("no acknowledgement within %s", r.cfg.AckTimeout))
				return res
			}
		}
		timeout.Stop()
		if refused {
			return res
		}
		queues = next
	}
	return res
}

// reportBad logs a row that is no event, once per row while this replica
// relays, and counts it among the failures.
func (r *Relay) reportBad(e db.Outbox, err error) {
	if r.reported[e.Seq] {
		return
	}
	r.reported[e.Seq] = true
	r.metrics.failed.Inc()
	r.log.Error("event relay: an outbox row is not an event; it stays in the outbox, and its user's later events behind it", "seq", e.Seq, "error", err)
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
