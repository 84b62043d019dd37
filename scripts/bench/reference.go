package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The reference server is the yardstick the service is measured against:
// the obvious implementation of the same API over the same table, as one
// would write it in an afternoon. Plain grpc-go handlers calling pgx
// directly, pgxpool's default pool, no interceptors, no logging, no
// validation beyond what the statements need. Whatever the service spends
// beyond it is the price of what it adds. It runs as a process of its own
// (this program, started with referenceArg), as the service does, so that
// its CPU is measured the same way.
const referenceArg = "reference-server"

type referenceServer struct {
	usersv1.UnimplementedUsersServiceServer
	pool *pgxpool.Pool
	// declared are the subjects of CLUSTER_ADMIN_SUBJECTS.
	declared map[string]bool
}

// referenceMain serves the reference on $GRPC_ADDRESS over $DATABASE_URL,
// with the administrators of $CLUSTER_ADMIN_SUBJECTS, until SIGTERM.
func referenceMain() int {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "reference:", err)
		return 1
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "reference:", err)
		return 1
	}
	return serve(func(s *grpc.Server) {
		usersv1.RegisterUsersServiceServer(s, &referenceServer{pool: pool, declared: declaredAdmins(os.Getenv("CLUSTER_ADMIN_SUBJECTS"))})
	})
}

func (r *referenceServer) ResolveOrCreateUser(ctx context.Context, req *usersv1.ResolveOrCreateUserRequest) (*usersv1.ResolveOrCreateUserResponse, error) {
	if req.GetOidcSubject() == "" {
		return nil, status.Error(codes.InvalidArgument, "oidc_subject is required")
	}
	u, _, err := r.userBy(ctx, "oidc_subject", req.GetOidcSubject())
	if err == nil {
		return &usersv1.ResolveOrCreateUserResponse{User: u}, nil
	}
	if status.Code(err) != codes.NotFound {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, toReferenceStatus(err)
	}
	// The table's trigger gives the new user a username derived from
	// the claims. The user and its event, in one transaction.
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		u, _, err = scanReferenceUser(tx.QueryRow(ctx,
			`INSERT INTO users (identity_id, oidc_subject, name, email, photo_url, email_verified) VALUES ($1, $2, $3, $4, $5, $6)
			 ON CONFLICT (oidc_subject) DO NOTHING RETURNING `+userColumns,
			id.String(), req.GetOidcSubject(), req.GetName(), req.GetEmail(), req.GetPhotoUrl(), req.GetEmailVerified()))
		if err != nil {
			return err
		}
		return writeReferenceEvent(ctx, tx, "user.created", u)
	})
	if _, ok := status.FromError(err); !ok { // the transaction's own error
		err = toReferenceStatus(err)
	}
	if status.Code(err) == codes.NotFound {
		// Another login of the same subject inserted it first.
		u, _, err = r.userBy(ctx, "oidc_subject", req.GetOidcSubject())
		return &usersv1.ResolveOrCreateUserResponse{User: u}, err
	}
	if err != nil {
		return nil, err
	}
	return &usersv1.ResolveOrCreateUserResponse{User: u, Created: true}, nil
}

func (r *referenceServer) GetUser(ctx context.Context, req *usersv1.GetUserRequest) (*usersv1.GetUserResponse, error) {
	if err := uuid.Validate(req.GetIdentityId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "identity_id is not a UUID")
	}
	u, role, err := r.userBy(ctx, "identity_id", req.GetIdentityId())
	if err != nil {
		return nil, err
	}
	return &usersv1.GetUserResponse{User: u, ClusterRole: r.roleOf(u, role)}, nil
}

func (r *referenceServer) GetUserByOIDCSubject(ctx context.Context, req *usersv1.GetUserByOIDCSubjectRequest) (*usersv1.GetUserByOIDCSubjectResponse, error) {
	u, _, err := r.userBy(ctx, "oidc_subject", req.GetOidcSubject())
	if err != nil {
		return nil, err
	}
	return &usersv1.GetUserByOIDCSubjectResponse{User: u}, nil
}

func (r *referenceServer) BatchGetUsers(ctx context.Context, req *usersv1.BatchGetUsersRequest) (*usersv1.BatchGetUsersResponse, error) {
	for _, id := range req.GetIdentityIds() {
		if err := uuid.Validate(id); err != nil {
			return nil, status.Error(codes.InvalidArgument, "identity_ids holds a malformed UUID")
		}
	}
	rows, err := r.pool.Query(ctx, `SELECT `+userColumns+` FROM users WHERE identity_id = ANY($1)`, req.GetIdentityIds())
	if err != nil {
		return nil, toReferenceStatus(err)
	}
	defer rows.Close()
	resp := &usersv1.BatchGetUsersResponse{}
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
	return resp, nil
}

