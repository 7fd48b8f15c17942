-- Provider jobs: an artifact names the provider's job (task, render, upload
-- request) so a webhook finds its run; a delivery whose body was not JSON (or
-- held a NUL, which JSONB refuses) is kept as it came, as bytes. Additive.
ALTER TABLE artifacts ADD COLUMN provider_job_id TEXT;
CREATE INDEX artifacts_provider_job ON artifacts (provider, provider_job_id)
    WHERE provider_job_id IS NOT NULL;
ALTER TABLE webhook_events ADD COLUMN raw_body BYTEA;
ALTER TABLE webhook_events ADD COLUMN job_id TEXT;
CREATE INDEX webhook_events_unprocessed ON webhook_events (run_id)
    WHERE processed_at IS NULL;
