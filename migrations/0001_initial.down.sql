DROP FUNCTION orchestrator_fence(TEXT, BIGINT, INTERVAL);
DROP TABLE hitl_approvals;
DROP FUNCTION orchestrator_check_approval();
DROP FUNCTION orchestrator_notify_approval();
DROP TABLE webhook_events;
DROP TABLE artifacts;
DROP TABLE orchestration_checkpoints;
DROP TABLE runs;
DROP FUNCTION orchestrator_notify_run();
