-- Consents (DESIGN §7): one row per subject, locked by withdrawals and share-locked by
-- decisions, and every version of every consent. Keys are portable SQL (PostgreSQL,
-- CockroachDB, YugabyteDB): no sequences, no PostgreSQL-only types.

CREATE TABLE casegate_consent_subject (
    -- The subject's keyed pseudonym (HMAC-SHA-256, 32 bytes): identity numbers are not keys.
    subject_key BYTEA PRIMARY KEY,
    -- Bumped by every change to the subject's consents.
    changes BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE casegate_consent_version (
    consent_id UUID NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    subject_key BYTEA NOT NULL REFERENCES casegate_consent_subject (subject_key),
    -- 0 active, 1 superseded, 2 withdrawn.
    status SMALLINT NOT NULL CHECK (status IN (0, 1, 2)),
    -- The consent store's canonical record (what the audit log's record hash covers).
    record BYTEA NOT NULL,
    PRIMARY KEY (consent_id, version)
);

CREATE INDEX casegate_consent_version_by_subject
    ON casegate_consent_version (subject_key, consent_id, version);

-- The audit log size up to which consents are reconciled with the log.
CREATE TABLE casegate_consent_mark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reconciled_through BIGINT NOT NULL
);
