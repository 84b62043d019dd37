package coalesce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agynio/users/internal/testing/testctx"
)

var errMissing = errors.New("missing")

// store is what the tests read: values are "v" + key, keys below 0 have
// none. It records every read, and a read of a key in hold waits until
// the test lets it go, so that the tests can fill the loader's slots.
type store struct {
	mu       sync.Mutex
	ones     []int   // keys read one at a time
	batches  [][]int // keys read in each batch
	manyErr  error   // what every batch returns, if not nil
	hold     map[int]chan struct{}
	started  chan int // each held key, once its read has begun
	batchCtx chan context.Context
	running  atomic.Int64
	peak     atomic.Int64
}

func newStore() *store {
	return &store{hold: map[int]chan struct{}{}, started: make(chan int, 100), batchCtx: make(chan context.Context, 100)}
}

// holdKey makes reads that include key wait for release.
func (s *store) holdKey(key int) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold[key] = ch
	s.mu.Unlock()
	return func() { close(ch) }
}

func (s *store) wait(ctx context.Context, keys []int) error {
	s.mu.Lock()
	var ch chan struct{}
	for _, k := range keys {
		if c, ok := s.hold[k]; ok {
			ch = c
			s.started <- k
		}
	}
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *store) enter() func() {
	n := s.running.Add(1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { s.running.Add(-1) }
}

func (s *store) one(ctx context.Context, key int) (string, error) {
	defer s.enter()()
	s.mu.Lock()
	s.ones = append(s.ones, key)
	s.mu.Unlock()
	if err := s.wait(ctx, []int{key}); err != nil {
		return "", err
	}
	if key < 0 {
		return "", errMissing
	}
	return fmt.Sprint("v", key), nil
}

func (s *store) many(ctx context.Context, keys []int) ([]string, error) {
	defer s.enter()()
	s.mu.Lock()
	s.batches = append(s.batches, slices.Clone(keys))
	err := s.manyErr
	s.mu.Unlock()
	s.batchCtx <- ctx
	if werr := s.wait(ctx, keys); werr != nil {
		return nil, werr
	}
	if err != nil {
		return nil, err
	}
	var vals []string
	for _, k := range slices.Backward(keys) { // any order will do
		if k >= 0 {
			vals = append(vals, fmt.Sprint("v", k))
		}
	}
	return vals, nil
}

func (s *store) reads() (ones []int, batches [][]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ones), slices.Clone(s.batches)
}

func newLoader(s *store, limit, maxBatch int) *Loader[int, int, string] {
	return New(config(s, limit, maxBatch))
}

func config(s *store, limit, maxBatch int) Config[int, int, string] {
	return Config[int, int, string]{
		One:        s.one,
		Many:       s.many,
		RequestKey: func(k int) int { return k },
		ValueKey: func(v string) int {
			var k int
			fmt.Sscanf(v, "v%d", &k) //nolint:errcheck // the store writes it
			return k
		},
		Missing:  errMissing,
		Limit:    limit,
		MaxBatch: maxBatch,
	}
}

// result is what one Load returned.
type result struct {
	val string
	err error
}

// loadAsync starts Load and returns where its result arrives.
func loadAsync(ctx context.Context, l *Loader[int, int, string], key int) <-chan result {
	ch := make(chan result, 1)
	go func() {
		v, err := l.Load(ctx, key)
		ch <- result{v, err}
	}()
	return ch
}

