-- Cluster-wide maintenance (docs/maintenance.md): one row per job and period, claimed by the
-- replica holding the maintenance lease before it runs the job, so a period completes once.
-- Runs with search_path set to the service schema; do not qualify names here.

CREATE TABLE maintenance_runs (
    job          text NOT NULL,
    period_start timestamptz NOT NULL,
    holder       text NOT NULL,                  -- lease holder token of the current attempt
    attempts     int NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,                    -- set once, by a completed attempt
    outcome      text CHECK (outcome IN ('done', 'failed')),
    details      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (job, period_start)
);

-- The cleanup finds stored events that ended before a calendar's window by their end.
CREATE INDEX events_end_idx ON events (end_at) WHERE NOT all_day;
CREATE INDEX events_end_date_idx ON events (end_date) WHERE all_day;
-- Resolved conflicts go by age.
CREATE INDEX outbox_conflicts_resolved_idx ON outbox_conflicts (resolved_at)
    WHERE resolved_at IS NOT NULL;
