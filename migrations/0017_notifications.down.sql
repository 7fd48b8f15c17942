-- The notification artifacts stay (they are the record of what happened); their
-- outbox and delivery rows go with the tables.
DROP TRIGGER notification_deliveries_settle ON notification_deliveries;
DROP FUNCTION orchestrator_settle_notification();
DROP TRIGGER hitl_approvals_notify_timeout ON hitl_approvals;
DROP FUNCTION orchestrator_notify_timeout();
DROP TRIGGER runs_notify_update ON runs;
DROP TRIGGER runs_notify_insert ON runs;
DROP FUNCTION orchestrator_notify_run_change();
DROP FUNCTION orchestrator_record_notification(runs, TEXT, TEXT, TIMESTAMPTZ, TEXT, JSONB);
DROP TABLE notification_deliveries;
DROP TABLE notification_outbox;
