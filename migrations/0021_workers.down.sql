-- The heartbeat rows go with their table: older daemons neither write nor read them.
DROP FUNCTION orchestrator_worker_runs(TEXT, TEXT);
DROP TABLE workers;
