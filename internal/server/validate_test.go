package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Bad input is INVALID_ARGUMENT naming the field, and writes nothing.
// ResolveOrCreateUser refuses only a bad subject: it drops malformed
// optional claims rather than refusing the login (see claims_test.go).
// The RPCs whose input comes from a caller who can fix it stay strict.
func TestBadInputIsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	root := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "root"})
	existing := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "existing", Name: "Kept"})
	id := existing.GetMeta().GetId()
	rows := e.countUsers(t)
	// Every refusal below is the request's, not the caller's: the calls
	// that need a caller make them as an administrator, or as the user.
	asAdmin := func(ctx context.Context) context.Context { return asCaller(ctx, root.GetMeta().GetId()) }
	asExisting := func(ctx context.Context) context.Context { return asCaller(ctx, id) }

	resolve := func(r *usersv1.ResolveOrCreateUserRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := e.client.ResolveOrCreateUser(ctx, r); return err }
	}
	update := func(r *usersv1.UpdateUserRequest) func(context.Context) error {
		if r.IdentityId == "" {
			r.IdentityId = id
		}
		return func(ctx context.Context) error { _, err := e.client.UpdateUser(asAdmin(ctx), r); return err }
	}
	updateMe := func(r *usersv1.UpdateMeRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := e.client.UpdateMe(asExisting(ctx), r); return err }
	}
	create := func(r *usersv1.CreateUserRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := e.client.CreateUser(asAdmin(ctx), r); return err }
	}
	deleteUser := func(s string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.DeleteUser(asAdmin(ctx), &usersv1.DeleteUserRequest{IdentityId: s})
			return err
		}
	}
	get := func(s string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: s})
			return err
		}
	}
	bySubject := func(s string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: s})
			return err
		}
	}
	batch := func(ids ...string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: ids})
			return err
		}
	}
	manyIDs := make([]string, 101)
	for i := range manyIDs {
		manyIDs[i] = uuid.NewString()
	}
	unknownRole := usersv1.ClusterRole(7)
	long := strings.Repeat("é", 257)

	tests := []struct {
		name   string
		call   func(context.Context) error
		fields []string
	}{
		{"resolve without a subject", resolve(&usersv1.ResolveOrCreateUserRequest{}), []string{"oidc_subject"}},
		{"resolve with a 256-character subject", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: strings.Repeat("s", 256)}), []string{"oidc_subject"}},
		{"resolve with a NUL in the subject", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "a\x00b"}), []string{"oidc_subject"}},
		{"resolve without a subject names only the subject, whatever its claims", resolve(&usersv1.ResolveOrCreateUserRequest{Name: "\x00", Email: "@", PhotoUrl: "ftp://x"}), []string{"oidc_subject"}},
		{"get with an empty id", get(""), []string{"identity_id"}},
		{"get with a malformed id", get("not-a-uuid"), []string{"identity_id"}},
		{"get with an id without hyphens", get(strings.ReplaceAll(id, "-", "")), []string{"identity_id"}},
		{"get with a braced id", get("{" + id + "}"), []string{"identity_id"}},
		{"get with a NUL in the id", get(id[:35] + "\x00"), []string{"identity_id"}},
		{"get by an empty subject", bySubject(""), []string{"oidc_subject"}},
		{"get by a 256-character subject", bySubject(strings.Repeat("s", 256)), []string{"oidc_subject"}},
		{"get by a subject with a NUL", bySubject("\x00"), []string{"oidc_subject"}},
		{"batch of 101 ids", batch(manyIDs...), []string{"identity_ids"}},
		{"batch with malformed ids names each by index", batch(id, "nope", id, ""), []string{"identity_ids[1]", "identity_ids[3]"}},
		{"update with no field set names all six", update(&usersv1.UpdateUserRequest{}), []string{"name", "email", "photo_url", "nickname", "cluster_role", "username"}},
		{"update with a malformed id", update(&usersv1.UpdateUserRequest{IdentityId: "x", Name: proto.String("n")}), []string{"identity_id"}},
		{"update with a NUL in the name", update(&usersv1.UpdateUserRequest{Name: proto.String("a\x00")}), []string{"name"}},
		{"update with a 257-character name", update(&usersv1.UpdateUserRequest{Name: proto.String(strings.Repeat("n", 257))}), []string{"name"}},
		{"update with a bad email and a good name", update(&usersv1.UpdateUserRequest{Name: proto.String("ok"), Email: proto.String("bad")}), []string{"email"}},
		{"update with a bad photo URL", update(&usersv1.UpdateUserRequest{PhotoUrl: proto.String("example.com/me.png")}), []string{"photo_url"}},
		{"update with a 257-character nickname", update(&usersv1.UpdateUserRequest{Nickname: proto.String(long)}), []string{"nickname"}},
		{"update with a NUL in the nickname", update(&usersv1.UpdateUserRequest{Nickname: proto.String("\x00")}), []string{"nickname"}},
		{"update with an empty username", update(&usersv1.UpdateUserRequest{Username: proto.String("")}), []string{"username"}},
		{"update with an upper-case username", update(&usersv1.UpdateUserRequest{Username: proto.String("Kept")}), []string{"username"}},
		{"update with a 33-character username", update(&usersv1.UpdateUserRequest{Username: proto.String(strings.Repeat("u", 33))}), []string{"username"}},
		{"update with a username holding a dot", update(&usersv1.UpdateUserRequest{Username: proto.String("kept.user")}), []string{"username"}},
		{"update with an unknown cluster role", update(&usersv1.UpdateUserRequest{ClusterRole: &unknownRole}), []string{"cluster_role"}},
		{"update me with no field set", updateMe(&usersv1.UpdateMeRequest{}), []string{"name", "username"}},
		{"update me with a 257-character name", updateMe(&usersv1.UpdateMeRequest{Name: proto.String(long)}), []string{"name"}},
		{"update me with a NUL in the name", updateMe(&usersv1.UpdateMeRequest{Name: proto.String("\x00")}), []string{"name"}},
		{"update me with a malformed username", updateMe(&usersv1.UpdateMeRequest{Username: proto.String("Me!")}), []string{"username"}},
		{"update me with a good name and an empty username", updateMe(&usersv1.UpdateMeRequest{Name: proto.String("ok"), Username: proto.String("")}), []string{"username"}},
		{"create without a subject", create(&usersv1.CreateUserRequest{Name: proto.String("n")}), []string{"oidc_subject"}},
		{"create with a 256-character subject", create(&usersv1.CreateUserRequest{OidcSubject: strings.Repeat("s", 256)}), []string{"oidc_subject"}},
		{"create with a 257-character name", create(&usersv1.CreateUserRequest{OidcSubject: "new", Name: proto.String(long)}), []string{"name"}},
		{"create with a 257-character nickname", create(&usersv1.CreateUserRequest{OidcSubject: "new", Nickname: proto.String(long)}), []string{"nickname"}},
		{"create with a relative photo URL", create(&usersv1.CreateUserRequest{OidcSubject: "new", PhotoUrl: proto.String("/me.png")}), []string{"photo_url"}},
		{"create with a non-http photo URL", create(&usersv1.CreateUserRequest{OidcSubject: "new", PhotoUrl: proto.String("javascript:alert(1)")}), []string{"photo_url"}},
		{"create with a malformed username", create(&usersv1.CreateUserRequest{OidcSubject: "new", Username: proto.String("New User")}), []string{"username"}},
		{"create with an empty username", create(&usersv1.CreateUserRequest{OidcSubject: "new", Username: proto.String("")}), []string{"username"}},
		{"create with an unknown cluster role", create(&usersv1.CreateUserRequest{OidcSubject: "new", ClusterRole: unknownRole}), []string{"cluster_role"}},
		{"create with every field bad names every field", create(&usersv1.CreateUserRequest{
			Name: proto.String(long), Nickname: proto.String(long), PhotoUrl: proto.String("ftp://x"), ClusterRole: unknownRole, Username: proto.String("-" + strings.Repeat("x", 32)),
		}), []string{"oidc_subject", "name", "nickname", "photo_url", "cluster_role", "username"}},
		{"delete with an empty id", deleteUser(""), []string{"identity_id"}},
		{"delete with a malformed id", deleteUser("not-a-uuid"), []string{"identity_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantViolations(t, tt.call(t.Context()), tt.fields...)
		})
	}

	// Nothing was written or changed by any of them.
	t.Cleanup(func() {
		if n := e.countUsers(t); n != rows {
			t.Errorf("users rows = %d after bad input, want %d", n, rows)
		}
		got, err := e.client.GetUser(context.Background(), &usersv1.GetUserRequest{IdentityId: id})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(existing, got.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("existing user changed by bad input (-before +after):\n%s", diff)
		}
	})
}

// Values at the limits are accepted and stored as sent: the database's
// CHECK constraints agree with the API's limits, counting characters.
func TestValuesAtTheLimitsAreStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	req := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: strings.Repeat("ü", 255),
		Name:        strings.Repeat("名", 256),
		Email:       strings.Repeat("a", 242) + "@example.com",
		PhotoUrl:    "https://example.com/" + strings.Repeat("é", 2028),
	}
	u := e.createUser(t, req)
	if u.GetOidcSubject() != req.OidcSubject || u.GetName() != req.Name || u.GetEmail() != req.Email || u.GetPhotoUrl() != req.PhotoUrl {
		t.Errorf("stored user differs from the request")
	}
}
