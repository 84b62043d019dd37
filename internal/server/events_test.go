package server_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/agynio/users/internal/apitoken"
	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	eventsv1 "github.com/agynio/users/internal/gen/agynio/users/events/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/outbox"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/natstest"
	"github.com/agynio/users/internal/testing/testdb"
)

// eventsEnv is an env whose changes are relayed, as serve relays them, to
// a NATS server of its own, into the stream testStream.
type eventsEnv struct {
	*env
	nats *natstest.Server
}

const testStream = "USERS_TEST"

func newEventsEnv(t *testing.T, admins ...string) *eventsEnv {
	t.Helper()
	pool, ns := relayedDatabase(t)
	e := newEnvFor(t, pool, func(log *slog.Logger) *server.Server {
		return server.New(pool, identity.Local{}, log, server.WithDeclaredAdmins(admins))
	})
	return &eventsEnv{env: e, nats: ns}
}

// relayedDatabase is a pool on a database of the test's own, whose
// outbox a relay publishes to a NATS server of the test's own.
func relayedDatabase(t *testing.T) (*pgxpool.Pool, *natstest.Server) {
	t.Helper()
	url := testdb.URL(t)
	pool, err := db.NewPool(t.Context(), url, db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ns := natstest.Start(t)
	relay := outbox.NewRelay(outbox.RelayConfig{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return db.Connect(ctx, url) },
		Stream:  jetstream.StreamConfig{Name: testStream, Subjects: []string{outbox.Subjects}},
		// Short, so that a test waits little for its events.
		DBTimeout:  5 * time.Second,
		Poll:       10 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}, ns.JetStream(t), outbox.NewMetrics(prometheus.NewRegistry(), db.New(pool), time.Second), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { relay.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return pool, ns
}

// event is what a test compares of a published event.
type event struct {
	Subject       string
	Actor         string // "user:<id>" or "service:<name>"
	IdentityID    string
	ChangedFields []string
	User          *eventsv1.User
	Token         *eventsv1.APIToken
}

// read reads want events from the stream, and any beyond them that come
// within half a second, checking what every event must hold: a UUIDv7 id
// that is the message's Nats-Msg-Id, unique, and a time within the
// test's.
func (e *eventsEnv) read(t *testing.T, want int, since time.Time) []event {
	t.Helper()
	msgs := e.nats.Read(t, testStream, want, 10*time.Second, 500*time.Millisecond)
	seen := make(map[string]bool)
	out := make([]event, len(msgs))
	for i, m := range msgs {
		payload := decodeEvent(t, m)
		meta := payload.ProtoReflect().Get(payload.ProtoReflect().Descriptor().Fields().ByName("event")).Message().Interface().(*eventsv1.Event)
		id, err := uuid.Parse(meta.GetId())
		if err != nil || id.Version() != 7 {
			t.Errorf("event %d: id %q is not a UUIDv7 (%v)", i, meta.GetId(), err)
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got != meta.GetId() {
			t.Errorf("event %d: Nats-Msg-Id %q, want the event id %q", i, got, meta.GetId())
		}
		if seen[meta.GetId()] {
			t.Errorf("event %d: id %s seen twice", i, meta.GetId())
		}
		seen[meta.GetId()] = true
		if at := meta.GetTime().AsTime(); at.Before(since.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d: time %s, not within the test's", i, at)
		}
		ev := event{Subject: m.Subject(), IdentityID: meta.GetIdentityId()}
		switch a := meta.GetActor().GetActor().(type) {
		case *eventsv1.Actor_IdentityId:
			ev.Actor = "user:" + a.IdentityId
		case *eventsv1.Actor_Service:
			ev.Actor = "service:" + a.Service
		}
		switch p := payload.(type) {
		case *eventsv1.UserCreated:
			ev.User = p.GetUser()
		case *eventsv1.UserUpdated:
			ev.User, ev.ChangedFields = p.GetUser(), p.GetChangedFields()
		case *eventsv1.UserDeleted:
			ev.User = p.GetUser()
		case *eventsv1.APITokenCreated:
			ev.Token = p.GetToken()
		case *eventsv1.APITokenRevoked:
			ev.Token = p.GetToken()
		}
		out[i] = ev
	}
	return out
}

// decodeEvent decodes a message as the events' proto names it for its
// subject: agyn.users.user.created is a UserCreated, and so on.
func decodeEvent(t *testing.T, m jetstream.Msg) proto.Message {
	t.Helper()
	names := map[string]protoreflect.FullName{
		"agyn.users.user.created":      "agynio.users.events.v1.UserCreated",
		"agyn.users.user.updated":      "agynio.users.events.v1.UserUpdated",
		"agyn.users.user.deleted":      "agynio.users.events.v1.UserDeleted",
		"agyn.users.api_token.created": "agynio.users.events.v1.APITokenCreated",
		"agyn.users.api_token.revoked": "agynio.users.events.v1.APITokenRevoked",
	}
	name, ok := names[m.Subject()]
	if !ok {
		t.Fatalf("event on unexpected subject %q", m.Subject())
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		t.Fatal(err)
	}
	payload := mt.New().Interface()
	if err := proto.Unmarshal(m.Data(), payload); err != nil {
		t.Fatalf("%s: %v", m.Subject(), err)
	}
	return payload
}

// eventUser is what an event holds of an API user and its role.
func eventUser(u *usersv1.User, role usersv1.ClusterRole, emailVerified bool) *eventsv1.User {
	return &eventsv1.User{
		IdentityId:    u.GetMeta().GetId(),
		OidcSubject:   u.GetOidcSubject(),
		Name:          u.GetName(),
		Email:         u.GetEmail(),
		EmailVerified: emailVerified,
		PhotoUrl:      u.GetPhotoUrl(),
		Nickname:      u.GetNickname(),
		Username:      u.GetUsername(),
		ClusterRole:   eventsv1.ClusterRole(role),
		CreatedAt:     u.GetMeta().GetCreatedAt(),
		UpdatedAt:     u.GetMeta().GetUpdatedAt(),
	}
}

func eventToken(tok *usersv1.APIToken) *eventsv1.APIToken {
	return &eventsv1.APIToken{
		Id:          tok.GetId(),
		IdentityId:  tok.GetIdentityId(),
		Name:        tok.GetName(),
		TokenPrefix: tok.GetTokenPrefix(),
		ExpiresAt:   tok.GetExpiresAt(),
		CreatedAt:   tok.GetCreatedAt(),
		LastUsedAt:  tok.GetLastUsedAt(),
	}
}

// Every state-changing RPC publishes exactly its event: subject, payload
// and actor, in the order the changes were made; a returning login and
// the reads publish nothing.
func TestEachChangePublishesItsEvent(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t, "root")
	since := time.Now()
	ctx := t.Context()
	var want []event

	rootResp, err := e.client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "root"})
	if err != nil {
		t.Fatal(err)
	}
	root := rootResp.GetUser()
	asRoot := asCaller(ctx, root.GetMeta().GetId())
	want = append(want, event{Subject: "agyn.users.user.created", Actor: "service:unknown", IdentityID: root.GetMeta().GetId(),
		User: eventUser(root, roleAdmin, false)})

	// A first login, with the gateway naming no caller, then a returning
	// one and reads, which change nothing.
	login := &usersv1.ResolveOrCreateUserRequest{OidcSubject: "alice", Name: "Alice", Email: "alice@example.com", EmailVerified: true}
	alice := e.createUser(t, login)
	aliceID := alice.GetMeta().GetId()
	asAlice := asCaller(ctx, aliceID)
	want = append(want, event{Subject: "agyn.users.user.created", Actor: "service:unknown", IdentityID: aliceID,
		User: eventUser(alice, roleNone, true)})
	if _, err := e.client.ResolveOrCreateUser(ctx, login); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: aliceID}); err != nil {
		t.Fatal(err)
	}

	created, err := e.client.CreateUser(asRoot, &usersv1.CreateUserRequest{OidcSubject: "bob", Name: ptr("Bob")})
	if err != nil {
		t.Fatal(err)
	}
	bob := created.GetUser()
	want = append(want, event{Subject: "agyn.users.user.created", Actor: "user:" + root.GetMeta().GetId(), IdentityID: bob.GetMeta().GetId(),
		User: eventUser(bob, roleNone, false)})

	update := func(ctx context.Context, req *usersv1.UpdateUserRequest, actor string, changed []string, role usersv1.ClusterRole) {
		t.Helper()
		resp, err := e.client.UpdateUser(ctx, req)
		if err != nil {
			t.Fatalf("UpdateUser: %v", err)
		}
		want = append(want, event{Subject: "agyn.users.user.updated", Actor: actor, IdentityID: req.GetIdentityId(),
			ChangedFields: changed, User: eventUser(resp.GetUser(), role, true)})
	}
	name, nickname := "Alice A.", "al"
	// With no caller named, the calling service is the actor.
	update(ctx, &usersv1.UpdateUserRequest{IdentityId: aliceID, Name: &name}, "service:unknown", []string{"name"}, roleNone)
	update(asRoot, &usersv1.UpdateUserRequest{IdentityId: aliceID, ClusterRole: &roleAdmin}, "user:"+root.GetMeta().GetId(), []string{"cluster_role"}, roleAdmin)
	update(asRoot, &usersv1.UpdateUserRequest{IdentityId: aliceID, Nickname: &nickname, ClusterRole: &roleNone}, "user:"+root.GetMeta().GetId(), []string{"nickname", "cluster_role"}, roleNone)

	username := "alice_a"
	me, err := e.client.UpdateMe(asAlice, &usersv1.UpdateMeRequest{Username: &username})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, event{Subject: "agyn.users.user.updated", Actor: "user:" + aliceID, IdentityID: aliceID,
		ChangedFields: []string{"username"}, User: eventUser(me.GetUser(), roleNone, true)})

	tok, err := e.client.CreateAPIToken(asAlice, &usersv1.CreateAPITokenRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, event{Subject: "agyn.users.api_token.created", Actor: "user:" + aliceID, IdentityID: aliceID, Token: eventToken(tok.GetToken())})
	if _, err := e.client.RevokeAPIToken(asAlice, &usersv1.RevokeAPITokenRequest{TokenId: tok.GetToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	want = append(want, event{Subject: "agyn.users.api_token.revoked", Actor: "user:" + aliceID, IdentityID: aliceID, Token: eventToken(tok.GetToken())})

	if _, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: bob.GetMeta().GetId()}); err != nil {
		t.Fatal(err)
	}
	want = append(want, event{Subject: "agyn.users.user.deleted", Actor: "user:" + root.GetMeta().GetId(), IdentityID: bob.GetMeta().GetId(),
		User: eventUser(bob, roleNone, false)})

	// Each user's events in the order of the changes; the users' side by
	// side, in no order.
	got := e.read(t, len(want), since)
	if diff := cmp.Diff(byUser(want), byUser(got), protocmp.Transform()); diff != "" {
		t.Errorf("events by user (-want +got):\n%s", diff)
	}
	// No event holds the token or its hash, in any form.
	hash := apitoken.Hash(tok.GetPlaintextToken())
	raw, _ := hex.DecodeString(hash)
	for _, m := range e.nats.Read(t, testStream, len(want), time.Second, 0) {
		for _, secret := range []string{tok.GetPlaintextToken(), hash, string(raw)} {
			if strings.Contains(string(m.Data()), secret) {
				t.Errorf("%s holds the token or its hash", m.Subject())
			}
		}
	}
	waitOutboxEmpty(t, e.conn)
}

