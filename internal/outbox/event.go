// Package outbox gets the change events that the statements of
// sql/queries write to the outbox table onto NATS JetStream: a relay,
// which one replica at a time runs, publishes them in order and deletes
// each once acknowledged; with no NATS configured, a pruner deletes them
// after a retention instead. Metrics tell how far behind either is.
package outbox

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agynio/users/internal/db"
	eventsv1 "github.com/agynio/users/internal/gen/agynio/users/events/v1"
)

// SubjectPrefix is what every event's subject starts with: the subject is
// the prefix and the outbox row's kind, such as agyn.users.user.created.
const SubjectPrefix = "agyn.users."

// Subjects is the subject filter of the stream the relay creates.
const Subjects = SubjectPrefix + ">"

// Message is the event of an outbox row: its subject and its payload, a
// message of agynio.users.events.v1. An error means the row cannot be
// read as an event of its kind.
func Message(e db.Outbox) (subject string, payload proto.Message, err error) {
	meta := &eventsv1.Event{
		Id:         e.ID.String(),
		Time:       timestamppb.New(e.OccurredAt),
		Actor:      actorToProto(e),
		IdentityId: e.IdentityID.String(),
	}
	switch e.Kind {
	case "user.created", "user.updated", "user.deleted":
		var u db.User
		if err := json.Unmarshal(e.Data, &u); err != nil {
			return "", nil, fmt.Errorf("event %s (%s): %w", e.ID, e.Kind, err)
		}
		user := userToProto(u)
		switch e.Kind {
		case "user.created":
			payload = &eventsv1.UserCreated{Event: meta, User: user}
		case "user.updated":
			payload = &eventsv1.UserUpdated{Event: meta, ChangedFields: e.ChangedFields, User: user}
		default:
			payload = &eventsv1.UserDeleted{Event: meta, User: user}
		}
	case "api_token.created", "api_token.revoked":
		var t db.APIToken
		if err := json.Unmarshal(e.Data, &t); err != nil {
			return "", nil, fmt.Errorf("event %s (%s): %w", e.ID, e.Kind, err)
		}
		if e.Kind == "api_token.created" {
			payload = &eventsv1.APITokenCreated{Event: meta, Token: tokenToProto(t)}
		} else {
			payload = &eventsv1.APITokenRevoked{Event: meta, Token: tokenToProto(t)}
		}
	default:
		return "", nil, fmt.Errorf("event %s: unknown kind %q", e.ID, e.Kind)
	}
	return SubjectPrefix + e.Kind, payload, nil
}

func actorToProto(e db.Outbox) *eventsv1.Actor {
	if e.ActorIdentityID != nil {
		return &eventsv1.Actor{Actor: &eventsv1.Actor_IdentityId{IdentityId: e.ActorIdentityID.String()}}
	}
	var service string
	if e.ActorService != nil {
		service = *e.ActorService
	}
	return &eventsv1.Actor{Actor: &eventsv1.Actor_Service{Service: service}}
}

// userToProto is the one place a stored user becomes an event's user.
func userToProto(u db.User) *eventsv1.User {
	out := &eventsv1.User{
		IdentityId:    u.IdentityID.String(),
		OidcSubject:   u.OidcSubject,
		Name:          u.Name,
		Email:         u.Email,
		EmailVerified: u.EmailVerified,
		PhotoUrl:      u.PhotoUrl,
		Nickname:      u.Nickname,
		Username:      u.Username,
		CreatedAt:     timestamppb.New(u.CreatedAt),
		UpdatedAt:     timestamppb.New(u.UpdatedAt),
	}
	if u.ClusterRole != nil && *u.ClusterRole == "admin" {
		out.ClusterRole = eventsv1.ClusterRole_CLUSTER_ROLE_ADMIN
	}
	return out
}

// tokenToProto is the one place a stored token becomes an event's token;
// the outbox never holds its hash.
func tokenToProto(t db.APIToken) *eventsv1.APIToken {
	return &eventsv1.APIToken{
		Id:          t.ID.String(),
		IdentityId:  t.IdentityID.String(),
		Name:        t.Name,
		TokenPrefix: t.TokenPrefix,
		ExpiresAt:   timestamp(t.ExpiresAt),
		CreatedAt:   timestamppb.New(t.CreatedAt),
		LastUsedAt:  timestamp(t.LastUsedAt),
	}
}

// timestamp is t, unset when nil.
func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
