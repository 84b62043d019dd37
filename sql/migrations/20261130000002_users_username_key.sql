-- migrate:up transaction:false
-- Usernames are unique; NULLs (rows the backfill has not reached yet) are
-- not compared. Built CONCURRENTLY: writes go on while it builds. If the
-- build fails it leaves an INVALID index; "users migrate up" drops
-- nothing, so drop it by hand (DROP INDEX CONCURRENTLY users_username_key)
-- before running it again.
CREATE UNIQUE INDEX CONCURRENTLY users_username_key ON users (username);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY users_username_key;
