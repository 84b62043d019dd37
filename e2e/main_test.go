//go:build e2e

// Package e2e tests a deployed users service from the outside, as one of
// its clients would: over the network, through the Service, against the
// database the deployment migrated. It needs the address, so it is behind
// the e2e build tag and stays out of "go test ./...":
//
//	USERS_ADDRESS=users:50051 go test -tags e2e ./e2e/
//
// scripts/e2e.sh runs it against a local build (CI does), and devspace.yaml
// runs it as a Job inside the cluster. Every run works with subjects of its
// own, so it can run again and again against the same database.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// rpcTimeout bounds every RPC, so that a hung service fails the run.
const rpcTimeout = 30 * time.Second

// conn is the connection to the service under test, made by TestMain.
var conn *grpc.ClientConn

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	addr := os.Getenv("USERS_ADDRESS")
	if addr == "" {
		fmt.Fprintln(os.Stderr, "e2e: set USERS_ADDRESS to the service's host:port (e.g. users:50051)")
		return 2
	}
	creds := insecure.NewCredentials()
	// A release with tls.enabled serves TLS only: trust its CA.
	if ca := os.Getenv("USERS_TLS_CA_FILE"); ca != "" {
		c, err := credentials.NewClientTLSFromFile(ca, os.Getenv("USERS_TLS_SERVER_NAME"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: USERS_TLS_CA_FILE:", err)
			return 2
		}
		creds = c
	}
	var err error
	conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: grpc.NewClient(%q): %v\n", addr, err)
		return 2
	}
	defer conn.Close()

	// Right after a deploy the pods may still be starting: wait for the
	// service to say it is ready rather than fail on the first refusal.
	wait := 2 * time.Minute
	if s := os.Getenv("USERS_READY_TIMEOUT"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: USERS_READY_TIMEOUT:", err)
			return 2
		}
	}
	if err := waitServing(conn, wait); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %s did not become SERVING within %s: %v\n", addr, wait, err)
		return 1
	}
	return m.Run()
}

// waitServing polls grpc.health.v1 for the server as a whole until it is
// SERVING or wait has passed, and returns the last error seen.
func waitServing(cc *grpc.ClientConn, wait time.Duration) error {
	health := healthpb.NewHealthClient(cc)
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %s", resp.GetStatus())
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}

// rpcContext is the context for a test's RPCs.
func rpcContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}
