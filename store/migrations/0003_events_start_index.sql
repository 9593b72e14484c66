-- The start-time index no longer shares the primary key's leading columns. With both starting
-- (account_id, calendar_id), a planner without statistics for a calendar still filling up (an
-- initial sync) may pick the start-time index for a lookup by id and filter the calendar's
-- every row, making each page cost more than the last.
DROP INDEX IF EXISTS events_start_idx;
CREATE INDEX events_account_start_idx ON events (account_id, start_at);
