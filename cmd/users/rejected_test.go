package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// A request that gRPC itself refuses, before the service's interceptors
// (here one over the size limit), shows in /metrics as
// users_grpc_rejected_total and in the log as a "rejected call" line,
// without its payload.
func TestRejectedCallsShowInMetricsAndLogs(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t)})
	users := usersv1.NewUsersServiceClient(dial(t, addr))

	const marker = "oversized-request-"
	_, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: strings.Repeat(marker, server.MaxRequestBytes/len(marker)+1)})
	if code := status.Code(err); code != codes.ResourceExhausted {
		t.Fatalf("GetUser over the size limit: %v, want %s", err, codes.ResourceExhausted)
	}

	labels := map[string]string{"grpc_service": usersService, "grpc_method": "GetUser", "grpc_code": codes.ResourceExhausted.String()}
	// Counted once the answer is sent, so the scrape may come first.
	within(t, 10*time.Second, "users_grpc_rejected_total"+formatLabels(labels)+" not 1", func() bool {
		got, _ := metricValue(scrapeMetrics(t, p), "users_grpc_rejected_total", labels)
		return got == 1
	})
	records := logRecords(t, p.stdout.String())
	line := findRecord(records, func(r logRecord) bool { return r["msg"] == "rejected call" })
	if line == nil {
		t.Fatalf("no rejected call line:\n%s", p.stdout)
	}
	if line["grpc.method"] != "GetUser" || line["grpc.code"] != codes.ResourceExhausted.String() {
		t.Errorf("rejected call line %v, want GetUser, ResourceExhausted", line)
	}
	if strings.Contains(p.stdout.String(), marker) {
		t.Errorf("the log holds the request's payload")
	}
}
