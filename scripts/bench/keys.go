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

// The first tokenHolders users (all of them, if fewer) hold one API token
// each, seeded by tokenSeedSQL for users 1..$1. Its id is the user's
// identity id, and its SHA-256 is n in hexadecimal, zero-padded to 64
// digits: the table's CHECK takes it, and pgbench can spell it from a
// number (tokenHashFromNumber). The table's trigger locks the owner's row
// and counts their tokens for each row inserted, which one token each
// keeps cheap; more tokens would only lengthen the seed, since a resolve
// is one probe of the hash index however many rows it holds.
const tokenHolders = 100_000

const tokenSeedSQL = `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix)
SELECT lpad(to_hex(n), 32, '0')::uuid,
       lpad(to_hex(n), 32, '0')::uuid,
       'Bench token ' || n,
       lpad(to_hex(n), 64, '0'),
       'agyn_' || lpad(to_hex(n % 4096), 3, '0')
FROM generate_series(1::bigint, $1::bigint) AS n`

// tokenHash is the token hash of seeded user n's token.
func tokenHash(n int64) string { return fmt.Sprintf("%064x", n) }

// tokenName and tokenPrefix are the name and prefix of seeded user n's
// token.
func tokenName(n int64) string   { return "Bench token " + strconv.FormatInt(n, 10) }
func tokenPrefix(n int64) string { return fmt.Sprintf("agyn_%03x", n%4096) }

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