// waitQueued waits until n calls are queued.
func waitQueued(t *testing.T, l *Loader[int, int, string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", l.Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// fillSlot starts a read of key that holds the loader's one slot until
// the returned function is called.
func fillSlot(t *testing.T, s *store, l *Loader[int, int, string], key int) (release func(), res <-chan result) {
	t.Helper()
	release = s.holdKey(key)
	res = loadAsync(t.Context(), l, key)
	if got := <-s.started; got != key {
		t.Fatalf("read of %d started, want %d", got, key)
	}
	return release, res
}

func TestIdleLoaderReadsEachKeyAlone(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 2, 100)
	for _, key := range []int{1, 2, -1} {
		v, err := l.Load(t.Context(), key)
		want := result{fmt.Sprint("v", key), nil}
		if key < 0 {
			want = result{"", errMissing}
		}
		if v != want.val || !errors.Is(err, want.err) {
			t.Errorf("Load(%d) = %q, %v; want %q, %v", key, v, err, want.val, want.err)
		}
	}
	ones, batches := s.reads()
	if !slices.Equal(ones, []int{1, 2, -1}) || len(batches) != 0 {
		t.Errorf("read %v one at a time and %v in batches; want [1 2 -1] and none", ones, batches)
	}
}

func TestIdleReadRunsInTheCallersContext(t *testing.T) {
	t.Parallel()
	type ctxKey struct{}
	var got any
	l := New(Config[int, int, string]{
		One: func(ctx context.Context, _ int) (string, error) {
			got = ctx.Value(ctxKey{})
			return "", nil
		},
		Limit: 1, MaxBatch: 1,
	})
	if _, err := l.Load(context.WithValue(t.Context(), ctxKey{}, "mine"), 1); err != nil {
		t.Fatal(err)
	}
	if got != "mine" {
		t.Errorf("read's context carries %v, want the caller's value", got)
	}
}

func TestBusyLoaderReadsTheQueueInOneBatch(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	release, first := fillSlot(t, s, l, 0)

	keys := []int{1, 2, -3, 2, 4} // a missing key, and one asked for twice
	results := make([]<-chan result, len(keys))
	for i, k := range keys {
		results[i] = loadAsync(t.Context(), l, k)
	}
	waitQueued(t, l, len(keys))
	release()

	if r := <-first; r.err != nil || r.val != "v0" {
		t.Errorf("the slot's own read: %q, %v", r.val, r.err)
	}
	for i, k := range keys {
		r := <-results[i]
		if k < 0 {
			if !errors.Is(r.err, errMissing) {
				t.Errorf("Load(%d) = %q, %v; want the Missing error", k, r.val, r.err)
			}
			continue
		}
		if r.err != nil || r.val != fmt.Sprint("v", k) {
			t.Errorf("Load(%d) = %q, %v; want v%d", k, r.val, r.err, k)
		}
	}
	ones, batches := s.reads()
	if len(ones) != 1 || len(batches) != 1 || len(batches[0]) != len(keys) {
		t.Errorf("read %v alone and %v in batches; want [0] alone and one batch of %d", ones, batches, len(keys))
	}
}

func TestBatchErrorGoesToEveryCaller(t *testing.T) {
	t.Parallel()
	s := newStore()
	errDown := errors.New("database down")
	s.manyErr = errDown
	l := newLoader(s, 1, 100)
	release, _ := fillSlot(t, s, l, 0)
	a, b := loadAsync(t.Context(), l, 1), loadAsync(t.Context(), l, 2)
	waitQueued(t, l, 2)
	release()
	for _, ch := range []<-chan result{a, b} {
		if r := <-ch; !errors.Is(r.err, errDown) {
			t.Errorf("Load = %q, %v; want the batch's error", r.val, r.err)
		}
	}
}

func TestQueuedCallerLeavesOnItsOwnCancellation(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	release, _ := fillSlot(t, s, l, 0)

	ctx, cancel := context.WithCancel(t.Context())
	gone := loadAsync(ctx, l, 1)
	stays := loadAsync(t.Context(), l, 2)
	other := loadAsync(t.Context(), l, 3)
	waitQueued(t, l, 3)
	cancel()
	if r := <-gone; !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled caller got %q, %v; want context.Canceled", r.val, r.err)
	}
	release()
	for _, ch := range []<-chan result{stays, other} {
		if r := <-ch; r.err != nil {
			t.Errorf("caller still waiting got %v", r.err)
		}
	}
	if _, batches := s.reads(); len(batches) != 1 || !slices.Equal(slices.Sorted(slices.Values(batches[0])), []int{2, 3}) {
		t.Errorf("batches %v, want one of [2 3]: a caller that has gone is left out", batches)
	}
}

