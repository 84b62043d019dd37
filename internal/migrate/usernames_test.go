package migrate_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/testdb"
)

// firstVersion is the schema of the release before usernames: what the
// migrations that add them meet on a live database.
const firstVersion = "20261123000000"

// usernamesVersion adds the username column, which the backfill of a
// later migration fills.
const usernamesVersion = "20261130000001"

// refusingDowns are the migrations whose down deletes data, and so
// refuses unless forced, while users exist.
var refusingDowns = map[string]bool{usernamesVersion: true}

var usernameFormat = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// TestUsernamesOnAPopulatedTable: users of the previous release get
// usernames by the derivation rules when the migrations run, the schema
// ends up fully validated, and rolling back (forced where it deletes
// usernames) restores the previous release's table with every user in
// it, ready to be migrated again.
func TestUsernamesOnAPopulatedTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	databaseURL := testdb.EmptyURL(t)
	all := migrationVersions(t)
	if all[0] != firstVersion {
		t.Fatalf("the first migration is %s, want %s", all[0], firstVersion)
	}

	var log bytes.Buffer
	if err := migrate.UpTo(ctx, databaseURL, &log, firstVersion); err != nil {
		t.Fatalf("UpTo(%s): %v\n%s", firstVersion, err, &log)
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	previousRelease := catalogOf(t, conn)
	users := seedUsers(rand.New(rand.NewPCG(11, 1)))
	insertUsers(t, conn, users)

	// The steps build on each other: they run in order, and a failed step
	// stops the rest.
	type step struct {
		name string
		run  func(t *testing.T)
	}
	steps := []step{{
		name: "up gives every user a derived username and validates the schema",
		run: func(t *testing.T) {
			up(t, databaseURL)
			checkMigrated(t, conn, users)
		},
	}}
	for i := len(all) - 1; i > 0; i-- {
		steps = append(steps, step{
			name: "down rolls back " + all[i],
			run:  func(t *testing.T) { rollBack(t, databaseURL, all[:i+1]) },
		})
	}
	steps = append(steps,
		step{
			name: "rolled back, the table is the previous release's with every user",
			run: func(t *testing.T) {
				if diff := cmp.Diff(previousRelease, catalogOf(t, conn)); diff != "" {
					t.Errorf("schema mismatch with the previous release's (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(users, usersOf(t, conn)); diff != "" {
					t.Errorf("users mismatch (-want +got):\n%s", diff)
				}
			},
		},
		step{
			name: "up again gives every user a username again",
			run: func(t *testing.T) {
				up(t, databaseURL)
				checkMigrated(t, conn, users)
			},
		},
	)
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
}

// TestPreviousReleaseWritesGetUsernames: during a rolling upgrade the
// previous release keeps serving on the migrated schema. Its inserts name
// no username, and the trigger derives one by the same rules as the
// backfill.
func TestPreviousReleaseWritesGetUsernames(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)

	// Each case has bases of its own, so that the cases share a database.
	tests := []struct {
		name    string
		subject string
		user    string // the name column
		email   string
		taken   []string // usernames held by other users beforehand
		want    string
	}{
		{
			name:    "the email's local part, lowered, each run of other characters one dash",
			subject: "subject-jane", user: "Jane", email: "Jane.Doe+Work@Example.com",
			want: "jane-doe-work",
		},
		{
			name:    "the last @ ends the local part",
			subject: "subject-dave", email: "dave@home@example.com",
			want: "dave-home",
		},
		{
			name:    "the name when the email has no @",
			subject: "subject-erin", user: "Erin Example", email: "token-user",
			want: "erin-example",
		},
		{
			name:    "the name when the local part normalises to nothing",
			subject: "subject-frank", user: "Frank Ö", email: "+++@example.com",
			want: "frank",
		},
		{
			name:    "the subject's digest when neither the email nor the name gives a base",
			subject: "subject-gina", user: "☃ !!", email: "",
			want: "user-" + subjectDigest("subject-gina"),
		},
		{
			name:    "a long base is cut to 32 characters",
			subject: "subject-harriet", user: "Harriet " + strings.Repeat("h", 40),
			want: "harriet-" + strings.Repeat("h", 24),
		},
		{
			name:    "a taken base gets the first free suffix",
			subject: "subject-ivan", email: "ivan@example.com", taken: []string{"ivan", "ivan-2"},
			want: "ivan-3",
		},
		{
			name:    "a taken base of 32 characters is cut to fit its suffix",
			subject: "subject-jj", user: strings.Repeat("j", 32), taken: []string{strings.Repeat("j", 32)},
			want: strings.Repeat("j", 30) + "-2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			for i, name := range tt.taken {
				if _, err := pool.Exec(ctx, `INSERT INTO users (identity_id, oidc_subject, username) VALUES ($1, $2, $3)`,
					uuid.New(), tt.subject+"-taken-"+strconv.Itoa(i), name); err != nil {
					t.Fatal(err)
				}
			}
			// The previous release's insert, as internal/db had it.
			id := uuid.New()
			if _, err := pool.Exec(ctx, `INSERT INTO users (identity_id, oidc_subject, name, email, photo_url) VALUES ($1, $2, $3, $4, $5)`,
				id, tt.subject, tt.user, tt.email, ""); err != nil {
				t.Fatalf("the previous release's insert: %v", err)
			}
			var got string
			if err := pool.QueryRow(ctx, `SELECT username FROM users WHERE identity_id = $1`, id).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("username = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("the previous release's login creates a new subject with a username and finds a known one", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		type login struct {
			IdentityID                         uuid.UUID
			OIDCSubject, Name, Email, PhotoURL string
			CreatedAt, UpdatedAt               time.Time
			Created                            bool
		}
		resolve := func(t *testing.T, subject, name, email string) login {
			t.Helper()
			var l login
			err := pool.QueryRow(ctx, previousReleaseLogin, subject, uuid.New(), name, email, "https://example.com/kim.png").
				Scan(&l.IdentityID, &l.OIDCSubject, &l.Name, &l.Email, &l.PhotoURL, &l.CreatedAt, &l.UpdatedAt, &l.Created)
			if err != nil {
				t.Fatalf("the previous release's login of %q: %v", subject, err)
			}
			return l
		}

		first := resolve(t, "subject-kim", "Kim Lee", "Kim.Lee@example.com")
		if !first.Created {
			t.Errorf("the first login of a new subject returned created = false")
		}
		var username string
		if err := pool.QueryRow(ctx, `SELECT username FROM users WHERE identity_id = $1`, first.IdentityID).Scan(&username); err != nil {
			t.Fatal(err)
		}
		if username != "kim-lee" {
			t.Errorf("username = %q, want %q", username, "kim-lee")
		}

		again := resolve(t, "subject-kim", "Kim Other", "other@example.com")
		want := first
		want.Created = false
		if diff := cmp.Diff(want, again); diff != "" {
			t.Errorf("a known subject's login mismatch (-want +got):\n%s", diff)
		}
	})
}

