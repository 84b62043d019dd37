-- migrate:up
-- SET NOT NULL would scan the table under an ACCESS EXCLUSIVE lock, but
-- not when a validated CHECK (username IS NOT NULL) already proves it:
-- then it takes milliseconds. That CHECK is then redundant.
ALTER TABLE users ALTER COLUMN username SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_username_present;

-- migrate:down
ALTER TABLE users ADD CONSTRAINT users_username_present CHECK (username IS NOT NULL) NOT VALID;
ALTER TABLE users ALTER COLUMN username DROP NOT NULL;
