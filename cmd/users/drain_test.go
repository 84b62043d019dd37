package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// waitNotServing returns once the server's health, asked on a
// connection of its own, is NOT_SERVING.
func waitNotServing(t *testing.T, addr string) {
	t.Helper()
	cc := dial(t, addr)
	within(t, 10*time.Second, "health still not NOT_SERVING after SIGTERM", func() bool {
		return healthStatus(t, cc) == healthpb.HealthCheckResponse_NOT_SERVING
	})
}

// For DRAIN_DELAY after SIGTERM the server is NOT_SERVING, so that
// balancers and health-checking clients move away, but still serves every
// call that comes, on a new connection too: endpoints are updated after
// the signal, and a client that has not heard yet must not be refused.
// Then it drains and exits 0.
func TestDrainDelayServesCallsAfterNotServing(t *testing.T) {
	t.Parallel()
	const drainDelay = 5 * time.Second
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "DRAIN_DELAY": drainDelay.String()})
	user := createUser(t, usersv1.NewUsersServiceClient(dial(t, addr)), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "late client"})

	p.terminate(t)
	terminated := time.Now()
	waitNotServing(t, addr)
	// A client that has not heard: a new connection, a call.
	late := usersv1.NewUsersServiceClient(dial(t, addr))
	if _, err := late.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()}); err != nil {
		t.Errorf("a call on a new connection %s after SIGTERM, within DRAIN_DELAY (%s): %v", time.Since(terminated), drainDelay, err)
	}
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if took := time.Since(terminated); took < drainDelay {
		t.Errorf("exited %s after SIGTERM, before DRAIN_DELAY (%s)", took, drainDelay)
	}
	want := []string{eventsPruned, plaintextWarning, "serving", "shutting down", "drained"}
	if diff := cmp.Diff(want, p.stdout.messages()); diff != "" {
		t.Errorf("log messages (-want +got):\n%s", diff)
	}
}

// A second signal does not wait for the drain delay: the process ends at
// once, as a second Ctrl-C always did.
func TestSecondSignalSkipsTheDrainDelay(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "DRAIN_DELAY": "1m"})
	p.terminate(t)
	waitNotServing(t, addr)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
}

// An idle reflection stream (grpcurl, a debugging client) does not hold
// the drain: the process exits at once, long before SHUTDOWN_TIMEOUT.
func TestIdleReflectionStreamDoesNotHoldShutdown(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "SHUTDOWN_TIMEOUT": "2m"})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(dial(t, addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is open on the server, and idle
		t.Fatal(err)
	}
	p.terminate(t)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("the reflection stream is still open after the server exited")
	}
	want := []string{eventsPruned, plaintextWarning, "serving", "shutting down", "drained"}
	if diff := cmp.Diff(want, p.stdout.messages()); diff != "" {
		t.Errorf("log messages (-want +got):\n%s", diff)
	}
}
