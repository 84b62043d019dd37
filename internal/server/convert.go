package server

import (
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// userToProto is the one place a database row becomes an API user.
func userToProto(u db.User) *usersv1.User {
	return &usersv1.User{
		Meta: &usersv1.EntityMeta{
			Id:        u.IdentityID.String(),
			CreatedAt: timestamppb.New(u.CreatedAt),
			UpdatedAt: timestamppb.New(u.UpdatedAt),
		},
		OidcSubject: u.OidcSubject,
		Name:        u.Name,
		Email:       u.Email,
		PhotoUrl:    u.PhotoUrl,
		Nickname:    u.Nickname,
		Username:    u.Username,
	}
}

func usersToProto(us []db.User) []*usersv1.User {
	out := make([]*usersv1.User, len(us))
	for i, u := range us {
		out[i] = userToProto(u)
	}
	return out
}

// inRequestOrder puts the rows of a batch read, which come back each once
// and in no particular order, in the order of their id's first occurrence
// in ids: the API's order. Ids with no row are skipped, and a repeated id
// yields its row once. One map and one pass over ids: O(n), where ORDER
// BY array_position in SQL searched the array once per row.
func inRequestOrder(ids []uuid.UUID, rows []db.User) []db.User {
	if len(rows) < 2 {
		return rows
	}
	byID := make(map[uuid.UUID]int, len(rows))
	for i, r := range rows {
		byID[r.IdentityID] = i
	}
	out := make([]db.User, 0, len(rows))
	for _, id := range ids {
		if i, ok := byID[id]; ok {
			out = append(out, rows[i])
			delete(byID, id) // a repeated id yields its row once
		}
	}
	return out
}

// resolvedUser is the user of the login statement's row, which carries
// the user's columns plus its created flag.
func resolvedUser(r db.ResolveOrCreateUserRow) db.User {
	return db.User{
		IdentityID:    r.IdentityID,
		OidcSubject:   r.OidcSubject,
		Name:          r.Name,
		Email:         r.Email,
		PhotoUrl:      r.PhotoUrl,
		CreatedAt:     r.CreatedAt,
		UpdatedAt:     r.UpdatedAt,
		Nickname:      r.Nickname,
		Username:      r.Username,
		EmailVerified: r.EmailVerified,
		ClusterRole:   r.ClusterRole,
	}
}

// revokedUser is the user of RevokeClusterRole's row, which carries the
// user's columns plus a refusal.
func revokedUser(r db.RevokeClusterRoleRow) db.User {
	return db.User{
		IdentityID:    r.IdentityID,
		OidcSubject:   r.OidcSubject,
		Name:          r.Name,
		Email:         r.Email,
		PhotoUrl:      r.PhotoUrl,
		CreatedAt:     r.CreatedAt,
		UpdatedAt:     r.UpdatedAt,
		Nickname:      r.Nickname,
		Username:      r.Username,
		EmailVerified: r.EmailVerified,
		ClusterRole:   r.ClusterRole,
	}
}

// knownLogins are the logins of users found by subject: what
// ResolveOrCreateUser returns for each, the stored row, created = false.
func knownLogins(users []db.User) []db.ResolveOrCreateUserRow {
	rows := make([]db.ResolveOrCreateUserRow, len(users))
	for i, u := range users {
		rows[i] = db.ResolveOrCreateUserRow{
			IdentityID:    u.IdentityID,
			OidcSubject:   u.OidcSubject,
			Name:          u.Name,
			Email:         u.Email,
			PhotoUrl:      u.PhotoUrl,
			CreatedAt:     u.CreatedAt,
			UpdatedAt:     u.UpdatedAt,
			Nickname:      u.Nickname,
			Username:      u.Username,
			EmailVerified: u.EmailVerified,
			ClusterRole:   u.ClusterRole,
			Created:       false,
		}
	}
	return rows
}

// directoryEntries are SearchUsers' rows as the API's entries.
func directoryEntries(rows []db.SearchUsersRow) []*usersv1.UserDirectoryEntry {
	out := make([]*usersv1.UserDirectoryEntry, len(rows))
	for i, r := range rows {
		out[i] = &usersv1.UserDirectoryEntry{
			IdentityId: r.IdentityID.String(),
			Username:   r.Username,
			Name:       r.Name,
			PhotoUrl:   r.PhotoUrl,
		}
	}
	return out
}

// tokenToProto is the one place a token row becomes an API token, with
// lastUsed as its last use (the row's own, or a later one not yet
// written). The hash stays behind.
func tokenToProto(t db.APIToken, lastUsed *time.Time) *usersv1.APIToken {
	out := &usersv1.APIToken{
		Id:          t.ID.String(),
		IdentityId:  t.IdentityID.String(),
		Name:        t.Name,
		TokenPrefix: t.TokenPrefix,
		CreatedAt:   timestamppb.New(t.CreatedAt),
	}
	if t.ExpiresAt != nil {
		out.ExpiresAt = timestamppb.New(*t.ExpiresAt)
	}
	if lastUsed != nil {
		out.LastUsedAt = timestamppb.New(*lastUsed)
	}
	return out
}
