// Package server implements agynio.api.users.v1.UsersService: each handler
// validates the request, calls one generated query, and converts the row or
// the error. Everything the service does to the database is in
// sql/queries/users.sql.
package server

import (
	"context"
	"log/slog"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/coalesce"
	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
)

// Server serves UsersService from a PostgreSQL database.
type Server struct {
	usersv1.UnimplementedUsersServiceServer

	queries *db.Queries
	ids     identity.Allocator
	log     *slog.Logger

	// The point reads and logins, coalesced under load: GetUser,
	// GetUserByOIDCSubject and ResolveOrCreateUser go through these, not
	// queries. One statement answers at most as many as a BatchGetUsers
	// may ask for.
	byID      *coalesce.Loader[uuid.UUID, uuid.UUID, db.User]
	bySubject *coalesce.Loader[string, string, db.User]
	logins    *coalesce.Loader[db.ResolveOrCreateUserParams, string, db.ResolveOrCreateUserRow]
}

// DefaultReadsInFlight is how many point reads of one kind (GetUser, or
// GetUserByOIDCSubject) run their statement at once before further ones
// are coalesced into one; see the Performance section of the README for
// the measurement behind it.
const DefaultReadsInFlight = 2

// HandlerOption changes how a Server serves.
type HandlerOption func(*handlerOptions)

type handlerOptions struct {
	readsInFlight int
}

// WithReadsInFlight replaces DefaultReadsInFlight; n < 1 counts as 1.
// Logins are coalesced past one in flight, whatever n.
func WithReadsInFlight(n int) HandlerOption {
	return func(o *handlerOptions) { o.readsInFlight = n }
}

// New returns a Server running queries on conn (a *pgxpool.Pool in
// production) and allocating new users' ids with ids.
func New(conn db.DBTX, ids identity.Allocator, log *slog.Logger, opts ...HandlerOption) *Server {
	o := handlerOptions{readsInFlight: DefaultReadsInFlight}
	for _, opt := range opts {
		opt(&o)
	}
	q := db.New(conn)
	return &Server{
		queries: q,
		ids:     ids,
		log:     log,
		byID: coalesce.New(coalesce.Config[uuid.UUID, uuid.UUID, db.User]{
			One:        q.GetUser,
			Many:       q.BatchGetUsers,
			RequestKey: func(id uuid.UUID) uuid.UUID { return id },
			ValueKey:   func(u db.User) uuid.UUID { return u.IdentityID },
			Missing:    db.ErrNotFound,
			Limit:      o.readsInFlight,
			MaxBatch:   maxBatchIDs,
		}),
		bySubject: coalesce.New(coalesce.Config[string, string, db.User]{
			One:        q.GetUserByOIDCSubject,
			Many:       q.GetUsersByOIDCSubjects,
			RequestKey: func(subject string) string { return subject },
			ValueKey:   func(u db.User) string { return u.OidcSubject },
			Missing:    db.ErrNotFound,
			Limit:      o.readsInFlight,
			MaxBatch:   maxBatchIDs,
		}),
		// A queued login reads its subject in one statement with the
		// others; only a subject that statement did not find runs the
		// upsert, its caller's own statement as if it had not queued.
		// One login at a time runs the upsert unqueued: that statement
		// costs PostgreSQL about 1.7 times a plain read of a known
		// subject, so under load it pays to send more logins through the
		// shared read. The upserts of the subjects the shared read did not
		// find run side by side, each its caller's own, not one at a time.
		logins: coalesce.New(coalesce.Config[db.ResolveOrCreateUserParams, string, db.ResolveOrCreateUserRow]{
			One: q.ResolveOrCreateUser,
			Many: func(ctx context.Context, logins []db.ResolveOrCreateUserParams) ([]db.ResolveOrCreateUserRow, error) {
				subjects := make([]string, len(logins))
				for i, l := range logins {
					subjects[i] = l.OidcSubject
				}
				users, err := q.GetUsersByOIDCSubjects(ctx, subjects)
				return knownLogins(users), err
			},
			RequestKey: func(l db.ResolveOrCreateUserParams) string { return l.OidcSubject },
			ValueKey:   func(r db.ResolveOrCreateUserRow) string { return r.OidcSubject },
			Limit:      1,
			MaxBatch:   maxBatchIDs,
		}),
	}
}

