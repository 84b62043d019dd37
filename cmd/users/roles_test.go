package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/metadata"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// serve reads CLUSTER_ADMIN_SUBJECTS: a declared subject that exists
// before start-up is stored as an administrator once the service is up,
// and answers as one. A login's malformed claim is counted in /metrics and
// named, never quoted, in the log.
func TestServeDeclaresAdminsAndCountsDroppedClaims(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(rpcContext(t))
	var rootID string
	// As the release before usernames would insert it: the trigger gives
	// the row its username.
	if err := conn.QueryRow(rpcContext(t),
		`INSERT INTO users (identity_id, oidc_subject) VALUES (gen_random_uuid(), 'auth0|root') RETURNING identity_id::text`).Scan(&rootID); err != nil {
		t.Fatal(err)
	}

	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "CLUSTER_ADMIN_SUBJECTS": "auth0|someone-else, auth0|root"})
	users := usersv1.NewUsersServiceClient(dial(t, addr))

	within(t, 10*time.Second, "auth0|root not stored as an administrator", func() bool {
		var role *string
		err := conn.QueryRow(rpcContext(t), `SELECT cluster_role FROM users WHERE oidc_subject = 'auth0|root'`).Scan(&role)
		return err == nil && role != nil && *role == "admin"
	})
	asRoot := metadata.AppendToOutgoingContext(rpcContext(t), server.IdentityHeader, rootID)
	me, err := users.GetMe(asRoot, &usersv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe: %v", err)
	}
	if me.GetClusterRole() != usersv1.ClusterRole_CLUSTER_ROLE_ADMIN {
		t.Errorf("GetMe cluster_role = %s, want CLUSTER_ROLE_ADMIN", me.GetClusterRole())
	}
	if _, err := users.ListUsers(asRoot, &usersv1.ListUsersRequest{}); err != nil {
		t.Errorf("ListUsers as the declared administrator: %v", err)
	}

	const badEmail = "token-user"
	resp, err := users.ResolveOrCreateUser(rpcContext(t), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|tester", Email: badEmail})
	if err != nil {
		t.Fatalf("a login with a malformed email: %v", err)
	}
	if got := resp.GetUser().GetEmail(); got != "" {
		t.Errorf("stored email %q, want it dropped", got)
	}
	labels := map[string]string{"claim": "email"}
	if got, _ := metricValue(scrapeMetrics(t, p), "users_login_claims_dropped_total", labels); got != 1 {
		t.Errorf("users_login_claims_dropped_total{claim=\"email\"} = %v, want 1", got)
	}
	line := findRecord(logRecords(t, p.stdout.String()), func(r logRecord) bool { return r["msg"] == "login claims dropped" })
	if line == nil || line["dropped_claims"] != "email" {
		t.Errorf("login claims dropped line = %v, want one with dropped_claims=email:\n%s", line, p.stdout)
	}
	if strings.Contains(p.stdout.String(), badEmail) {
		t.Errorf("the log quotes the dropped claim's value")
	}
}
