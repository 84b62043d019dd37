package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/syncbuf"
	"github.com/agynio/users/internal/testing/testdb"
)

// Who may call what: every RPC that needs a caller, by every kind of
// caller. GetMe, UpdateMe and SearchUsers are any user's; ListUsers,
// CreateUser, DeleteUser and setting a cluster role an administrator's,
// whether an administrator granted the role or CLUSTER_ADMIN_SUBJECTS
// declares it.
func TestPermissionMatrix(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "declared")
	declared := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "declared"})
	asDeclared := asCaller(t.Context(), declared.GetMeta().GetId())
	granted := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "granted"})
	admin := usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	if _, err := e.client.UpdateUser(asDeclared, &usersv1.UpdateUserRequest{IdentityId: granted.GetMeta().GetId(), ClusterRole: &admin}); err != nil {
		t.Fatalf("granting the role: %v", err)
	}
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain"})

	// Each call that may change something works on a target of its own
	// (the subtests share the database), named after its subtest.
	type call func(ctx context.Context, t *testing.T) error
	target := func(t *testing.T) string {
		t.Helper()
		return e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "target " + t.Name()}).GetMeta().GetId()
	}
	rpcs := []struct {
		name     string
		adminRPC bool
		call     call
	}{
		{"GetMe", false, func(ctx context.Context, _ *testing.T) error {
			_, err := e.client.GetMe(ctx, &usersv1.GetMeRequest{})
			return err
		}},
		{"UpdateMe", false, func(ctx context.Context, _ *testing.T) error {
			_, err := e.client.UpdateMe(ctx, &usersv1.UpdateMeRequest{Name: proto.String("Renamed")})
			return err
		}},
		{"SearchUsers", false, func(ctx context.Context, _ *testing.T) error {
			_, err := e.client.SearchUsers(ctx, &usersv1.SearchUsersRequest{Prefix: "p"})
			return err
		}},
		{"ListUsers", true, func(ctx context.Context, _ *testing.T) error {
			_, err := e.client.ListUsers(ctx, &usersv1.ListUsersRequest{})
			return err
		}},
		{"CreateUser", true, func(ctx context.Context, t *testing.T) error {
			_, err := e.client.CreateUser(ctx, &usersv1.CreateUserRequest{OidcSubject: "created " + t.Name()})
			return err
		}},
		{"DeleteUser", true, func(ctx context.Context, t *testing.T) error {
			_, err := e.client.DeleteUser(ctx, &usersv1.DeleteUserRequest{IdentityId: target(t)})
			return err
		}},
		{"UpdateUser with a cluster role", true, func(ctx context.Context, t *testing.T) error {
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: target(t), ClusterRole: &admin})
			return err
		}},
	}
	callers := []struct {
		name string
		ctx  func(context.Context) context.Context
		// want is the code of a call any user may make, and wantAdmin of
		// an administrator's.
		want, wantAdmin codes.Code
	}{
		{"no identity", func(ctx context.Context) context.Context { return ctx }, codes.Unauthenticated, codes.Unauthenticated},
		{"a malformed identity", func(ctx context.Context) context.Context { return asCaller(ctx, "not-a-uuid") }, codes.Unauthenticated, codes.Unauthenticated},
		{"an identity without hyphens", func(ctx context.Context) context.Context {
			return asCaller(ctx, "01890a5dac96774bbcceb302099a8057")
		}, codes.Unauthenticated, codes.Unauthenticated},
		{"two identities", func(ctx context.Context) context.Context {
			return asCaller(asCaller(ctx, plain.GetMeta().GetId()), granted.GetMeta().GetId())
		}, codes.Unauthenticated, codes.Unauthenticated},
		{"a user", func(ctx context.Context) context.Context { return asCaller(ctx, plain.GetMeta().GetId()) }, codes.OK, codes.PermissionDenied},
		{"an unknown identity", func(ctx context.Context) context.Context { return asCaller(ctx, uuid.NewString()) }, codes.NotFound, codes.PermissionDenied},
		{"an administrator by grant", func(ctx context.Context) context.Context { return asCaller(ctx, granted.GetMeta().GetId()) }, codes.OK, codes.OK},
		{"a declared administrator", func(ctx context.Context) context.Context { return asCaller(ctx, declared.GetMeta().GetId()) }, codes.OK, codes.OK},
	}
	for _, c := range callers {
		for _, rpc := range rpcs {
			want := c.want
			if rpc.adminRPC {
				want = c.wantAdmin
			}
			// SearchUsers only needs an identity, and does not read the
			// caller: the directory holds what any user may see.
			if rpc.name == "SearchUsers" && c.name == "an unknown identity" {
				want = codes.OK
			}
			t.Run(fmt.Sprintf("%s by %s is %s", rpc.name, c.name, want), func(t *testing.T) {
				t.Parallel()
				err := rpc.call(c.ctx(t.Context()), t)
				wantCode(t, err, want)
			})
		}
	}
}