// ResolveOrCreateUser returns the user with the request's OIDC subject,
// creating it on first login with the request's profile claims.
func (s *Server) ResolveOrCreateUser(ctx context.Context, req *usersv1.ResolveOrCreateUserRequest) (*usersv1.ResolveOrCreateUserResponse, error) {
	var v violations
	v.oidcSubject("oidc_subject", req.GetOidcSubject())
	v.name("name", req.GetName())
	v.email("email", req.GetEmail())
	v.photoURL("photo_url", req.GetPhotoUrl())
	if err := v.err(); err != nil {
		return nil, err
	}

	id, err := s.ids.NewIdentityID(ctx, req.GetOidcSubject())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	row, err := s.logins.Load(ctx, db.ResolveOrCreateUserParams{
		IdentityID:  id,
		OidcSubject: req.GetOidcSubject(),
		Name:        req.GetName(),
		Email:       req.GetEmail(),
		PhotoUrl:    req.GetPhotoUrl(),
	})
	if db.IsNotFound(err) {
		// A concurrent first login of the same subject won the insert after
		// our statement's snapshot was taken (see the query's comment):
		// read the winner's row.
		user, err := s.queries.GetUserByOIDCSubject(ctx, req.GetOidcSubject())
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		return &usersv1.ResolveOrCreateUserResponse{User: userToProto(user), Created: false}, nil
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.ResolveOrCreateUserResponse{User: resolvedToProto(row), Created: row.Created}, nil
}

// GetUser returns one user by identity id.
func (s *Server) GetUser(ctx context.Context, req *usersv1.GetUserRequest) (*usersv1.GetUserResponse, error) {
	var v violations
	id := v.identityID("identity_id", req.GetIdentityId())
	if err := v.err(); err != nil {
		return nil, err
	}

	user, err := s.byID.Load(ctx, id)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.GetUserResponse{User: userToProto(user)}, nil
}

// GetUserByOIDCSubject returns one user by OIDC subject.
func (s *Server) GetUserByOIDCSubject(ctx context.Context, req *usersv1.GetUserByOIDCSubjectRequest) (*usersv1.GetUserByOIDCSubjectResponse, error) {
	var v violations
	v.oidcSubject("oidc_subject", req.GetOidcSubject())
	if err := v.err(); err != nil {
		return nil, err
	}

	user, err := s.bySubject.Load(ctx, req.GetOidcSubject())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.GetUserByOIDCSubjectResponse{User: userToProto(user)}, nil
}

// BatchGetUsers returns the users with the requested ids, in request order.
func (s *Server) BatchGetUsers(ctx context.Context, req *usersv1.BatchGetUsersRequest) (*usersv1.BatchGetUsersResponse, error) {
	var v violations
	ids := v.identityIDs("identity_ids", req.GetIdentityIds())
	if err := v.err(); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return &usersv1.BatchGetUsersResponse{}, nil
	}

	users, err := s.queries.BatchGetUsers(ctx, ids)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.BatchGetUsersResponse{Users: usersToProto(inRequestOrder(ids, users))}, nil
}

// UpdateUser sets the profile fields present in the request.
func (s *Server) UpdateUser(ctx context.Context, req *usersv1.UpdateUserRequest) (*usersv1.UpdateUserResponse, error) {
	var v violations
	id := v.identityID("identity_id", req.GetIdentityId())
	if req.Name == nil && req.Email == nil && req.PhotoUrl == nil {
		const msg = "at least one of name, email, photo_url must be set"
		v.add("name", msg)
		v.add("email", msg)
		v.add("photo_url", msg)
	}
	if req.Name != nil {
		v.name("name", req.GetName())
	}
	if req.Email != nil {
		v.email("email", req.GetEmail())
	}
	if req.PhotoUrl != nil {
		v.photoURL("photo_url", req.GetPhotoUrl())
	}
	if err := v.err(); err != nil {
		return nil, err
	}

	user, err := s.queries.UpdateUser(ctx, db.UpdateUserParams{
		IdentityID: id,
		Name:       req.Name,
		Email:      req.Email,
		PhotoUrl:   req.PhotoUrl,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.UpdateUserResponse{User: userToProto(user)}, nil
}
