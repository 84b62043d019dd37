-- migrate:up transaction:false
-- Every user from before 20261130000001 gets a username, in batches that
-- commit as they go (see users_backfill_usernames). Run again after an
-- interruption, it carries on where it stopped.
CALL users_backfill_usernames();

-- migrate:down
-- Usernames stay: 20261130000001's down drops the column.
