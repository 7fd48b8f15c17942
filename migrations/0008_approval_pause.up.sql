-- An approval answers one question: the pause it was given for.
--
-- A pause is identified by the lease epoch of the execution that paused the
-- run (`runs.waiting_for ->> 'pause_id'`, set by `pause_run`): epochs only
-- grow, and one execution pauses at most once, so no two pauses of a run share
-- it. Each approval records the pause it answers (`pause_id`, copied by the
-- trigger when an INSERT does not name it, refused when it names another).
-- Of the approvals for one pause exactly one is accepted: the trigger locks the
-- run's row, so concurrent INSERTs queue behind each other and each sees the
-- one before it; the unique index holds the same line for transactions whose
-- snapshot is older than the lock (REPEATABLE READ, SERIALIZABLE).
-- When a run leaves a pause without consuming its approval (cancelled, failed,
-- requeued, paused again), the approval is voided: `voided_at` and
-- `void_reason` say when and why, and `consumed_at` is set too, so that
-- everything that looks for unconsumed approvals (the claims of daemons older
-- than this migration during a rolling upgrade, the seed's queries) never sees
-- it as waiting.

ALTER TABLE hitl_approvals ADD COLUMN pause_id BIGINT;
ALTER TABLE hitl_approvals ADD COLUMN voided_at TIMESTAMPTZ;
ALTER TABLE hitl_approvals ADD COLUMN void_reason TEXT;

-- Runs paused before this migration: their pause is the epoch they paused at,
-- answered by their oldest waiting approval; any other is voided.
UPDATE runs SET waiting_for = waiting_for || jsonb_build_object('pause_id', lease_epoch)
WHERE status LIKE 'pending\_%' AND waiting_for ? 'gate' AND NOT waiting_for ? 'pause_id';
UPDATE hitl_approvals a SET pause_id = (r.waiting_for ->> 'pause_id')::bigint
FROM runs r
WHERE a.run_id = r.run_id AND a.consumed_at IS NULL AND r.status = 'pending_' || a.gate
  AND a.id = (SELECT min(b.id) FROM hitl_approvals b
              WHERE b.run_id = a.run_id AND b.consumed_at IS NULL AND b.gate = a.gate);
UPDATE hitl_approvals SET consumed_at = NOW(), voided_at = NOW(),
    void_reason = 'voided by migration 0008: it did not answer the pause its run waits at'
WHERE consumed_at IS NULL AND pause_id IS NULL;

CREATE UNIQUE INDEX hitl_approvals_one_per_pause ON hitl_approvals (run_id, pause_id);

CREATE OR REPLACE FUNCTION orchestrator_check_approval() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_status TEXT;
    waiting        JSONB;
    pause          BIGINT;
    earlier        hitl_approvals;
BEGIN
    -- NO KEY UPDATE: concurrent approvals of the run wait here for each other
    -- (FOR SHARE let them all through together); the foreign-key check's
    -- KEY SHARE does not conflict with it.
    SELECT status, waiting_for INTO current_status, waiting
    FROM runs WHERE run_id = NEW.run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval refused: run % does not exist (gate %)', NEW.run_id, NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate THEN
        RAISE EXCEPTION 'approval refused: run % is not waiting at gate % (status is %)',
            NEW.run_id, NEW.gate, current_status
            USING ERRCODE = 'check_violation';
    END IF;
    pause := (waiting ->> 'pause_id')::bigint;
    IF NEW.pause_id IS NULL THEN
        NEW.pause_id := pause;
    ELSIF NEW.pause_id IS DISTINCT FROM pause THEN
        RAISE EXCEPTION 'approval refused: run % at gate % waits at pause %, not at pause % (that question was already answered or withdrawn)',
            NEW.run_id, NEW.gate, coalesce(pause::text, '(unnumbered)'), NEW.pause_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO earlier FROM hitl_approvals
    WHERE run_id = NEW.run_id AND consumed_at IS NULL
    ORDER BY id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'approval refused: run % already has approval % (% by %) waiting at gate %',
            NEW.run_id, earlier.id, earlier.decision, coalesce(earlier.approver, 'an unnamed approver'),
            NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.consumed_at := NULL;
    NEW.voided_at := NULL;
    NEW.void_reason := NULL;
    RETURN NEW;
END $$;

-- A run that leaves its pause (to anything but `running`, which is a claim
-- taking the approval up) voids what no worker consumed: no later pause can
-- be answered by it.
CREATE FUNCTION orchestrator_void_approvals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hitl_approvals SET consumed_at = NOW(), voided_at = NOW(),
        void_reason = format('voided: run %s left pause %s unanswered (now %s)',
                             NEW.run_id, coalesce(pause_id::text, '(unnumbered)'), NEW.status)
    WHERE run_id = NEW.run_id AND consumed_at IS NULL
      AND (NEW.status NOT LIKE 'pending\_%'
           OR pause_id IS DISTINCT FROM (NEW.waiting_for ->> 'pause_id')::bigint);
    RETURN NULL;
END $$;
CREATE TRIGGER runs_void_approvals AFTER UPDATE OF status, waiting_for ON runs
    FOR EACH ROW
    WHEN (NEW.status <> 'running' AND (OLD.status IS DISTINCT FROM NEW.status
                                       OR OLD.waiting_for IS DISTINCT FROM NEW.waiting_for))
    EXECUTE FUNCTION orchestrator_void_approvals();
