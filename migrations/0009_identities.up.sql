-- Named identities for the API and the console (docs/security.md): a token
-- per person or system, stored as the SHA-256 of its secret part (tokens are
-- 256 random bits, so a plain hash is enough: nothing to brute-force), and the
-- console's sign-in sessions, each bound to the token that opened it.
CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL CONSTRAINT api_tokens_name CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$'),
    role        TEXT NOT NULL CONSTRAINT api_tokens_role CHECK (role IN ('viewer', 'approver', 'admin')),
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    revoked_at  TIMESTAMPTZ
);
-- One live token per name: `tokens revoke NAME` means one thing.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
    -- NULL: opened with the bootstrap token (ORCHESTRATOR_API_TOKEN)
    token_id   BIGINT REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
