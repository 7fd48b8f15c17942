-- Runs parked for room in their project go back to the queue, where they were.
UPDATE runs SET status = 'queued', wake_at = NULL, waiting_for = NULL
WHERE status = 'waiting_limit' AND starts_with(waiting_for ->> 'limit', 'project:');
-- Runs parked at a provider's limit become timers due now: code older than this
-- migration knows no 'waiting_limit' and would never resume them, but it resumes
-- a due timer, and its step, which asks for no slot, goes on as if none were needed.
UPDATE runs SET status = 'waiting_timer', wake_at = NOW(),
    waiting_for = jsonb_build_object('timer', NOW(), 'pause_id', waiting_for -> 'pause_id')
WHERE status = 'waiting_limit';
DROP TRIGGER runs_project_room ON runs;
DROP FUNCTION orchestrator_project_room();
DROP FUNCTION orchestrator_grant_room(TEXT);
DROP TRIGGER runs_project_limit ON runs;
DROP FUNCTION orchestrator_project_limit();
DROP FUNCTION orchestrator_project_taken(TEXT, TEXT, BOOLEAN);
DROP FUNCTION orchestrator_take_request(TEXT);
DROP TRIGGER runs_park_at_limit ON runs;
DROP FUNCTION orchestrator_park_at_limit();
DROP TRIGGER runs_release_slots ON runs;
DROP FUNCTION orchestrator_release_ended();
DROP TABLE flow_slots;
DROP FUNCTION orchestrator_slots_released();
DROP FUNCTION orchestrator_grant_slots(TEXT);
DROP FUNCTION orchestrator_take_slot(TEXT, TEXT, TEXT);
DROP FUNCTION orchestrator_slots_held(TEXT);
DROP INDEX runs_running_by_project;
DROP INDEX runs_limit_due;
DROP INDEX runs_limit_waits;
DROP TABLE flow_limits;
