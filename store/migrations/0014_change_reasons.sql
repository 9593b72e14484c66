-- Why an event left the store, on each `deleted` change: the provider deleted it, it left the
-- sync window, or its calendar was deselected by the user. NULL on created/updated changes.
ALTER TABLE changes ADD COLUMN reason text CHECK (
    reason IS NULL OR reason IN ('deleted_at_provider', 'left_window', 'calendar_deselected')
);
