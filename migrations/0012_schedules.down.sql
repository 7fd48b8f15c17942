DROP TRIGGER schedules_notify ON schedules;
DROP FUNCTION orchestrator_notify_schedule();
DROP INDEX runs_schedule_fire;
ALTER TABLE runs DROP COLUMN schedule_fire_time, DROP COLUMN schedule_id;
DROP TABLE schedules;
