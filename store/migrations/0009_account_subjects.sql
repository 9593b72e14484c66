-- The stable subject an account is bound to (Google `sub`, Entra `tid:oid`), learned from the
-- id_token of the connect flow; the e-mail (`external_user_id`) only lists the account. NULL for
-- accounts added by refresh token until a connect names them. One account per subject.
ALTER TABLE accounts ADD COLUMN subject text CHECK (subject IS NULL OR length(subject) BETWEEN 1 AND 512);
CREATE UNIQUE INDEX accounts_subject_idx ON accounts (provider, subject) WHERE subject IS NOT NULL;