// TestPreviousReleaseUpdatesBeforeTheBackfill: between the migration that
// adds the username column and the backfill that fills it, minutes apart
// on a large table, the previous release still updates its users, and an
// update of a user the backfill has not reached must not fail.
func TestPreviousReleaseUpdatesBeforeTheBackfill(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	databaseURL := testdb.EmptyURL(t)
	if err := migrate.UpTo(ctx, databaseURL, io.Discard, firstVersion); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id := uuid.New()
	if _, err := conn.Exec(ctx, `INSERT INTO users (identity_id, oidc_subject, name, email) VALUES ($1, 'subject-bob', 'Bob', 'bob@example.com')`, id); err != nil {
		t.Fatal(err)
	}
	if err := migrate.UpTo(ctx, databaseURL, io.Discard, usernamesVersion); err != nil {
		t.Fatal(err)
	}

	var name string
	if err := conn.QueryRow(ctx, previousReleaseUpdate, "Bob Renamed", nil, nil, id).Scan(nil, nil, &name, nil, nil, nil, nil); err != nil {
		t.Fatalf("the previous release's update of a user without a username yet: %v", err)
	}
	if name != "Bob Renamed" {
		t.Errorf("name = %q after the update, want %q", name, "Bob Renamed")
	}

	if err := migrate.Up(ctx, databaseURL, io.Discard); err != nil {
		t.Fatal(err)
	}
	var username string
	if err := conn.QueryRow(ctx, `SELECT username FROM users WHERE identity_id = $1`, id).Scan(&username); err != nil {
		t.Fatal(err)
	}
	if username != "bob" {
		t.Errorf("username = %q, want %q", username, "bob")
	}
}

// previousReleaseUpdate is UpdateUser as the release before usernames
// sends it.
const previousReleaseUpdate = `-- name: UpdateUser :one
UPDATE users
SET name       = COALESCE($1, name),
    email      = COALESCE($2, email),
    photo_url  = COALESCE($3, photo_url),
    updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
WHERE identity_id = $4
RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
`

