package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// SearchUsers returns the directory entries whose username starts with the
// request's prefix, the exact match first, then in username order. Any
// user may search; the entries hold only what any user may see.
func (s *Server) SearchUsers(ctx context.Context, req *usersv1.SearchUsersRequest) (*usersv1.SearchUsersResponse, error) {
	if _, err := callerID(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.searchPrefix("prefix", req.GetPrefix())
	limit := v.searchLimit("limit", req.GetLimit())
	if err := v.err(); err != nil {
		return nil, err
	}
	rows, err := s.queries.SearchUsers(ctx, db.SearchUsersParams{Prefix: req.GetPrefix(), Max: limit})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.SearchUsersResponse{Users: directoryEntries(rows)}, nil
}

// ListUsers returns a page of users in identity id order, for
// administrators. Pages are keyset pages: each starts after the last id of
// the one before, so a walk returns every user present throughout it
// exactly once, whatever is created or deleted meanwhile, and a deep page
// costs what the first does.
func (s *Server) ListUsers(ctx context.Context, req *usersv1.ListUsersRequest) (*usersv1.ListUsersResponse, error) {
	var v violations
	size := v.pageSize("page_size", req.GetPageSize())
	after, ok := parsePageToken(req.GetPageToken())
	if !ok {
		v.add("page_token", "is not a page token of ListUsers; pass next_page_token as it was returned, or nothing for the first page")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	users, err := s.queries.ListUsers(ctx, db.ListUsersParams{After: after, Max: size + 1})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &usersv1.ListUsersResponse{}
	if len(users) > int(size) {
		users = users[:size]
		resp.NextPageToken = pageToken(users[size-1].IdentityID)
	}
	resp.Users = usersToProto(users)
	return resp, nil
}

// A page token is the last identity id of the page before, with a version
// byte in front and a checksum behind, in unpadded base64url: opaque to
// clients, and a token of anything else, or a mangled one, is told apart
// rather than read as some other place in the list. It is not a secret:
// a forged one only starts a page elsewhere in a list the caller may read
// whole.
const pageTokenVersion = 1

// pageTokenTable is the checksum's: CRC-32C, which Go computes in
// hardware.
var pageTokenTable = crc32.MakeTable(crc32.Castagnoli)

func pageToken(last uuid.UUID) string {
	b := make([]byte, 0, 1+16+4)
	b = append(b, pageTokenVersion)
	b = append(b, last[:]...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, pageTokenTable))
	return base64.RawURLEncoding.EncodeToString(b)
}

// parsePageToken returns the id a page token starts after: the nil UUID,
// the first of all, for no token.
func parsePageToken(token string) (uuid.UUID, bool) {
	if token == "" {
		return uuid.Nil, true
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != 1+16+4 || b[0] != pageTokenVersion ||
		binary.BigEndian.Uint32(b[17:]) != crc32.Checksum(b[:17], pageTokenTable) ||
		// The decoder skips line breaks: only the token as pageToken
		// wrote it is one.
		base64.RawURLEncoding.EncodeToString(b) != token {
		return uuid.Nil, false
	}
	return uuid.UUID(b[1:17]), true
}
