-- coord's store inside one PostgreSQL schema: its tables and types (the functions are in
-- functions.sql, replaced whole on every schema version change).
--
-- `{s}` is the quoted schema name and `{chan}` the NOTIFY channel (a string literal body);
-- schema.rs substitutes both. Everything is schema-qualified, so no function needs a
-- `SET search_path` (which would cost a GUC save/restore on every call).
--
-- Revisions: `revision` holds the store's one revision. Every write takes its row FOR UPDATE
-- first and keeps it until COMMIT, so writers are serialised: commit order is revision order,
-- there are no gaps, and a snapshot that sees revision r+1 sees r. Reads take no lock.

CREATE TABLE {s}.revision (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision bigint NOT NULL
);
-- A fresh store is at revision 1 (etcd's); its first write makes revision 2.
INSERT INTO {s}.revision (revision) VALUES (1);

CREATE TABLE {s}.meta (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    schema_version integer NOT NULL,
    -- Reads and watches below this revision give Compacted; the log keeps revisions >= it.
    compact_revision bigint NOT NULL
);

-- The live keys. bytea compares bytewise (memcmp, then length): etcd's key order, with no
-- collation in the way.
CREATE TABLE {s}.kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    create_revision bigint NOT NULL,
    mod_revision bigint NOT NULL,
    version bigint NOT NULL,
    lease bigint NOT NULL
);
CREATE INDEX kv_lease ON {s}.kv (lease) WHERE lease <> 0;

-- One row per change: what watches replay and fan out, and what past reads undo. A row keeps
-- the key after a put (value, create_revision, version, lease) and the key before the change
-- (prev_*; NULL when the put created it). `idx` orders the changes of one revision.
CREATE TABLE {s}.log (
    revision bigint NOT NULL,
    idx integer NOT NULL,
    key bytea NOT NULL,
    deleted boolean NOT NULL,
    value bytea,
    create_revision bigint,
    version bigint,
    lease bigint,
    prev_value bytea,
    prev_create_revision bigint,
    prev_mod_revision bigint,
    prev_version bigint,
    prev_lease bigint,
    PRIMARY KEY (revision, idx)
);

-- Leases, on the database clock. A lease whose expires_at has passed is gone for every call
-- (keep-alive, put, time-to-live) even before a reaper deletes it and its keys.
CREATE TABLE {s}.lease (
    id bigint PRIMARY KEY,
    ttl bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX lease_expires ON {s}.lease (expires_at);

-- What txn_w / txn_r return, one row each: an op's header (r_key NULL: r_rev = the op's header
-- revision, r_n = count or deleted, r_more), a key-value of an op (range result, put's or
-- delete's prev_kv), and last the summary (r_op = -1: r_rev = the revision after the
-- transaction, r_n = 1 when the compares held).
CREATE TYPE {s}.result AS (
    r_op integer,
    r_rev bigint,
    r_n bigint,
    r_more boolean,
    r_key bytea,
    r_value bytea,
    r_create bigint,
    r_mod bigint,
    r_version bigint,
    r_lease bigint
);

-- What changes() returns: a header (kind 0: revision = current revision, idx unused,
-- create_revision = compact revision), then the log rows asked for (kind 1).
CREATE TYPE {s}.change AS (
    kind smallint,
    revision bigint,
    idx integer,
    key bytea,
    deleted boolean,
    value bytea,
    create_revision bigint,
    version bigint,
    lease bigint,
    prev_value bytea,
    prev_create_revision bigint,
    prev_mod_revision bigint,
    prev_version bigint,
    prev_lease bigint
);
