-- The platform's schema. migrate.py creates it before its bookkeeping table; kept here so the
-- numbered files alone describe the whole database.
CREATE SCHEMA IF NOT EXISTS iot;