// A change that is refused or fails publishes nothing and leaves nothing
// in the outbox: only the change made after them is published.
func TestRefusedChangesPublishNothing(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t, "root")
	ctx := t.Context()
	since := time.Now()
	asRoot := e.admin(t, "root")
	alice := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "alice", PreferredUsername: ptr("alice")})
	bob := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "bob", PreferredUsername: ptr("bob")})
	asAlice := asCaller(ctx, alice.GetMeta().GetId())
	_ = e.read(t, 3, since) // the three logins
	waitOutboxEmpty(t, e.conn)
	rootID := rootIDOf(t, e)

	taken, bad, unknown := "bob", "x", uuid.NewString()
	refused := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"a taken username", func() error {
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: alice.GetMeta().GetId(), Username: &taken})
			return err
		}, codes.AlreadyExists},
		{"an invalid email", func() error {
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: alice.GetMeta().GetId(), Email: &bad})
			return err
		}, codes.InvalidArgument},
		{"an unknown user", func() error {
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: unknown, Name: &bad})
			return err
		}, codes.NotFound},
		{"a role change by a non-administrator", func() error {
			_, err := e.client.UpdateUser(asAlice, &usersv1.UpdateUserRequest{IdentityId: bob.GetMeta().GetId(), ClusterRole: &roleAdmin})
			return err
		}, codes.PermissionDenied},
		{"demoting a declared administrator", func() error {
			_, err := e.client.UpdateUser(asRoot, &usersv1.UpdateUserRequest{IdentityId: rootID, ClusterRole: &roleNone})
			return err
		}, codes.FailedPrecondition},
		{"deleting a declared administrator", func() error {
			_, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: rootID})
			return err
		}, codes.FailedPrecondition},
		{"deleting an unknown user", func() error {
			_, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: unknown})
			return err
		}, codes.NotFound},
		{"creating a taken subject", func() error {
			_, err := e.client.CreateUser(asRoot, &usersv1.CreateUserRequest{OidcSubject: "alice"})
			return err
		}, codes.AlreadyExists},
		{"UpdateMe taking a taken username", func() error {
			_, err := e.client.UpdateMe(asAlice, &usersv1.UpdateMeRequest{Username: &taken})
			return err
		}, codes.AlreadyExists},
		{"a token for an unknown caller", func() error {
			_, err := e.client.CreateAPIToken(asCaller(ctx, unknown), &usersv1.CreateAPITokenRequest{Name: "x"})
			return err
		}, codes.NotFound},
		{"revoking an unknown token", func() error {
			_, err := e.client.RevokeAPIToken(asAlice, &usersv1.RevokeAPITokenRequest{TokenId: unknown})
			return err
		}, codes.NotFound},
	}
	for _, r := range refused {
		if err := r.call(); err == nil {
			t.Errorf("%s: succeeded, want %s", r.name, r.code)
		} else {
			wantCode(t, err, r.code)
		}
		if n := outboxRows(t, e.conn); n != 0 {
			t.Errorf("%s: the outbox holds %d rows", r.name, n)
		}
	}

	marker := "after the refusals"
	if _, err := e.client.UpdateMe(asAlice, &usersv1.UpdateMeRequest{Name: &marker}); err != nil {
		t.Fatal(err)
	}
	got := e.read(t, 4, since)
	if len(got) != 4 || got[3].Subject != "agyn.users.user.updated" || got[3].User.GetName() != marker {
		t.Errorf("events after the three logins: %+v, want only the update made after the refusals", got[min(3, len(got)):])
	}
}

