-- Audit queries and the order of the log.
--
-- What audit queries select entries by (the SQL counterpart of the embedded log's query
-- index): each entry's kind and subject pseudonym, and the organisations it names (as actor,
-- sender or recipient). Filled by the batch that sequences the entry; entries sequenced before
-- this migration are filled by the first replica that starts after it.

-- The entry's kind code (casegate_audit::entry::EntryKind), 0 when its bytes are not an entry
-- this schema's gateways understand; NULL until filled.
ALTER TABLE casegate_audit_entry ADD COLUMN kind SMALLINT;
-- The subject's pseudonym (HMAC-SHA-256, 32 bytes), for entries about a jobseeker.
ALTER TABLE casegate_audit_entry ADD COLUMN subject BYTEA;

CREATE INDEX casegate_audit_entry_subject ON casegate_audit_entry (subject, idx);
CREATE INDEX casegate_audit_entry_kind ON casegate_audit_entry (kind, idx);
CREATE INDEX casegate_audit_entry_time ON casegate_audit_entry (time_micros);

-- The organisations (organisation numbers) an entry names.
CREATE TABLE casegate_audit_org (
    orgnr TEXT NOT NULL,
    idx BIGINT NOT NULL,
    PRIMARY KEY (orgnr, idx)
);

-- The order entries are sequenced in: the database's clock when each was queued (in its
-- change's transaction), not the writer's. A change that waited for another's lock queues
-- after that one committed, so its entry is logged after the other's whatever the replicas'
-- clocks say (an officer's replay reads the log in this order).
ALTER TABLE casegate_audit_outbox ADD COLUMN queued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp();
