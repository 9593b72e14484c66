-- A replaced channel (a Google watch renewed, a Graph subscription recreated) stays accepted by
-- the gateway until `retired_until`: messages the provider sent on it before the replacement may
-- still arrive (Google does not resend after a 4xx; Graph retries for hours). NULL: the live one.
ALTER TABLE push_channels ADD COLUMN retired_until timestamptz;
CREATE INDEX push_channels_retired_idx ON push_channels (retired_until)
    WHERE retired_until IS NOT NULL;
