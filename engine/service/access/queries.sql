-- insert_token --
-- A new named token; its secret is known only to whoever it was printed for
INSERT INTO api_tokens (name, role, secret_hash)
VALUES (%(name)s, %(role)s, %(secret_hash)s)
RETURNING id, name, role, created_at;

-- list_tokens --
-- Every token, live ones first, newest first (never the hash)
SELECT id, name, role, created_at, revoked_at FROM api_tokens
ORDER BY revoked_at IS NOT NULL, created_at DESC, id DESC;

-- revoke_token --
-- Revoke the live token of a name; its console sessions end with it
WITH revoked AS (
    UPDATE api_tokens SET revoked_at = NOW()
    WHERE name = %(name)s AND revoked_at IS NULL
    RETURNING id, name, role, created_at, revoked_at
), sessions AS (
    UPDATE console_sessions SET revoked_at = NOW()
    WHERE token_id IN (SELECT id FROM revoked) AND revoked_at IS NULL
)
SELECT * FROM revoked;

-- live_token --
-- A live token by id, to compare its hash with what a client sent
SELECT id, name, role, secret_hash FROM api_tokens
WHERE id = %(id)s AND revoked_at IS NULL;

-- any_live_token --
-- Whether any named token is live (then every endpoint needs an identity)
SELECT EXISTS (SELECT 1 FROM api_tokens WHERE revoked_at IS NULL) AS any;

-- insert_session --
-- A console sign-in, for %(ttl)s
INSERT INTO console_sessions (id_hash, name, role, token_id, expires_at)
VALUES (%(id_hash)s, %(name)s, %(role)s, %(token_id)s, NOW() + %(ttl)s);

-- live_session --
-- A session that is neither expired nor revoked, nor opened by a revoked token
SELECT s.name, s.role, s.token_id FROM console_sessions s
LEFT JOIN api_tokens t ON t.id = s.token_id
WHERE s.id_hash = %(id_hash)s AND s.revoked_at IS NULL AND s.expires_at > NOW()
  AND (s.token_id IS NULL OR t.revoked_at IS NULL);

-- revoke_session --
-- Sign out: the session can never be used again
UPDATE console_sessions SET revoked_at = NOW()
WHERE id_hash = %(id_hash)s AND revoked_at IS NULL;

-- delete_old_sessions --
-- Sessions that ended more than a day ago, so the table stays small
DELETE FROM console_sessions WHERE expires_at < NOW() - INTERVAL '1 day';
