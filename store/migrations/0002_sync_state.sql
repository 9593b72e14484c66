-- Sync state of each account: shard epochs (fencing), calendars with their delta tokens,
-- events, push channels, and the transactional change feed.
-- Runs with search_path set to the service schema; do not qualify names here.

-- Fencing: a replica takes a shard by bumping its epoch (UPDATE ... RETURNING epoch); every
-- actor write checks the epoch it holds with SELECT ... FOR SHARE and aborts when it is stale.
CREATE TABLE shard_epochs (
    shard      int PRIMARY KEY CHECK (shard >= 0),
    epoch      bigint NOT NULL DEFAULT 0,
    owner      text,
    taken_at   timestamptz
);

-- One row per calendar of an account; calendar id "primary" is the account's default one.
CREATE TABLE calendars (
    account_id     uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id             text NOT NULL,
    name           text NOT NULL DEFAULT '',
    is_primary     boolean NOT NULL DEFAULT false,
    time_zone      text,
    access_role    text,
    sync_enabled   boolean NOT NULL DEFAULT true,   -- false: listed but not synced (not_synced)
    delta_token    text,                            -- set when the last round completed
    sync_cursor    text,                            -- set while a round is between pages
    round          bigint NOT NULL DEFAULT 0,       -- current full-sync round (mark-and-sweep)
    full_round     boolean NOT NULL DEFAULT false,  -- the round in progress is a full sync
    window_start   timestamptz,
    window_end     timestamptz,
    last_synced_at timestamptz,
    removed_at     timestamptz,                     -- gone from the provider's calendar list
    PRIMARY KEY (account_id, id)
);

-- Events as synced (instances of recurring series, singleEvents semantics).
CREATE TABLE events (
    account_id         uuid NOT NULL,
    calendar_id        text NOT NULL,
    id                 text NOT NULL,
    status             text NOT NULL CHECK (status IN ('confirmed', 'tentative', 'cancelled')),
    all_day            boolean NOT NULL,
    start_date         date,
    end_date           date,          -- exclusive
    start_at           timestamptz,
    end_at             timestamptz,
    time_zone          text,
    title              text,
    description        text,
    location           text,
    organizer_email    text,
    attendees_count    int NOT NULL DEFAULT 0,
    etag               text,
    ical_uid           text,
    recurring_event_id text,
    provider_updated_at timestamptz,
    raw                jsonb NOT NULL DEFAULT '{}',
    seen_round         bigint NOT NULL DEFAULT 0,  -- the full-sync round that last saw it
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, calendar_id, id),
    FOREIGN KEY (account_id, calendar_id) REFERENCES calendars (account_id, id) ON DELETE CASCADE,
    CHECK (all_day AND start_date IS NOT NULL AND end_date IS NOT NULL
           OR NOT all_day AND start_at IS NOT NULL AND end_at IS NOT NULL)
);

CREATE INDEX events_start_idx ON events (account_id, calendar_id, start_at);

-- Push channels (Google watch channels, Graph subscriptions). The gateway finds a channel by
-- (provider, id) and compares a hash of the token it was sent with token_hash in constant time.
CREATE TABLE push_channels (
    provider     text NOT NULL CHECK (provider IN ('google', 'microsoft')),
    id           text NOT NULL,
    account_id   uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    calendar_id  text NOT NULL,
    shard        int NOT NULL CHECK (shard >= 0),
    resource_id  text,
    token_hash   bytea NOT NULL,               -- sha256 of the channel token / clientState
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, id)
);

CREATE INDEX push_channels_account_idx ON push_channels (account_id, calendar_id);

-- The change feed: written in the same transaction as the change, published to Redis by the
-- relay in id order, marked published afterwards. Consumers dedupe by id.
CREATE TABLE changes (
    id           bigserial PRIMARY KEY,
    account_id   uuid NOT NULL,
    calendar_id  text NOT NULL,
    event_id     text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    origin       text NOT NULL CHECK (origin IN ('provider', 'outbound')),
    etag         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX changes_unpublished_idx ON changes (id) WHERE published_at IS NULL;
