-- Per-account sync preferences set through the admin API (store/preferences.py). An account
-- without a row uses the replica's defaults; NULL windows mean the configured ones
-- (IW_SYNC_WINDOW_BACK_DAYS / IW_SYNC_WINDOW_AHEAD_DAYS).

CREATE TABLE account_preferences (
    account_id             uuid PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    auto_sync              boolean NOT NULL DEFAULT true,
    sync_frequency_minutes int NOT NULL CHECK (sync_frequency_minutes BETWEEN 1 AND 1440),
    sync_window_back_days  int CHECK (sync_window_back_days BETWEEN 0 AND 3650),
    sync_window_ahead_days int CHECK (sync_window_ahead_days BETWEEN 1 AND 3650),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