func TestCallerDeadlineEndsItsWaitWhileTheBatchGoesOn(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	releaseSlot, _ := fillSlot(t, s, l, 0)

	ctx := testctx.NewExpiring(t.Context())
	short := loadAsync(ctx, l, 1)
	waitQueued(t, l, 1) // first in the batch, whose context the batch might wrongly take
	long := loadAsync(t.Context(), l, 2)
	waitQueued(t, l, 2)
	releaseBatch := s.holdKey(2) // the batch will wait on this
	releaseSlot()
	if got := <-s.started; got != 2 {
		t.Fatalf("held read of %d started, want the batch (key 2)", got)
	}

	batchCtx := <-s.batchCtx
	ctx.Expire() // while the batch runs
	if r := <-short; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("caller with a deadline got %q, %v; want context.DeadlineExceeded", r.val, r.err)
	}
	if batchCtx.Err() != nil {
		t.Errorf("batch cancelled (%v) while a caller still waits", batchCtx.Err())
	}
	releaseBatch()
	if r := <-long; r.err != nil || r.val != "v2" {
		t.Errorf("caller without a deadline got %q, %v; want v2", r.val, r.err)
	}
}

func TestBatchEndsWhenEveryCallerHasGone(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	releaseSlot, _ := fillSlot(t, s, l, 0)

	ctx1, cancel1 := context.WithCancel(t.Context())
	ctx2, cancel2 := context.WithCancel(t.Context())
	a, b := loadAsync(ctx1, l, 1), loadAsync(ctx2, l, 2)
	waitQueued(t, l, 2)
	defer s.holdKey(1)() // the batch will wait on this
	releaseSlot()
	<-s.started
	batchCtx := <-s.batchCtx
	cancel1()
	<-a
	if batchCtx.Err() != nil {
		t.Fatalf("batch cancelled (%v) while a caller still waits", batchCtx.Err())
	}
	cancel2()
	<-b
	select {
	case <-batchCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("batch still running for nobody")
	}
}

func TestOneQueuedCallReadsAloneInItsOwnContext(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	release, _ := fillSlot(t, s, l, 0)
	ch := loadAsync(t.Context(), l, 5)
	waitQueued(t, l, 1)
	release()
	if r := <-ch; r.err != nil || r.val != "v5" {
		t.Errorf("Load(5) = %q, %v", r.val, r.err)
	}
	if ones, batches := s.reads(); !slices.Equal(ones, []int{0, 5}) || len(batches) != 0 {
		t.Errorf("read %v alone and %v in batches; want [0 5] alone, no batch", ones, batches)
	}
}

func TestBatchesHoldAtMostMaxBatchKeys(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 3)
	release, _ := fillSlot(t, s, l, 0)
	var results []<-chan result
	for k := 1; k <= 7; k++ {
		results = append(results, loadAsync(t.Context(), l, k))
		waitQueued(t, l, k) // in this order
	}
	release()
	for _, ch := range results {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
	ones, batches := s.reads()
	if !slices.Equal(ones, []int{0, 7}) || len(batches) != 2 || !slices.Equal(batches[0], []int{1, 2, 3}) || !slices.Equal(batches[1], []int{4, 5, 6}) {
		t.Errorf("read %v alone and %v in batches; want [0 7] alone and [[1 2 3] [4 5 6]]", ones, batches)
	}
}

// TestManyCallersNeverExceedTheLimit loads concurrently and checks every
// answer and the number of reads running at once.
func TestManyCallersNeverExceedTheLimit(t *testing.T) {
	t.Parallel()
	const limit = 3
	s := newStore()
	s.batchCtx = make(chan context.Context, 10_000)
	l := newLoader(s, limit, 10)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				key := (g*200+i)%50 - 5 // some missing
				v, err := l.Load(t.Context(), key)
				if key < 0 {
					if !errors.Is(err, errMissing) {
						t.Errorf("Load(%d) = %q, %v; want the Missing error", key, v, err)
					}
				} else if err != nil || v != fmt.Sprint("v", key) {
					t.Errorf("Load(%d) = %q, %v", key, v, err)
				}
			}
		})
	}
	wg.Wait()
	if p := s.peak.Load(); p > limit {
		t.Errorf("%d reads ran at once, want at most %d", p, limit)
	}
	// The last batch's goroutine frees its slot after its callers return.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		running, queued := l.running, len(l.queue)
		l.mu.Unlock()
		if running == 0 && queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the load: %d slots taken, %d queued; want none", running, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLeftOutCallerAnswersItselfWithoutMissing is the login's way: a
