package server

import (
	"context"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// invalidUTF8Marker is the unknown-field number under which requestCodec
// notes the fields it dropped; the largest number protobuf allows, so that
// no real field will ever take it. malformedMarker, the one below it, notes
// a request that is not a protobuf message at all.
const (
	invalidUTF8Marker = protowire.MaxValidNumber
	malformedMarker   = protowire.MaxValidNumber - 1
)

// requestCodec is gRPC's proto codec, except for one kind of bad input.
// protobuf refuses a string field holding invalid UTF-8, and gRPC reports
// any decoding failure as INTERNAL, which would blame the service for the
// client's bytes. So when decoding fails, requestCodec drops the top-level
// string fields that are not UTF-8, decodes the rest, and notes the
// dropped fields' names in the message; rejectInvalidRequests then answers
// INVALID_ARGUMENT naming them, before any handler sees the request. Bytes
// that are not a message at all are noted as such and refused the same way.
type requestCodec struct{ encoding.CodecV2 }

func (requestCodec) Name() string { return "proto" }

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	if err == nil {
		// Only this codec may set the marker, not a client.
		if u := m.ProtoReflect().GetUnknown(); len(u) > 0 {
			m.ProtoReflect().SetUnknown(withoutMarkers(u))
		}
		return nil
	}
	// Only UsersService requests, whose unary handlers rejectInvalidRequests
	// guards; health and reflection messages keep gRPC's own handling.
	desc := m.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != usersv1.File_agynio_api_users_v1_users_proto.Package() {
		return err
	}
	kept, dropped := dropInvalidUTF8(data.Materialize(), desc)
	if len(dropped) == 0 || proto.Unmarshal(kept, m) != nil {
		proto.Reset(m)
		var marker []byte
		marker = protowire.AppendTag(marker, malformedMarker, protowire.BytesType)
		marker = protowire.AppendString(marker, err.Error())
		m.ProtoReflect().SetUnknown(marker)
		return nil
	}
	unknown := m.ProtoReflect().GetUnknown()
	for _, field := range dropped {
		unknown = protowire.AppendTag(unknown, invalidUTF8Marker, protowire.BytesType)
		unknown = protowire.AppendString(unknown, field)
	}
	m.ProtoReflect().SetUnknown(unknown)
	return nil
}

// dropInvalidUTF8 returns b without the top-level string fields of desc
// whose value is not valid UTF-8, and those fields' names (list elements
// by index). It returns no names if b is not well-formed.
func dropInvalidUTF8(b []byte, desc protoreflect.MessageDescriptor) (kept []byte, dropped []string) {
	seen := map[protowire.Number]int{} // list elements so far, per field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil
		}
		field := b[:n+m]
		b = b[n+m:]

		if num == invalidUTF8Marker || num == malformedMarker {
			continue // only this codec may set the markers, not a client
		}
		fd := desc.Fields().ByNumber(num)
		if fd == nil || fd.Kind() != protoreflect.StringKind || typ != protowire.BytesType {
			kept = append(kept, field...)
			continue
		}
		index := seen[num]
		seen[num]++
		if value, _ := protowire.ConsumeBytes(field[n:]); utf8.Valid(value) {
			kept = append(kept, field...)
			continue
		}
		name := string(fd.Name())
		if fd.IsList() {
			name = fmt.Sprintf("%s[%d]", name, index)
		}
		dropped = append(dropped, name)
	}
	return kept, dropped
}

// withoutMarkers returns the unknown fields u less any marker.
func withoutMarkers(u []byte) []byte {
	var kept []byte
	for len(u) > 0 {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			return kept
		}
		m := protowire.ConsumeFieldValue(num, typ, u[n:])
		if m < 0 {
			return kept
		}
		if num != invalidUTF8Marker && num != malformedMarker {
			kept = append(kept, u[:n+m]...)
		}
		u = u[n+m:]
	}
	return kept
}

// rejectInvalidRequests answers INVALID_ARGUMENT for a request that
// requestCodec could not decode: string fields that are not UTF-8, named,
// or bytes that are no message of the method's request type.
func rejectInvalidRequests(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if msg, ok := req.(proto.Message); ok {
		var v violations
		b := msg.ProtoReflect().GetUnknown()
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				break
			}
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				break
			}
			if num == malformedMarker && typ == protowire.BytesType {
				reason, _ := protowire.ConsumeString(b[n:])
				return nil, status.Errorf(codes.InvalidArgument, "invalid request: not a valid %s message: %s", msg.ProtoReflect().Descriptor().FullName(), reason)
			}
			if num == invalidUTF8Marker && typ == protowire.BytesType {
				field, _ := protowire.ConsumeString(b[n:])
				v.add(field, "must be valid UTF-8")
			}
			b = b[n+m:]
		}
		if err := v.err(); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}
