package server

import (
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// FuzzRequestCodec feeds arbitrary bytes to the request codec: it never
// panics, and a request it accepts holds only valid UTF-8 strings.
func FuzzRequestCodec(f *testing.F) {
	f.Add([]byte{0x0a, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x0a, 0x02, 0xc3, 0x28, 0x12, 0x01, 'x'})
	f.Add([]byte{0x0a, 0x05, 'a'})
	codec := requestCodec{encoding.GetCodecV2("proto")}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &usersv1.BatchGetUsersRequest{}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, req); err != nil {
			return
		}
		for i, id := range req.GetIdentityIds() {
			if !utf8.ValidString(id) {
				t.Fatalf("identity_ids[%d] = %q kept though not UTF-8", i, id)
			}
		}
	})
}