// previousReleaseLogin is ResolveOrCreateUser as the release before
// usernames sends it (internal/db at 20261123000000's time): that release
// keeps logging people in while the new one rolls out.
const previousReleaseLogin = `-- name: ResolveOrCreateUser :one
WITH existing AS (
    SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
    FROM users
    WHERE users.oidc_subject = $1
), inserted AS (
    INSERT INTO users (identity_id, oidc_subject, name, email, photo_url)
    SELECT $2, $1, $3, $4, $5
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (oidc_subject) DO NOTHING
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, false AS created
FROM existing
UNION ALL
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, true AS created
FROM inserted
`

// seedUser is a row of the previous release's users table.
type seedUser struct {
	IdentityID  uuid.UUID
	OIDCSubject string
	Name        string
	Email       string
	PhotoURL    string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// seedUsers makes a few thousand users, sorted by identity id, whose
// derived usernames cover the rules: bases from the email's local part,
// from the name, from the subject's digest; bases shared by many users
// (more than 99 for one, so that random suffixes are needed); bases that
// look like another's suffixed username; bases cut to 32 characters.
// created_at is random, so that the table's physical order is not the
// order of age that the backfill must follow; some users share one.
func seedUsers(r *rand.Rand) []seedUser {
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var users []seedUser
	add := func(name, email string) {
		created := epoch.Add(time.Duration(r.Int64N(365*24*3600*1e6)) * time.Microsecond)
		if len(users) > 0 && r.IntN(20) == 0 {
			created = users[r.IntN(len(users))].CreatedAt // a tie, broken by identity id
		}
		users = append(users, seedUser{
			IdentityID:  uuid.New(),
			OIDCSubject: fmt.Sprintf("subject-%d-%x", len(users), r.Uint32()),
			Name:        name,
			Email:       email,
			PhotoURL:    fmt.Sprintf("https://example.com/%d.png", len(users)),
			CreatedAt:   created,
			UpdatedAt:   created.Add(time.Duration(r.IntN(1000)) * time.Hour),
		})
	}
	pick := func(s ...string) string { return s[r.IntN(len(s))] }

	// One base, "alice", from many spellings, and from names.
	for i := range 110 {
		add(pick("Alice A.", "", "al"), pick("alice", "Alice", "ALICE", "alice+", ".alice.", "alice!")+fmt.Sprintf("@host%d.example", i))
	}
	for range 5 {
		add("Alice", pick("", "token-user", "@example.com"))
	}
	// Bases that look like another base's suffixed usernames.
	for _, s := range []string{"alice-2", "alice-3", "alice-99", "alice-100"} {
		add("", s+"@example.com")
	}
	// Dots and plus in the local part.
	for range 60 {
		add("", fmt.Sprintf("%s.%s+%s@example.com", pick("John", "jane", "Ann"), pick("Smith", "doe"), pick("news", "x", "")))
	}
	// The local part ends at the last @.
	for range 5 {
		add("", "bob@home@example.com")
	}
	// Names and local parts that normalise to nothing: the subject's digest.
	for range 40 {
		add(pick("", "!!!", "☃☃", "   ", "—", "日本語"), pick("", "@example.com", "+@example.com", "☃@example.com"))
	}
	// Non-ASCII letters are not lowered, and separate.
	for range 10 {
		add("", pick("Zoë@example.com", "Émile.Zola@example.com", "ÅSA@example.com"))
	}
	// Long bases, cut to 32 characters before and after a suffix.
	for range 12 {
		add("Maximilian Alexander von Hohenzollern-Sigmaringen", pick("", "token-user"))
	}
	// The bulk: a random mix.
	first := []string{"anna", "Ben", "carl", "Dana", "eve", "Finn", "gus", "Hana", "ivo", "Jo"}
	for range 2700 {
		switch r.IntN(4) {
		case 0:
			add(pick(first...), fmt.Sprintf("%s%d@example.com", pick(first...), r.IntN(300)))
		case 1:
			add(pick(first...)+" "+pick(first...), "")
		case 2:
			add(pick(first...), fmt.Sprintf("%s.%s+%d@example.org", pick(first...), pick(first...), r.IntN(5)))
		default:
			add(pick("", "?"), pick("", "token-user"))
		}
	}
	slices.SortFunc(users, func(a, b seedUser) int { return bytes.Compare(a.IdentityID[:], b.IdentityID[:]) })
	return users
}

func insertUsers(t *testing.T, conn *pgx.Conn, users []seedUser) {
	t.Helper()
	rows := make([][]any, len(users))
	for i, u := range users {
		rows[i] = []any{u.IdentityID, u.OIDCSubject, u.Name, u.Email, u.PhotoURL, u.CreatedAt, u.UpdatedAt}
	}
	_, err := conn.CopyFrom(t.Context(), pgx.Identifier{"users"},
		[]string{"identity_id", "oidc_subject", "name", "email", "photo_url", "created_at", "updated_at"},
		pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatalf("seed users: %v", err)
	}
}

// usersOf reads the previous release's columns of every user, sorted by
// identity id (which PostgreSQL orders as bytes, as seedUsers does).
func usersOf(t *testing.T, conn *pgx.Conn) []seedUser {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		`SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at FROM users ORDER BY identity_id`)
	if err != nil {
		t.Fatal(err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowToStructByPos[seedUser])
	if err != nil {
		t.Fatal(err)
	}
	return users
}

func up(t *testing.T, databaseURL string) {
	t.Helper()
	var log bytes.Buffer
	start := time.Now()
	if err := migrate.Up(t.Context(), databaseURL, &log); err != nil {
		t.Fatalf("Up: %v\n%s", err, &log)
	}
	t.Logf("Up took %s", time.Since(start).Round(time.Millisecond))
}

// rollBack rolls back the last of applied. A down that deletes nothing
// needs no force; one that does refuses first, changing nothing, and is
// then forced.
func rollBack(t *testing.T, databaseURL string, applied []string) {
	t.Helper()
	ctx := t.Context()
	last := applied[len(applied)-1]
	var log bytes.Buffer
	err := migrate.Down(ctx, databaseURL, &log)
	switch {
	case refusingDowns[last]:
		if !errors.Is(err, migrate.ErrDataLoss) {
			t.Fatalf("Down of %s while users exist: %v, want ErrDataLoss\n%s", last, err, &log)
		}
		if diff := cmp.Diff(applied, schemaOf(t, databaseURL).Versions); diff != "" {
			t.Fatalf("the refused Down changed the applied versions (-want +got):\n%s", diff)
		}
		log.Reset()
		if err := migrate.ForceDown(ctx, databaseURL, &log); err != nil {
			t.Fatalf("ForceDown of %s: %v\n%s", last, err, &log)
		}
	case err != nil:
		t.Fatalf("Down of %s, which deletes nothing: %v\n%s", last, err, &log)
	}
	if diff := cmp.Diff(applied[:len(applied)-1], schemaOf(t, databaseURL).Versions, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("applied versions mismatch (-want +got):\n%s", diff)
	}
}

// checkMigrated checks the table after every migration has run over
// users: each has the username the derivation gives, the new columns
// hold their defaults, nothing else changed, and every constraint and
// index is valid.
func checkMigrated(t *testing.T, conn *pgx.Conn, users []seedUser) {
	t.Helper()
	ctx := t.Context()

	if diff := cmp.Diff(users, usersOf(t, conn)); diff != "" {
		t.Errorf("the migrations changed users' columns (-want +got):\n%s", diff)
	}

	rows, err := conn.Query(ctx, `SELECT identity_id, username FROM users`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]string{}
	var (
		id       uuid.UUID
		username string
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &username}, func() error {
		got[id] = username
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for id, username := range got {
		if !usernameFormat.MatchString(username) {
			t.Errorf("user %s has username %q, not of the format %s", id, username, usernameFormat)
		}
		if seen[username] {
			t.Errorf("username %q is held by more than one user", username)
		}
		seen[username] = true
	}
	if diff := cmp.Diff(wantUsernames(users, got), got); diff != "" {
		t.Errorf("usernames mismatch (-want +got):\n%s", diff)
	}

	var defaultsChanged int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM users WHERE nickname <> '' OR email_verified OR cluster_role IS NOT NULL`).Scan(&defaultsChanged); err != nil {
		t.Fatal(err)
	}
	if defaultsChanged != 0 {
		t.Errorf("%d users have a nickname, email_verified or a cluster role the migrations made up", defaultsChanged)
	}

	var notNull bool
	if err := conn.QueryRow(ctx, `SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'username'`).Scan(&notNull); err != nil {
		t.Fatal(err)
	}
	if !notNull {
		t.Error("users.username is not NOT NULL")
	}

	// Every constraint is validated, not only the new ones: NOT VALID
	// would leave existing rows unchecked.
	type constraint struct {
		Name      string
		Validated bool
	}
	rows, err = conn.Query(ctx, `SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'users'::regclass ORDER BY conname`)
	if err != nil {
		t.Fatal(err)
	}
	constraints, err := pgx.CollectRows(rows, pgx.RowToStructByPos[constraint])
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range constraints {
		names[c.Name] = true
		if !c.Validated {
			t.Errorf("constraint %s is NOT VALID", c.Name)
		}
	}
	for _, name := range []string{"users_nickname_length", "users_username_format", "users_cluster_role_known"} {
		if !names[name] {
			t.Errorf("constraint %s is missing", name)
		}
	}
	if names["users_username_present"] {
		t.Error("constraint users_username_present is left beside NOT NULL")
	}

	// A CONCURRENTLY build that failed leaves its index behind, INVALID.
	type index struct {
		Name   string
		Valid  bool
		Unique bool
	}
	rows, err = conn.Query(ctx, `SELECT indexrelid::regclass::text, indisvalid, indisunique FROM pg_index WHERE indrelid = 'users'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	indexes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[index])
	if err != nil {
		t.Fatal(err)
	}
	var gotIndexes []index
	for _, i := range indexes {
		if i.Name == "users_cluster_admins" || i.Name == "users_username_key" || !i.Valid {
			gotIndexes = append(gotIndexes, i)
		}
	}
	want := []index{{Name: "users_cluster_admins", Valid: true}, {Name: "users_username_key", Valid: true, Unique: true}}
	if diff := cmp.Diff(want, gotIndexes); diff != "" {
		t.Errorf("indexes mismatch (the new ones, and any invalid) (-want +got):\n%s", diff)
	}
}

// wantUsernames derives every user's username as the backfill must:
// oldest first (by created_at, then identity id), the first of base,
// base-2 ... base-99 that no older user took. Past -99 the suffix is
// random, so the one in got is taken if it has the right form.
func wantUsernames(users []seedUser, got map[uuid.UUID]string) map[uuid.UUID]string {
	byAge := slices.Clone(users)
	slices.SortFunc(byAge, func(a, b seedUser) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return bytes.Compare(a.IdentityID[:], b.IdentityID[:])
	})
	randomSuffix := regexp.MustCompile(`^[0-9a-f]{4}$`)
	taken := map[string]bool{}
	want := map[uuid.UUID]string{}
	for _, u := range byAge {
		base := usernameBase(u.Email, u.Name, u.OIDCSubject)
		username := firstFree(base, taken)
		if username == "" {
			prefix := base[:min(len(base), 27)] + "-"
			username = prefix + "????"
			if g := got[u.IdentityID]; strings.HasPrefix(g, prefix) && randomSuffix.MatchString(g[len(prefix):]) && !taken[g] {
				username = g
			}
		}
		taken[username] = true
		want[u.IdentityID] = username
	}
	return want
}

