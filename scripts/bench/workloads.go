package main

import (
	"fmt"
	"maps"
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
	// referenceRequests, if set, are the reference's requests instead,
	// where its API differs from the service's (its page tokens).
	referenceRequests func(n int64, run int, rng *rand.Rand) (requestSource, error)
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
	// events says the workload writes, and is measured on the events-on
	// service too (events.go).
	events bool
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

// eventInsert is the CTE that writes the event of kind for the rows of
// the CTE rows, as the service's statements do (sql/queries/users.sql):
// part of the cheapest statement of a change, since the service's change
// is not done until its event is written.
func eventInsert(kind, rows string) string {
	return "event AS (INSERT INTO outbox (kind, identity_id, actor_service, data) " +
		"SELECT '" + kind + "', r.identity_id, 'bench', to_jsonb(r) FROM " + rows + " r)"
}

// uuidFromNumber binds a uuid parameter to a pgbench number: pgbench has
// no strings, so the number goes in as bigint and becomes the uuid in the
// statement, exactly as the seed derives ids (keys.go). It is evaluated
// once per execution, as a scan key, and costs about a microsecond.
const uuidFromNumber = "lpad(to_hex(%s::bigint), 32, '0')::uuid"

// tokenHashFromNumber binds a token hash to a pgbench number, as the seed
// derives the hashes (keys.go): text, compared in the column's collation,
// so a scan key of the hash index as the service's bound text is.
const tokenHashFromNumber = "lpad(to_hex(%s::bigint), 64, '0')"

// batchSize is the number of ids per BatchGetUsers call: the API's limit.
const batchSize = 100

// batchEvery is how many calls a client keeps its batch for (see below).
const batchEvery = 32

// Claims a login presents: taken at first login, ignored after.
const (
	loginName     = "Bench User"
	loginPhotoURL = "https://bench.example/photo.png"
)

// loginEmail is the email a login presents: the subject's own, so that
// each first login derives a username of its own from it (its local
// part), as real users' logins mostly do, rather than all but the first
// probing for a free one. The reference's first logins derive the same,
// in the table's trigger.
func loginEmail(subject string) string { return "login-" + subject + "@bench.example" }

// pgbenchLoginEmail binds the email as loginEmail spells it, from the
// pgbench variable email, which a login's script sets to its subject.
// chr(64) is the "@", which written out would read as a sqlc parameter.
const pgbenchLoginEmail = "'login-' || %s::text || chr(64) || 'bench.example'"

// A login's identity id, for pgbench: the service allocates its own, so
// pgbench must bind one too, unique per call (only first logins store it):
// clients count their calls, no two clients' numbers meet (the harness
// runs at most maxConcurrency clients), and no two runs' either.
var pgbenchLoginID = fmt.Sprintf(`\set calls :calls + 1
\set identity_id %d + :run * %d + :calls * %d + :client_id
`, pgbenchNewIDBase, runSpacing, maxConcurrency)

// userColumns are the columns the RPCs return: the user, and the stored
// cluster role (GetUser and GetMe return it).
const userColumns = "identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, cluster_role"

var loginDefines = []string{"calls=0", "name=" + loginName, "photo_url=" + loginPhotoURL}

// actorParams bind a write's actor, which its event names, as the service
// binds it for the bench's calls: they bear no client certificate, so
// the actor is the calling service "unknown" (actorOf in internal/server).
var actorParams = map[string]string{
	"actor_identity_id": "NULL",
	"actor_service":     "'unknown'",
}

// loginParams bind the service's login statement as the service binds it
// for the bench's requests: no preferred_username, email not verified,
// and no subject the bench logs in with is a declared administrator.
var loginParams = withParams(actorParams, map[string]string{
	"identity_id":        uuidFromNumber,
	"email":              pgbenchLoginEmail,
	"email_verified":     "false",
	"preferred_username": "NULL::text",
	"cluster_role":       "NULL::text",
})

func loginRequest(subject string) proto.Message {
	return &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Name: loginName, Email: loginEmail(subject), PhotoUrl: loginPhotoURL}
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
	// What the gateway asks for every call that bears an API token: a
	// seeded token, by its hash. Uniformly among all 100,000 seeded
	// tokens, nearly every call in a second names a token of its own, so
	// the service's once-a-second write of last uses rewrites one row per
	// call: the worst case. With 1,000 tokens in use, as when scripts and
	// CI jobs make most of the calls, each is used several times a second
	// and the write costs a row per token, not per call.
	resolveWorkload("ResolveAPIToken", tokenHolders),
	resolveWorkload("ResolveAPIToken hot", hotTokens),
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
			reqs, err := pool(batchPoolSize, n, rng, nil, func(_ *rand.Rand, key func() int64) proto.Message {
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
			prelude: `\set oidc_subject random(1, :users)` + "\n" + `\set email :oidc_subject` + "\n" + pgbenchLoginID,
			params:  loginParams,
			defines: loginDefines,
		},
	},
	{
		name:   "ResolveOrCreateUser new",
		target: 0.40,
		events: true,
		method: usersv1.UsersService_ResolveOrCreateUser_FullMethodName,
		requests: func(_ int64, run int, _ *rand.Rand) (requestSource, error) {
			return newFreshSubjectSource(loginRequest, run)
		},
		query: "ResolveOrCreateUser",
		// A new subject's login stores the row and its event and returns
		// the row: the cheapest is given the username the service derives
		// (from the email), rather than deriving it.
		cheapest: "WITH inserted AS (INSERT INTO users (identity_id, oidc_subject, name, email, photo_url, username) " +
			"VALUES (@identity_id, @oidc_subject, @name, @email, @photo_url, @username) RETURNING " + userColumns + "), " +
			eventInsert("user.created", "inserted") + " SELECT " + userColumns + " FROM inserted;",
		pgbench: pgbenchBinding{
			prelude: pgbenchLoginID + fmt.Sprintf(`\set oidc_subject %d + :run * %d + :calls * %d + :client_id`, int64(pgbenchNewSubjectBase), runSpacing, maxConcurrency) + "\n" +
				`\set email :oidc_subject` + "\n" + `\set username :oidc_subject` + "\n",
			params:  withParam(loginParams, "username", "'login-' || %s::text"),
			defines: loginDefines,
		},
	},
	{
		// One field set; pgbench cannot bind NULL (its NULL goes out as
		// text), so the fields the request leaves out are NULL in the
		// statement, which is what the service binds for them.
		name:   "UpdateUser",
		target: 0.45,
		events: true,
		method: usersv1.UsersService_UpdateUser_FullMethodName,
		requests: pooled(poolSize, func(rng *rand.Rand, key func() int64) proto.Message {
			name := strconv.FormatInt(1+rng.Int64N(1_000_000_000), 10)
			return &usersv1.UpdateUserRequest{IdentityId: identityID(key()), Name: &name}
		}),
		query: "UpdateUserProfile",
		// Sets the one field the request sets, and writes its event.
		cheapest: "WITH updated AS (UPDATE users SET name = @name, updated_at = now() WHERE identity_id = @identity_id RETURNING " + userColumns + "), " +
			eventInsert("user.updated", "updated") + " SELECT " + userColumns + " FROM updated;",
		pgbench: pgbenchBinding{
			prelude: `\set identity_id random(1, :users)` + "\n" + `\set name random(1, 1000000000)` + "\n",
			params: withParams(actorParams, map[string]string{
				"identity_id": uuidFromNumber, "email": "NULL::text", "photo_url": "NULL::text",
				"nickname": "NULL::text", "username": "NULL::text", "cluster_role": "NULL::text",
				"changed_fields": "'{name}'",
			}),
		},
	},
	{
		// A random seeded user asks for themselves.
		name:   "GetMe",
		target: 0.40,
		method: usersv1.UsersService_GetMe_FullMethodName,
		requests: pooledAs(poolSize, anyUser, func(*rand.Rand, func() int64) proto.Message {
			return &usersv1.GetMeRequest{}
		}),
		// The service reads the caller as GetUser reads a user.
		query:    "GetUser",
		cheapest: "SELECT " + userColumns + " FROM users WHERE identity_id = @identity_id;",
		pgbench: pgbenchBinding{
			prelude: `\set identity_id random(1, :users)` + "\n",
			params:  map[string]string{"identity_id": uuidFromNumber},
		},
	},
	{
		// What an @-mention sends as a person types: the first 2 to 6
		// characters of a random seeded username (searchPrefix).
		name:   "SearchUsers",
		target: 0.40,
		method: usersv1.UsersService_SearchUsers_FullMethodName,
		requests: pooledAs(poolSize, anyUser, func(rng *rand.Rand, key func() int64) proto.Message {
			return &usersv1.SearchUsersRequest{Prefix: searchPrefix(key(), minPrefix+rng.IntN(maxPrefix-minPrefix+1)), Limit: searchLimit}
		}),
		query: "SearchUsers",
		// A range scan of the username index, stopping after the limit:
		// the service's own statement.
		cheapest: "SELECT identity_id, username, name, photo_url FROM users " +
			"WHERE username >= @prefix::text AND username < @prefix::text || '~' ORDER BY username LIMIT @max;",
		pgbench: pgbenchBinding{
			prelude: fmt.Sprintf(`\set prefix random(1, :users) * 8 + random(%d, %d)`, minPrefix, maxPrefix) + "\n",
			params:  map[string]string{"prefix": prefixFromNumber, "max": strconv.Itoa(searchLimit)},
		},
	},
	{
		// The first page, and below a page deep in the table (listing.go):
		// the service's keyset pages should cost the same at any depth,
		// and the two rows show whether they do; the reference's OFFSET
		// pages read every row ahead of theirs. Both servers also read
		// the caller, to check the role: a point read the statements
		// leave out.
		name:   "ListUsers first page",
		target: 0.40,
		method: usersv1.UsersService_ListUsers_FullMethodName,
		requests: pooledAs(1, asAdmin, func(*rand.Rand, func() int64) proto.Message {
			return &usersv1.ListUsersRequest{PageSize: listPageSize}
		}),
		query:    "ListUsers",
		cheapest: listCheapest,
		pgbench: pgbenchBinding{
			prelude: `\set after 0` + "\n",
			params:  listParams,
		},
	},
	{
		name:              "ListUsers deep page",
		target:            0.40,
		method:            usersv1.UsersService_ListUsers_FullMethodName,
		requests:          deepPages(pageToken),
		referenceRequests: deepPages(offsetToken),
		query:             "ListUsers",
		cheapest:          listCheapest,
		pgbench: pgbenchBinding{
			prelude: fmt.Sprintf(`\set after :users - %d - random(0, :users / %d)`, listPageSize, deepSpan) + "\n",
			params:  listParams,
		},
	},
}

