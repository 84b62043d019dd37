package main

import (
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/agynio/users/internal/config"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

var usersService = usersv1.UsersService_ServiceDesc.ServiceName

// TestServe runs "users serve" over TCP as a client would see it: health,
// reflection and every UsersService RPC, then a clean exit on SIGTERM.
func TestServe(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t)})
	cc := dial(t, addr)

	t.Run("health", func(t *testing.T) { testHealth(t, cc) })
	t.Run("reflection", func(t *testing.T) { testReflection(t, cc) })
	t.Run("UsersService", func(t *testing.T) { testUsersService(t, usersv1.NewUsersServiceClient(cc)) })

	// A clean exit also means no race report from a -race build (exit 66).
	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("after SIGTERM: exit code %d, want 0", code)
	}
}

// TestServeClosesWhatItOpened calls serve in process with one of its two
// addresses already taken: it must return an error naming that address's
// variable, and leave the other address free, whichever it had bound.
func TestServeClosesWhatItOpened(t *testing.T) {
	t.Parallel()
	for _, taken := range []string{"GRPC_ADDRESS", "ADMIN_ADDRESS"} {
		t.Run("with "+taken+" taken", func(t *testing.T) {
			t.Parallel()
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			free := fmt.Sprintf("127.0.0.1:%d", unusedLoopbackPort(t))
			env := map[string]string{
				// Syntactically valid; nothing listens there, so the first
				// health check fails at once.
				"DATABASE_URL":  "postgres://u@127.0.0.1:1/users",
				"GRPC_ADDRESS":  free,
				"ADMIN_ADDRESS": free,
				taken:           busy.Addr().String(),
			}
			cfg, err := config.Load(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}

			err = serve(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), taken) {
				t.Fatalf("serve = %v, want an error naming %s", err, taken)
			}
			lis, err := net.Listen("tcp", free)
			if err != nil {
				t.Fatalf("%s still taken after serve returned: %v", free, err)
			}
			lis.Close()
		})
	}
}

func testHealth(t *testing.T, cc *grpc.ClientConn) {
	health := healthpb.NewHealthClient(cc)
	for _, tc := range []struct {
		name     string
		service  string
		wantCode codes.Code
		want     healthpb.HealthCheckResponse_ServingStatus
	}{
		{name: "the server as a whole is SERVING", service: "", want: healthpb.HealthCheckResponse_SERVING},
		{name: "UsersService is SERVING", service: usersService, want: healthpb.HealthCheckResponse_SERVING},
		{name: "an unknown service is NOT_FOUND", service: "no.such.Service", wantCode: codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := health.Check(rpcContext(t), &healthpb.HealthCheckRequest{Service: tc.service})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Check(%q): code %s (%v), want %s", tc.service, got, err, tc.wantCode)
			}
			if got := resp.GetStatus(); err == nil && got != tc.want {
				t.Errorf("Check(%q) = %s, want %s", tc.service, got, tc.want)
			}
		})
	}
}

// testReflection checks what grpcurl needs: the list of services, and the
// descriptor of UsersService.
func testReflection(t *testing.T, cc *grpc.ClientConn) {
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(rpcContext(t))
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	defer stream.CloseSend() //nolint:errcheck // the context ends the stream anyway

	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatalf("send %v: %v", req, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			t.Fatalf("reflection error %d: %s", e.GetErrorCode(), e.GetErrorMessage())
		}
		return resp
	}

	list := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	var services []string
	for _, s := range list.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	sort.Strings(services)
	wantServices := []string{
		usersService,
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
	}
	sort.Strings(wantServices)
	if diff := cmp.Diff(wantServices, services); diff != "" {
		t.Errorf("ListServices (-want +got):\n%s", diff)
	}

	files := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: usersService},
	})
	var found bool
	for _, raw := range files.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			t.Fatalf("unmarshal file descriptor: %v", err)
		}
		for _, s := range fd.GetService() {
			found = found || fd.GetPackage()+"."+s.GetName() == usersService
		}
	}
	if !found {
		t.Errorf("FileContainingSymbol(%q): no returned file declares the service", usersService)
	}
}

