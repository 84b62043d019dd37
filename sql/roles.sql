-- The service's PostgreSQL roles and its database, for a DBA to run once,
-- as a superuser, with psql 15 or later (for \getenv), the passwords in
-- the environment rather than on the command line, where ps shows them:
--
--   OWNER_PASSWORD=... SERVE_PASSWORD=... psql -f sql/roles.sql
--
-- users_owner owns the database and its schema: "users migrate up"
-- connects as it, and creates and alters the tables. users_serve is the
-- role "users serve" connects as: it may read and write the rows as the
-- service's statements do, and nothing else. "users migrate up" with
-- DB_SERVE_ROLE=users_serve grants it exactly sql/grants.sql. Only these
-- two roles may connect to the database.
--
-- -v database=NAME names the database (users unless set), -v
-- owner_role=NAME and -v serve_role=NAME the roles. Every step checks
-- first, so a second run changes only the passwords, the settings and
-- the privileges below.

\set ON_ERROR_STOP on
\if :{?database}
\else
\set database users
\endif
\if :{?owner_role}
\else
\set owner_role users_owner
\endif
\if :{?serve_role}
\else
\set serve_role users_serve
\endif
\getenv owner_password OWNER_PASSWORD
\getenv serve_password SERVE_PASSWORD
\if :{?owner_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'sql/roles.sql: OWNER_PASSWORD is not set (the passwords come from the environment)'; END $$;
\endif
\if :{?serve_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'sql/roles.sql: SERVE_PASSWORD is not set (the passwords come from the environment)'; END $$;
\endif

-- The roles, in one transaction. The test suite runs this part, from
-- BEGIN to COMMIT, on its own servers, with roles of its own.
BEGIN;
-- The passwords stay out of the server's log, whatever log_statement
-- says, and when a statement fails. (Superusers only, as the file runs.)
SET LOCAL log_statement = 'none';
SET LOCAL log_min_error_statement = 'panic';
-- Two runs at once take turns: concurrent changes of one role fail
-- ("tuple concurrently updated").
SELECT pg_advisory_xact_lock(hashtext('users: sql/roles.sql'));
-- The names, for the block below, which psql does not interpolate into.
SELECT set_config('users.owner_role', :'owner_role', true),
       set_config('users.serve_role', :'serve_role', true);
DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY[current_setting('users.owner_role'), current_setting('users.serve_role')] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I', role);
        END IF;
    END LOOP;
END
$$;
ALTER ROLE :"owner_role" LOGIN PASSWORD :'owner_password';
ALTER ROLE :"serve_role" LOGIN PASSWORD :'serve_password';
-- A migration's DDL waiting for its lock behind a long transaction holds
-- up every statement queued behind it: it gives up after 2 s instead,
-- well within the service's DB_TIMEOUT (5 s), and the migration Job runs
-- it again. (CREATE INDEX CONCURRENTLY waiting out older transactions is
-- bound too: set lock_timeout=0 in DATABASE_URL for a run that must wait.)
ALTER ROLE :"owner_role" SET lock_timeout = '2s';
-- The server's own end to a statement, above DB_TIMEOUT (5 s): the service
-- cancels a statement at DB_TIMEOUT, but a cancel request that is lost
-- leaves it running, and holding its locks. Keep it above DB_TIMEOUT.
ALTER ROLE :"serve_role" SET statement_timeout = '10s';
-- The service never leaves a transaction open between statements: one
-- that is (a client stopped mid-transaction) is ended, with its locks.
ALTER ROLE :"serve_role" SET idle_in_transaction_session_timeout = '1min';
COMMIT;

-- The database, owned by the owner role, in UTF8, which the service
-- requires (see DATABASE_URL in README.md).
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'database', :'owner_role', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database')
\gexec
ALTER DATABASE :"database" OWNER TO :"owner_role";
-- Only the two roles connect (PostgreSQL lets every role connect to a new
-- database), and neither needs temporary tables.
REVOKE CONNECT, TEMPORARY ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"owner_role", :"serve_role";

\connect :"database"
-- The owner creates the tables; no other role creates anything (PostgreSQL
-- 15 no longer lets every role create in public; older servers do).
ALTER SCHEMA public OWNER TO :"owner_role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
