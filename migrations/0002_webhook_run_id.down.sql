ALTER TABLE webhook_events DROP COLUMN run_id;
