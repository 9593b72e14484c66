-- Which calendars the user chose to sync, apart from what the provider allows (`sync_enabled`).
-- NULL: the default rule (the primary calendar, those the user owns or can write to, and those
-- of unknown role; see store/calendars.py `selected_by_default`); true/false: the user's choice.
ALTER TABLE calendars ADD COLUMN selected boolean;
-- Calendars synced before the choice existed stay synced: an upgrade removes nobody's events.
UPDATE calendars SET selected = true WHERE delta_token IS NOT NULL OR window_start IS NOT NULL;
