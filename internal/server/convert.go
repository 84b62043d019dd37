package server

import (
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
	}
}

func usersToProto(us []db.User) []*usersv1.User {
	out := make([]*usersv1.User, len(us))
	for i, u := range us {
		out[i] = userToProto(u)
	}
	return out
}

// resolvedToProto converts the upsert's row, which carries the user's
// columns plus its created flag.
func resolvedToProto(r db.ResolveOrCreateUserRow) *usersv1.User {
	return userToProto(db.User{
		IdentityID:  r.IdentityID,
		OidcSubject: r.OidcSubject,
		Name:        r.Name,
		Email:       r.Email,
		PhotoUrl:    r.PhotoUrl,
		CreatedAt:   r.CreatedAt,
		UpdatedAt:   r.UpdatedAt,
	})
}
