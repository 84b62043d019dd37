package server_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The published agynio.api.users.v1 contract, as clients across the
// platform compiled it. Any change here is a breaking change for them.
var wantMessages = map[string][]string{
	"EntityMeta": {
		"1 id string",
		"2 created_at google.protobuf.Timestamp",
		"3 updated_at google.protobuf.Timestamp",
	},
	"User": {
		"1 meta agynio.api.users.v1.EntityMeta",
		"2 oidc_subject string",
		"3 name string",
		"4 email string",
		"5 photo_url string",
	},
	"ResolveOrCreateUserRequest": {
		"1 oidc_subject string",
		"2 name string",
		"3 email string",
		"4 photo_url string",
	},
	"ResolveOrCreateUserResponse": {
		"1 user agynio.api.users.v1.User",
		"2 created bool",
	},
	"GetUserRequest":               {"1 identity_id string"},
	"GetUserResponse":              {"1 user agynio.api.users.v1.User"},
	"GetUserByOIDCSubjectRequest":  {"1 oidc_subject string"},
	"GetUserByOIDCSubjectResponse": {"1 user agynio.api.users.v1.User"},
	"BatchGetUsersRequest":         {"1 repeated identity_ids string"},
	"BatchGetUsersResponse":        {"1 repeated users agynio.api.users.v1.User"},
	"UpdateUserRequest": {
		"1 identity_id string",
		"2 optional name string",
		"3 optional email string",
		"4 optional photo_url string",
	},
	"UpdateUserResponse": {"1 user agynio.api.users.v1.User"},
}

var wantMethods = []string{
	"ResolveOrCreateUser(ResolveOrCreateUserRequest) ResolveOrCreateUserResponse",
	"GetUser(GetUserRequest) GetUserResponse",
	"GetUserByOIDCSubject(GetUserByOIDCSubjectRequest) GetUserByOIDCSubjectResponse",
	"BatchGetUsers(BatchGetUsersRequest) BatchGetUsersResponse",
	"UpdateUser(UpdateUserRequest) UpdateUserResponse",
}

// Numbers later platform revisions of v1 gave a meaning: they must stay
// free or reserved here, never mean something else.
var laterNumbers = map[string][]protoreflect.FieldNumber{
	"User":                       {6, 7}, // nickname, username
	"ResolveOrCreateUserRequest": {5, 6}, // preferred_username, email_verified
	"UpdateUserRequest":          {5, 6, 7},
}

func TestWireContractIsPinned(t *testing.T) {
	t.Parallel()
	fd := usersv1.File_agynio_api_users_v1_users_proto
	if got := string(fd.Package()); got != "agynio.api.users.v1" {
		t.Fatalf("package = %q, want agynio.api.users.v1", got)
	}

	gotMessages := map[string][]string{}
	msgs := fd.Messages()
	for i := range msgs.Len() {
		m := msgs.Get(i)
		fields := []string{}
		for j := range m.Fields().Len() {
			fields = append(fields, describeField(m.Fields().Get(j)))
		}
		gotMessages[string(m.Name())] = fields
	}
	if diff := cmp.Diff(wantMessages, gotMessages); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}

	svc := fd.Services().ByName("UsersService")
	if svc == nil {
		t.Fatal("service UsersService is missing")
	}
	gotMethods := []string{}
	for i := range svc.Methods().Len() {
		m := svc.Methods().Get(i)
		if m.IsStreamingClient() || m.IsStreamingServer() {
			t.Errorf("%s is streaming; v1 methods are unary", m.Name())
		}
		gotMethods = append(gotMethods, fmt.Sprintf("%s(%s) %s", m.Name(), m.Input().Name(), m.Output().Name()))
	}
	if diff := cmp.Diff(wantMethods, gotMethods); diff != "" {
		t.Errorf("methods (-want +got):\n%s", diff)
	}

	for msg, nums := range laterNumbers {
		m := msgs.ByName(protoreflect.Name(msg))
		for _, n := range nums {
			if f := m.Fields().ByNumber(n); f != nil {
				t.Errorf("%s field %d is %q: that number belongs to a later v1 revision", msg, n, f.Name())
			}
		}
	}
}

func describeField(f protoreflect.FieldDescriptor) string {
	label := ""
	switch {
	case f.IsList():
		label = "repeated "
	case f.HasOptionalKeyword():
		label = "optional "
	}
	typ := f.Kind().String()
	if f.Message() != nil {
		typ = string(f.Message().FullName())
	}
	return fmt.Sprintf("%d %s%s %s", f.Number(), label, f.Name(), typ)
}
