package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// rawCodec sends and receives messages as the bytes given, so that a test
// can put on the wire what a well-behaved client library never would.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// field encodes one length-delimited field.
func field(num protowire.Number, value string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, value)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Protobuf refuses strings that are not UTF-8, and gRPC would call that
// INTERNAL; the service answers INVALID_ARGUMENT naming the field.
func TestInvalidUTF8IsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "kept", Name: "Kept"})
	id := u.GetMeta().GetId()
	const bad = "caf\xe9" // Latin-1, not UTF-8

	tests := []struct {
		name   string
		method string
		req    []byte
		fields []string
	}{
		{"a subject that is not UTF-8", "ResolveOrCreateUser", field(1, bad), []string{"oidc_subject"}},
		{"a name that is not UTF-8 beside a good subject", "ResolveOrCreateUser", cat(field(1, "new"), field(2, bad), field(3, "a@example.com")), []string{"name"}},
		{"a lookup by a subject that is not UTF-8", "GetUserByOIDCSubject", field(1, bad), []string{"oidc_subject"}},
		{"an id that is not UTF-8", "GetUser", field(1, bad), []string{"identity_id"}},
		{"batch ids that are not UTF-8, by index", "BatchGetUsers", cat(field(1, id), field(1, bad), field(1, id), field(1, bad)), []string{"identity_ids[1]", "identity_ids[3]"}},
		{"an update with an email that is not UTF-8", "UpdateUser", cat(field(1, id), field(2, "New"), field(3, bad)), []string{"email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var resp []byte
			err := e.cc.Invoke(t.Context(), "/agynio.api.users.v1.UsersService/"+tt.method, tt.req, &resp, grpc.ForceCodecV2(rawCodec{}))
			wantViolations(t, err, tt.fields...)
		})
	}

	t.Cleanup(func() {
		if n := e.countUsers(t); n != 1 {
			t.Errorf("users rows = %d, want 1", n)
		}
		got, err := e.client.GetUser(context.Background(), &usersv1.GetUserRequest{IdentityId: id})
		if err != nil || got.GetUser().GetName() != "Kept" {
			t.Errorf("existing user changed: %v, %v", got.GetUser(), err)
		}
	})
}

// The codec's marker is its own: a client that sends that field number
// gets its request served as if the field were not there.
func TestClientCannotForgeTheUTF8Marker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var resp []byte
	req := cat(field(1, uuid.NewString()), field(protowire.MaxValidNumber, "identity_id"))
	err := e.cc.Invoke(t.Context(), "/agynio.api.users.v1.UsersService/GetUser", req, &resp, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.NotFound)

	// Nor beside a field that really is not UTF-8.
	req = cat(field(1, "\xff"), field(protowire.MaxValidNumber, "forged_field"))
	err = e.cc.Invoke(t.Context(), "/agynio.api.users.v1.UsersService/GetUserByOIDCSubject", req, &resp, grpc.ForceCodecV2(rawCodec{}))
	wantViolations(t, err, "oidc_subject")
}

// A message that is broken in another way is still refused.
func TestMalformedMessageIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var resp []byte
	err := e.cc.Invoke(t.Context(), "/agynio.api.users.v1.UsersService/GetUser", []byte{0x0a, 0x05, 'a'}, &resp, grpc.ForceCodecV2(rawCodec{}))
	if err == nil {
		t.Fatal("a truncated message was accepted")
	}
}

type panickingAllocator struct{}

func (panickingAllocator) NewIdentityID(context.Context, string) (uuid.UUID, error) {
	panic("allocator exploded")
}

type failingAllocator struct{}

func (failingAllocator) NewIdentityID(context.Context, string) (uuid.UUID, error) {
	return uuid.Nil, errors.New("identity registry said no")
}

// A panic below a handler is one INTERNAL answer, logged, and the server
// goes on serving.
func TestPanicIsInternalAndTheServerSurvives(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, testdb.New(t), panickingAllocator{})

	_, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
	st := wantCode(t, err, codes.Internal)
	if strings.Contains(st.Message(), "exploded") {
		t.Errorf("message %q leaks the panic", st.Message())
	}
	if !strings.Contains(e.logs.String(), "allocator exploded") {
		t.Errorf("the panic is not logged; logs:\n%s", e.logs)
	}
	// With the stack that led to it, and in the call's own log line as the
	// INTERNAL it became.
	if !strings.Contains(e.logs.String(), "panickingAllocator.NewIdentityID") {
		t.Errorf("the panic's stack is not logged; logs:\n%s", e.logs)
	}
	if !strings.Contains(e.logs.String(), `"grpc.code":"Internal"`) {
		t.Errorf("the call's log line does not show INTERNAL; logs:\n%s", e.logs)
	}
	_, err = e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	wantCode(t, err, codes.NotFound)
}

