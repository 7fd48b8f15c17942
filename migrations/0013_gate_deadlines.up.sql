-- Gate deadlines (engine/runtime/deadlines.py). A run paused at a gate whose
-- spec declares a deadline stores it as `waiting_for.deadline` (`at`, `then`,
-- ...) with `wake_at` its due time. At that time a daemon's pass
-- (`time_out_gates`) inserts the system's answer: an approval row by approver
-- 'system' with payload `{"timed_out": <the deadline>}`, taken up by the claim
-- like any other, and shown by the seed's "recent approvals" query.
--
-- This index finds the gates that are due, as runs_timers finds the timers:
-- gates still waiting inside their deadline are never read.
CREATE INDEX runs_gate_deadlines ON runs (wake_at)
    WHERE status LIKE 'pending\_%' AND wake_at IS NOT NULL;

-- The approval check of migration 0008, and two rules of the deadline:
-- - the system's answer is taken only for a pause still waiting past its
--   deadline with nothing answered yet; otherwise it is dropped without an
--   error (a person, or another daemon's pass, answered first);
-- - a person's answer is refused once the deadline has passed (by the
--   database's clock), and after the system answered, with a message that
--   says the gate timed out and when.
CREATE OR REPLACE FUNCTION orchestrator_check_approval() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_status TEXT;
    waiting        JSONB;
    due            TIMESTAMPTZ;
    pause          BIGINT;
    earlier        hitl_approvals;
    last_answer    hitl_approvals;
    by_system      BOOLEAN := NEW.approver = 'system' AND coalesce(NEW.payload ? 'timed_out', false);
BEGIN
    -- NO KEY UPDATE: concurrent approvals of the run wait here for each other
    -- (FOR SHARE let them all through together); the foreign-key check's
    -- KEY SHARE does not conflict with it.
    SELECT status, waiting_for, wake_at INTO current_status, waiting, due
    FROM runs WHERE run_id = NEW.run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval refused: run % does not exist (gate %)', NEW.run_id, NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    pause := (waiting ->> 'pause_id')::bigint;
    IF by_system THEN
        NEW.pause_id := coalesce(NEW.pause_id, pause);
        IF current_status IS DISTINCT FROM 'pending_' || NEW.gate
           OR NOT coalesce(waiting ? 'deadline', false) OR due IS NULL OR due > NOW()
           OR NEW.pause_id IS DISTINCT FROM pause
           OR EXISTS (SELECT 1 FROM hitl_approvals
                      WHERE run_id = NEW.run_id AND consumed_at IS NULL) THEN
            RETURN NULL;
        END IF;
        NEW.consumed_at := NULL;
        NEW.voided_at := NULL;
        NEW.void_reason := NULL;
        RETURN NEW;
    END IF;
    IF current_status = 'pending_' || NEW.gate AND coalesce(waiting ? 'deadline', false)
       AND due <= NOW() AND (NEW.pause_id IS NULL OR NEW.pause_id = pause) THEN
        RAISE EXCEPTION 'approval refused: gate % of run % timed out at % (nobody answered by its deadline; the system will %)',
            NEW.gate, NEW.run_id, waiting #>> '{deadline,at}',
            orchestrator_deadline_action(waiting #>> '{deadline,then}')
            USING ERRCODE = 'check_violation';
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate
       OR NEW.pause_id IS DISTINCT FROM pause AND NEW.pause_id IS NOT NULL THEN
        -- Too late for this question: say so when its answer was the system's.
        SELECT * INTO last_answer FROM hitl_approvals
        WHERE run_id = NEW.run_id ORDER BY created_at DESC, id DESC LIMIT 1;
        IF FOUND AND last_answer.gate = NEW.gate AND last_answer.approver = 'system'
           AND coalesce(last_answer.payload ? 'timed_out', false)
           AND (NEW.pause_id IS NULL OR NEW.pause_id = last_answer.pause_id) THEN
            RAISE EXCEPTION 'approval refused: gate % of run % timed out at % (nobody answered by its deadline; the system chose to %)',
                NEW.gate, NEW.run_id, last_answer.payload #>> '{timed_out,at}',
                orchestrator_deadline_action(last_answer.payload #>> '{timed_out,then}')
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate THEN
        RAISE EXCEPTION 'approval refused: run % is not waiting at gate % (status is %)',
            NEW.run_id, NEW.gate, current_status
            USING ERRCODE = 'check_violation';
    END IF;
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

-- What a deadline's action does, in the words of the refusal messages.
CREATE FUNCTION orchestrator_deadline_action(action TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE action
        WHEN 'approve' THEN 'approve it'
        WHEN 'fail' THEN 'fail the run'
        WHEN 'escalate' THEN 'escalate it'
        ELSE 'reject it'
    END
$$;
