package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// A workload is one RPC driven through the service, the reference and the
// floor, and two statements driven by pgbench with the same keys at the
// same concurrency: the service's own, and the cheapest that returns the
// same rows.
type workload struct {
	name   string
	method string
	// requests builds the load generator's requests over users 1..n; run
	// numbers the load generator's runs, so that each can have keys of
	// its own where keys must be new.
	requests func(n int64, run int, rng *rand.Rand) (requestSource, error)
	// query names the service's statement in sql/queries/users.sql.
	query string
	// cheapest is the cheapest statement that returns the rows the RPC
	// returns, in the query file's syntax: the database's own limit.
	cheapest string
	// pgbench says how pgbench binds the statements' parameters.
	pgbench pgbenchBinding
	// target is the service/pgbench ratio the service should reach,
	// against the cheapest statement.
	target float64
}

// pgbenchBinding is a pgbench script around a statement.
type pgbenchBinding struct {
	// prelude is the script ahead of the statement. The variable :users
	// holds N, the number of seeded users; :run numbers pgbench's runs.
	prelude string
	// params replaces a statement parameter by an expression, in which %s
	// stands for the pgbench variable of the same name. A parameter not
	// listed is bound to that variable directly.
	params map[string]string
	// defines are -D name=value: variables every client starts with.
	defines []string
}

// uuidFromNumber binds a uuid parameter to a pgbench number: pgbench has
// no strings, so the number goes in as bigint and becomes the uuid in the
// statement, exactly as the seed derives ids (keys.go). It is evaluated
// once per execution, as a scan key, and costs about a microsecond.
const uuidFromNumber = "lpad(to_hex(%s::bigint), 32, '0')::uuid"

// batchSize is the number of ids per BatchGetUsers call: the API's limit.
const batchSize = 100

// batchEvery is how many calls a client keeps its batch for (see below).
const batchEvery = 32

// Claims a login presents: taken at first login, ignored after.
const (
	loginName     = "Bench User"
	loginEmail    = "login@bench.example"
	loginPhotoURL = "https://bench.example/photo.png"
)

// A login's identity id, for pgbench: the service allocates its own, so
// pgbench must bind one too, unique per call (only first logins store it):
// clients count their calls, no two clients' numbers meet (the harness
// runs at most maxConcurrency clients), and no two runs' either.
var pgbenchLoginID = fmt.Sprintf(`\set calls :calls + 1
\set identity_id %d + :run * %d + :calls * %d + :client_id
`, pgbenchNewIDBase, runSpacing, maxConcurrency)

// userColumns are the columns every RPC returns.
const userColumns = "identity_id, oidc_subject, name, email, photo_url, created_at, updated_at"

var loginDefines = []string{"calls=0", "name=" + loginName, "email=" + loginEmail, "photo_url=" + loginPhotoURL}

func loginRequest(subject string) proto.Message {
	return &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Name: loginName, Email: loginEmail, PhotoUrl: loginPhotoURL}
}

