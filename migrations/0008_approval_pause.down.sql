DROP TRIGGER runs_void_approvals ON runs;
DROP FUNCTION orchestrator_void_approvals();
DROP INDEX hitl_approvals_one_per_pause;
CREATE OR REPLACE FUNCTION orchestrator_check_approval() RETURNS trigger LANGUAGE plpgsql AS $$
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
ALTER TABLE hitl_approvals DROP COLUMN void_reason;
ALTER TABLE hitl_approvals DROP COLUMN voided_at;
ALTER TABLE hitl_approvals DROP COLUMN pause_id;
