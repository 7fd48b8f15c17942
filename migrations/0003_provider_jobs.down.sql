DROP INDEX webhook_events_unprocessed;
ALTER TABLE webhook_events DROP COLUMN job_id;
ALTER TABLE webhook_events DROP COLUMN raw_body;
DROP INDEX artifacts_provider_job;
ALTER TABLE artifacts DROP COLUMN provider_job_id;
