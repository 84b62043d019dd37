// Package coalesce folds concurrent point reads into one batch read, but
// only while enough of them are already running: a database pays a fixed
// price per statement and a few µs per row, so under load one `= ANY`
// answers many callers for little more than the price of one, and when
// the load is light no call waits for anyone.
package coalesce

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Loader answers requests of type R for values of type V, both of which
// have a key of type K. Up to limit reads run at once, each the caller's
// own single read, under the caller's own context. A call that finds
// limit reads running queues instead; when a read ends, its slot goes to
// the queue, which it reads in one batch (up to maxBatch requests). A
// queued caller whose context ends returns at once with the context's
// error and is left out of its batch, and a batch whose callers have all
// gone is cancelled, so a queued call keeps the deadline and cancellation
// of an unqueued one.
type Loader[R any, K comparable, V any] struct {
	one        func(context.Context, R) (V, error)
	many       func(context.Context, []R) ([]V, error)
	requestKey func(R) K
	valueKey   func(V) K
	missing    error
	limit      int
	maxBatch   int

	mu      sync.Mutex
	running int // reads and batches running, at most limit
	queue   []*call[R, V]
}

// Config is what a Loader reads with.
type Config[R any, K comparable, V any] struct {
	// One answers one request.
	One func(context.Context, R) (V, error)
	// Many reads the values of several requests, in any order, leaving
	// out requests that have none.
	Many func(context.Context, []R) ([]V, error)
	// RequestKey and ValueKey match the values Many returns to requests.
	RequestKey func(R) K
	ValueKey   func(V) K
	// Missing is the error of a request that Many left out: the error One
	// returns for it, so that a caller cannot tell a batched read from
	// its own. If it is nil, the caller of such a request calls One
	// itself, outside the limit: for a Many that only reads what One may
	// also write (a login that inserts a subject it does not find).
	Missing error
	// Limit is how many reads run at once before calls queue; at least 1.
	Limit int
	// MaxBatch is the most requests one batch reads; at least 1.
	MaxBatch int
}

// New returns a Loader reading with cfg.
func New[R any, K comparable, V any](cfg Config[R, K, V]) *Loader[R, K, V] {
	return &Loader[R, K, V]{
		one:        cfg.One,
		many:       cfg.Many,
		requestKey: cfg.RequestKey,
		valueKey:   cfg.ValueKey,
		missing:    cfg.Missing,
		limit:      max(cfg.Limit, 1),
		maxBatch:   max(cfg.MaxBatch, 1),
	}
}

// call is one queued caller.
type call[R, V any] struct {
	ctx  context.Context
	req  R
	val  V
	err  error
	done chan struct{} // closed once val and err are set
}

// errLeftOut is a queued call's error when its batch had no value for it
// and the Loader has no Missing error, or when the batch panicked: the
// caller calls One itself.
var errLeftOut = errors.New("left out of the batch")

// Load answers req.
func (l *Loader[R, K, V]) Load(ctx context.Context, req R) (V, error) {
	l.mu.Lock()
	if l.running < l.limit {
		l.running++
		l.mu.Unlock()
		defer l.release() // even if one panics, or the slot is lost
		return l.one(ctx, req)
	}
	if err := ctx.Err(); err != nil { // gone already: no place in the queue
		l.mu.Unlock()
		var zero V
		return zero, err
	}
	c := &call[R, V]{ctx: ctx, req: req, done: make(chan struct{})}
	l.queue = append(l.queue, c)
	l.mu.Unlock()

	select {
	case <-c.done:
		if c.err == errLeftOut {
			return l.one(ctx, req)
		}
		return c.val, c.err
	case <-ctx.Done():
		// Its batch, if it has started, goes on for the others; next
		// skips it if it has not.
		var zero V
		return zero, ctx.Err()
	}
}

// release ends a caller's own read: its slot goes to the queue, if any
// caller waits there, or is freed.
func (l *Loader[R, K, V]) release() {
	if batch := l.next(); batch != nil {
		// A goroutine of its own, so that the caller whose read ended
		// answers now, not after the batch.
		go l.drain(batch)
	}
}

// next takes the next batch from the queue for the slot of a read that
// ended, or, with the queue empty, frees the slot and returns nil.
func (l *Loader[R, K, V]) next() []*call[R, V] {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.queue) > 0 {
		n := min(len(l.queue), l.maxBatch)
		batch := make([]*call[R, V], 0, n)
		for _, c := range l.queue[:n] {
			if c.ctx.Err() == nil { // the others have returned already
				batch = append(batch, c)
			}
		}
		clear(l.queue[:n]) // let the queue's array forget the calls
		l.queue = l.queue[n:]
		if len(batch) > 0 {
			return batch
		}
	}
	l.queue = nil
	l.running--
	return nil
}

// drain reads batches in one slot until the queue is empty.
func (l *Loader[R, K, V]) drain(batch []*call[R, V]) {
	for batch != nil {
		l.read(batch)
		batch = l.next()
	}
}

// read answers every call of batch.
func (l *Loader[R, K, V]) read(batch []*call[R, V]) {
	answered := 0
	defer func() {
		// This goroutine is no handler's, so no recovery interceptor
		// would catch a panic here: the whole process would die. Send
		// the callers left to read on their own instead, each in its
		// handler: a request that panics then panics there, and is
		// answered as it would have been alone, and the others are
		// answered as if nothing had happened.
		if recover() != nil {
			for _, c := range batch[answered:] {
				c.err = errLeftOut
				close(c.done)
			}
		}
	}()

	if len(batch) == 1 {
		// One caller: its own read, under its own context, exactly as if
		// it had not queued.
		c := batch[0]
		c.val, c.err = l.one(c.ctx, c.req)
		close(c.done)
		return
	}

	ctx, stop := whileAnyWaits(batch)
	defer stop()
	reqs := make([]R, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	vals, err := l.many(ctx, reqs)
	byKey := make(map[K]V, len(vals))
	for _, v := range vals {
		byKey[l.valueKey(v)] = v
	}
	for _, c := range batch {
		switch v, ok := byKey[l.requestKey(c.req)]; {
		case err != nil:
			c.err = err
		case !ok && l.missing != nil:
			c.err = l.missing
		case !ok:
			c.err = errLeftOut
		default:
			c.val = v
		}
		close(c.done)
		answered++
	}
}

// whileAnyWaits returns the context a batch reads in: it carries the
// first caller's values (its trace, say) and ends once every caller's own
// context has ended, so that no caller's deadline or cancellation cuts
// the read short for the others, and no read goes on for nobody.
func whileAnyWaits[R, V any](batch []*call[R, V]) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	var waiting atomic.Int64
	waiting.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, c := range batch {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// Queued returns how many calls wait in the queue.
func (l *Loader[R, K, V]) Queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}
