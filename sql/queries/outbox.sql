-- The relay's and the pruner's statements on the outbox of change events
-- (see sql/migrations' outbox, and internal/outbox). The events are
-- written by the statements of users.sql that make the changes.

-- name: PendingEvents :many
-- The oldest events not yet published, in the order they are published:
-- a range scan of the primary key.
SELECT seq, id, kind, identity_id, actor_identity_id, actor_service, occurred_at, changed_fields, data
FROM outbox
ORDER BY seq
LIMIT @max;

-- name: DeleteEvents :execrows
-- The events JetStream has acknowledged, by seq.
DELETE FROM outbox
WHERE seq = ANY(@seqs::bigint[]);

-- name: PruneEvents :execrows
-- With no relay, the events older than the retention, at most max of them
-- at a time: only the oldest max rows are looked at, so that a statement
-- costs the same however large the outbox; the pruner runs it again while
-- it deletes max.
DELETE FROM outbox
WHERE seq IN (SELECT o.seq FROM outbox o ORDER BY o.seq LIMIT @max)
  AND occurred_at < now() - make_interval(secs => @retention_seconds::float8);

-- name: OutboxBacklog :one
-- The metrics' figures: events not yet published, and how long ago the
-- oldest of them was written (0 with none). The count reads every row.
SELECT count(*) AS pending,
       COALESCE(EXTRACT(epoch FROM now() - (SELECT o.occurred_at FROM outbox o ORDER BY o.seq LIMIT 1)), 0)::float8 AS oldest_age_seconds
FROM outbox;

-- name: TryRelayLock :one
-- One replica relays at a time: the one whose relay session holds this
-- advisory lock, keyed by the first 64 bits of the MD5 of its name. The
-- session holds it until it ends, so that when the replica dies,
-- PostgreSQL ends the session and another replica's next try takes it.
SELECT pg_try_advisory_lock(('x' || md5('agyn.users.outbox relay'))::bit(64)::bigint) AS locked;