// A comparison is the service's rate in one workload over its rate in
// another, measured in the same run, and the least it should be.
type comparison struct {
	workload, over string
	target         float64
}

// comparisons are what the report sets side by side: ResolveAPIToken is
// on the path of every call that bears a token, and should cost the
// service about what reading a user does.
var comparisons = []comparison{
	{workload: "ResolveAPIToken", over: "GetUser", target: 0.90},
	{workload: "ResolveAPIToken hot", over: "GetUser", target: 0.90},
}

// hotTokens is how many tokens the hot ResolveAPIToken workload uses.
const hotTokens = 1000

// resolveWorkload resolves random seeded tokens among the first tokens.
func resolveWorkload(name string, tokens int64) workload {
	return workload{
		name:   name,
		target: 0.40,
		method: usersv1.UsersService_ResolveAPIToken_FullMethodName,
		requests: amongFirst(tokens, pooled(poolSize, func(_ *rand.Rand, key func() int64) proto.Message {
			return &usersv1.ResolveAPITokenRequest{TokenHash: tokenHash(key())}
		})),
		query: "ResolveAPIToken",
		// The token, without its hash, which the answer leaves out.
		cheapest: "SELECT id, identity_id, name, token_prefix, expires_at, created_at, last_used_at FROM api_tokens WHERE token_hash = @token_hash;",
		pgbench: pgbenchBinding{
			prelude: `\set token_hash random(1, least(:users, ` + strconv.FormatInt(tokens, 10) + `))` + "\n",
			params:  map[string]string{"token_hash": tokenHashFromNumber},
		},
	}
}

