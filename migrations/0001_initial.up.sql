-- The seed's five tables (docs/run-state-and-checkpoints.md) with the engine's
-- additive columns, the NOTIFY triggers and the approval guard.

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    project          TEXT NOT NULL CONSTRAINT runs_project_slug CHECK (project ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    status           TEXT NOT NULL DEFAULT 'queued',
    payload          JSONB NOT NULL DEFAULT '{}'::jsonb,
    result           JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    workflow         TEXT NOT NULL DEFAULT 'production',
    graph_version    TEXT,
    error            JSONB,
    attempt          INT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    lease_epoch      BIGINT NOT NULL DEFAULT 0,
    wake_at          TIMESTAMPTZ,
    waiting_for      JSONB,
    priority         INT NOT NULL DEFAULT 0
);
-- The claim scans only live runs: the index stays small however many
-- finished runs the table holds.
CREATE INDEX runs_claimable ON runs (priority DESC, created_at)
    WHERE status NOT IN ('published', 'failed', 'cancelled');
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_project_created ON runs (project, created_at DESC);

CREATE TABLE orchestration_checkpoints (
    run_id        TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    state         JSONB NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    checkpoint_id TEXT,
    step          INT
);

CREATE TABLE artifacts (
    id              BIGSERIAL PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    provider        TEXT,
    persona         TEXT,
    url             TEXT,
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    idempotency_key TEXT UNIQUE,
    status          TEXT NOT NULL DEFAULT 'done'
);
CREATE INDEX artifacts_run_created ON artifacts (run_id, created_at);

CREATE TABLE webhook_events (
    id               BIGSERIAL PRIMARY KEY,
    provider         TEXT NOT NULL,
    signature_status TEXT NOT NULL
        CHECK (signature_status IN ('valid', 'invalid', 'unsigned', 'verified_by_fetch')),
    received_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    delivery_id      TEXT,
    headers          JSONB NOT NULL DEFAULT '{}'::jsonb,
    payload          JSONB,
    processed_at     TIMESTAMPTZ,
    UNIQUE (provider, delivery_id)
);
CREATE INDEX webhook_events_received ON webhook_events (received_at DESC);

CREATE TABLE hitl_approvals (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    gate        TEXT NOT NULL,
    approver    TEXT,
    approver_ip TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    decision    TEXT NOT NULL DEFAULT 'approved' CHECK (decision IN ('approved', 'rejected')),
    comment     TEXT,
    payload     JSONB,
    consumed_at TIMESTAMPTZ
);
CREATE INDEX hitl_approvals_created ON hitl_approvals (created_at DESC);
CREATE INDEX hitl_approvals_unconsumed ON hitl_approvals (run_id, gate) WHERE consumed_at IS NULL;

-- Wake the daemons: a new run, a run put back in the queue, a new approval.
CREATE FUNCTION orchestrator_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orchestrator_runs_v1', NEW.run_id);
    RETURN NULL;
END $$;
CREATE TRIGGER runs_notify_queued AFTER INSERT OR UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION orchestrator_notify_run();

CREATE FUNCTION orchestrator_notify_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orchestrator_approvals_v1', NEW.run_id);
    RETURN NULL;
END $$;
CREATE TRIGGER hitl_approvals_notify AFTER INSERT ON hitl_approvals
    FOR EACH ROW EXECUTE FUNCTION orchestrator_notify_approval();

-- An approval is accepted only for a run that is waiting at that very gate and
-- has no approval for it yet, however it is inserted (CLI, API, psql).
CREATE FUNCTION orchestrator_check_approval() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_status TEXT;
BEGIN
    SELECT status INTO current_status FROM runs WHERE run_id = NEW.run_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval refused: run % does not exist (gate %)', NEW.run_id, NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate THEN
        RAISE EXCEPTION 'approval refused: run % is not waiting at gate % (status is %)',
            NEW.run_id, NEW.gate, current_status
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM hitl_approvals
               WHERE run_id = NEW.run_id AND gate = NEW.gate AND consumed_at IS NULL) THEN
        RAISE EXCEPTION 'approval refused: run % already has an unconsumed approval at gate % (status is %)',
            NEW.run_id, NEW.gate, current_status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hitl_approvals_check BEFORE INSERT ON hitl_approvals
    FOR EACH ROW EXECUTE FUNCTION orchestrator_check_approval();

-- Fencing: every checkpoint write of a worker starts with this call in the
-- same transaction. It renews the lease, and fails the transaction if the
-- worker no longer holds the run at its epoch.
CREATE FUNCTION orchestrator_fence(p_run_id TEXT, p_epoch BIGINT, p_ttl INTERVAL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE runs SET lease_expires_at = NOW() + p_ttl
    WHERE run_id = p_run_id AND lease_epoch = p_epoch AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lease lost: run % is no longer held at epoch %', p_run_id, p_epoch
            USING ERRCODE = 'OR001';
    END IF;
END $$;
