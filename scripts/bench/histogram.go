package main

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits buckets, so a percentile is off by at most 1/64 (1.6%).
const subBits = 6

// histogram counts latencies in log-linear buckets: recording is an
// increment, with no allocation and nothing to sort, so that the load
// generator spends its CPU on calls, not on bookkeeping.
type histogram struct {
	counts [(64 - subBits + 1) << subBits]uint64
	n      uint64
}

func bucketOf(v uint64) int {
	l := bits.Len64(v)
	if l <= subBits {
		return int(v)
	}
	shift := l - subBits - 1
	return (shift+1)<<subBits | int(v>>shift)&(1<<subBits-1)
}

// lowerBound is the smallest value that falls in bucket i.
func lowerBound(i int) uint64 {
	group, offset := i>>subBits, uint64(i&(1<<subBits-1))
	if group == 0 {
		return offset
	}
	return (1<<subBits | offset) << (group - 1)
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1), as the middle of its
// bucket.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := lowerBound(i), lowerBound(i+1)
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return 0 // not reached: the counts add up to n
}
