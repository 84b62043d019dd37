package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Bad input is INVALID_ARGUMENT naming the field, and writes nothing.
func TestBadInputIsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	existing := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "existing", Name: "Kept"})
	id := existing.GetMeta().GetId()
	rows := e.countUsers(t)

	resolve := func(r *usersv1.ResolveOrCreateUserRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := e.client.ResolveOrCreateUser(ctx, r); return err }
	}
	update := func(r *usersv1.UpdateUserRequest) func(context.Context) error {
		if r.IdentityId == "" {
			r.IdentityId = id
		}
		return func(ctx context.Context) error { _, err := e.client.UpdateUser(ctx, r); return err }
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

	tests := []struct {
		name   string
		call   func(context.Context) error
		fields []string
	}{
		{"resolve without a subject", resolve(&usersv1.ResolveOrCreateUserRequest{}), []string{"oidc_subject"}},
		{"resolve with a 256-character subject", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: strings.Repeat("s", 256)}), []string{"oidc_subject"}},
		{"resolve with a NUL in the subject", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "a\x00b"}), []string{"oidc_subject"}},
		{"resolve with a NUL in the name", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Name: "\x00"}), []string{"name"}},
		{"resolve with a 257-character name", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Name: strings.Repeat("é", 257)}), []string{"name"}},
		{"resolve with a malformed email", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Email: "not an email"}), []string{"email"}},
		{"resolve with two emails", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Email: "a@example.com, b@example.com"}), []string{"email"}},
		{"resolve with a display-name email", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Email: "Alice <a@example.com>"}), []string{"email"}},
		{"resolve with a 255-character email", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Email: strings.Repeat("a", 243) + "@example.com"}), []string{"email"}},
		{"resolve with a NUL in the email", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", Email: "a\x00@example.com"}), []string{"email"}},
		{"resolve with a relative photo URL", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", PhotoUrl: "/me.png"}), []string{"photo_url"}},
		{"resolve with a non-http photo URL", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", PhotoUrl: "javascript:alert(1)"}), []string{"photo_url"}},
		{"resolve with a hostless photo URL", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", PhotoUrl: "https:///me.png"}), []string{"photo_url"}},
		{"resolve with a 2049-character photo URL", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", PhotoUrl: "https://example.com/" + strings.Repeat("p", 2029)}), []string{"photo_url"}},
		{"resolve with a NUL in the photo URL", resolve(&usersv1.ResolveOrCreateUserRequest{OidcSubject: "new", PhotoUrl: "https://example.com/\x00"}), []string{"photo_url"}},
		{"resolve with every field bad names every field", resolve(&usersv1.ResolveOrCreateUserRequest{Name: "\x00", Email: "@", PhotoUrl: "ftp://x"}), []string{"oidc_subject", "name", "email", "photo_url"}},
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
		{"update with no field set", update(&usersv1.UpdateUserRequest{}), []string{"name", "email", "photo_url"}},
		{"update with a malformed id", update(&usersv1.UpdateUserRequest{IdentityId: "x", Name: proto.String("n")}), []string{"identity_id"}},
		{"update with a NUL in the name", update(&usersv1.UpdateUserRequest{Name: proto.String("a\x00")}), []string{"name"}},
		{"update with a 257-character name", update(&usersv1.UpdateUserRequest{Name: proto.String(strings.Repeat("n", 257))}), []string{"name"}},
		{"update with a bad email and a good name", update(&usersv1.UpdateUserRequest{Name: proto.String("ok"), Email: proto.String("bad")}), []string{"email"}},
		{"update with a bad photo URL", update(&usersv1.UpdateUserRequest{PhotoUrl: proto.String("example.com/me.png")}), []string{"photo_url"}},
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
		if got.GetUser().GetName() != "Kept" || !got.GetUser().GetMeta().GetUpdatedAt().AsTime().Equal(existing.GetMeta().GetUpdatedAt().AsTime()) {
			t.Errorf("existing user changed by bad input: %v", got.GetUser())
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
