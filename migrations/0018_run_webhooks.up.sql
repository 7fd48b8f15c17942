-- Completion webhooks (docs/flow-control.md#completion-webhooks): a run may carry a
-- URL that its gate, publish, failure and cancellation are POSTed to, signed, through
-- the notifications' outbox (migration 0017) as the channel 'run-webhook'. The URL
-- is checked when the run is created (http(s), no internal address unless allowed)
-- and again before each delivery.
ALTER TABLE runs ADD COLUMN webhook_url TEXT
    CONSTRAINT runs_webhook_url_length CHECK (length(webhook_url) <= 2048);
