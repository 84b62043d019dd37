package main

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"strconv"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The requests of the directory workloads, SearchUsers and ListUsers,
// and how pgbench binds their statements.

// A search prefix is the first minPrefix to maxPrefix characters of a
// seeded username, and asks for searchLimit entries (the API's default).
const (
	minPrefix   = 2
	maxPrefix   = 6
	searchLimit = 10
)

// searchPrefix is the first k characters of seeded user n's username (all
// of it if shorter).
func searchPrefix(n int64, k int) string {
	u := username(n)
	return u[:min(k, len(u))]
}

// prefixFromNumber binds a search prefix to a pgbench number: pgbench has
// no strings, so the script draws n*8 + k, and the statement turns it into
// searchPrefix(n, k), evaluated once per execution (a subquery of
// constants, run ahead of the scan), so that the prefix is a scan key of
// the username index as the service's bound text is.
const prefixFromNumber = "(SELECT left('user' || v / 8, mod(v, 8)::int) FROM (VALUES (%s::bigint)) AS p(v))"

// listPageSize is the page size asked for: the API's default. The
// service reads one row more, to know whether another page follows.
const listPageSize = 50

// A deep page starts after a seeded user in the last 1/deepSpan of the
// seeded ids, and ends at user N at the latest: with keyset pages it costs
// what the first does, and with OFFSET pages it reads nearly the whole
// table first.
const deepSpan = 100

// deepPageAfter is the seeded user a deep page of n users starts after.
func deepPageAfter(n int64, rng *rand.Rand) int64 {
	return n - listPageSize - rng.Int64N(n/deepSpan+1)
}

// deepPages is the deep page's requests, as the administrator, with the
// page token token spells for the page after a seeded user.
func deepPages(token func(after int64) string) func(int64, int, *rand.Rand) (requestSource, error) {
	return func(n int64, _ int, rng *rand.Rand) (requestSource, error) {
		reqs, err := pool(poolSize, n, rng, asAdmin, func(rng *rand.Rand, _ func() int64) proto.Message {
			return &usersv1.ListUsersRequest{PageSize: listPageSize, PageToken: token(deepPageAfter(n, rng))}
		})
		return randomSource{reqs: reqs}, err
	}
}

// The pages of both ListUsers workloads: the cheapest reads exactly the
// page from the primary key, and the service's statement one row more;
// the pgbench variable after is a seeded user's number (0 for the first
// page, whose statement starts after the nil UUID, as the service's does).
var (
	listCheapest = "SELECT " + userColumns + " FROM users WHERE identity_id > @after ORDER BY identity_id LIMIT " + strconv.Itoa(listPageSize) + ";"
	listParams   = map[string]string{"after": uuidFromNumber, "max": strconv.Itoa(listPageSize + 1)}
)

// pageTokenTable is CRC-32C's, as the service's page tokens use.
var pageTokenTable = crc32.MakeTable(crc32.Castagnoli)

// pageToken is the service's page token for the page after seeded user
// n. It mirrors pageToken in internal/server/directory.go, which the
// bench cannot import: a version byte (1), the 16 bytes of the last id of
// the page before, and the CRC-32C of those 17 bytes, big-endian, in
// unpadded base64url. TestServiceAnswersEveryWorkload checks it against a
// token the service hands out.
func pageToken(n int64) string {
	id := uuid.MustParse(identityID(n))
	b := append([]byte{1}, id[:]...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, pageTokenTable))
	return base64.RawURLEncoding.EncodeToString(b)
}

// offsetToken is the reference's page token for the page after seeded
// user n: the rows ahead of it, as OFFSET counts them. Seeded users have
// the smallest ids (keys.go), so they are the first n.
func offsetToken(n int64) string { return strconv.FormatInt(n, 10) }
