-- Correlate a provider's delivery with the run it concerns (the seed names
-- this as a future migration). Additive: existing rows get NULL.
ALTER TABLE webhook_events ADD COLUMN run_id TEXT REFERENCES runs (run_id) ON DELETE SET NULL;
CREATE INDEX webhook_events_run ON webhook_events (run_id) WHERE run_id IS NOT NULL;
