package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Requests are encoded before the clock starts, so that the load
// generator's CPU per call is gRPC's and little else.
const (
	// poolSize is how many requests with random keys a pool holds: enough
	// that a run touches the table all over, as the keys of real callers do.
	poolSize = 1 << 17
	// batchPoolSize is the same for 100-id batches, which weigh 40 times
	// more each.
	batchPoolSize = 1 << 12
)

// worker is one in-flight call's loop: its random numbers, and what a
// source keeps per worker.
type worker struct {
	rng   *rand.Rand
	calls int             // calls made so far
	held  int             // the pool entry a stickySource is on
	msg   mem.BufferSlice // a freshSubjectSource's own request, rewritten per call
}

// A requestSource hands a worker its next request, encoded.
type requestSource interface {
	next(w *worker) *mem.BufferSlice
}

// pool encodes size requests built by newReq from a random user number
// each, in 1..n.
func pool(size int, n int64, rng *rand.Rand, newReq func(rng *rand.Rand, key func() int64) proto.Message) ([]mem.BufferSlice, error) {
	key := func() int64 { return 1 + rng.Int64N(n) }
	reqs := make([]mem.BufferSlice, size)
	for i := range reqs {
		b, err := proto.Marshal(newReq(rng, key))
		if err != nil {
			return nil, err
		}
		reqs[i] = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return reqs, nil
}

// randomSource sends a random pool entry per call.
type randomSource struct{ reqs []mem.BufferSlice }

func (s randomSource) next(w *worker) *mem.BufferSlice {
	return &s.reqs[w.rng.IntN(len(s.reqs))]
}

// stickySource sends one random pool entry for every calls, then draws
// another: a worker's batch changes every so often, as a pgbench client's
// does (see the BatchGetUsers workload).
type stickySource struct {
	reqs  []mem.BufferSlice
	every int
}

func (s stickySource) next(w *worker) *mem.BufferSlice {
	if w.calls%s.every == 0 {
		w.held = w.rng.IntN(len(s.reqs))
	}
	return &s.reqs[w.held]
}

// freshSubjectSource sends a subject never used before on every call. The
// request is encoded once with a placeholder subject of fixed width, and
// each call writes the next number over the placeholder's digits: one
// request per call could not be encoded ahead.
type freshSubjectSource struct {
	template []byte
	offset   int    // of the subject's digits in template
	base     uint64 // the run's first subject, less one
	counter  *atomic.Int64
}

func newFreshSubjectSource(req func(subject string) proto.Message, run int) (*freshSubjectSource, error) {
	placeholder := bytes.Repeat([]byte{'0'}, newSubjectDigits)
	b, err := proto.Marshal(req(string(placeholder)))
	if err != nil {
		return nil, err
	}
	offset := bytes.Index(b, placeholder)
	if offset < 0 || bytes.Count(b, placeholder) != 1 {
		return nil, fmt.Errorf("cannot find the subject placeholder in the encoded request")
	}
	base := serviceNewSubjectBase + uint64(run)*runSpacing
	return &freshSubjectSource{template: b, offset: offset, base: base, counter: new(atomic.Int64)}, nil
}

func (s *freshSubjectSource) next(w *worker) *mem.BufferSlice {
	if w.msg == nil {
		w.msg = mem.BufferSlice{mem.SliceBuffer(bytes.Clone(s.template))}
	}
	digits := w.msg[0].(mem.SliceBuffer)[s.offset : s.offset+newSubjectDigits]
	for v, i := s.base+uint64(s.counter.Add(1)), len(digits)-1; i >= 0; i-- {
		digits[i] = byte('0' + v%10)
		v /= 10
	}
	return &w.msg
}
