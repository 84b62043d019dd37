package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The pure parts of a call, each on its own: what they cost and allocate
// per call, apart from gRPC and the database (BenchmarkRPC has those).

// Sinks, so that the compiler keeps the work being measured.
var (
	sinkErr   error
	sinkID    uuid.UUID
	sinkIDs   []uuid.UUID
	sinkUser  *usersv1.User
	sinkUsers []*usersv1.User
)

func BenchmarkValidate(b *testing.B) {
	batch := make([]string, maxBatchIDs)
	for i := range batch {
		batch[i] = uuid.Must(uuid.NewV7()).String()
	}
	id := batch[0]
	b.Run("ResolveOrCreateUser", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v violations
			v.oidcSubject("oidc_subject", "auth0|0123456789abcdef")
			v.name("name", "Alice Liddell")
			v.email("email", "alice@example.com")
			v.photoURL("photo_url", "https://example.com/alice.png")
			sinkErr = v.err()
		}
	})
	b.Run("identity_id", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v violations
			sinkID = v.identityID("identity_id", id)
			sinkErr = v.err()
		}
	})
	b.Run("identity_ids/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v violations
			sinkIDs = v.identityIDs("identity_ids", batch)
			sinkErr = v.err()
		}
	})
	// A refused request: the status with its BadRequest details.
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v violations
			v.oidcSubject("oidc_subject", "")
			v.email("email", "not an email")
			sinkErr = v.err()
		}
	})
}

func benchRow(n int) db.User {
	now := time.Now()
	return db.User{
		IdentityID:  uuid.Must(uuid.NewV7()),
		OidcSubject: strconv.Itoa(n),
		Name:        "Bench User " + strconv.Itoa(n),
		Email:       "user" + strconv.Itoa(n) + "@bench.example",
		PhotoUrl:    "https://bench.example/photos/" + strconv.Itoa(n) + ".png",
		CreatedAt:   now,
		UpdatedAt:   now,
	}
}

func BenchmarkConvert(b *testing.B) {
	row := benchRow(1)
	rows := make([]db.User, maxBatchIDs)
	for i := range rows {
		rows[i] = benchRow(i)
	}
	resolved := db.ResolveOrCreateUserRow{
		IdentityID: row.IdentityID, OidcSubject: row.OidcSubject, Name: row.Name, Email: row.Email,
		PhotoUrl: row.PhotoUrl, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}
	b.Run("userToProto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkUser = userToProto(row)
		}
	})
	b.Run("usersToProto/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkUsers = usersToProto(rows)
		}
	})
	b.Run("userToProto(resolvedUser)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkUser = userToProto(resolvedUser(resolved))
		}
	})
}

// BenchmarkToStatus maps the errors a call meets: the common not-found,
// and the logged kinds (the log is discarded, its formatting is not).
func BenchmarkToStatus(b *testing.B) {
	s := &Server{log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	ctx := context.Background()
	cases := []struct {
		name string
		err  error
	}{
		{"not found", pgx.ErrNoRows},
		{"unavailable", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}},
		{"conflict", &pgconn.PgError{Code: "40001", Message: "could not serialize access"}},
		{"internal", errors.New("something unforeseen")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkErr = s.toStatus(ctx, c.err)
			}
		})
	}
}
