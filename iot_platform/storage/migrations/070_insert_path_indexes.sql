-- Fewer indexes on the insert path (issue 15): the consumer maintains every index of iot.messages and
-- iot.message_ids for each row it writes, and index maintenance is the largest part of PostgreSQL's
-- CPU per row (docs/benchmarks.md).
-- messages_tenant_time (tenant_id, received_at) is served by messages_tenant_project_time, whose
-- leading column is the same tenant: a tenant's rows over a time range are read through that index
-- (received_at is checked inside the index), and day partitions plus the BRIN index bound the range.
DROP INDEX IF EXISTS iot.messages_tenant_time;
-- Retention deletes message ids by received_at range only. Ids are claimed in received_at order, so a
-- BRIN index serves that delete (as messages_received_at_brin does for iot.messages) for a fraction of
-- a B-tree's cost per inserted id.
DROP INDEX IF EXISTS iot.message_ids_received_at;
CREATE INDEX message_ids_received_at_brin ON iot.message_ids USING brin (received_at);
