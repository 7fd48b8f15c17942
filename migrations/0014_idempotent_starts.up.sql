-- Idempotent starts (docs/flow-control.md): a run may carry the key its client
-- made up for the request that created it, unique per project, so that a retry
-- of the same request finds the run it created instead of creating another. The
-- index holds the line for every writer (the API, the CLI, psql); the digest of
-- what the request asked for (workflow, payload, priority, not-before) tells a
-- retry from a different request that reuses the key.
ALTER TABLE runs ADD COLUMN idempotency_key TEXT
    CONSTRAINT runs_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 200);
ALTER TABLE runs ADD COLUMN request_digest TEXT;
CREATE UNIQUE INDEX runs_idempotency ON runs (project, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