// anyUser makes each request as a random seeded user; asAdmin as the
// administrator.
func anyUser(key func() int64) int64 { return key() }
func asAdmin(func() int64) int64     { return adminUser }

// pooled is a workload's requests: a pool of size, sent in random order.
func pooled(size int, newReq func(rng *rand.Rand, key func() int64) proto.Message) func(int64, int, *rand.Rand) (requestSource, error) {
	return pooledAs(size, nil, newReq)
}

// pooledAs is pooled with each request made as the seeded user caller
// picks.
func pooledAs(size int, caller func(key func() int64) int64, newReq func(rng *rand.Rand, key func() int64) proto.Message) func(int64, int, *rand.Rand) (requestSource, error) {
	return func(n int64, _ int, rng *rand.Rand) (requestSource, error) {
		reqs, err := pool(size, n, rng, caller, newReq)
		return randomSource{reqs: reqs}, err
	}
}

// amongFirst is requests over the first k seeded users (all of them, if
// fewer): token holders, rather than all users.
func amongFirst(k int64, requests func(int64, int, *rand.Rand) (requestSource, error)) func(int64, int, *rand.Rand) (requestSource, error) {
	return func(n int64, run int, rng *rand.Rand) (requestSource, error) {
		return requests(min(n, k), run, rng)
	}
}

// withParam is params and one more.
func withParam(params map[string]string, name, expr string) map[string]string {
	return withParams(params, map[string]string{name: expr})
}

// withParams is params and more.
func withParams(params, more map[string]string) map[string]string {
	out := maps.Clone(params)
	maps.Copy(out, more)
	return out
}

func workloadByName(name string) (workload, bool) {
	for _, w := range workloads {
		if w.name == name {
			return w, true
		}
	}
	return workload{}, false
}
