-- The privileges of the role "users serve" connects as, and no others:
-- what the statements of sql/queries run, and what the triggers and
-- functions of sql/migrations do on their behalf (they run with the
-- rights of the role whose statement fired them). "users migrate up"
-- applies this file after the migrations, in one transaction, when
-- DB_SERVE_ROLE names the role; by hand, as the owner of the schema:
--
--   psql -1 -v serve_role=users_serve -f sql/grants.sql
--
-- Everything is revoked first, from the role and from PUBLIC (whose
-- privileges every role holds), and granted again, so that the role holds
-- exactly what this file says, whatever an earlier release or a person
-- granted. The role gets no TRUNCATE, REFERENCES or TRIGGER, cannot
-- create or alter anything, and cannot read schema_migrations.

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"serve_role", PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"serve_role", PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA public FROM :"serve_role";
-- Every role may call a new function (PostgreSQL grants EXECUTE to
-- PUBLIC): taken back, so that the role calls only those granted below.
-- The schema's owner keeps its own rights.
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA public FROM PUBLIC;

-- Names in the schema resolve: every statement.
GRANT USAGE ON SCHEMA public TO :"serve_role";

-- users
-- Every read, and CheckSchema's (readiness), which names every column.
GRANT SELECT ON users TO :"serve_role";
-- ResolveOrCreateUser and CreateUser: a new user; created_at and
-- updated_at take their defaults.
GRANT INSERT (identity_id, oidc_subject, name, email, photo_url, email_verified, cluster_role, username, nickname)
    ON users TO :"serve_role";
-- UpdateUserProfile, RevokeClusterRole, PromoteDeclaredAdmins; also what
-- lets RevokeClusterRole and DeleteUser lock the administrators' rows (FOR
-- UPDATE), and RevokeAPIToken and the api_tokens trigger lock the owner's
-- (FOR NO KEY UPDATE). identity_id, oidc_subject, created_at and
-- email_verified are never changed.
GRANT UPDATE (name, email, photo_url, nickname, username, cluster_role, updated_at)
    ON users TO :"serve_role";
-- DeleteUser. The user's tokens go by ON DELETE CASCADE, which runs with
-- the table owner's rights.
GRANT DELETE ON users TO :"serve_role";

-- api_tokens
-- ListAPITokens, ResolveAPIToken(s), CheckSchema, the rows that
-- RecordAPITokenUse and RevokeAPIToken match, and the trigger
-- api_tokens_within_caps's count of a user's tokens.
GRANT SELECT ON api_tokens TO :"serve_role";
-- CreateAPIToken; created_at takes its default, last_used_at starts NULL.
GRANT INSERT (id, identity_id, name, token_hash, token_prefix, expires_at)
    ON api_tokens TO :"serve_role";
-- RecordAPITokenUse: the last use is the only column that ever changes.
GRANT UPDATE (last_used_at) ON api_tokens TO :"serve_role";
-- RevokeAPIToken, and the trigger api_tokens_within_caps evicting the
-- token that expired longest ago.
GRANT DELETE ON api_tokens TO :"serve_role";

-- outbox
-- PendingEvents (the relay), OutboxBacklog (the metrics), PruneEvents,
-- CheckSchema.
GRANT SELECT ON outbox TO :"serve_role";
-- Every change's event, written by the statement that makes it (and by
-- the trigger api_tokens_within_caps); seq and id take their defaults.
-- seq is an identity column, whose sequence needs no grant of its own.
GRANT INSERT (kind, identity_id, actor_identity_id, actor_service, changed_fields, data)
    ON outbox TO :"serve_role";
-- DeleteEvents (published) and PruneEvents (past the retention, with no
-- relay).
GRANT DELETE ON outbox TO :"serve_role";

-- Functions. The trigger functions (users_assign_username,
-- api_tokens_within_caps) need no grant: PostgreSQL checks EXECUTE on a
-- trigger's function when the trigger is created, not when it fires.
-- users_backfill_usernames is the migrations' alone.
-- ResolveOrCreateUser and CreateUser derive a new user's username; the
-- trigger users_assign_username, firing for a row without one, calls them
-- too.
GRANT EXECUTE ON FUNCTION users_free_username(text) TO :"serve_role";
GRANT EXECUTE ON FUNCTION users_username_base(text, text, text, text) TO :"serve_role";
GRANT EXECUTE ON FUNCTION users_normalize_username(text) TO :"serve_role";
-- The default of outbox.id, evaluated with the inserting role's rights.
GRANT EXECUTE ON FUNCTION outbox_uuidv7() TO :"serve_role";