var workloads = []workload{
	{
		name:   "GetUser",
		target: 0.40,
		method: usersv1.UsersService_GetUser_FullMethodName,
		requests: pooled(poolSize, func(_ *rand.Rand, key func() int64) proto.Message {
			return &usersv1.GetUserRequest{IdentityId: identityID(key())}
		}),
		query:    "GetUser",
		cheapest: "SELECT " + userColumns + " FROM users WHERE identity_id = @identity_id;",
		pgbench: pgbenchBinding{
			prelude: `\set identity_id random(1, :users)` + "\n",
			params:  map[string]string{"identity_id": uuidFromNumber},
		},
	},
	{
		name:   "GetUserByOIDCSubject",
		target: 0.40,
		method: usersv1.UsersService_GetUserByOIDCSubject_FullMethodName,
		requests: pooled(poolSize, func(_ *rand.Rand, key func() int64) proto.Message {
			return &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: subject(key())}
		}),
		query:    "GetUserByOIDCSubject",
		cheapest: "SELECT " + userColumns + " FROM users WHERE oidc_subject = @oidc_subject;",
		pgbench: pgbenchBinding{
			prelude: `\set oidc_subject random(1, :users)` + "\n",
		},
	},
	{
		// The batch's one parameter is an array of 100 uuids, which pgbench
		// can hold only as a string, and only a query can give it one
		// (\gset). So each client draws a random batch with one extra
		// query every batchEvery transactions and binds it, as text, to
		// the service's statement unchanged. The extra query costs pgbench
		// a few percent of its rate; the load generator keeps each worker's
		// batch for batchEvery calls too, so that both read the table the
		// same way. (Alternatives measured: 100 numeric variables turned
		// into uuids in the statement cost pgbench a third of its rate;
		// one script file per batch, each prepared on every connection,
		// leaves too few batches or plans most executions afresh.)
		name:   "BatchGetUsers",
		target: 0.45,
		method: usersv1.UsersService_BatchGetUsers_FullMethodName,
		requests: func(n int64, _ int, rng *rand.Rand) (requestSource, error) {
			reqs, err := pool(batchPoolSize, n, rng, func(_ *rand.Rand, key func() int64) proto.Message {
				ids := make([]string, batchSize)
				for i := range ids {
					ids[i] = identityID(key())
				}
				return &usersv1.BatchGetUsersRequest{IdentityIds: ids}
			})
			return stickySource{reqs: reqs, every: batchEvery}, err
		},
		query: "BatchGetUsers",
		// The same rows, in no particular order, as the reference does.
		cheapest: "SELECT " + userColumns + " FROM users WHERE identity_id = ANY(@identity_ids::uuid[]);",
		pgbench: pgbenchBinding{
			prelude: `\set calls :calls + 1
\if :calls % ` + strconv.Itoa(batchEvery) + ` = 1
SELECT array_agg(lpad(to_hex(1 + floor(random() * :users)::bigint), 32, '0')::uuid)::text AS identity_ids
FROM generate_series(1, ` + strconv.Itoa(batchSize) + `) \gset
\endif
`,
			defines: []string{"calls=0"},
		},
	},
	{
		name:   "ResolveOrCreateUser existing",
		target: 0.60,
		method: usersv1.UsersService_ResolveOrCreateUser_FullMethodName,
		requests: pooled(poolSize, func(_ *rand.Rand, key func() int64) proto.Message {
			return loginRequest(subject(key()))
		}),
		query: "ResolveOrCreateUser",
		// A known subject's login returns the stored row: a read.
		cheapest: "SELECT " + userColumns + " FROM users WHERE oidc_subject = @oidc_subject;",
		pgbench: pgbenchBinding{
			prelude: `\set oidc_subject random(1, :users)` + "\n" + pgbenchLoginID,
			params:  map[string]string{"identity_id": uuidFromNumber},
			defines: loginDefines,
		},
	},
	{
		name:   "ResolveOrCreateUser new",
		target: 0.40,
		method: usersv1.UsersService_ResolveOrCreateUser_FullMethodName,
		requests: func(_ int64, run int, _ *rand.Rand) (requestSource, error) {
			return newFreshSubjectSource(loginRequest, run)
		},
		query: "ResolveOrCreateUser",
		// A new subject's login stores the row and returns it.
		cheapest: "INSERT INTO users (identity_id, oidc_subject, name, email, photo_url) " +
			"VALUES (@identity_id, @oidc_subject, @name, @email, @photo_url) RETURNING " + userColumns + ";",
		pgbench: pgbenchBinding{
			prelude: pgbenchLoginID + fmt.Sprintf(`\set oidc_subject %d + :run * %d + :calls * %d + :client_id`, int64(pgbenchNewSubjectBase), runSpacing, maxConcurrency) + "\n",
			params:  map[string]string{"identity_id": uuidFromNumber},
			defines: loginDefines,
		},
	},
	{
		// One field set; pgbench cannot bind NULL (its NULL goes out as
		// text), so the fields the request leaves out are NULL in the
		// statement, which is what the service binds for them.
		name:   "UpdateUser",
		target: 0.45,
		method: usersv1.UsersService_UpdateUser_FullMethodName,
		requests: pooled(poolSize, func(rng *rand.Rand, key func() int64) proto.Message {
			name := strconv.FormatInt(1+rng.Int64N(1_000_000_000), 10)
			return &usersv1.UpdateUserRequest{IdentityId: identityID(key()), Name: &name}
		}),
		query: "UpdateUser",
		// Sets the one field the request sets.
		cheapest: "UPDATE users SET name = @name, updated_at = now() WHERE identity_id = @identity_id RETURNING " + userColumns + ";",
		pgbench: pgbenchBinding{
			prelude: `\set identity_id random(1, :users)` + "\n" + `\set name random(1, 1000000000)` + "\n",
			params:  map[string]string{"identity_id": uuidFromNumber, "email": "NULL::text", "photo_url": "NULL::text"},
		},
	},
}

// pooled is a workload's requests: a pool of size, sent in random order.
func pooled(size int, newReq func(rng *rand.Rand, key func() int64) proto.Message) func(int64, int, *rand.Rand) (requestSource, error) {
	return func(n int64, _ int, rng *rand.Rand) (requestSource, error) {
		reqs, err := pool(size, n, rng, newReq)
		return randomSource{reqs: reqs}, err
	}
}

func workloadByName(name string) (workload, bool) {
	for _, w := range workloads {
		if w.name == name {
			return w, true
		}
	}
	return workload{}, false
}
