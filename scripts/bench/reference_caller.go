package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The reference's RPCs made on behalf of a caller, who is named in the
// x-identity-id metadata, written as obviously as the rest of the
// reference: the caller's row read by id, a LIKE for the directory, and
// OFFSET pages for the listing.

// adminRole is how the users table stores CLUSTER_ROLE_ADMIN.
const adminRole = "admin"

// declaredAdmins are the subjects of a CLUSTER_ADMIN_SUBJECTS list.
func declaredAdmins(list string) map[string]bool {
	declared := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			declared[s] = true
		}
	}
	return declared
}

// roleOf is a user's effective role: the stored one, or administrator
// for a declared subject.
func (r *referenceServer) roleOf(u *usersv1.User, stored string) usersv1.ClusterRole {
	if stored == adminRole || r.declared[u.GetOidcSubject()] {
		return usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	}
	return usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
}

// callerID is the identity id in x-identity-id.
func callerID(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, identityHeader)
	if len(vals) != 1 || uuid.Validate(vals[0]) != nil {
		return "", status.Error(codes.Unauthenticated, "x-identity-id must be one identity id")
	}
	return vals[0], nil
}

// caller reads the calling user and their stored role.
func (r *referenceServer) caller(ctx context.Context) (*usersv1.User, string, error) {
	id, err := callerID(ctx)
	if err != nil {
		return nil, "", err
	}
	return r.userBy(ctx, "identity_id", id)
}

func (r *referenceServer) GetMe(ctx context.Context, _ *usersv1.GetMeRequest) (*usersv1.GetMeResponse, error) {
	u, role, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	return &usersv1.GetMeResponse{User: u, ClusterRole: r.roleOf(u, role)}, nil
}

func (r *referenceServer) SearchUsers(ctx context.Context, req *usersv1.SearchUsersRequest) (*usersv1.SearchUsersResponse, error) {
	if _, err := callerID(ctx); err != nil {
		return nil, err
	}
	limit := req.GetLimit()
	if limit == 0 {
		limit = 10
	}
	// The exact match first, then by username.
	rows, err := r.pool.Query(ctx, `SELECT identity_id, username, name, photo_url FROM users
		WHERE username LIKE $1 || '%' ORDER BY username <> $1, username LIMIT $2`, req.GetPrefix(), limit)
	if err != nil {
		return nil, toReferenceStatus(err)
	}
	defer rows.Close()
	resp := &usersv1.SearchUsersResponse{}
	for rows.Next() {
		var e usersv1.UserDirectoryEntry
		if err := rows.Scan(&e.IdentityId, &e.Username, &e.Name, &e.PhotoUrl); err != nil {
			return nil, toReferenceStatus(err)
		}
		resp.Users = append(resp.Users, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, toReferenceStatus(err)
	}
	return resp, nil
}

// ListUsers pages with OFFSET; the page token is the offset.
func (r *referenceServer) ListUsers(ctx context.Context, req *usersv1.ListUsersRequest) (*usersv1.ListUsersResponse, error) {
	u, role, err := r.caller(ctx)
	if status.Code(err) == codes.NotFound || (err == nil && r.roleOf(u, role) != usersv1.ClusterRole_CLUSTER_ROLE_ADMIN) {
		return nil, status.Error(codes.PermissionDenied, "administrators only")
	}
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size is negative")
	case size == 0:
		size = 50
	case size > 100:
		size = 100
	}
	offset := 0
	if token := req.GetPageToken(); token != "" {
		if offset, err = strconv.Atoi(token); err != nil || offset < 0 {
			return nil, status.Error(codes.InvalidArgument, "malformed page_token")
		}
	}
	rows, err := r.pool.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY identity_id LIMIT $1 OFFSET $2`, size, offset)
	if err != nil {
		return nil, toReferenceStatus(err)
	}
	defer rows.Close()
	resp := &usersv1.ListUsersResponse{}
	for rows.Next() {
		u, _, err := scanReferenceUser(rows)
		if err != nil {
			return nil, err
		}
		resp.Users = append(resp.Users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, toReferenceStatus(err)
	}
	if len(resp.Users) == size {
		resp.NextPageToken = strconv.Itoa(offset + size)
	}
	return resp, nil
}
