DROP INDEX runs_idempotency;
ALTER TABLE runs DROP COLUMN request_digest;
ALTER TABLE runs DROP COLUMN idempotency_key;
