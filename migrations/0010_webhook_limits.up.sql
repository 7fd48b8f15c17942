-- A validly signed body is one delivery, whatever delivery id comes with it: a
-- replay inside the signature's tolerance window (the only time a replay still
-- verifies) under a new `X-Upload-Post-Delivery` is deduplicated. Only valid
-- events carry the hash, so a forged or unsigned copy can never take the slot
-- of the genuine delivery. Additive: existing rows get NULL. Applies after 0008 and 0009,
-- which touch other tables.
ALTER TABLE webhook_events ADD COLUMN body_sha256 BYTEA;
CREATE UNIQUE INDEX webhook_events_signed_body ON webhook_events (provider, body_sha256)
    WHERE body_sha256 IS NOT NULL;
