package server

import (
	"context"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// GetMe returns the caller's own user and effective cluster role.
func (s *Server) GetMe(ctx context.Context, _ *usersv1.GetMeRequest) (*usersv1.GetMeResponse, error) {
	user, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	return &usersv1.GetMeResponse{User: userToProto(user), ClusterRole: s.roleOf(user)}, nil
}

// UpdateMe sets the caller's own name or username.
func (s *Server) UpdateMe(ctx context.Context, req *usersv1.UpdateMeRequest) (*usersv1.UpdateMeResponse, error) {
	id, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	if req.Name == nil && req.Username == nil {
		const msg = "at least one of name, username must be set"
		v.add("name", msg)
		v.add("username", msg)
	}
	if req.Name != nil {
		v.name("name", req.GetName())
	}
	if req.Username != nil {
		v.username("username", req.GetUsername())
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	var changed []string
	if req.Name != nil {
		changed = append(changed, "name")
	}
	if req.Username != nil {
		changed = append(changed, "username")
	}
	row, err := s.queries.UpdateUserProfile(ctx, db.UpdateUserProfileParams{
		IdentityID:      id,
		Name:            req.Name,
		Username:        req.Username,
		ActorIdentityID: &id,
		ChangedFields:   changed,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	user := db.User(row)
	return &usersv1.UpdateMeResponse{User: userToProto(user), ClusterRole: s.roleOf(user)}, nil
}