// A user without a role asking for one, or to take another's, is
// refused, and nothing in the request is written.
func TestSettingAClusterRoleNeedsAnAdministrator(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "declared")
	declared := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "declared"})
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain", Name: "Plain"})
	admin, none := usersv1.ClusterRole_CLUSTER_ROLE_ADMIN, usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
	asPlain := asCaller(t.Context(), plain.GetMeta().GetId())

	tests := []struct {
		name string
		req  *usersv1.UpdateUserRequest
	}{
		{"granting itself the role", &usersv1.UpdateUserRequest{IdentityId: plain.GetMeta().GetId(), ClusterRole: &admin, Name: proto.String("Root")}},
		{"taking the role from an administrator", &usersv1.UpdateUserRequest{IdentityId: declared.GetMeta().GetId(), ClusterRole: &none, Name: proto.String("Demoted")}},
		{"setting no role on itself", &usersv1.UpdateUserRequest{IdentityId: plain.GetMeta().GetId(), ClusterRole: &none, Name: proto.String("Root")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.UpdateUser(asPlain, tt.req)
			wantCode(t, err, codes.PermissionDenied)
		})
	}
	t.Cleanup(func() {
		for _, u := range []*usersv1.User{plain, declared} {
			got, err := e.client.GetUser(context.Background(), &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(u, got.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("user %s changed by a refused UpdateUser (-before +after):\n%s", u.GetOidcSubject(), diff)
			}
		}
		if r := e.storedRole(t, plain.GetMeta().GetId()); r != "" {
			t.Errorf("plain user's stored role = %q, want none", r)
		}
		if r := e.storedRole(t, declared.GetMeta().GetId()); r != "admin" {
			t.Errorf("declared administrator's stored role = %q, want admin", r)
		}
	})
}

// The first v1's RPCs are for services, which name no caller: they work
// without x-identity-id, UpdateUser too as long as it sets no role.
func TestFirstV1RPCsNeedNoCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	login, err := e.client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "service-made"})
	if err != nil {
		t.Fatalf("ResolveOrCreateUser: %v", err)
	}
	id := login.GetUser().GetMeta().GetId()
	if _, err := e.client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: id}); err != nil {
		t.Errorf("GetUser: %v", err)
	}
	if _, err := e.client.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "service-made"}); err != nil {
		t.Errorf("GetUserByOIDCSubject: %v", err)
	}
	if _, err := e.client.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{id}}); err != nil {
		t.Errorf("BatchGetUsers: %v", err)
	}
	if _, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{
		IdentityId: id, Name: proto.String("n"), Nickname: proto.String("nick"), Username: proto.String("svc"),
	}); err != nil {
		t.Errorf("UpdateUser without a cluster role: %v", err)
	}
}

// Under mutual TLS only the clients that IDENTITY_ASSERTING_CLIENTS names,
// by a DNS or URI SAN of their certificate, may send x-identity-id. From
// any other, a call that carries it is PERMISSION_DENIED, whatever the
// RPC: a v1 RPC, which would not read it, too, so that a misrouted
// assertion shows rather than being ignored. Without it, the same client
// is served.
func TestOnlyListedClientsMayAssertTheCaller(t *testing.T) {
	t.Parallel()
	const spiffe = "spiffe://cluster.local/ns/platform/sa/gateway"
	ca := certs.NewCA(t, "ca")
	conn := testdb.New(t)
	log := slog.New(slog.NewJSONHandler(&syncbuf.Buffer{}, nil))
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "users").TLS(t)},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	gs, _ := server.NewGRPCServer(server.New(conn, identity.Local{}, log), log,
		server.WithCredentials(creds),
		server.WithIdentityAssertingClients([]string{"gateway.example", spiffe}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)

	client := func(t *testing.T, cert *certs.Cert) usersv1.UsersServiceClient {
		t.Helper()
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(certs.ClientConfig(t, ca.Pool(), cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return usersv1.NewUsersServiceClient(cc)
	}
	gateway := client(t, ca.ClientWithSANs(t, "gateway", []string{"gateway.example"}, nil))
	workload := client(t, ca.ClientWithSANs(t, "gateway", nil, []string{spiffe}))
	other := client(t, ca.ClientWithSANs(t, "other", []string{"other.example"}, []string{"spiffe://cluster.local/ns/platform/sa/other"}))
	// The listed name as the common name only is not a SAN.
	byCN := client(t, ca.ClientWithSANs(t, "gateway.example", nil, nil))

	login, err := other.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "grace"})
	if err != nil {
		t.Fatalf("a v1 call without the header: %v", err)
	}
	me := login.GetUser().GetMeta().GetId()
	getMe := func(c usersv1.UsersServiceClient) func(context.Context) error {
		return func(ctx context.Context) error { _, err := c.GetMe(ctx, &usersv1.GetMeRequest{}); return err }
	}
	getUser := func(c usersv1.UsersServiceClient) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: me})
			return err
		}
	}
	tests := []struct {
		name   string
		call   func(context.Context) error
		assert bool
		want   codes.Code
	}{
		{"a listed DNS SAN names the caller to GetMe", getMe(gateway), true, codes.OK},
		{"a listed URI SAN names the caller to GetMe", getMe(workload), true, codes.OK},
		{"a listed client without the header is unauthenticated to GetMe", getMe(gateway), false, codes.Unauthenticated},
		{"an unlisted client naming a caller to GetMe is denied", getMe(other), true, codes.PermissionDenied},
		{"an unlisted client naming a caller to GetUser is denied", getUser(other), true, codes.PermissionDenied},
		{"an unlisted client without the header is served GetUser", getUser(other), false, codes.OK},
		{"a listed name as the common name only is denied", getMe(byCN), true, codes.PermissionDenied},
		{"a listed client naming a caller to GetUser is served", getUser(gateway), true, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tt.assert {
				ctx = asCaller(ctx, me)
			}
			wantCode(t, tt.call(ctx), tt.want)
		})
	}
}

// A server told to trust only some clients' assertions, reached without
// TLS, cannot tell who sent the header, and so takes it from nobody.
func TestAssertedCallerWithoutClientCertificateIsDenied(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, testdb.New(t), identity.Local{}, server.WithIdentityAssertingClients([]string{"gateway.example"}))
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
	_, err := e.client.GetMe(asCaller(t.Context(), u.GetMeta().GetId()), &usersv1.GetMeRequest{})
	wantCode(t, err, codes.PermissionDenied)
}
