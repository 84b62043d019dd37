package server

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/google/uuid"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// IdentityHeader is the request metadata in which the platform's gateway
// names the calling user, by identity id.
const IdentityHeader = "x-identity-id"

// Errors of the caller's identity. Their messages name the header, never
// its value.
var (
	errNoCaller     = status.Error(codes.Unauthenticated, "this call needs the caller's identity id in the "+IdentityHeader+" metadata")
	errBadCaller    = status.Error(codes.Unauthenticated, IdentityHeader+" must be one UUID such as 01890a5d-ac96-774b-bcce-b302099a8057")
	errNotAdmin     = status.Error(codes.PermissionDenied, "this call needs a cluster administrator as the caller")
	errUntrustedSAN = status.Error(codes.PermissionDenied, "this client may not assert a caller identity ("+IdentityHeader+"); see IDENTITY_ASSERTING_CLIENTS")
)

// callerID is the identity id the request's x-identity-id names:
// UNAUTHENTICATED when it is missing, repeated or not a UUID. Whether the
// client may send it at all, trustedAsserters has checked before.
func callerID(ctx context.Context) (uuid.UUID, error) {
	vals := metadata.ValueFromIncomingContext(ctx, IdentityHeader)
	switch {
	case len(vals) == 0:
		return uuid.Nil, errNoCaller
	case len(vals) > 1:
		return uuid.Nil, errBadCaller
	}
	id, ok := parseIdentityID(vals[0])
	if !ok {
		return uuid.Nil, errBadCaller
	}
	return id, nil
}

// actor is who makes a change, as the change's event records it (see
// the events' proto): the user x-identity-id names, when the call names
// one well-formed, else the calling service. Exactly one is set, as the
// outbox's CHECK wants.
type actor struct {
	identityID *uuid.UUID
	service    *string
}

// unknownService is the calling service's name when the call came with no
// client certificate to tell it by.
const unknownService = "unknown"

func actorOf(ctx context.Context) actor {
	if id, err := callerID(ctx); err == nil {
		return actor{identityID: &id}
	}
	name := callingService(ctx)
	return actor{service: &name}
}

// callingService names the client by its verified certificate, under
// mutual TLS: its first URI SAN (a SPIFFE id, say), else its first DNS
// SAN. Without one, unknownService.
func callingService(ctx context.Context) string {
	cert, ok := clientCertificate(ctx)
	if !ok {
		return unknownService
	}
	switch {
	case len(cert.URIs) > 0:
		return cert.URIs[0].String()
	case len(cert.DNSNames) > 0:
		return cert.DNSNames[0]
	}
	return unknownService
}

// caller reads the calling user: UNAUTHENTICATED without a well-formed
// x-identity-id, NOT_FOUND when no user has that id.
func (s *Server) caller(ctx context.Context) (db.User, error) {
	id, err := callerID(ctx)
	if err != nil {
		return db.User{}, err
	}
	u, err := s.byID.Load(ctx, id)
	if err != nil {
		return db.User{}, s.toStatus(ctx, err)
	}
	return u, nil
}

// requireAdmin lets the call through only for a caller who is a cluster
// administrator: UNAUTHENTICATED without a caller identity,
// PERMISSION_DENIED for anyone else, an unknown identity included.
func (s *Server) requireAdmin(ctx context.Context) error {
	u, err := s.caller(ctx)
	if status.Code(err) == codes.NotFound {
		return errNotAdmin
	}
	if err != nil {
		return err
	}
	if s.roleOf(u) != usersv1.ClusterRole_CLUSTER_ROLE_ADMIN {
		return errNotAdmin
	}
	return nil
}

// roleOf is a user's effective cluster role: the stored one, or
// administrator for a subject CLUSTER_ADMIN_SUBJECTS declares, whatever
// is stored.
func (s *Server) roleOf(u db.User) usersv1.ClusterRole {
	if (u.ClusterRole != nil && *u.ClusterRole == adminRole) || s.declared[u.OidcSubject] {
		return usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	}
	return usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
}

// adminRole is how the users table stores CLUSTER_ROLE_ADMIN (see
// sql/migrations); NULL is no role.
const adminRole = "admin"

// storedRole is how the users table stores role: nil for none.
func storedRole(role usersv1.ClusterRole) *string {
	if role == usersv1.ClusterRole_CLUSTER_ROLE_ADMIN {
		r := adminRole
		return &r
	}
	return nil
}

// trustedAsserters refuses x-identity-id from a client that may not
// assert identities. Under mutual TLS only the clients whose certificate
// names one of allowed (a DNS or URI SAN) may send it; from any other,
// the call is PERMISSION_DENIED, so that a misrouted or forged assertion
// fails loudly rather than being taken or ignored. Without mutual TLS the
// service cannot tell its clients apart, and the network (the chart's
// NetworkPolicy) is what limits who reaches it.
type trustedAsserters struct {
	allowed map[string]bool
}

func newTrustedAsserters(names []string) *trustedAsserters {
	t := &trustedAsserters{allowed: make(map[string]bool, len(names))}
	for _, n := range names {
		t.allowed[n] = true
	}
	return t
}

func (t *trustedAsserters) check(ctx context.Context) error {
	if len(metadata.ValueFromIncomingContext(ctx, IdentityHeader)) == 0 {
		return nil
	}
	if cert, ok := clientCertificate(ctx); ok && t.names(cert) {
		return nil
	}
	return errUntrustedSAN
}

// clientCertificate is the call's client certificate, verified against
// GRPC_TLS_CLIENT_CA_FILE: false without mutual TLS.
func clientCertificate(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}

// names reports whether the client certificate has an allowed SAN.
func (t *trustedAsserters) names(cert *x509.Certificate) bool {
	for _, dns := range cert.DNSNames {
		if t.allowed[dns] {
			return true
		}
	}
	for _, u := range cert.URIs {
		if t.allowed[u.String()] {
			return true
		}
	}
	return false
}

func (t *trustedAsserters) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := t.check(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (t *trustedAsserters) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := t.check(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
