package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// CreateUser provisions a user before their first login, for
// administrators. The later first login of the subject returns this user
// as it is, with created = false.
func (s *Server) CreateUser(ctx context.Context, req *usersv1.CreateUserRequest) (*usersv1.CreateUserResponse, error) {
	var v violations
	v.oidcSubject("oidc_subject", req.GetOidcSubject())
	v.name("name", req.GetName())
	v.nickname("nickname", req.GetNickname())
	v.photoURL("photo_url", req.GetPhotoUrl())
	v.clusterRole("cluster_role", req.GetClusterRole())
	if req.Username != nil {
		v.username("username", req.GetUsername())
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	role := req.GetClusterRole()
	if s.declared[req.GetOidcSubject()] {
		role = usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	}
	a := actorOf(ctx)
	params := db.CreateUserParams{
		OidcSubject:     req.GetOidcSubject(),
		Name:            req.GetName(),
		Nickname:        req.GetNickname(),
		PhotoUrl:        req.GetPhotoUrl(),
		ClusterRole:     storedRole(role),
		Username:        req.Username,
		ActorIdentityID: a.identityID,
		ActorService:    a.service,
	}
	for attempt := 1; ; attempt++ {
		id, err := s.ids.NewIdentityID(ctx, req.GetOidcSubject())
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		params.IdentityID = id
		user, err := s.queries.CreateUser(ctx, params)
		// A derived username another new user took at the same moment:
		// the next attempt sees it taken and picks another. A given one
		// is the caller's to change (ALREADY_EXISTS).
		if db.IsUsernameTaken(err) && req.Username == nil && attempt < maxLoginAttempts {
			continue
		}
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		return &usersv1.CreateUserResponse{User: userToProto(db.User(user))}, nil
	}
}

// DeleteUser removes a user, for administrators. The username is free
// again, and a later login of the subject creates a new user, with a new
// identity id.
func (s *Server) DeleteUser(ctx context.Context, req *usersv1.DeleteUserRequest) (*usersv1.DeleteUserResponse, error) {
	var v violations
	id := v.identityID("identity_id", req.GetIdentityId())
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	a := actorOf(ctx)
	row, err := s.queries.DeleteUser(ctx, db.DeleteUserParams{
		IdentityID:      id,
		DeclaredAdmins:  s.declaredList,
		ActorIdentityID: a.identityID,
		ActorService:    a.service,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := refused(row.Refusal, "delete"); err != nil {
		return nil, err
	}
	if !row.Deleted {
		return nil, status.Error(codes.NotFound, "user not found")
	}
	return &usersv1.DeleteUserResponse{}, nil
}

// PromoteDeclaredAdmins makes the users of CLUSTER_ADMIN_SUBJECTS who
// exist administrators in the database too, so that they count when the
// service makes sure an administrator is left. serve calls it at start.
func (s *Server) PromoteDeclaredAdmins(ctx context.Context) (int64, error) {
	if len(s.declaredList) == 0 {
		return 0, nil
	}
	return s.queries.PromoteDeclaredAdmins(ctx, s.declaredList)
}
