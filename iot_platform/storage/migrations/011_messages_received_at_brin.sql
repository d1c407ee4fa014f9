-- Rollups, retention's boundary delete and the freshness / dead-letter-rate checks all select raw
-- rows by a received_at range alone; none of the consumer's indexes leads with received_at. Rows
-- arrive in received_at order, so a BRIN index is tiny and nearly free to maintain on insert.
CREATE INDEX messages_received_at_brin ON iot.messages USING brin (received_at);
