-- Callbacks that name our idempotency key (docs/flow-control.md, "No duplicate
-- provider jobs"). A provider that takes a callback URL gets ours with `?key=`
-- the job's idempotency key; the ingress stores it with the delivery, so a step
-- re-executed with only its intent recorded (the daemon died between the
-- provider accepting the job and our recording its id) finds the job the
-- provider made for that key and adopts it instead of submitting again.
ALTER TABLE webhook_events ADD COLUMN callback_key TEXT
    CONSTRAINT webhook_events_callback_key_length CHECK (length(callback_key) <= 300);
CREATE INDEX webhook_events_callback_key ON webhook_events (provider, callback_key)
    WHERE callback_key IS NOT NULL;
