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
	calls int     // calls made so far
	held  int     // the pool entry a stickySource is on
	req   request // a freshSubjectSource's own request, rewritten per call
}

// A request is one call's message, encoded, and the identity id of the
// user it is made as (the x-identity-id metadata), or "" for none: the
// load generator adds the metadata per call, which costs it far less
// than a metadata map kept for each of a pool's entries.
type request struct {
	msg    mem.BufferSlice
	caller string
}

// A requestSource hands a worker its next request.
type requestSource interface {
	next(w *worker) *request
}

// pool encodes size requests built by newReq from random user numbers in
// 1..n. caller, if not nil, picks the seeded user each request is made
// as.
func pool(size int, n int64, rng *rand.Rand, caller func(key func() int64) int64, newReq func(rng *rand.Rand, key func() int64) proto.Message) ([]request, error) {
	key := func() int64 { return 1 + rng.Int64N(n) }
	reqs := make([]request, size)
	for i := range reqs {
		b, err := proto.Marshal(newReq(rng, key))
		if err != nil {
			return nil, err
		}
		reqs[i].msg = mem.BufferSlice{mem.SliceBuffer(b)}
		if caller != nil {
			reqs[i].caller = identityID(caller(key))
		}
	}
	return reqs, nil
}

// randomSource sends a random pool entry per call.
type randomSource struct{ reqs []request }

func (s randomSource) next(w *worker) *request {
	return &s.reqs[w.rng.IntN(len(s.reqs))]
}

// stickySource sends one random pool entry for every calls, then draws
// another: a worker's batch changes every so often, as a pgbench client's
// does (see the BatchGetUsers workload).
type stickySource struct {
	reqs  []request
	every int
}

func (s stickySource) next(w *worker) *request {
	if w.calls%s.every == 0 {
		w.held = w.rng.IntN(len(s.reqs))
	}
	return &s.reqs[w.held]
}

// freshSubjectSource sends a subject never used before on every call. The
// request is encoded once with a placeholder subject of fixed width, and
// each call writes the next number over the placeholder's digits,
// wherever the request holds them (the subject, and the email made from
// it): one request per call could not be encoded ahead.
type freshSubjectSource struct {
	template []byte
	offsets  []int  // of the subject's digits in template
	base     uint64 // the run's first subject, less one
	counter  *atomic.Int64
}

func newFreshSubjectSource(req func(subject string) proto.Message, run int) (*freshSubjectSource, error) {
	placeholder := bytes.Repeat([]byte{'0'}, newSubjectDigits)
	b, err := proto.Marshal(req(string(placeholder)))
	if err != nil {
		return nil, err
	}
	var offsets []int
	for at := 0; ; at += newSubjectDigits {
		i := bytes.Index(b[at:], placeholder)
		if i < 0 {
			break
		}
		at += i
		offsets = append(offsets, at)
	}
	if len(offsets) == 0 {
		return nil, fmt.Errorf("cannot find the subject placeholder in the encoded request")
	}
	base := serviceNewSubjectBase + uint64(run)*runSpacing
	return &freshSubjectSource{template: b, offsets: offsets, base: base, counter: new(atomic.Int64)}, nil
}

func (s *freshSubjectSource) next(w *worker) *request {
	if w.req.msg == nil {
		w.req.msg = mem.BufferSlice{mem.SliceBuffer(bytes.Clone(s.template))}
	}
	b := w.req.msg[0].(mem.SliceBuffer)
	first := b[s.offsets[0] : s.offsets[0]+newSubjectDigits]
	for v, i := s.base+uint64(s.counter.Add(1)), len(first)-1; i >= 0; i-- {
		first[i] = byte('0' + v%10)
		v /= 10
	}
	for _, at := range s.offsets[1:] {
		copy(b[at:at+newSubjectDigits], first)
	}
	return &w.req
}