// firstFree returns the first of base, base-2 ... base-99 not taken, each
// cut to 32 characters, or "" if all are.
func firstFree(base string, taken map[string]bool) string {
	if !taken[base] {
		return base
	}
	for n := 2; n <= 99; n++ {
		suffix := "-" + strconv.Itoa(n)
		if c := base[:min(len(base), 32-len(suffix))] + suffix; !taken[c] {
			return c
		}
	}
	return ""
}

// usernameBase is the derivation's base for a user created without a
// preferred username: the email's local part, else the name, else the
// subject's digest.
func usernameBase(email, name, subject string) string {
	if at := strings.LastIndex(email, "@"); at >= 0 {
		if b := normalizeUsername(email[:at]); b != "" {
			return b
		}
	}
	if b := normalizeUsername(name); b != "" {
		return b
	}
	return "user-" + subjectDigest(subject)
}

// normalizeUsername lowers ASCII letters, turns each run of characters
// other than [a-z0-9_-] into one "-", trims "-" and cuts to 32 characters.
func normalizeUsername(s string) string {
	var b strings.Builder
	inRun := false
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteRune(c)
			inRun = false
		} else if !inRun {
			b.WriteByte('-')
			inRun = true
		}
	}
	n := strings.Trim(b.String(), "-")
	return n[:min(len(n), 32)]
}

func subjectDigest(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return hex.EncodeToString(sum[:])[:8]
}

// catalogOf describes the users table and the routines beside it: its
// columns, constraints, indexes and triggers, and the functions of the
// public schema, one line each.
func catalogOf(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), `
		SELECT format('column %s %s collation %s nullable %s default %s',
		              column_name, data_type, collation_name, is_nullable, column_default)
		FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'users'
		UNION ALL
		SELECT format('constraint %s %s validated %s', conname, pg_get_constraintdef(oid), convalidated)
		FROM pg_constraint WHERE conrelid = 'users'::regclass
		UNION ALL
		SELECT format('index %s valid %s', pg_get_indexdef(indexrelid), indisvalid)
		FROM pg_index WHERE indrelid = 'users'::regclass
		UNION ALL
		SELECT format('trigger %s', tgname)
		FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal
		UNION ALL
		SELECT format('routine %s', oid::regprocedure)
		FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return lines
}
