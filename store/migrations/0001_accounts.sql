-- Accounts (one per connected Google/Microsoft user) and their encrypted OAuth credentials.
-- Runs with search_path set to the service schema; do not qualify names here.

CREATE TABLE accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider         text NOT NULL CHECK (provider IN ('google', 'microsoft')),
    external_user_id text NOT NULL,
    shard            int NOT NULL CHECK (shard >= 0),
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'needs_reauth', 'quarantined', 'disabled')),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, external_user_id)
);

-- Each replica loads the accounts of the shards it owns.
CREATE INDEX accounts_shard_idx ON accounts (shard);

-- Tokens are AES-GCM ciphertexts (nonce || ciphertext || tag) under key_id; see store/crypto.py.
CREATE TABLE credentials (
    account_id              uuid PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    key_id                  text NOT NULL,
    refresh_token           bytea NOT NULL,
    access_token            bytea,
    access_token_expires_at timestamptz,
    scopes                  text[] NOT NULL DEFAULT '{}',
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Key rotation finds the rows still under an old key.
CREATE INDEX credentials_key_id_idx ON credentials (key_id);
