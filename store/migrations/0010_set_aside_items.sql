-- Provider items a sync could not read or store (a malformed event, a value Postgres refuses):
-- set aside with their raw JSON and the reason, so their page and its cursor advance and one bad
-- item never stalls a calendar. A row is cleared when the item later syncs (a full round, an
-- operator's resync, an edit at the provider) or is deleted there.
CREATE TABLE set_aside_items (
    account_id  uuid NOT NULL,
    calendar_id text NOT NULL,
    item_id     text NOT NULL,                    -- the provider's id, or "sha256:<hex>" of raw
    reason      text NOT NULL,
    raw         jsonb NOT NULL,
    attempts    integer NOT NULL DEFAULT 1,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, calendar_id, item_id),
    FOREIGN KEY (account_id, calendar_id) REFERENCES calendars (account_id, id) ON DELETE CASCADE
);

-- How many items of the calendar are set aside: a page clears rows only when there are some.
ALTER TABLE calendars ADD COLUMN set_aside integer NOT NULL DEFAULT 0;
