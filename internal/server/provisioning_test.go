package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// derivedFromSubject is the username of a user with nothing else to derive
// one from: "user-" and the first 8 hex digits of the subject's SHA-256.
func derivedFromSubject(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return "user-" + hex.EncodeToString(sum[:])[:8]
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	before := time.Now().Add(-time.Minute)

	resp, err := e.client.CreateUser(asRoot, &usersv1.CreateUserRequest{
		OidcSubject: "auth0|bob",
		Name:        proto.String("Bob Builder"),
		Nickname:    proto.String("Bobby"),
		PhotoUrl:    proto.String("https://example.com/bob.png"),
		ClusterRole: usersv1.ClusterRole_CLUSTER_ROLE_ADMIN,
		Username:    proto.String("bob"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetUser()
	want := &usersv1.User{OidcSubject: "auth0|bob", Name: "Bob Builder", Nickname: "Bobby", PhotoUrl: "https://example.com/bob.png", Username: "bob"}
	if diff := cmp.Diff(want, got, protocmp.Transform(), ignoreMeta); diff != "" {
		t.Errorf("created user (-want +got):\n%s", diff)
	}
	if id, err := uuid.Parse(got.GetMeta().GetId()); err != nil || id.Version() != 7 {
		t.Errorf("identity id %q: want a UUIDv7 (err %v)", got.GetMeta().GetId(), err)
	}
	if c := got.GetMeta().GetCreatedAt().AsTime(); c.Before(before) {
		t.Errorf("created_at %v is implausible", c)
	}

	// The user and its role are stored, not just echoed.
	stored, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: got.GetMeta().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	wantStored := &usersv1.GetUserResponse{User: got, ClusterRole: usersv1.ClusterRole_CLUSTER_ROLE_ADMIN}
	if diff := cmp.Diff(wantStored, stored, protocmp.Transform()); diff != "" {
		t.Errorf("stored user differs from the response (-response +stored):\n%s", diff)
	}
}

// Without a username, CreateUser derives one as a login does, from the
// name, else from the subject, and steps around a taken one.
func TestCreateUserDerivesTheUsername(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "taken", PreferredUsername: proto.String("ada-lovelace")})

	tests := []struct {
		name string
		req  *usersv1.CreateUserRequest
		want string
	}{
		{"from the name, normalised", &usersv1.CreateUserRequest{OidcSubject: "s1", Name: proto.String("Grace  Hopper!")}, "grace-hopper"},
		{"from the subject without a name", &usersv1.CreateUserRequest{OidcSubject: "s2"}, derivedFromSubject("s2")},
		{"from the subject when the name leaves nothing", &usersv1.CreateUserRequest{OidcSubject: "s3", Name: proto.String("ñ…")}, derivedFromSubject("s3")},
		{"with a suffix when the name's is taken", &usersv1.CreateUserRequest{OidcSubject: "s4", Name: proto.String("Ada Lovelace")}, "ada-lovelace-2"},
		{"from the subject, not the nickname", &usersv1.CreateUserRequest{OidcSubject: "s5", Nickname: proto.String("nick")}, derivedFromSubject("s5")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client.CreateUser(asRoot, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetUser().GetUsername(); got != tt.want {
				t.Errorf("username = %q, want %q", got, tt.want)
			}
		})
	}
}

// A taken subject or a taken given username is ALREADY_EXISTS, and
// nothing is written.
func TestCreateUserTakenIsAlreadyExists(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	existing := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "existing", Name: "Kept", PreferredUsername: proto.String("kept")})
	rows := e.countUsers(t)

	tests := []struct {
		name string
		req  *usersv1.CreateUserRequest
	}{
		{"a taken subject", &usersv1.CreateUserRequest{OidcSubject: "existing", Name: proto.String("Other")}},
		{"a taken subject with a free username", &usersv1.CreateUserRequest{OidcSubject: "existing", Username: proto.String("free")}},
		{"a taken username", &usersv1.CreateUserRequest{OidcSubject: "new", Username: proto.String("kept")}},
		{"the root administrator's subject", &usersv1.CreateUserRequest{OidcSubject: "root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.CreateUser(asRoot, tt.req)
			wantCode(t, err, codes.AlreadyExists)
		})
	}
	t.Cleanup(func() {
		if n := e.countUsers(t); n != rows {
			t.Errorf("users rows = %d, want %d", n, rows)
		}
		got, err := e.client.GetUserByOIDCSubject(context.Background(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "existing"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(existing, got.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("existing user changed (-before +after):\n%s", diff)
		}
	})
}

// The subject's first login after CreateUser finds the administrator's
// user: created = false, and the profile as the administrator set it,
// whatever the identity provider's claims say.
func TestFirstLoginAfterCreateUserKeepsTheProfile(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	created, err := e.client.CreateUser(asRoot, &usersv1.CreateUserRequest{
		OidcSubject: "google|carol",
		Name:        proto.String("Carol (by admin)"),
		Nickname:    proto.String("Caz"),
		PhotoUrl:    proto.String("https://example.com/admin-set.png"),
		Username:    proto.String("carol-admin"),
	})
	if err != nil {
		t.Fatal(err)
	}

	login, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{
		OidcSubject:       "google|carol",
		Name:              "Carol From IdP",
		Email:             "carol@example.com",
		PhotoUrl:          "https://idp.example.com/carol.png",
		PreferredUsername: proto.String("carol"),
		EmailVerified:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if login.GetCreated() {
		t.Error("first login after CreateUser: created = true, want false")
	}
	if diff := cmp.Diff(created.GetUser(), login.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("login changed the administrator's user (-created +login):\n%s", diff)
	}
	if n := e.countUsers(t); n != 2 {
		t.Errorf("users rows = %d, want 2 (root and carol)", n)
	}
}

func TestDeleteUser(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	gone := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "gone", PreferredUsername: proto.String("dave")})
	stays := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "stays"})
	rows := e.countUsers(t)

	if _, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: gone.GetMeta().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: gone.GetMeta().GetId()})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.GetUserByOIDCSubject(t.Context(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "gone"})
	wantCode(t, err, codes.NotFound)
	if n := e.countUsers(t); n != rows-1 {
		t.Errorf("users rows = %d, want %d", n, rows-1)
	}

	// Deleting it again finds nothing.
	_, err = e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: gone.GetMeta().GetId()})
	wantCode(t, err, codes.NotFound)

	// Its username is free for another user to take.
	me, err := e.client.UpdateMe(asCaller(t.Context(), stays.GetMeta().GetId()), &usersv1.UpdateMeRequest{Username: proto.String("dave")})
	if err != nil {
		t.Fatalf("UpdateMe to the deleted user's username: %v", err)
	}
	if got := me.GetUser().GetUsername(); got != "dave" {
		t.Errorf("username = %q, want dave", got)
	}

	// Its subject logs in again as a new user, with a new identity id.
	again, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "gone", PreferredUsername: proto.String("dave")})
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetCreated() {
		t.Error("login after DeleteUser: created = false, want true")
	}
	if again.GetUser().GetMeta().GetId() == gone.GetMeta().GetId() {
		t.Errorf("login after DeleteUser kept the deleted identity id %s", gone.GetMeta().GetId())
	}
	if got := again.GetUser().GetUsername(); got != "dave-2" {
		t.Errorf("username = %q, want dave-2 (dave is taken now)", got)
	}
}

func TestDeleteUnknownUserIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	rows := e.countUsers(t)
	_, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: uuid.NewString()})
	wantCode(t, err, codes.NotFound)
	if n := e.countUsers(t); n != rows {
		t.Errorf("users rows = %d, want %d", n, rows)
	}
}
