-- The outbox: applications ask us to write events into their users' calendars.
-- Runs with search_path set to the service schema; do not qualify names here.

-- Applications insert rows here in their own transaction, so the request exists if and only if
-- their change committed. The account actor reads its due rows, writes to the provider and
-- records the outcome on the row. The CHECKs mirror providers.models.EventTiming's rules so that
-- every row the reader may see converts to the shared dataclasses: a malformed request is refused
-- at the application's INSERT instead of failing in the actor over and over.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    operation       text NOT NULL
                    CHECK (operation IN ('UPSERT_EVENT', 'CANCEL_EVENT', 'REBUILD_ALL')),
    workspace_id    text NOT NULL,
    source_type     text,            -- the source (with event_type): all but REBUILD_ALL
    source_id       text,
    event_type      text,            -- e.g. BLOCKER_DEADLINE
    calendar_id     text NOT NULL DEFAULT 'primary',
    version         bigint NOT NULL DEFAULT 0 CHECK (version >= 0),  -- per source
    title           text,            -- content: UPSERT_EVENT only
    description     text,
    all_day         boolean,
    start_date      date,
    end_date        date,            -- exclusive
    start_at        timestamptz,
    end_at          timestamptz,
    time_zone       text,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'skipped', 'dead_letter')),
    attempts        int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,     -- when it became done or skipped (retention counts from it)
    CONSTRAINT outbox_source_check CHECK (
        operation = 'REBUILD_ALL'
        OR source_type IS NOT NULL AND source_id IS NOT NULL AND event_type IS NOT NULL
    ),
    CONSTRAINT outbox_content_check CHECK (
        operation <> 'UPSERT_EVENT'
        -- all_day IS NOT NULL: with a NULL all_day the test below could be NULL, which passes.
        OR title IS NOT NULL AND all_day IS NOT NULL AND (
            all_day AND start_date IS NOT NULL AND end_date IS NOT NULL AND end_date > start_date
            OR NOT all_day AND start_at IS NOT NULL AND end_at IS NOT NULL AND end_at >= start_at
        )
    )
);

-- The actor's read: its account's pending rows due by now, in id order. Partial, so done rows
-- kept for the retention period cost this index nothing.
CREATE INDEX outbox_due_idx ON outbox (account_id, next_attempt_at, id) WHERE state = 'pending';
-- The daily cleanup deletes finished rows by age.
CREATE INDEX outbox_finished_idx ON outbox (done_at) WHERE state IN ('done', 'skipped');
-- Operators page through dead letters by id; there are few, so a small partial index suffices.
CREATE INDEX outbox_dead_letter_idx ON outbox (id) WHERE state = 'dead_letter';

-- An insert wakes the owning actor at once; the fallback poll only covers a lost listener. One
-- notification per account and statement (a transition table), and NOTIFY folds identical
-- payloads within a transaction, so a bulk insert costs a handful of notifications. Channels are
-- per database: replicas of another schema in the same database get a spurious wake-up for an
-- account they do not run, which they ignore.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iw_outbox', a.account_id::text)
    FROM (SELECT DISTINCT account_id FROM inserted) AS a;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Which provider event stands for a source. A row is written BEFORE the provider call (state
-- creating), so a create whose outcome was lost is retried under the same provider-side id,
-- derived from (id, generation); generation goes up whenever the event must be created anew.
-- A deleted binding keeps provider_event_id so the inbound echo of our own delete is recognized.
CREATE TABLE event_bindings (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workspace_id      text NOT NULL,
    source_type       text NOT NULL,
    source_id         text NOT NULL,
    event_type        text NOT NULL,
    calendar_id       text NOT NULL,
    generation        int NOT NULL DEFAULT 0 CHECK (generation >= 0),
    state             text NOT NULL DEFAULT 'creating'
                      CHECK (state IN ('creating', 'live', 'deleted')),
    provider_event_id text,
    etag              text,
    applied_version   bigint,
    content           jsonb,  -- EventContent of the last applied upsert (dates as ISO strings)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, workspace_id, source_type, source_id, event_type)
);

-- Inbound sync asks "is this event one of ours?" by the provider's event id (echo detection).
CREATE INDEX event_bindings_event_idx
    ON event_bindings (account_id, calendar_id, provider_event_id);
-- REBUILD_ALL walks a workspace's bindings in one calendar.
CREATE INDEX event_bindings_workspace_idx
    ON event_bindings (account_id, workspace_id, calendar_id);

-- Conflicts recorded under ConflictPolicy.RECORD: our intended content and the provider's copy,
-- for the application to resolve. outbox_id has no foreign key: cleanup may delete the item.
CREATE TABLE outbox_conflicts (
    id            bigserial PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    binding_id    uuid NOT NULL REFERENCES event_bindings (id) ON DELETE CASCADE,
    outbox_id     bigint,
    local         jsonb NOT NULL,
    provider_copy jsonb NOT NULL,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);

CREATE INDEX outbox_conflicts_binding_idx ON outbox_conflicts (binding_id);
CREATE INDEX outbox_conflicts_open_idx ON outbox_conflicts (account_id) WHERE resolved_at IS NULL;

-- What an upsert does when the user edited the event since our last write (outbox.model).
ALTER TABLE accounts ADD COLUMN conflict_policy text NOT NULL DEFAULT 'local_wins'
    CHECK (conflict_policy IN ('local_wins', 'provider_wins', 'record'));

-- The change feed names writes of ours after the outbox that asked for them. The old CHECK is
-- dropped first: it would refuse the renamed rows.
ALTER TABLE changes DROP CONSTRAINT changes_origin_check;
UPDATE changes SET origin = 'outbox' WHERE origin = 'outbound';
ALTER TABLE changes ADD CONSTRAINT changes_origin_check CHECK (origin IN ('provider', 'outbox'));
