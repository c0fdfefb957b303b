-- The audit log as one log for every replica (DESIGN §7): entries wait in the outbox (written
-- in the transaction of the change they record) until a replica holding the tree-state row's
-- lock gives a batch of them contiguous indexes, extends the RFC 6962 tree, signs a
-- checkpoint and commits all of it in one transaction.

CREATE TABLE casegate_audit_outbox (
    -- Chosen by the writer (UUID v7: ordered by when it was written); the entry's
    -- idempotency key until it has an index.
    id UUID PRIMARY KEY,
    entry BYTEA NOT NULL,
    -- The note a `disclosure permitted` entry makes deliverable: the batch that gives the
    -- entry its index puts the note in its recipient's inbox, in the same transaction.
    note_id UUID
);

CREATE TABLE casegate_audit_entry (
    -- Zero-based, contiguous.
    idx BIGINT PRIMARY KEY CHECK (idx >= 0),
    outbox_id UUID NOT NULL UNIQUE,
    -- The canonical bytes, hashed as they are (never re-serialised).
    entry BYTEA NOT NULL,
    -- RFC 6962 §2.1: SHA-256(0x00 || entry).
    leaf_hash BYTEA NOT NULL,
    -- The entry's time, microseconds since the Unix epoch; never earlier than its
    -- predecessor's.
    time_micros BIGINT NOT NULL,
    -- The note a `disclosure permitted` entry made deliverable (its receipt, found again for
    -- a repeated request).
    note_id UUID UNIQUE
);

-- Roots of complete subtrees above the leaves: level >= 1, index within the level.
CREATE TABLE casegate_audit_node (
    level SMALLINT NOT NULL CHECK (level >= 1),
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

-- The one tree-state row: its lock is the right to sequence.
CREATE TABLE casegate_audit_tree (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    newest_time BIGINT NOT NULL,
    -- The roots of the perfect subtrees the tree of `size` leaves decomposes into, largest
    -- first, 32 bytes each (what appending needs, without reading nodes).
    frontier BYTEA NOT NULL,
    -- The newest signed checkpoint (C2SP signed-note of a C2SP tlog-checkpoint); covers
    -- `size` entries.
    checkpoint TEXT NOT NULL
);
