-- Account kinds: the values accounts.provider, push_channels.provider and outbox.kind may hold,
-- and the outbox operations each kind accepts. `migrate` writes the registry's kinds
-- (kinds.registry) here on every run; the two calendar kinds that existed before are seeded so
-- that existing rows satisfy the references below. Kinds are never deleted by `migrate`: rows
-- of a kind a newer build dropped stay readable.
CREATE TABLE account_kinds (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- json_payload: whether the operation's payload is the `payload` column (true) or the typed
-- calendar columns (false); an outbox row must carry it the way its operation says.
CREATE TABLE outbox_operations (
    kind         text NOT NULL REFERENCES account_kinds (name) ON UPDATE CASCADE,
    operation    text NOT NULL CHECK (operation <> ''),
    json_payload boolean NOT NULL,
    PRIMARY KEY (kind, operation),
    UNIQUE (kind, operation, json_payload)
);

INSERT INTO account_kinds (name) VALUES ('google'), ('microsoft');
INSERT INTO outbox_operations (kind, operation, json_payload)
SELECT k, op, false
FROM unnest(ARRAY['google', 'microsoft']) AS k,
     unnest(ARRAY['UPSERT_EVENT', 'CANCEL_EVENT', 'REBUILD_ALL']) AS op;

ALTER TABLE accounts DROP CONSTRAINT accounts_provider_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_fkey
    FOREIGN KEY (provider) REFERENCES account_kinds (name);
ALTER TABLE push_channels DROP CONSTRAINT push_channels_provider_check;
ALTER TABLE push_channels ADD CONSTRAINT push_channels_kind_fkey
    FOREIGN KEY (provider) REFERENCES account_kinds (name);

-- Every outbox row names its account's kind and one of that kind's operations. Applications
-- that insert rows directly need not name the kind: the trigger below fills it in from the
-- account (and refuses a kind that is not the account's). A kind's payload is `payload`
-- (validated against the operation's schema when enqueued through operations.outbox); the
-- calendar operations keep theirs in the typed columns (source, version, content) that predate
-- kinds, whose CHECKs above stay as they were.
ALTER TABLE outbox ADD COLUMN kind text;
ALTER TABLE outbox ADD COLUMN payload jsonb
    CHECK (payload IS NULL OR jsonb_typeof(payload) = 'object');
ALTER TABLE outbox ADD COLUMN json_payload boolean GENERATED ALWAYS AS (payload IS NOT NULL) STORED;
UPDATE outbox o SET kind = a.provider FROM accounts a WHERE a.id = o.account_id;
ALTER TABLE outbox ALTER COLUMN kind SET NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_operation_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_operation_fkey
    FOREIGN KEY (kind, operation, json_payload)
    REFERENCES outbox_operations (kind, operation, json_payload);
-- The calendar columns' rules bind the rows that carry their payload there.
ALTER TABLE outbox DROP CONSTRAINT outbox_source_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_source_check CHECK (
    json_payload
    OR operation = 'REBUILD_ALL'
    OR source_type IS NOT NULL AND source_id IS NOT NULL AND event_type IS NOT NULL
);
ALTER TABLE outbox DROP CONSTRAINT outbox_content_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_content_check CHECK (
    json_payload
    OR operation <> 'UPSERT_EVENT'
    OR title IS NOT NULL AND all_day IS NOT NULL AND (
        all_day AND start_date IS NOT NULL AND end_date IS NOT NULL AND end_date > start_date
        OR NOT all_day AND start_at IS NOT NULL AND end_at IS NOT NULL AND end_at >= start_at
    )
);

CREATE FUNCTION outbox_kind() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account_kind text;
BEGIN
    SELECT provider INTO account_kind FROM accounts WHERE id = NEW.account_id;
    IF account_kind IS NULL THEN
        -- What the account reference would say, before the kind's NOT NULL could.
        RAISE EXCEPTION 'outbox account % does not exist', NEW.account_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'outbox_account_id_fkey';
    END IF;
    IF NEW.kind IS NULL THEN
        NEW.kind := account_kind;
    ELSIF NEW.kind <> account_kind THEN
        RAISE EXCEPTION 'outbox kind % is not the kind of account % (%)',
            NEW.kind, NEW.account_id, account_kind
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_kind_insert BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_kind();