// request the batch has no value for is answered by its caller's own One,
// in its own context, while the slot is free for others.
func TestLeftOutCallerAnswersItselfWithoutMissing(t *testing.T) {
	t.Parallel()
	s := newStore()
	cfg := config(s, 1, 100)
	cfg.Missing = nil
	l := New(cfg)
	release, _ := fillSlot(t, s, l, 0)
	found, notFound := loadAsync(t.Context(), l, 1), loadAsync(t.Context(), l, -2)
	waitQueued(t, l, 2)
	release()
	if r := <-found; r.err != nil || r.val != "v1" {
		t.Errorf("Load(1) = %q, %v; want v1", r.val, r.err)
	}
	if r := <-notFound; !errors.Is(r.err, errMissing) {
		t.Errorf("Load(-2) = %q, %v; want what One says of it", r.val, r.err)
	}
	if ones, batches := s.reads(); !slices.Equal(ones, []int{0, -2}) || len(batches) != 1 {
		t.Errorf("read %v alone and %v in batches; want [0 -2] alone after one batch", ones, batches)
	}
}

// TestPanicsLoseNoSlotAndKillNothing: a panic in a caller's own read goes
// to that caller (whose handler's recovery answers it) and frees the
// slot. A panic in a batch, on a goroutine no handler recovers, sends its
// callers to read on their own: the request that panics panics in its
// caller, the others are answered. The loader keeps serving after both.
func TestPanicsLoseNoSlotAndKillNothing(t *testing.T) {
	t.Parallel()
	s := newStore()
	cfg := config(s, 1, 100)
	one, many := cfg.One, cfg.Many
	cfg.One = func(ctx context.Context, k int) (string, error) {
		if k == 666 {
			panic("one")
		}
		return one(ctx, k)
	}
	cfg.Many = func(ctx context.Context, ks []int) ([]string, error) {
		if slices.Contains(ks, 666) {
			panic("many")
		}
		return many(ctx, ks)
	}
	l := New(cfg)
	// loadRecovering is Load with the recovery a handler has.
	loadRecovering := func(ctx context.Context, k int) (panicked any, v string, err error) {
		defer func() { panicked = recover() }()
		v, err = l.Load(ctx, k)
		return nil, v, err
	}

	if p, _, _ := loadRecovering(t.Context(), 666); p != "one" {
		t.Errorf("recovered %v, want the read's own panic", p)
	}
	bounded, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if v, err := l.Load(bounded, 1); err != nil || v != "v1" {
		t.Fatalf("after a panic: Load(1) = %q, %v; the slot was lost?", v, err)
	}

	release, _ := fillSlot(t, s, l, 0)
	bad := make(chan any, 1)
	go func() {
		p, _, _ := loadRecovering(t.Context(), 666)
		bad <- p
	}()
	waitQueued(t, l, 1)
	good := loadAsync(t.Context(), l, 2)
	waitQueued(t, l, 2)
	release()
	if p := <-bad; p != "one" {
		t.Errorf("the panicking request's caller recovered %v, want its own read's panic", p)
	}
	if r := <-good; r.err != nil || r.val != "v2" {
		t.Errorf("the other caller of a panicking batch got %q, %v; want v2", r.val, r.err)
	}
	if v, err := l.Load(bounded, 3); err != nil || v != "v3" {
		t.Errorf("after a batch's panic: Load(3) = %q, %v", v, err)
	}
}

// TestFreeSlotsRunAtOnce: below the limit nothing waits, even when the
// calls arrive together.
func TestFreeSlotsRunAtOnce(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 3, 100)
	var releases []func()
	for k := 1; k <= 3; k++ {
		releases = append(releases, s.holdKey(k))
		loadAsync(t.Context(), l, k)
	}
	for range 3 {
		<-s.started // every read has started while the others still run
	}
	if n := l.Queued(); n != 0 {
		t.Errorf("%d calls queued below the limit, want none", n)
	}
	for _, r := range releases {
		r()
	}
}

func TestCallThatHasGoneAlreadyIsNotQueued(t *testing.T) {
	t.Parallel()
	s := newStore()
	l := newLoader(s, 1, 100)
	release, _ := fillSlot(t, s, l, 0)
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Load(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a cancelled context = %v, want context.Canceled", err)
	}
	if n := l.Queued(); n != 0 {
		t.Errorf("%d calls queued, want none", n)
	}
}
