DROP INDEX webhook_events_callback_key;
ALTER TABLE webhook_events DROP COLUMN callback_key;
