-- Back to migration 0008's approval check. Runs paused with a deadline keep
-- `waiting_for.deadline`: older code ignores it, and their gates wait for a person.
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
DROP FUNCTION orchestrator_deadline_action(TEXT);
DROP INDEX runs_gate_deadlines;
