// Package server implements agynio.api.users.v1.UsersService: each handler
// validates the request, calls one generated query, and converts the row or
// the error. Everything the service does to the database is in
// sql/queries/users.sql. This file has the five RPCs of the first v1;
// me.go, directory.go and provisioning.go the later ones; tokens.go the
// personal API tokens; caller.go who the caller is and what it may do.
package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/coalesce"
	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/lastused"
)

// Server serves UsersService from a PostgreSQL database.
type Server struct {
	usersv1.UnimplementedUsersServiceServer

	queries *db.Queries
	ids     identity.Allocator
	log     *slog.Logger

	// The subjects of CLUSTER_ADMIN_SUBJECTS, as a set (roleOf) and as a
	// list (the queries that refuse to demote or delete them).
	declared     map[string]bool
	declaredList []string
	// droppedClaims counts the optional login claims dropped; nil counts
	// nothing.
	droppedClaims *prometheus.CounterVec

	// The point reads and logins, coalesced under load: GetUser,
	// GetUserByOIDCSubject and ResolveOrCreateUser go through these, not
	// queries. One statement answers at most as many as a BatchGetUsers
	// may ask for.
	byID      *coalesce.Loader[uuid.UUID, uuid.UUID, db.User]
	bySubject *coalesce.Loader[string, string, db.User]
	logins    *coalesce.Loader[db.ResolveOrCreateUserParams, string, db.ResolveOrCreateUserRow]
	// ResolveAPIToken's reads, by token hash, coalesced as GetUser's are,
	// and the uses they record, written in batches.
	tokens *coalesce.Loader[string, string, db.APIToken]
	usage  *lastused.Recorder

	// now is the clock tokens expire by; tests set another.
	now func() time.Time
}

// The per-user bounds on API tokens, which the api_tokens table's trigger
// keeps (see sql/migrations): at most MaxLiveTokens unexpired, one more
// refused; at most MaxTokens in all, the longest expired making room.
const (
	MaxLiveTokens = 100
	MaxTokens     = 1000
)

// DefaultReadsInFlight is how many point reads of one kind (GetUser, or
// GetUserByOIDCSubject) run their statement at once before further ones
// are coalesced into one; see the Performance section of the README for
// the measurement behind it.
const DefaultReadsInFlight = 2

// HandlerOption changes how a Server serves.
type HandlerOption func(*handlerOptions)

type handlerOptions struct {
	readsInFlight  int
	declaredAdmins []string
	droppedClaims  *prometheus.CounterVec
}

// WithDeclaredAdmins names the OIDC subjects that are cluster
// administrators whatever the database says (CLUSTER_ADMIN_SUBJECTS): from
// their first login, and from PromoteDeclaredAdmins if they exist. The
// API neither demotes nor deletes them.
func WithDeclaredAdmins(subjects []string) HandlerOption {
	return func(o *handlerOptions) { o.declaredAdmins = subjects }
}

// WithDroppedClaimsCounter counts the optional login claims dropped, in a
// counter labelled claim.
func WithDroppedClaimsCounter(c *prometheus.CounterVec) HandlerOption {
	return func(o *handlerOptions) { o.droppedClaims = c }
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
	declared := make(map[string]bool, len(o.declaredAdmins))
	for _, subject := range o.declaredAdmins {
		declared[subject] = true
	}
	return &Server{
		queries:       q,
		ids:           ids,
		log:           log,
		declared:      declared,
		declaredList:  append([]string{}, o.declaredAdmins...),
		droppedClaims: o.droppedClaims,
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
		tokens: coalesce.New(coalesce.Config[string, string, db.APIToken]{
			One:        q.ResolveAPIToken,
			Many:       q.ResolveAPITokens,
			RequestKey: func(hash string) string { return hash },
			ValueKey:   func(t db.APIToken) string { return t.TokenHash },
			Missing:    db.ErrNotFound,
			Limit:      o.readsInFlight,
			MaxBatch:   maxBatchIDs,
		}),
		usage: lastused.New(func(ctx context.Context, ids []uuid.UUID, at []time.Time) error {
			return q.RecordAPITokenUse(ctx, db.RecordAPITokenUseParams{Ids: ids, UsedAt: at})
		}),
		now: time.Now,
	}
}