func (r *referenceServer) UpdateUser(ctx context.Context, req *usersv1.UpdateUserRequest) (*usersv1.UpdateUserResponse, error) {
	if err := uuid.Validate(req.GetIdentityId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "identity_id is not a UUID")
	}
	// The update and its event, in one transaction.
	var u *usersv1.User
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		u, _, err = scanReferenceUser(tx.QueryRow(ctx,
			`UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), photo_url = COALESCE($4, photo_url),
			 nickname = COALESCE($5, nickname), username = COALESCE($6, username), updated_at = now()
			 WHERE identity_id = $1 RETURNING `+userColumns,
			req.GetIdentityId(), req.Name, req.Email, req.PhotoUrl, req.Nickname, req.Username))
		if err != nil {
			return err
		}
		return writeReferenceEvent(ctx, tx, "user.updated", u)
	})
	if _, ok := status.FromError(err); !ok { // the transaction's own error
		err = toReferenceStatus(err)
	}
	if err != nil {
		return nil, err
	}
	return &usersv1.UpdateUserResponse{User: u}, nil
}

// writeReferenceEvent writes the event of a change to the outbox, in the
// change's transaction: the obvious transactional outbox, a statement of
// its own after the change's, the user marshalled in Go. The reference
// relays nothing; its events only cost what writing them costs.
func writeReferenceEvent(ctx context.Context, tx pgx.Tx, kind string, u *usersv1.User) error {
	data, err := json.Marshal(u)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (kind, identity_id, actor_service, data) VALUES ($1, $2, 'reference', $3)`,
		kind, u.GetMeta().GetId(), data); err != nil {
		return toReferenceStatus(err)
	}
	return nil
}

// ResolveAPIToken records the use as it reads the token: one UPDATE per
// call, a write where the service reads.
func (r *referenceServer) ResolveAPIToken(ctx context.Context, req *usersv1.ResolveAPITokenRequest) (*usersv1.ResolveAPITokenResponse, error) {
	hash := req.GetTokenHash()
	if _, err := hex.DecodeString(hash); err != nil || len(hash) != 64 {
		return nil, status.Error(codes.InvalidArgument, "token_hash is not 64 hex digits")
	}
	tok, err := scanReferenceToken(r.pool.QueryRow(ctx,
		`UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1
		 RETURNING id, identity_id, name, token_prefix, expires_at, created_at, last_used_at`,
		strings.ToLower(hash)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, status.Error(codes.NotFound, "API token not found")
	}
	if err != nil {
		return nil, toReferenceStatus(err)
	}
	if tok.ExpiresAt != nil && !tok.ExpiresAt.AsTime().After(time.Now()) {
		return nil, status.Error(codes.Unauthenticated, "API token expired")
	}
	return &usersv1.ResolveAPITokenResponse{IdentityId: tok.IdentityId, Token: tok}, nil
}

// scanReferenceToken reads a token row: id, identity_id, name,
// token_prefix, expires_at, created_at, last_used_at.
func scanReferenceToken(row pgx.Row) (*usersv1.APIToken, error) {
	var t usersv1.APIToken
	var created time.Time
	var expires, lastUsed *time.Time
	if err := row.Scan(&t.Id, &t.IdentityId, &t.Name, &t.TokenPrefix, &expires, &created, &lastUsed); err != nil {
		return nil, err
	}
	t.CreatedAt = timestamppb.New(created)
	if expires != nil {
		t.ExpiresAt = timestamppb.New(*expires)
	}
	if lastUsed != nil {
		t.LastUsedAt = timestamppb.New(*lastUsed)
	}
	return &t, nil
}

// userBy reads the user whose column (a constant) equals value, and
// their stored cluster role.
func (r *referenceServer) userBy(ctx context.Context, column, value string) (*usersv1.User, string, error) {
	return scanReferenceUser(r.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE `+column+` = $1`, value))
}

// scanReferenceUser reads a row of userColumns: the user, and the stored
// cluster role ("" for none).
func scanReferenceUser(row pgx.Row) (*usersv1.User, string, error) {
	var u usersv1.User
	var id string
	var created, updated time.Time
	var role *string
	if err := row.Scan(&id, &u.OidcSubject, &u.Name, &u.Email, &u.PhotoUrl, &created, &updated, &u.Nickname, &u.Username, &role); err != nil {
		return nil, "", toReferenceStatus(err)
	}
	u.Meta = &usersv1.EntityMeta{Id: id, CreatedAt: timestamppb.New(created), UpdatedAt: timestamppb.New(updated)}
	if role == nil {
		return &u, "", nil
	}
	return &u, *role, nil
}

func toReferenceStatus(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return status.Error(codes.NotFound, "user not found")
	}
	return status.Error(codes.Internal, "internal error")
}
