package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// TestRetryPolicy dials a UsersService that fails its first calls with
// the example's dial options: the codes the API says to retry are retried,
// up to maxAttempts, and every other code is returned at once.
func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		failures     []codes.Code // what the first attempts are answered
		wantCode     codes.Code
		wantAttempts int
	}{
		{
			name:         "UNAVAILABLE then ABORTED are retried until the call succeeds",
			failures:     []codes.Code{codes.Unavailable, codes.Aborted},
			wantCode:     codes.OK,
			wantAttempts: 3,
		},
		{
			name:         "a call that stays UNAVAILABLE ends after five attempts",
			failures:     []codes.Code{codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable},
			wantCode:     codes.Unavailable,
			wantAttempts: 5,
		},
		{
			name:         "INVALID_ARGUMENT is not retried",
			failures:     []codes.Code{codes.InvalidArgument},
			wantCode:     codes.InvalidArgument,
			wantAttempts: 1,
		},
		{
			name:         "INTERNAL is not retried",
			failures:     []codes.Code{codes.Internal},
			wantCode:     codes.Internal,
			wantAttempts: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := &flakyUsers{failures: tc.failures}
			users := usersv1.NewUsersServiceClient(dialExample(t, startFlaky(t, srv).addr))
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "retry"})
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("ResolveOrCreateUser: %v; want code %v", err, tc.wantCode)
			}
			if got := srv.attempts(); got != tc.wantAttempts {
				t.Errorf("the server saw %d attempts, want %d", got, tc.wantAttempts)
			}
		})
	}
}

// TestCallsWaitForAServingReplica: a call made while the only replica's
// health says UsersService is NOT_SERVING (its database out of reach, or
// it draining) is not sent to it, and does not fail either: it waits,
// longer than the retries alone would last, and is sent once the replica
// is SERVING again.
func TestCallsWaitForAServingReplica(t *testing.T) {
	t.Parallel()
	// Longer than every backoff of the retry policy together (at most
	// 0.1+0.2+0.4+0.8 s): retries alone would have given up by then.
	const outage = 2 * time.Second
	srv := &flakyUsers{}
	f := startFlaky(t, srv)
	f.health.SetServingStatus(usersv1.UsersService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	var servingSince time.Time
	timer := time.AfterFunc(outage, func() {
		srv.mu.Lock()
		servingSince = time.Now()
		srv.mu.Unlock()
		f.health.SetServingStatus(usersv1.UsersService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	})
	t.Cleanup(func() { timer.Stop() })

	users := usersv1.NewUsersServiceClient(dialExample(t, f.addr))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "wait"}); err != nil {
		t.Fatalf("ResolveOrCreateUser during a replica's NOT_SERVING spell: %v; want it to wait and succeed", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if servingSince.IsZero() || len(srv.calls) != 1 || srv.calls[0].Before(servingSince) {
		t.Errorf("the server was sent %d attempts, at %v; want one, after it turned SERVING (at %v, zero if not yet)", len(srv.calls), srv.calls, servingSince)
	}
}

// TestCallsAreSpreadOverReplicas: with a target that resolves to two
// replicas, as a headless Service's name does, calls go to both.
func TestCallsAreSpreadOverReplicas(t *testing.T) {
	t.Parallel()
	a, b := &flakyUsers{}, &flakyUsers{}
	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: startFlaky(t, a).addr}, {Addr: startFlaky(t, b).addr}}})
	cc, err := grpc.NewClient("replicas:///users", append(dialOptions(insecure.NewCredentials()), grpc.WithResolvers(r))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	users := usersv1.NewUsersServiceClient(cc)
	// Until both have served, as the second replica's connection may be
	// ready a moment after the first one's.
	deadline := time.Now().Add(5 * time.Second)
	for (a.attempts() == 0 || b.attempts() == 0) && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "spread"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if a.attempts() == 0 || b.attempts() == 0 {
		t.Errorf("within 5 s, replica A served %d calls and replica B %d; want both some", a.attempts(), b.attempts())
	}
}

// dialExample dials addr as the example does, in plaintext.
func dialExample(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, dialOptions(insecure.NewCredentials())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// flakyUsers is a UsersService whose ResolveOrCreateUser answers its first
// calls with the codes in failures, one each, and succeeds after.
type flakyUsers struct {
	usersv1.UnimplementedUsersServiceServer

	mu       sync.Mutex
	failures []codes.Code
	calls    []time.Time // when each attempt arrived
}

func (f *flakyUsers) ResolveOrCreateUser(_ context.Context, req *usersv1.ResolveOrCreateUserRequest) (*usersv1.ResolveOrCreateUserResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if len(f.failures) > 0 {
		code := f.failures[0]
		f.failures = f.failures[1:]
		return nil, status.Error(code, "failing as told")
	}
	return &usersv1.ResolveOrCreateUserResponse{User: &usersv1.User{OidcSubject: req.GetOidcSubject()}, Created: true}, nil
}

func (f *flakyUsers) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// flakyServer is a gRPC server of srv with the health service, UsersService
// SERVING, as the service's own is once its database answers.
type flakyServer struct {
	addr   string
	health *health.Server
}

func startFlaky(t *testing.T, srv *flakyUsers) *flakyServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus(usersv1.UsersService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	usersv1.RegisterUsersServiceServer(s, srv)
	go s.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(s.Stop)
	return &flakyServer{addr: lis.Addr().String(), health: h}
}
