-- migrate:up
-- Checks the existing rows against the constraints 20261130000001 added
-- NOT VALID. VALIDATE CONSTRAINT takes a SHARE UPDATE EXCLUSIVE lock:
-- reads and writes go on during the scan.
ALTER TABLE users VALIDATE CONSTRAINT users_nickname_length;
ALTER TABLE users VALIDATE CONSTRAINT users_username_format;
ALTER TABLE users VALIDATE CONSTRAINT users_username_present;
ALTER TABLE users VALIDATE CONSTRAINT users_cluster_role_known;

-- migrate:down
-- Nothing to undo: validating changed no data.