// byUser are events by the user they are about, in their order.
func byUser(events []event) map[string][]event {
	out := make(map[string][]event)
	for _, e := range events {
		out[e.IdentityID] = append(out[e.IdentityID], e)
	}
	return out
}

// rootIDOf is the identity id of the declared administrator "root".
func rootIDOf(t *testing.T, e *eventsEnv) string {
	t.Helper()
	resp, err := e.client.GetUserByOIDCSubject(t.Context(), &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "root"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUser().GetMeta().GetId()
}

// waitOutboxEmpty waits, up to 5 s, for the relay to delete every event
// it published: a consumer may read an event a moment before the relay
// has the acknowledgement and deletes it.
func waitOutboxEmpty(t *testing.T, conn db.DBTX) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n := outboxRows(t, conn); n != 0; n = outboxRows(t, conn) {
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d rows 5s after their events were read", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outboxRows counts the outbox's rows.
func outboxRows(t *testing.T, conn db.DBTX) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func ptr[T any](v T) *T { return &v }

// Promoting the existing users of CLUSTER_ADMIN_SUBJECTS at start-up is a
// role change like any other: a user.updated event each, the service
// itself its actor.
func TestPromotionPublishesItsEvent(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t, "boss")
	since := time.Now()
	// A user from before the subject was declared: stored with no role.
	boss := uuid.Must(uuid.NewV7())
	if _, err := e.conn.Exec(t.Context(), "INSERT INTO users (identity_id, oidc_subject, username) VALUES ($1, 'boss', 'boss')", boss); err != nil {
		t.Fatal(err)
	}
	if n, err := e.srv.PromoteDeclaredAdmins(t.Context()); err != nil || n != 1 {
		t.Fatalf("PromoteDeclaredAdmins: %d, %v; want 1 user promoted", n, err)
	}
	got := e.read(t, 1, since)
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	ev := got[0]
	if ev.Subject != "agyn.users.user.updated" || ev.Actor != "service:users" || ev.IdentityID != boss.String() ||
		fmt.Sprint(ev.ChangedFields) != "[cluster_role]" || ev.User.GetClusterRole() != eventsv1.ClusterRole_CLUSTER_ROLE_ADMIN {
		t.Errorf("event %+v, want boss's user.updated by the service, cluster_role set to admin", ev)
	}
}

// Under mutual TLS, a call that names no caller has the calling service
// as its actor, by its certificate: its first URI SAN, else its first DNS
// SAN.
func TestActorIsTheCallingServiceByItsCertificate(t *testing.T) {
	t.Parallel()
	pool, ns := relayedDatabase(t)
	e := &eventsEnv{nats: ns}
	const spiffe = "spiffe://cluster.local/ns/platform/sa/gateway"
	ca := certs.NewCA(t, "ca")
	log := slog.New(slog.DiscardHandler)
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "users").TLS(t)},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	gs, _ := server.NewGRPCServer(server.New(pool, identity.Local{}, log), log, server.WithCredentials(creds))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)
	client := func(cert *certs.Cert) usersv1.UsersServiceClient {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(certs.ClientConfig(t, ca.Pool(), cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return usersv1.NewUsersServiceClient(cc)
	}
	since := time.Now()
	for subject, c := range map[string]usersv1.UsersServiceClient{
		"by-uri": client(ca.ClientWithSANs(t, "gateway", []string{"gateway.example"}, []string{spiffe})),
		"by-dns": client(ca.ClientWithSANs(t, "other", []string{"other.example", "second.example"}, nil)),
	} {
		if _, err := c.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject}); err != nil {
			t.Fatal(err)
		}
	}
	actors := make(map[string]string)
	for _, ev := range e.read(t, 2, since) {
		actors[ev.User.GetOidcSubject()] = ev.Actor
	}
	want := map[string]string{"by-uri": "service:" + spiffe, "by-dns": "service:other.example"}
	if diff := cmp.Diff(want, actors); diff != "" {
		t.Errorf("actors by subject (-want +got):\n%s", diff)
	}
}
