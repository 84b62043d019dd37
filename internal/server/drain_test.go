package server_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
)

// serveInMemory runs the binary's gRPC server (without a database),
// logging to log, on an in-memory listener and returns a client of it; the
// server is the test's to stop, and is stopped at the end at the latest.
func serveInMemory(t *testing.T, log *slog.Logger, opts ...server.Option) (*grpc.Server, *server.Health, *grpc.ClientConn) {
	t.Helper()
	gs, health := server.NewGRPCServer(server.New(nil, identity.Local{}, log), log, opts...)
	lis := bufconn.Listen(1 << 20)
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return gs, health, cc
}

// When the drain starts, every streaming call ends, whatever its handler
// waits for: a reflection stream idle between two requests (its handler
// waits for the client's next message) as much as a health Watch (its
// handler waits for a new status). Left open, either would hold a
// graceful stop until SHUTDOWN_TIMEOUT.
func TestEndStreamsLetsGracefulStopFinish(t *testing.T) {
	t.Parallel()
	gs, health, cc := serveInMemory(t, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	reflection, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One answer, so that the stream is open on the server and idle there.
	if err := reflection.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reflection.Recv(); err != nil {
		t.Fatalf("reflection before the drain: %v", err)
	}
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("health Watch before the drain: %v", err)
	}

	health.Shutdown()
	health.EndStreams()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop still waits 10s after EndStreams: a stream holds it")
	}
	if _, err := reflection.Recv(); err == nil {
		t.Error("the reflection stream is still open after the drain")
	} else {
		wantCode(t, err, codes.Unavailable)
	}
	if _, err := watch.Recv(); err == nil {
		t.Error("the health Watch stream is still open after the drain")
	}
}
