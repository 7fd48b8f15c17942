ALTER TABLE runs DROP COLUMN webhook_url;
