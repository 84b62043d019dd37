package server_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The published agynio.api.users.v1 contract, as clients across the
// platform compiled it, is stated once, as data: the tables under "Field
// numbers" in the README, which a reader compares line by line with the
// platform's proto. Any change to them is a breaking change for clients.
const (
	readme        = "../../README.md"
	fieldsHeader  = "| Message | Field | Number | Type |"
	enumHeader    = "| Enum | Value | Number |"
	wantedPackage = "agynio.api.users.v1"
)

var wantMethods = []string{
	"ResolveOrCreateUser(ResolveOrCreateUserRequest) ResolveOrCreateUserResponse",
	"GetUser(GetUserRequest) GetUserResponse",
	"GetUserByOIDCSubject(GetUserByOIDCSubjectRequest) GetUserByOIDCSubjectResponse",
	"BatchGetUsers(BatchGetUsersRequest) BatchGetUsersResponse",
	"UpdateUser(UpdateUserRequest) UpdateUserResponse",
	"GetMe(GetMeRequest) GetMeResponse",
	"UpdateMe(UpdateMeRequest) UpdateMeResponse",
	"SearchUsers(SearchUsersRequest) SearchUsersResponse",
	"ListUsers(ListUsersRequest) ListUsersResponse",
	"CreateUser(CreateUserRequest) CreateUserResponse",
	"DeleteUser(DeleteUserRequest) DeleteUserResponse",
	"CreateAPIToken(CreateAPITokenRequest) CreateAPITokenResponse",
	"ListAPITokens(ListAPITokensRequest) ListAPITokensResponse",
	"RevokeAPIToken(RevokeAPITokenRequest) RevokeAPITokenResponse",
	"ResolveAPIToken(ResolveAPITokenRequest) ResolveAPITokenResponse",
}

func TestWireContractIsPinned(t *testing.T) {
	t.Parallel()
	fd := usersv1.File_agynio_api_users_v1_users_proto
	if got := string(fd.Package()); got != wantedPackage {
		t.Fatalf("package = %q, want %s", got, wantedPackage)
	}

	// Every field, one line each, in the order of the proto file.
	var wantFields []string
	for _, row := range readmeTable(t, fieldsHeader) {
		wantFields = append(wantFields, strings.Join(row, " "))
	}
	var gotFields []string
	msgs := fd.Messages()
	for i := range msgs.Len() {
		m := msgs.Get(i)
		for j := range m.Fields().Len() {
			gotFields = append(gotFields, describeField(m.Name(), m.Fields().Get(j)))
		}
	}
	if diff := cmp.Diff(wantFields, gotFields); diff != "" {
		t.Errorf("fields (-README +proto):\n%s", diff)
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

	// Every enum value, one line each.
	var wantValues []string
	for _, row := range readmeTable(t, enumHeader) {
		wantValues = append(wantValues, strings.Join(row, " "))
	}
	var gotValues []string
	enums := fd.Enums()
	for i := range enums.Len() {
		e := enums.Get(i)
		for j := range e.Values().Len() {
			v := e.Values().Get(j)
			gotValues = append(gotValues, fmt.Sprintf("%s %s %d", e.Name(), v.Name(), v.Number()))
		}
	}
	if diff := cmp.Diff(wantValues, gotValues); diff != "" {
		t.Errorf("enum values (-README +proto):\n%s", diff)
	}
}

// describeField writes f as a row of the README's table: message, field,
// number and type, the type as the proto spells it.
func describeField(msg protoreflect.Name, f protoreflect.FieldDescriptor) string {
	label := ""
	switch {
	case f.IsList():
		label = "repeated "
	case f.HasOptionalKeyword():
		label = "optional "
	}
	typ := f.Kind().String()
	var named protoreflect.Descriptor
	if m := f.Message(); m != nil {
		named = m
	} else if e := f.Enum(); e != nil {
		named = e
	}
	if named != nil {
		typ = string(named.FullName())
		if named.ParentFile().Package() == wantedPackage {
			typ = string(named.Name())
		}
	}
	return fmt.Sprintf("%s %s %d %s%s", msg, f.Name(), f.Number(), label, typ)
}

// readmeTable returns the rows of the README's table headed by header,
// each cell trimmed of its spaces and backticks.
func readmeTable(t *testing.T, header string) [][]string {
	t.Helper()
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	for i, line := range lines {
		if line != header {
			continue
		}
		var rows [][]string
		for _, line := range lines[i+2:] { // past the |---| line
			if !strings.HasPrefix(line, "|") {
				break
			}
			var row []string
			for cell := range strings.SplitSeq(strings.Trim(line, "|"), "|") {
				row = append(row, strings.Trim(cell, " `"))
			}
			rows = append(rows, row)
		}
		if len(rows) == 0 {
			t.Fatalf("%s: the table %s has no rows", readme, header)
		}
		return rows
	}
	t.Fatalf("%s has no table headed %s", readme, header)
	return nil
}
