-- A calendar whose provider refuses a push channel (Google's pushNotSupportedForRequestedResource):
-- it is polled at its own cadence instead, no channel is asked for again, and the audit does not
-- report it as lacking one.
ALTER TABLE calendars ADD COLUMN push_refused_at timestamptz;
