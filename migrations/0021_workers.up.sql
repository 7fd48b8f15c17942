-- Workers (docs/operations.md#workers): each daemon's heartbeat row, so that an
-- operator sees which daemons are live, what each runs, and which live runs no
-- live daemon can take (a workflow, or a graph version, that none of them has).
-- A daemon writes its row when it starts and with every heartbeat (in the
-- heartbeat's own statement), and deletes it when it stops cleanly; a daemon that
-- died leaves a row that is shown as gone once `live_until` has passed, and that
-- the next daemon to start removes after a day. Additive: a table of its own,
-- which older daemons never write.
CREATE TABLE workers (
    worker_id   TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INT NOT NULL,
    version     TEXT NOT NULL,  -- the engine's package version
    -- The workflows it runs, each at its graph version: {"name": "version"}.
    workflows   JSONB NOT NULL,
    concurrency INT NOT NULL,
    runs_held   INT NOT NULL DEFAULT 0,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- Live until then unless seen again: two lease TTLs of its own past last_seen,
    -- set by the worker, so that every reader agrees whatever its own settings.
    live_until  TIMESTAMPTZ NOT NULL
);

-- Whether a live worker takes runs of `p_workflow` at graph version `p_version`
-- (NULL: a run not begun, which any version of its workflow may start): the
-- claim's own condition (`mine` in claim_runs), over every live worker.
CREATE FUNCTION orchestrator_worker_runs(p_workflow TEXT, p_version TEXT)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM workers
        WHERE live_until > NOW() AND workflows ? p_workflow
          AND (p_version IS NULL OR workflows ->> p_workflow = p_version))
$$;
