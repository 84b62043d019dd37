package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/db"
)

// toStatus is the one place an error from below becomes a gRPC status.
// Clients get a code and a fixed message; the database's own words, which
// may quote stored values or internals, go only to the log.
func (s *Server) toStatus(ctx context.Context, err error) error {
	method, _ := grpc.Method(ctx)
	switch {
	case db.IsNotFound(err):
		return status.Error(codes.NotFound, "user not found")
	// The caller's own deadline or cancellation, by the request's context
	// only: the driver also reports its own connect_timeout as a deadline,
	// and that one is the database's fault.
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(ctx.Err(), context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case db.IsUnavailable(err):
		s.log.WarnContext(ctx, "database unavailable", "method", method, "error", err)
		return status.Error(codes.Unavailable, "database unavailable; retry later")
	case db.IsConflict(err):
		s.log.WarnContext(ctx, "lost to a concurrent statement", "method", method, "error", err)
		return status.Error(codes.Aborted, "conflict with a concurrent request; retry")
	case db.IsUsernameTaken(err):
		return status.Error(codes.AlreadyExists, "username is taken by another user")
	case db.IsSubjectTaken(err):
		return status.Error(codes.AlreadyExists, "a user with this oidc_subject exists already")
	case db.IsUnknownOwner(err):
		return status.Error(codes.NotFound, "user not found")
	case db.IsTooManyLiveTokens(err):
		return status.Errorf(codes.FailedPrecondition, "a user may hold at most %d live API tokens: revoke one first", MaxLiveTokens)
	case db.IsDuplicateID(err):
		// The id allocator handed out an id that is taken: a retry
		// allocates another. Logged at error level, as an allocator that
		// repeats ids needs looking at.
		s.log.ErrorContext(ctx, "new identity id already taken", "method", method, "error", err)
		return status.Error(codes.Aborted, "conflict with a concurrent request; retry")
	case db.IsConstraintViolation(err):
		// Validation should have caught this first: worth a look, but the
		// client's request was at fault, not the service.
		s.log.WarnContext(ctx, "database refused a validated value", "method", method, "error", err)
		return status.Error(codes.InvalidArgument, "invalid request: a value breaks a database constraint")
	default:
		s.log.ErrorContext(ctx, "internal error", "method", method, "error", err)
		return status.Error(codes.Internal, "internal error")
	}
}