func TestAllocatorFailureIsInternal(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, testdb.New(t), failingAllocator{})
	_, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
	st := wantCode(t, err, codes.Internal)
	if strings.Contains(st.Message(), "registry") || !strings.Contains(e.logs.String(), "identity registry said no") {
		t.Errorf("message %q, logs:\n%s", st.Message(), e.logs)
	}
	if n := e.countUsers(t); n != 0 {
		t.Errorf("users rows = %d, want 0", n)
	}
}

// However bad a request, its answer is small: a list longer than its bound
// is refused by its length alone, and past six violations the rest are
// only counted.
func TestAnswersStaySmall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	repeat := func(n int, value string) []byte {
		var b []byte
		for range n {
			b = append(b, field(1, value)...)
		}
		return b
	}
	first6 := []string{"identity_ids[0]", "identity_ids[1]", "identity_ids[2]", "identity_ids[3]", "identity_ids[4]", "identity_ids[5]"}
	tests := []struct {
		name     string
		req      []byte
		fields   []string
		wantText string
	}{
		{
			name:     "a batch as long as fits the size limit, no entry UTF-8, is refused by its length",
			req:      repeat(21_800, "\xff"),
			fields:   []string{"identity_ids"},
			wantText: "identity_ids must have at most 100 entries, got 21800",
		},
		{
			name:     "one bad entry in an overlong batch of good ones is not looked at",
			req:      append(repeat(150, uuid.NewString()), field(1, "\xff")...),
			fields:   []string{"identity_ids"},
			wantText: "identity_ids must have at most 100 entries, got 151",
		},
		{
			name:     "a full batch, no entry UTF-8, names six entries and counts the rest",
			req:      repeat(100, "\xff"),
			fields:   first6,
			wantText: "; and 94 more",
		},
		{
			name:     "a full batch of ids that are not UUIDs names six and counts the rest",
			req:      repeat(100, "not-a-uuid"),
			fields:   first6,
			wantText: "; and 94 more",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var resp []byte
			err := e.cc.Invoke(t.Context(), usersv1.UsersService_BatchGetUsers_FullMethodName, tt.req, &resp, grpc.ForceCodecV2(rawCodec{}))
			wantViolations(t, err, tt.fields...)
			st := status.Convert(err)
			if !strings.Contains(st.Message(), tt.wantText) {
				t.Errorf("message %q does not say %q", st.Message(), tt.wantText)
			}
			if size := proto.Size(st.Proto()); size > 1<<10 {
				t.Errorf("answer of %d bytes to a request of %d, want at most 1 KiB", size, len(tt.req))
			}
		})
	}
}

// A health or reflection request that is not UTF-8 is the client's fault
// too: INVALID_ARGUMENT, from Check and from the streams alike.
func TestInvalidUTF8ToHealthAndReflectionIsInvalidArgument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := field(1, "\xff") // HealthCheckRequest.service, ServerReflectionRequest.host

	t.Run("health Check", func(t *testing.T) {
		var resp []byte
		err := e.cc.Invoke(t.Context(), healthpb.Health_Check_FullMethodName, bad, &resp, grpc.ForceCodecV2(rawCodec{}))
		wantViolations(t, err, "service")
		// Logged at info, as any client's mistake, though a health check
		// that succeeds is logged only at debug.
		if !strings.Contains(e.logs.String(), `"grpc.service":"grpc.health.v1.Health","grpc.method":"Check","grpc.code":"InvalidArgument"`) {
			t.Errorf("the refused health check is not logged at info:\n%s", e.logs)
		}
	})
	for _, tt := range []struct {
		name   string
		method string
		desc   grpc.StreamDesc
		field  string
	}{
		{"health Watch", healthpb.Health_Watch_FullMethodName, grpc.StreamDesc{ServerStreams: true}, "service"},
		{"reflection", reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName, grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := e.cc.NewStream(t.Context(), &tt.desc, tt.method, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.SendMsg(bad); err != nil {
				t.Fatal(err)
			}
			var resp []byte
			wantViolations(t, stream.RecvMsg(&resp), tt.field)
		})
	}
}
