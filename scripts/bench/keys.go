package main

import (
	"fmt"
	"strconv"
)

// The seeded users are numbered 1..N, and every key of user n follows from
// n, so that both load generators can name any user without reading the
// table. seedSQL and the functions below must agree.
//
// The OIDC subject is n in decimal (as Google's subjects are decimal
// numbers): pgbench has no strings, but a number it binds to a text
// parameter arrives as exactly that text, so the subject statements run
// unchanged under pgbench.
//
// The username is "user" and n, given here rather than left to the
// table's trigger, which would derive the same from the email but probe
// the username index for each row on the way.
const seedSQL = `INSERT INTO users (identity_id, oidc_subject, name, email, photo_url, username)
SELECT lpad(to_hex(n), 32, '0')::uuid,
       n::text,
       'Bench User ' || n,
       'user' || n || '@bench.example',
       'https://bench.example/photos/' || n || '.png',
       'user' || n
FROM generate_series(1::bigint, $1::bigint) AS n`

// identityID is the identity id of seeded user n: n in hexadecimal,
// zero-padded to a UUID, as lpad(to_hex(n), 32, '0')::uuid spells it.
func identityID(n int64) string {
	h := fmt.Sprintf("%032x", n)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// subject is the OIDC subject of seeded user n.
func subject(n int64) string { return strconv.FormatInt(n, 10) }

// username is the username of seeded user n.
func username(n int64) string { return "user" + strconv.FormatInt(n, 10) }

// adminUser is the seeded user who calls ListUsers, which needs a cluster
// administrator: both servers are started with CLUSTER_ADMIN_SUBJECTS
// naming its subject.
const adminUser = 1

// First logins need subjects that no seeded user and no earlier call has:
// each driver counts up from a base of its own, far above any N, and the
// two ranges do not meet. Both are 19 decimal digits wide. Within a
// driver's range, its run number k starts at base + k*runSpacing.
const (
	serviceNewSubjectBase = 2_000_000_000_000_000_000
	pgbenchNewSubjectBase = 5_000_000_000_000_000_000
	// pgbenchNewIDBase starts the identity ids pgbench gives new users:
	// above every seeded user's n, and, like those, with the first 64 bits
	// zero, which no UUIDv7 the service allocates has (they start with a
	// timestamp).
	pgbenchNewIDBase = 1 << 62
	// newSubjectDigits is the width of every first-login subject.
	newSubjectDigits = 19
	// runSpacing separates one run's new keys from the next run's: more
	// than maxCallsPerWorker * maxConcurrency calls apart, and room for a
	// million runs within 19 digits.
	runSpacing = 1_000_000_000_000
)
