-- The connect flow's start tokens are single use: each one's nonce is recorded when a flow
-- starts with it, until the token would have expired anyway (connect/start_token.py).
CREATE TABLE oauth_start_nonces (
    nonce      text PRIMARY KEY CHECK (length(nonce) BETWEEN 1 AND 128),
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_start_nonces_expiry_idx ON oauth_start_nonces (expires_at);