// testUsersService calls every RPC once, as a short story: two first
// logins, a returning login, the three reads, an update.
func testUsersService(t *testing.T, users usersv1.UsersServiceClient) {
	ctx := rpcContext(t)
	aliceReq := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: "https://issuer.example.com|alice",
		Name:        "Alice",
		Email:       "alice@example.com",
		PhotoUrl:    "https://example.com/alice.png",
	}
	alice := createUser(t, users, aliceReq)
	// The claims come back as sent; the service fills in meta.
	wantAlice := &usersv1.User{
		OidcSubject: aliceReq.GetOidcSubject(),
		Name:        aliceReq.GetName(),
		Email:       aliceReq.GetEmail(),
		PhotoUrl:    aliceReq.GetPhotoUrl(),
		Username:    "alice", // the email's local part
	}
	if diff := cmp.Diff(wantAlice, alice, protocmp.Transform(), protocmp.IgnoreFields(&usersv1.User{}, "meta")); diff != "" {
		t.Errorf("created user (-want +got):\n%s", diff)
	}
	checkNewMeta(t, alice.GetMeta())

	bob := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|bob"})
	missing := uuid.Must(uuid.NewV7()).String()

	for _, tc := range []struct {
		name string
		call func() (proto.Message, error)
		want proto.Message
	}{
		{
			name: "ResolveOrCreateUser of a known subject returns the stored user, claims unchanged",
			call: func() (proto.Message, error) {
				return users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
					OidcSubject: aliceReq.GetOidcSubject(),
					Name:        "Alice Renamed",
					Email:       "renamed@example.com",
				})
			},
			want: &usersv1.ResolveOrCreateUserResponse{User: alice, Created: false},
		},
		{
			name: "GetUser returns the user",
			call: func() (proto.Message, error) {
				return users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: alice.GetMeta().GetId()})
			},
			want: &usersv1.GetUserResponse{User: alice},
		},
		{
			name: "GetUserByOIDCSubject returns the user",
			call: func() (proto.Message, error) {
				return users.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: aliceReq.GetOidcSubject()})
			},
			want: &usersv1.GetUserByOIDCSubjectResponse{User: alice},
		},
		{
			name: "BatchGetUsers returns users in request order, leaving out unknown ids",
			call: func() (proto.Message, error) {
				return users.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{
					IdentityIds: []string{bob.GetMeta().GetId(), missing, alice.GetMeta().GetId()},
				})
			},
			want: &usersv1.BatchGetUsersResponse{Users: []*usersv1.User{bob, alice}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("UpdateUser sets the fields present and keeps the rest", func(t *testing.T) {
		resp, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{
			IdentityId: alice.GetMeta().GetId(),
			Name:       proto.String("Alice Liddell"),
			Email:      proto.String(""),
		})
		if err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(alice).(*usersv1.User)
		want.Name, want.Email = "Alice Liddell", ""
		got := resp.GetUser()
		if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&usersv1.EntityMeta{}, "updated_at")); diff != "" {
			t.Errorf("updated user (-want +got):\n%s", diff)
		}
		if up, created := got.GetMeta().GetUpdatedAt().AsTime(), alice.GetMeta().GetCreatedAt().AsTime(); up.Before(created) {
			t.Errorf("updated_at %v is before created_at %v", up, created)
		}

		stored, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: alice.GetMeta().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, stored.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("GetUser after UpdateUser (-update response +stored):\n%s", diff)
		}
	})

	t.Run("GetUser of an unknown id is NOT_FOUND", func(t *testing.T) {
		_, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: missing})
		if got := status.Code(err); got != codes.NotFound {
			t.Errorf("code %s (%v), want %s", got, err, codes.NotFound)
		}
	})
}

// createUser resolves a subject that must be new and returns its user.
func createUser(t *testing.T, users usersv1.UsersServiceClient, req *usersv1.ResolveOrCreateUserRequest) *usersv1.User {
	t.Helper()
	resp, err := users.ResolveOrCreateUser(rpcContext(t), req)
	if err != nil {
		t.Fatalf("ResolveOrCreateUser(%q): %v", req.GetOidcSubject(), err)
	}
	if !resp.GetCreated() {
		t.Fatalf("ResolveOrCreateUser(%q): created = false, want true", req.GetOidcSubject())
	}
	return resp.GetUser()
}

// checkNewMeta checks the meta of a user created just now: a canonical UUID
// and equal, recent timestamps.
func checkNewMeta(t *testing.T, meta *usersv1.EntityMeta) {
	t.Helper()
	if id, err := uuid.Parse(meta.GetId()); err != nil || id.String() != meta.GetId() {
		t.Errorf("meta.id = %q, want a canonical UUID", meta.GetId())
	}
	created := meta.GetCreatedAt().AsTime()
	if age := time.Since(created); age < -time.Minute || age > time.Minute {
		t.Errorf("meta.created_at = %v, want about now", created)
	}
	if diff := cmp.Diff(meta.GetCreatedAt(), meta.GetUpdatedAt(), protocmp.Transform()); diff != "" {
		t.Errorf("new user's updated_at differs from created_at (-created +updated):\n%s", diff)
	}
}
