package server

import (
	"context"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/apitoken"
	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Errors of the token RPCs. None names a token, its hash or its owner.
var (
	errTokenNotFound = status.Error(codes.NotFound, "API token not found")
	errTokenExpired  = status.Error(codes.Unauthenticated, "API token expired")
)

// CreateAPIToken issues the caller a token. Its plaintext is in the
// response and nowhere else: the database gets its SHA-256 and prefix.
func (s *Server) CreateAPIToken(ctx context.Context, req *usersv1.CreateAPITokenRequest) (*usersv1.CreateAPITokenResponse, error) {
	owner, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.tokenName("name", req.GetName())
	var expiresAt *time.Time
	if req.ExpiresAt != nil {
		expiresAt = v.futureTime("expires_at", req.GetExpiresAt(), s.now())
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	tok := apitoken.New()
	row, err := s.queries.CreateAPIToken(ctx, db.CreateAPITokenParams{
		ID:              id,
		IdentityID:      owner,
		Name:            req.GetName(),
		TokenHash:       tok.Hash,
		TokenPrefix:     tok.Prefix,
		ExpiresAt:       expiresAt,
		ActorIdentityID: &owner,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &usersv1.CreateAPITokenResponse{Token: tokenToProto(db.APIToken(row), nil), PlaintextToken: tok.Plaintext}, nil
}

// ListAPITokens returns the caller's tokens, newest first, expired ones
// included, with the last uses this replica has not written yet.
func (s *Server) ListAPITokens(ctx context.Context, _ *usersv1.ListAPITokensRequest) (*usersv1.ListAPITokensResponse, error) {
	owner, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.queries.ListAPITokens(ctx, owner)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	out := make([]*usersv1.APIToken, len(rows))
	for i, r := range rows {
		lastUsed := r.LastUsedAt
		if at, ok := s.usage.Latest(r.ID); ok && (lastUsed == nil || at.After(*lastUsed)) {
			lastUsed = &at
		}
		out[i] = tokenToProto(r, lastUsed)
	}
	return &usersv1.ListAPITokensResponse{Tokens: out}, nil
}

// RevokeAPIToken deletes one of the caller's tokens: it resolves no more,
// on any replica, from then on. Someone else's token is NOT_FOUND, as an
// unknown one is, so that the answer does not tell that it exists.
func (s *Server) RevokeAPIToken(ctx context.Context, req *usersv1.RevokeAPITokenRequest) (*usersv1.RevokeAPITokenResponse, error) {
	owner, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	id := v.identityID("token_id", req.GetTokenId())
	if err := v.err(); err != nil {
		return nil, err
	}
	n, err := s.queries.RevokeAPIToken(ctx, db.RevokeAPITokenParams{ID: id, IdentityID: owner, ActorIdentityID: &owner})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if n == 0 {
		return nil, errTokenNotFound
	}
	return &usersv1.RevokeAPITokenResponse{}, nil
}

// ResolveAPIToken returns the owner of the token with the given hash, and
// the token with this use as its last_used_at. It only reads: the use is
// written later, with the others (see internal/lastused). Concurrent
// resolves are read together past the first few, as GetUser's are.
func (s *Server) ResolveAPIToken(ctx context.Context, req *usersv1.ResolveAPITokenRequest) (*usersv1.ResolveAPITokenResponse, error) {
	var v violations
	hash := v.tokenHash("token_hash", req.GetTokenHash())
	if err := v.err(); err != nil {
		return nil, err
	}
	tok, err := s.tokens.Load(ctx, hash)
	if db.IsNotFound(err) {
		return nil, errTokenNotFound
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	now := s.now()
	if tok.ExpiresAt != nil && !now.Before(*tok.ExpiresAt) {
		return nil, errTokenExpired
	}
	used := s.usage.Use(tok.ID, tok.LastUsedAt, now)
	return &usersv1.ResolveAPITokenResponse{IdentityId: tok.IdentityID.String(), Token: tokenToProto(tok, &used)}, nil
}

// FlushTokenUse writes the token uses recorded since the last write; serve
// calls it once more at shutdown, after the last call has finished.
func (s *Server) FlushTokenUse(ctx context.Context) error {
	return s.usage.Flush(ctx)
}

// RecordTokenUse writes the token uses every interval until ctx ends.
func (s *Server) RecordTokenUse(ctx context.Context, interval time.Duration) {
	s.usage.Run(ctx, interval, s.log)
}
