DROP INDEX webhook_events_signed_body;
ALTER TABLE webhook_events DROP COLUMN body_sha256;
