package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestReferenceServerActsForTheCaller(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dbURL := testdb.URL(t)
	const users = 120
	if err := seed(ctx, testdb.AsSuperuser(t, dbURL), users); err != nil {
		t.Fatal(err)
	}
	ref, err := startReference(ctx, dbURL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, ref)
	as := func(n int64) context.Context {
		return metadata.AppendToOutgoingContext(ctx, identityHeader, identityID(n))
	}

	me, err := c.GetMe(as(7), &usersv1.GetMeRequest{})
	if err != nil || me.GetUser().GetMeta().GetId() != identityID(7) || me.GetUser().GetUsername() != "user7" ||
		me.GetClusterRole() != usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED {
		t.Errorf("GetMe as user 7 = %v, %v; want user7, no role", me, err)
	}
	admin, err := c.GetMe(as(adminUser), &usersv1.GetMeRequest{})
	if err != nil || admin.GetClusterRole() != usersv1.ClusterRole_CLUSTER_ROLE_ADMIN {
		t.Errorf("GetMe as the declared administrator = %v, %v; want CLUSTER_ROLE_ADMIN", admin, err)
	}

	for _, search := range []struct {
		prefix string
		want   []string
	}{
		{"user1", []string{"user1", "user10", "user100", "user101", "user102", "user103", "user104", "user105", "user106", "user107"}},
		{"user12", []string{"user12", "user120"}},
	} {
		found, err := c.SearchUsers(as(7), &usersv1.SearchUsersRequest{Prefix: search.prefix})
		var got []string
		for _, e := range found.GetUsers() {
			got = append(got, e.GetUsername())
		}
		if err != nil || !slices.Equal(got, search.want) {
			t.Errorf("SearchUsers %q = %v, %v; want the exact match first, then by username: %v", search.prefix, got, err, search.want)
		}
	}

	// The whole table, page by page, in id order; the tokens are offsets.
	var ids, tokens []string
	token := ""
	for range users {
		page, err := c.ListUsers(as(adminUser), &usersv1.ListUsersRequest{PageToken: token})
		if err != nil {
			t.Fatalf("ListUsers after %q: %v", token, err)
		}
		for _, u := range page.GetUsers() {
			ids = append(ids, u.GetMeta().GetId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
		tokens = append(tokens, token)
	}
	var want []string
	for n := int64(1); n <= users; n++ {
		want = append(want, identityID(n))
	}
	if !slices.Equal(ids, want) || !slices.Equal(tokens, []string{"50", "100"}) {
		t.Errorf("ListUsers walk: ids %v, tokens %v; want users 1..%d, tokens 50, 100", ids, tokens, users)
	}

	for _, c := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"GetMe without a caller", func() error { _, err := c.GetMe(ctx, &usersv1.GetMeRequest{}); return err }, codes.Unauthenticated},
		{"SearchUsers without a caller", func() error {
			_, err := c.SearchUsers(ctx, &usersv1.SearchUsersRequest{Prefix: "user"})
			return err
		}, codes.Unauthenticated},
		{"ListUsers as a user who is no administrator", func() error {
			_, err := c.ListUsers(as(7), &usersv1.ListUsersRequest{})
			return err
		}, codes.PermissionDenied},
		{"ListUsers with a token that is no offset", func() error {
			_, err := c.ListUsers(as(adminUser), &usersv1.ListUsersRequest{PageToken: "x"})
			return err
		}, codes.InvalidArgument},
	} {
		if got := status.Code(c.call()); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
