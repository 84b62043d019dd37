-- The service's PostgreSQL roles and its database, for a DBA to run once,
-- as a superuser, with psql:
--
--   psql -v owner_password=... -v serve_password=... -f sql/roles.sql
--
-- users_owner owns the database and its schema: "users migrate up"
-- connects as it, and creates and alters the tables. users_serve is the
-- role "users serve" connects as: it may read and write the rows as the
-- service's statements do, and nothing else. "users migrate up" with
-- DB_SERVE_ROLE=users_serve grants it exactly sql/grants.sql.
--
-- -v database=NAME names the database (users unless set). Every step
-- checks first, so a second run changes only the passwords and the
-- settings below.

\set ON_ERROR_STOP on
\if :{?database}
\else
\set database users
\endif

-- The roles, in one transaction. The test suite runs this part, from
-- BEGIN to COMMIT, on its own servers.
BEGIN;
-- Two runs at once take turns: concurrent changes of one role fail
-- ("tuple concurrently updated").
SELECT pg_advisory_xact_lock(hashtext('users: sql/roles.sql'));
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'users_owner') THEN
        CREATE ROLE users_owner;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'users_serve') THEN
        CREATE ROLE users_serve;
    END IF;
END
$$;
ALTER ROLE users_owner LOGIN PASSWORD :'owner_password';
ALTER ROLE users_serve LOGIN PASSWORD :'serve_password';
-- A migration's DDL waiting for its lock behind a long transaction holds
-- up every statement queued behind it: it gives up after 2 s instead,
-- well within the service's DB_TIMEOUT (5 s), and the migration Job runs
-- it again. (CREATE INDEX CONCURRENTLY waiting out older transactions is
-- bound too: set lock_timeout=0 in DATABASE_URL for a run that must wait.)
ALTER ROLE users_owner SET lock_timeout = '2s';
-- The server's own end to a statement, above DB_TIMEOUT (5 s): the service
-- cancels a statement at DB_TIMEOUT, but a cancel request that is lost
-- leaves it running, and holding its locks. Keep it above DB_TIMEOUT.
ALTER ROLE users_serve SET statement_timeout = '10s';
-- The service never leaves a transaction open between statements: one
-- that is (a client stopped mid-transaction) is ended, with its locks.
ALTER ROLE users_serve SET idle_in_transaction_session_timeout = '1min';
COMMIT;

-- The database, owned by users_owner, in UTF8, which the service
-- requires (see DATABASE_URL in README.md).
SELECT format('CREATE DATABASE %I OWNER users_owner ENCODING %L TEMPLATE template0', :'database', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database')
\gexec
ALTER DATABASE :"database" OWNER TO users_owner;
-- Neither role needs temporary tables.
REVOKE TEMPORARY ON DATABASE :"database" FROM PUBLIC;

\connect :"database"
-- The owner creates the tables; no other role creates anything (PostgreSQL
-- 15 no longer lets every role create in public; older servers do).
ALTER SCHEMA public OWNER TO users_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
