-- migrate:up transaction:false
-- The administrators, for the check that the last one is never demoted or
-- deleted: a handful of rows however large the table.
CREATE INDEX CONCURRENTLY users_cluster_admins ON users (identity_id) WHERE cluster_role = 'admin';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY users_cluster_admins;
