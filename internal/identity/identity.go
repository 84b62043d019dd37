// Package identity allocates the identity_id of a new user.
//
// This is the seam where the platform's Identity service registration will
// go: today ids are generated locally; later an Allocator will register the
// user with the Identity service and return the id it assigns.
package identity

import (
	"context"

	"github.com/google/uuid"
)

// Allocator returns the identity id for a user about to be created.
//
// It is called on every ResolveOrCreateUser, before the database says
// whether the subject is new (that is what makes the login path a single
// round trip). A local UUID costs nothing, so an unused one is simply
// dropped. An Allocator that registers remotely must not be called that
// way: the handler will then have to look the subject up first and
// allocate only when it is absent.
type Allocator interface {
	NewIdentityID(ctx context.Context, oidcSubject string) (uuid.UUID, error)
}

// Local generates UUIDv7 ids: time-ordered, so new rows land at the right
// edge of the primary-key index instead of all over it.
type Local struct{}

// NewIdentityID returns a fresh UUIDv7.
func (Local) NewIdentityID(context.Context, string) (uuid.UUID, error) {
	return uuid.NewV7()
}
