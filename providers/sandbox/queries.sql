-- create_schema --
-- The sandbox's own SQLite file (never the engine's database): created on its first
-- start; deleting the file while the sandbox is stopped resets it
CREATE TABLE IF NOT EXISTS jobs (
    kind TEXT NOT NULL,  -- the job's class: each provider's ids are its own
    id TEXT NOT NULL,
    body TEXT NOT NULL,  -- the job as JSON, written once when accepted
    webhook_due REAL,  -- time.time() its webhooks go out; NULL once sent, or never due
    PRIMARY KEY (kind, id)
) STRICT;
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY,  -- as in /_sandbox/files/<name>
    caption TEXT NOT NULL,
    label TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    idempotency_key TEXT,
    run_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    at REAL NOT NULL  -- time.time()
) STRICT;

-- insert_job --
INSERT INTO jobs (kind, id, body, webhook_due) VALUES (:kind, :id, :body, :webhook_due);

-- job --
SELECT body FROM jobs WHERE kind = :kind AND id = :id;

-- webhooks_due --
-- Jobs whose webhooks were not sent yet, soonest first (to schedule again on start)
SELECT body, webhook_due FROM jobs
WHERE kind = :kind AND webhook_due IS NOT NULL
ORDER BY webhook_due;

-- webhooks_sent --
UPDATE jobs SET webhook_due = NULL WHERE kind = :kind AND id = :id;

-- insert_file --
INSERT INTO files (name, caption, label) VALUES (:name, :caption, :label);

-- file --
SELECT name, caption, label FROM files WHERE name = :name;

-- insert_call --
INSERT INTO calls (provider, operation, idempotency_key, run_id, method, path, status_code, at)
VALUES (:provider, :operation, :idempotency_key, :run_id, :method, :path, :status_code, :at);

-- calls --
-- The call log in the order received, filtered by whichever of them is not NULL
SELECT provider, operation, idempotency_key, run_id, method, path, status_code, at FROM calls
WHERE (:provider IS NULL OR provider = :provider)
  AND (:operation IS NULL OR operation = :operation)
  AND (:run_id IS NULL OR run_id = :run_id)
ORDER BY seq;

-- count_calls --
-- Calls a provider received since :since (its rate-limit window)
SELECT count(*) AS n FROM calls WHERE provider = :provider AND at >= :since;

-- clear_calls --
DELETE FROM calls;
