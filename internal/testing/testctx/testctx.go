// Package testctx has contexts for tests whose deadlines the test passes
// by hand, so that no test depends on how fast the machine is.
package testctx

import (
	"context"
	"sync"
)

// Expiring is a context whose deadline passes when Expire is called: from
// then on Done is closed and Err is context.DeadlineExceeded. Values come
// from the parent; the parent's own end is not followed.
type Expiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

// NewExpiring returns an Expiring carrying parent's values.
func NewExpiring(parent context.Context) *Expiring {
	return &Expiring{Context: parent, done: make(chan struct{})}
}

func (e *Expiring) Done() <-chan struct{} { return e.done }

func (e *Expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// Expire passes the deadline.
func (e *Expiring) Expire() { e.once.Do(func() { close(e.done) }) }
