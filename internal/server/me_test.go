package server_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

func TestGetMe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	me := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: "auth0|erin", Name: "Erin", Email: "erin@example.com", PhotoUrl: "https://example.com/erin.png",
	})
	e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "someone-else"})

	got, err := e.client.GetMe(asCaller(t.Context(), me.GetMeta().GetId()), &usersv1.GetMeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &usersv1.GetMeResponse{User: me, ClusterRole: usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("GetMe (-want +got):\n%s", diff)
	}
}

// A caller the gateway names but the service does not know (deleted, or
// never logged in) is NOT_FOUND, to GetMe and UpdateMe alike, and
// UpdateMe creates nobody.
func TestMeOfAnUnknownCallerIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := asCaller(t.Context(), uuid.NewString())
	_, err := e.client.GetMe(ctx, &usersv1.GetMeRequest{})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.UpdateMe(ctx, &usersv1.UpdateMeRequest{Name: proto.String("ghost")})
	wantCode(t, err, codes.NotFound)
	if n := e.countUsers(t); n != 0 {
		t.Errorf("users rows = %d, want 0", n)
	}
}

func TestUpdateMe(t *testing.T) {
	t.Parallel()
	orig := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: "subject", Name: "Old Name", Email: "old@example.com", PhotoUrl: "https://example.com/old.png",
	}
	tests := []struct {
		name string
		req  *usersv1.UpdateMeRequest
		want *usersv1.User
	}{
		{
			name: "setting the name leaves the username alone",
			req:  &usersv1.UpdateMeRequest{Name: proto.String("New Name")},
			want: &usersv1.User{OidcSubject: "subject", Name: "New Name", Email: "old@example.com", PhotoUrl: "https://example.com/old.png", Username: "old"},
		},
		{
			name: "setting the username leaves the name alone",
			req:  &usersv1.UpdateMeRequest{Username: proto.String("new_me-1")},
			want: &usersv1.User{OidcSubject: "subject", Name: "Old Name", Email: "old@example.com", PhotoUrl: "https://example.com/old.png", Username: "new_me-1"},
		},
		{
			name: "setting both replaces both",
			req:  &usersv1.UpdateMeRequest{Name: proto.String("N"), Username: proto.String("n")},
			want: &usersv1.User{OidcSubject: "subject", Name: "N", Email: "old@example.com", PhotoUrl: "https://example.com/old.png", Username: "n"},
		},
		{
			name: "the name set to the empty string is cleared",
			req:  &usersv1.UpdateMeRequest{Name: proto.String("")},
			want: &usersv1.User{OidcSubject: "subject", Email: "old@example.com", PhotoUrl: "https://example.com/old.png", Username: "old"},
		},
		{
			name: "setting the username the caller has already is no conflict",
			req:  &usersv1.UpdateMeRequest{Username: proto.String("old")},
			want: &usersv1.User{OidcSubject: "subject", Name: "Old Name", Email: "old@example.com", PhotoUrl: "https://example.com/old.png", Username: "old"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			u := e.createUser(t, orig)
			other := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "other", Name: "Other"})

			resp, err := e.client.UpdateMe(asCaller(t.Context(), u.GetMeta().GetId()), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := resp.GetUser()
			if diff := cmp.Diff(tt.want, got, protocmp.Transform(), ignoreMeta); diff != "" {
				t.Errorf("updated user (-want +got):\n%s", diff)
			}
			if r := resp.GetClusterRole(); r != usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED {
				t.Errorf("cluster_role = %s, want CLUSTER_ROLE_UNSPECIFIED", r)
			}
			if got.GetMeta().GetId() != u.GetMeta().GetId() {
				t.Errorf("identity id changed: %s -> %s", u.GetMeta().GetId(), got.GetMeta().GetId())
			}
			if !got.GetMeta().GetCreatedAt().AsTime().Equal(u.GetMeta().GetCreatedAt().AsTime()) {
				t.Errorf("created_at changed: %v -> %v", u.GetMeta().GetCreatedAt().AsTime(), got.GetMeta().GetCreatedAt().AsTime())
			}
			if !got.GetMeta().GetUpdatedAt().AsTime().After(u.GetMeta().GetUpdatedAt().AsTime()) {
				t.Errorf("updated_at did not move forward: %v -> %v", u.GetMeta().GetUpdatedAt().AsTime(), got.GetMeta().GetUpdatedAt().AsTime())
			}

			// The change is stored, not just echoed, and is the caller's
			// alone.
			stored, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, stored.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("stored user differs from the response (-response +stored):\n%s", diff)
			}
			untouched, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: other.GetMeta().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(other, untouched.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("another user changed (-before +after):\n%s", diff)
			}
		})
	}
}

// A username another user has is ALREADY_EXISTS, and the caller's other
// fields in the same request are not written either.
func TestUpdateMeToATakenUsernameIsAlreadyExists(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	me := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "me", Name: "Me"})
	e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "frank", PreferredUsername: proto.String("frank")})

	_, err := e.client.UpdateMe(asCaller(t.Context(), me.GetMeta().GetId()), &usersv1.UpdateMeRequest{Name: proto.String("Frank Too"), Username: proto.String("frank")})
	wantCode(t, err, codes.AlreadyExists)

	got, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: me.GetMeta().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(me, got.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("user changed by a refused UpdateMe (-before +after):\n%s", diff)
	}
}
