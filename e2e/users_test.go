//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// TestHealth checks what the probes of the chart ask: readiness ("" and
// the service) and liveness.
func TestHealth(t *testing.T) {
	t.Parallel()
	health := healthpb.NewHealthClient(conn)
	for _, service := range []string{"", usersv1.UsersService_ServiceDesc.ServiceName, "liveness"} {
		resp, err := health.Check(rpcContext(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Errorf("Check(%q): %v", service, err)
			continue
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %s, want SERVING", service, resp.GetStatus())
		}
	}
}

// TestLoginStory runs every RPC once against the deployed service and its
// migrated database: a first login, a returning login, the three reads, an
// update, and the two errors a client must handle.
func TestLoginStory(t *testing.T) {
	t.Parallel()
	users := usersv1.NewUsersServiceClient(conn)
	ctx := rpcContext(t)
	// Subjects of this run only: the database outlives the test.
	subject := "https://e2e.example.com|" + uuid.NewString()

	first, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: subject,
		Name:        "E2E",
		Email:       "e2e@example.com",
	})
	if err != nil {
		t.Fatalf("first login: %v", err)
	}
	if !first.GetCreated() {
		t.Fatalf("first login of a new subject: created = false, want true")
	}
	user := first.GetUser()
	if _, err := uuid.Parse(user.GetMeta().GetId()); err != nil {
		t.Fatalf("identity id %q: %v", user.GetMeta().GetId(), err)
	}

	again, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Name: "Ignored"})
	if err != nil {
		t.Fatalf("returning login: %v", err)
	}
	if diff := cmp.Diff(&usersv1.ResolveOrCreateUserResponse{User: user}, again, protocmp.Transform()); diff != "" {
		t.Errorf("returning login (-want +got):\n%s", diff)
	}

	byID, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()})
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	bySubject, err := users.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: subject})
	if err != nil {
		t.Fatalf("GetUserByOIDCSubject: %v", err)
	}
	missing := uuid.NewString()
	batch, err := users.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{missing, user.GetMeta().GetId()}})
	if err != nil {
		t.Fatalf("BatchGetUsers: %v", err)
	}
	for name, got := range map[string]*usersv1.User{"GetUser": byID.GetUser(), "GetUserByOIDCSubject": bySubject.GetUser()} {
		if diff := cmp.Diff(user, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if diff := cmp.Diff([]*usersv1.User{user}, batch.GetUsers(), protocmp.Transform()); diff != "" {
		t.Errorf("BatchGetUsers leaves out the unknown id (-want +got):\n%s", diff)
	}

	updated, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: user.GetMeta().GetId(), Name: proto.String("E2E Renamed")})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if got := updated.GetUser().GetName(); got != "E2E Renamed" {
		t.Errorf("UpdateUser: name = %q, want %q", got, "E2E Renamed")
	}

	_, err = users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: missing})
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("GetUser of an unknown id: code %s (%v), want NotFound", got, err)
	}
	_, err = users.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: user.GetMeta().GetId(), Email: proto.String("not an email")})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Errorf("bad email: code %s (%v), want InvalidArgument", got, err)
	}

	// As the gateway calls for the user: its own profile, and the
	// directory, which finds it by its username.
	asUser := metadata.AppendToOutgoingContext(ctx, "x-identity-id", user.GetMeta().GetId())
	me, err := users.GetMe(asUser, &usersv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe: %v", err)
	}
	if got := me.GetUser().GetMeta().GetId(); got != user.GetMeta().GetId() {
		t.Errorf("GetMe: id %s, want %s", got, user.GetMeta().GetId())
	}
	found, err := users.SearchUsers(asUser, &usersv1.SearchUsersRequest{Prefix: me.GetUser().GetUsername()})
	if err != nil {
		t.Fatalf("SearchUsers: %v", err)
	}
	if got := found.GetUsers(); len(got) == 0 || got[0].GetIdentityId() != user.GetMeta().GetId() {
		t.Errorf("SearchUsers(%q): %v, want the user first", me.GetUser().GetUsername(), got)
	}

	// A personal API token, as the user makes one and the gateway then
	// resolves it by its hash, until the user revokes it.
	tok, err := users.CreateAPIToken(asUser, &usersv1.CreateAPITokenRequest{Name: "e2e"})
	if err != nil {
		t.Fatalf("CreateAPIToken: %v", err)
	}
	sum := sha256.Sum256([]byte(tok.GetPlaintextToken()))
	byHash := &usersv1.ResolveAPITokenRequest{TokenHash: hex.EncodeToString(sum[:])}
	resolved, err := users.ResolveAPIToken(ctx, byHash)
	if err != nil {
		t.Fatalf("ResolveAPIToken: %v", err)
	}
	if got := resolved.GetIdentityId(); got != user.GetMeta().GetId() {
		t.Errorf("ResolveAPIToken: identity_id %s, want %s", got, user.GetMeta().GetId())
	}
	if _, err := users.RevokeAPIToken(asUser, &usersv1.RevokeAPITokenRequest{TokenId: tok.GetToken().GetId()}); err != nil {
		t.Fatalf("RevokeAPIToken: %v", err)
	}
	if _, err := users.ResolveAPIToken(ctx, byHash); status.Code(err) != codes.NotFound {
		t.Errorf("ResolveAPIToken of a revoked token: %v, want NotFound", err)
	}
}