// maxLoginAttempts bounds how often a first login runs its statement
// again after another new user took the username it picked at the same
// moment. Each attempt sees the usernames the ones before lost to, so a
// burst of n new users with the same preferred username needs at most n.
const maxLoginAttempts = 100

// ResolveOrCreateUser returns the user with the request's OIDC subject,
// creating it on first login with the request's profile claims. A
// malformed optional claim is dropped, never refused (see loginClaims).
func (s *Server) ResolveOrCreateUser(ctx context.Context, req *usersv1.ResolveOrCreateUserRequest) (*usersv1.ResolveOrCreateUserResponse, error) {
	var v violations
	v.oidcSubject("oidc_subject", req.GetOidcSubject())
	if err := v.err(); err != nil {
		return nil, err
	}
	claims := sanitizeClaims(req)
	s.noteDropped(ctx, claims.dropped)

	params := db.ResolveOrCreateUserParams{
		OidcSubject:       req.GetOidcSubject(),
		Name:              claims.name,
		Email:             claims.email,
		PhotoUrl:          claims.photoURL,
		EmailVerified:     req.GetEmailVerified(),
		PreferredUsername: claims.preferredUsername,
	}
	if s.declared[req.GetOidcSubject()] {
		params.ClusterRole = storedRole(usersv1.ClusterRole_CLUSTER_ROLE_ADMIN)
	}
	a := actorOf(ctx)
	params.ActorIdentityID, params.ActorService = a.identityID, a.service
	load := s.logins.Load
	for attempt := 1; ; attempt++ {
		id, err := s.ids.NewIdentityID(ctx, req.GetOidcSubject())
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		params.IdentityID = id
		row, err := load(ctx, params)
		if err == nil {
			return &usersv1.ResolveOrCreateUserResponse{User: userToProto(resolvedUser(row)), Created: row.Created}, nil
		}
		if !db.IsNotFound(err) {
			return nil, s.toStatus(ctx, err)
		}
		// The insert lost to a concurrent one (see the query's comment):
		// a first login of the same subject, whose row is now there to
		// read, or of another subject that took the same username, which
		// the next attempt sees taken.
		user, err := s.queries.GetUserByOIDCSubject(ctx, req.GetOidcSubject())
		if err == nil {
			return &usersv1.ResolveOrCreateUserResponse{User: userToProto(user), Created: false}, nil
		}
		if !db.IsNotFound(err) {
			return nil, s.toStatus(ctx, err)
		}
		// Or the new identity id was taken (the statement's ON CONFLICT
		// covers every unique index): as toStatus says for an insert that
		// fails on it.
		if _, err := s.queries.GetUser(ctx, id); err == nil {
			s.log.ErrorContext(ctx, "new identity id already taken", "method", "ResolveOrCreateUser", "constraint", db.PrimaryKey)
			return nil, status.Error(codes.Aborted, "conflict with a concurrent request; retry")
		} else if !db.IsNotFound(err) {
			return nil, s.toStatus(ctx, err)
		}
		if attempt == maxLoginAttempts {
			s.log.ErrorContext(ctx, "login found no free username", "attempts", attempt)
			return nil, status.Error(codes.Aborted, "conflict with concurrent logins; retry")
		}
		load = s.queries.ResolveOrCreateUser // the retry is the caller's own
	}
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
	return &usersv1.GetUserResponse{User: userToProto(user), ClusterRole: s.roleOf(user)}, nil
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

// UpdateUser sets the profile fields present in the request. Setting
// cluster_role needs an administrator as the caller.
func (s *Server) UpdateUser(ctx context.Context, req *usersv1.UpdateUserRequest) (*usersv1.UpdateUserResponse, error) {
	var v violations
	id := v.identityID("identity_id", req.GetIdentityId())
	if req.Name == nil && req.Email == nil && req.PhotoUrl == nil && req.Nickname == nil && req.ClusterRole == nil && req.Username == nil {
		const msg = "at least one of name, email, photo_url, nickname, cluster_role, username must be set"
		v.add("name", msg)
		v.add("email", msg)
		v.add("photo_url", msg)
		v.add("nickname", msg)
		v.add("cluster_role", msg)
		v.add("username", msg)
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
	if req.Nickname != nil {
		v.nickname("nickname", req.GetNickname())
	}
	if req.ClusterRole != nil {
		v.clusterRole("cluster_role", req.GetClusterRole())
	}
	if req.Username != nil {
		v.username("username", req.GetUsername())
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	a := actorOf(ctx)
	params := db.UpdateUserProfileParams{
		IdentityID:      id,
		Name:            req.Name,
		Email:           req.Email,
		PhotoUrl:        req.PhotoUrl,
		Nickname:        req.Nickname,
		Username:        req.Username,
		ActorIdentityID: a.identityID,
		ActorService:    a.service,
		ChangedFields:   setFields(req),
	}
	if req.ClusterRole != nil {
		if err := s.requireAdmin(ctx); err != nil {
			return nil, err
		}
		params.ClusterRole = storedRole(req.GetClusterRole())
		if params.ClusterRole == nil {
			user, err := s.revokeClusterRole(ctx, params)
			if err != nil {
				return nil, err
			}
			return &usersv1.UpdateUserResponse{User: userToProto(user)}, nil
		}
	}
	user, err := s.queries.UpdateUserProfile(ctx, params)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.UpdateUserResponse{User: userToProto(db.User(user))}, nil
}

// setFields names the fields an UpdateUser sets, as its event lists them.
func setFields(req *usersv1.UpdateUserRequest) []string {
	var fields []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"name", req.Name != nil},
		{"email", req.Email != nil},
		{"photo_url", req.PhotoUrl != nil},
		{"nickname", req.Nickname != nil},
		{"username", req.Username != nil},
		{"cluster_role", req.ClusterRole != nil},
	} {
		if f.set {
			fields = append(fields, f.name)
		}
	}
	return fields
}

// revokeClusterRole runs an UpdateUser that takes the role away, and
// turns a refusal into its status.
func (s *Server) revokeClusterRole(ctx context.Context, p db.UpdateUserProfileParams) (db.User, error) {
	row, err := s.queries.RevokeClusterRole(ctx, db.RevokeClusterRoleParams{
		IdentityID:      p.IdentityID,
		DeclaredAdmins:  s.declaredList,
		Name:            p.Name,
		Email:           p.Email,
		PhotoUrl:        p.PhotoUrl,
		Nickname:        p.Nickname,
		Username:        p.Username,
		ActorIdentityID: p.ActorIdentityID,
		ActorService:    p.ActorService,
		ChangedFields:   p.ChangedFields,
	})
	if err != nil {
		return db.User{}, s.toStatus(ctx, err)
	}
	if err := refused(row.Refusal, "demote"); err != nil {
		return db.User{}, err
	}
	return revokedUser(row), nil
}

// refused is the status of a refusal that RevokeClusterRole or DeleteUser
// returned ("" is none); action is what was refused.
func refused(refusal, action string) error {
	switch refusal {
	case "":
		return nil
	case "declared_admin":
		return status.Errorf(codes.FailedPrecondition, "cannot %s an administrator that CLUSTER_ADMIN_SUBJECTS declares", action)
	case "last_admin":
		return status.Errorf(codes.FailedPrecondition, "cannot %s the last cluster administrator", action)
	}
	return status.Error(codes.Internal, "internal error")
}
