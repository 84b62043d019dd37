package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	service "github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestIdentityHeaderIsTheServices(t *testing.T) {
	t.Parallel()
	if identityHeader != service.IdentityHeader {
		t.Errorf("identityHeader = %q, the service reads %q", identityHeader, service.IdentityHeader)
	}
}

// TestServersAnswerEveryWorkload builds the service from this module and
// runs it as the bench does, beside the reference and the floor, on a
// seeded database. The bench's page tokens must be the service's own, and
// every workload's requests, driven through the load generator for a
// moment on each server, must be answered without an error: a request a
// server refuses (a token it cannot read, a caller it does not know, an
// administrator it was not told of) fails here, not in the middle of a
// bench.
func TestServersAnswerEveryWorkload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "users")
	if err := buildService(ctx, filepath.Join("..", ".."), bin); err != nil {
		t.Fatal(err)
	}
	dbURL := testdb.URL(t)
	const users = 1000
	if err := seed(ctx, testdb.AsSuperuser(t, dbURL), users); err != nil {
		t.Fatal(err)
	}
	svc, err := startService(ctx, serviceName, bin, dbURL, tmp)
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, svc)
	ref, err := startReference(ctx, dbURL, tmp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ref.Stop)
	floor, err := startFloor(ctx, tmp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(floor.Stop)

	t.Run("the bench's page tokens are the service's", func(t *testing.T) {
		admin := metadata.AppendToOutgoingContext(ctx, identityHeader, identityID(adminUser))
		first, err := c.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: listPageSize})
		if err != nil || first.GetNextPageToken() != pageToken(listPageSize) {
			t.Errorf("first page: next_page_token %q, %v; the bench computes %q", first.GetNextPageToken(), err, pageToken(listPageSize))
		}
		const after = 900
		deep, err := c.ListUsers(admin, &usersv1.ListUsersRequest{PageSize: listPageSize, PageToken: pageToken(after)})
		if err != nil {
			t.Fatalf("the page after user %d, with the bench's token: %v", after, err)
		}
		got := deep.GetUsers()
		if len(got) != listPageSize || got[0].GetMeta().GetId() != identityID(after+1) || deep.GetNextPageToken() != pageToken(after+listPageSize) {
			t.Errorf("the page after user %d: %d users from %s, next_page_token %q; want %d from user %d, and %q",
				after, len(got), got[0].GetMeta().GetId(), deep.GetNextPageToken(), listPageSize, after+1, pageToken(after+listPageSize))
		}
	})

	run := 0
	for _, w := range workloads {
		for _, srv := range []*server{svc, ref, floor} {
			res, err := generateLoad(loadSpec{
				Addr: srv.Addr, Server: srv.Name, Workload: w.name, Users: users,
				Concurrency: 2, Duration: 200 * time.Millisecond, ServerPID: srv.PID(), Seed: 1, Run: run,
			})
			run++
			if err != nil {
				t.Fatalf("%s, %s: %v", w.name, srv.Name, err)
			}
			if res.Calls == 0 || len(res.Errors) > 0 || res.Unfinished > 0 {
				t.Errorf("%s, %s: %d calls, %d unfinished, errors %v (first: %s)", w.name, srv.Name, res.Calls, res.Unfinished, res.Errors, res.FirstError)
			}
		}
	}
}
