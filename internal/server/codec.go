package server

import (
	"context"
	"fmt"
	"unicode/utf8"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// rejectionMarker is the unknown-field number under which requestCodec
// leaves, in a request it could not decode, the google.rpc.Status to
// answer it with: the largest number protobuf allows, so that no real
// field will ever take it.
const rejectionMarker = protowire.MaxValidNumber

// requestCodec is gRPC's proto codec, except for requests it cannot
// decode. gRPC reports any decoding failure as INTERNAL, which would blame
// the service for the client's bytes (most often a string that is not
// UTF-8, which protobuf refuses). A codec's error cannot carry a code, so
// requestCodec decodes no such request: it works out the INVALID_ARGUMENT
// answer, small whatever the request (see rejection), and leaves it in the
// empty message; rejectInvalidRequests and rejectInvalidStreamRequests then
// answer with it before any handler sees the request.
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
			m.ProtoReflect().SetUnknown(withoutMarker(u))
		}
		return nil
	}
	answer, merr := proto.Marshal(rejection(data.Materialize(), m.ProtoReflect(), err).Proto())
	if merr != nil {
		return err
	}
	proto.Reset(m)
	marker := protowire.AppendTag(nil, rejectionMarker, protowire.BytesType)
	m.ProtoReflect().SetUnknown(protowire.AppendBytes(marker, answer))
	return nil
}

// rejection is the answer to b, a message of m's type that failed to
// decode with decodeErr. Its size does not grow with b's: a list longer
// than its bound (maxEntries) is refused by its length alone, strings that
// are not UTF-8 are named up to maxViolations and then counted, and any
// other fault makes b no message of its type.
func rejection(b []byte, m protoreflect.Message, decodeErr error) *status.Status {
	desc := m.Descriptor()
	var v violations
	lengths := map[protoreflect.FieldNumber]int{}
	wellFormed := eachField(b, func(num protowire.Number, _ protowire.Type, _ []byte, _ int) {
		if fd := desc.Fields().ByNumber(num); fd != nil && fd.IsList() {
			lengths[num]++
		}
	})
	if wellFormed {
		fields := desc.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if bound, ok := maxEntries[fd.FullName()]; ok && lengths[fd.Number()] > bound {
				v.tooMany(string(fd.Name()), bound, lengths[fd.Number()])
			}
		}
		if st := v.status(); st != nil {
			return st
		}
		// The request less its strings that are not UTF-8 must decode, or
		// something else is wrong with it too.
		kept := dropInvalidUTF8(b, desc, &v)
		if v.count() > 0 && proto.Unmarshal(kept, m.New().Interface()) == nil {
			return v.status()
		}
	}
	return status.Newf(codes.InvalidArgument, "invalid request: not a valid %s message: %s", desc.FullName(), decodeErr)
}

// dropInvalidUTF8 returns the well-formed b without its top-level string
// fields that are not valid UTF-8, and adds a violation naming each (list
// entries by index).
func dropInvalidUTF8(b []byte, desc protoreflect.MessageDescriptor, v *violations) (kept []byte) {
	seen := map[protowire.Number]int{} // list entries so far, per field
	eachField(b, func(num protowire.Number, typ protowire.Type, field []byte, tagLen int) {
		fd := desc.Fields().ByNumber(num)
		if fd == nil || fd.Kind() != protoreflect.StringKind || typ != protowire.BytesType {
			kept = append(kept, field...)
			return
		}
		index := seen[num]
		seen[num]++
		if value, _ := protowire.ConsumeBytes(field[tagLen:]); utf8.Valid(value) {
			kept = append(kept, field...)
			return
		}
		if fd.IsList() {
			v.add(fmt.Sprintf("%s[%d]", fd.Name(), index), "must be valid UTF-8")
		} else {
			v.add(string(fd.Name()), "must be valid UTF-8")
		}
	})
	return kept
}

// eachField calls fn with each field of the wire-format message b: its
// number, its type, its whole encoding and the length of its tag. It
// reports whether b was well-formed; fn has seen the fields before the
// first fault.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, field []byte, tagLen int)) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		fn(num, typ, b[:n+m], n)
		b = b[n+m:]
	}
	return true
}

// withoutMarker returns the unknown fields u less any marker.
func withoutMarker(u []byte) []byte {
	var kept []byte
	eachField(u, func(num protowire.Number, _ protowire.Type, field []byte, _ int) {
		if num != rejectionMarker {
			kept = append(kept, field...)
		}
	})
	return kept
}

// rejectionOf returns the answer requestCodec left in req, or nil.
func rejectionOf(req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	var rejected error
	eachField(msg.ProtoReflect().GetUnknown(), func(num protowire.Number, typ protowire.Type, field []byte, tagLen int) {
		if num != rejectionMarker || typ != protowire.BytesType {
			return
		}
		answer, _ := protowire.ConsumeBytes(field[tagLen:])
		var st spb.Status
		if proto.Unmarshal(answer, &st) != nil {
			st = spb.Status{Code: int32(codes.InvalidArgument), Message: "invalid request"}
		}
		rejected = status.FromProto(&st).Err()
	})
	return rejected
}

// rejectInvalidRequests answers a unary request that requestCodec could
// not decode with the answer the codec left in it.
func rejectInvalidRequests(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := rejectionOf(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// rejectInvalidStreamRequests does the same for the messages of a stream
// (a health Watch, reflection): the handler's RecvMsg returns the answer as
// its error, which ends the stream with it.
func rejectInvalidStreamRequests(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, rejectingStream{ss})
}

type rejectingStream struct{ grpc.ServerStream }

func (s rejectingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return rejectionOf(m)
}
