-- Notes (inboxes) for every replica (DESIGN §7): one row per note, written as the embedded
-- journal writes it (the note record, sealed part and all until purged, and its progress
-- record), with the columns the inbox, expiry and idempotency queries need beside them.

CREATE TABLE casegate_note (
    id UUID PRIMARY KEY,
    sender_orgnr TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- SHA-256 of the Disclose request: a repeat with the same request id must match it.
    fingerprint BYTEA NOT NULL,
    recipient_orgnr TEXT NOT NULL,
    consent_id UUID NOT NULL,
    -- 0 pending, 1 deliverable, 2 acknowledged, 3 purged.
    state SMALLINT NOT NULL CHECK (state IN (0, 1, 2, 3)),
    delivered BOOLEAN NOT NULL,
    -- Microseconds since the Unix epoch.
    disclosed_at BIGINT NOT NULL,
    purge_after BIGINT,
    purged_at BIGINT,
    -- casegate_notes::record: the note record and the progress record.
    record BYTEA NOT NULL,
    progress BYTEA NOT NULL,
    -- Idempotency across replicas: one note per sender and request id.
    UNIQUE (sender_orgnr, request_id)
);

CREATE INDEX casegate_note_inbox ON casegate_note (recipient_orgnr, id) WHERE state = 1;
CREATE INDEX casegate_note_by_consent ON casegate_note (consent_id, id) WHERE state IN (0, 1);
CREATE INDEX casegate_note_waiting ON casegate_note (disclosed_at, id) WHERE state = 1;
CREATE INDEX casegate_note_retained ON casegate_note (purge_after, id) WHERE state = 2;
CREATE INDEX casegate_note_purged ON casegate_note (purged_at, id) WHERE state = 3;
CREATE INDEX casegate_note_pending ON casegate_note (id) WHERE state = 0;

-- Request ids claimed by a Disclose in progress, until its note is stored or the claim is
-- given back.
CREATE TABLE casegate_note_claim (
    sender_orgnr TEXT NOT NULL,
    request_id TEXT NOT NULL,
    note_id UUID NOT NULL,
    fingerprint BYTEA NOT NULL,
    PRIMARY KEY (sender_orgnr, request_id)
);
