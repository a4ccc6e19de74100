-- coord's functions (see schema.sql for the tables). Every one is CREATE OR REPLACE: this
-- file runs on install and again on every upgrade of the schema version, so a migration only
-- changes tables. Placeholders as in schema.sql.

-- One change as NOTIFY carries it (see notify()): ` ` and 12 fields joined by `,`: idx, `p`ut
-- or `d`elete, key, value, create_revision, version, lease, prev_value, prev_create_revision,
-- prev_mod_revision, prev_version, prev_lease (bytea in hex, NULL as `-`). SQL, so that it is
-- inlined into the calling expression; STABLE, as its body is (`||` on a number is): declared
-- IMMUTABLE it was not inlined, and ran as a function call of its own at 0.15 ms a change.
CREATE OR REPLACE FUNCTION {s}.change_text(p_idx integer, p_deleted boolean, p_key bytea,
    p_value bytea, p_create bigint, p_version bigint, p_lease bigint, p_prev_value bytea,
    p_prev_create bigint, p_prev_mod bigint, p_prev_version bigint, p_prev_lease bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT ' ' || p_idx || ',' || CASE WHEN p_deleted THEN 'd' ELSE 'p' END
           || ',' || encode(p_key, 'hex')
           || ',' || coalesce(encode(p_value, 'hex'), '-')
           || ',' || coalesce(p_create::text, '-')
           || ',' || coalesce(p_version::text, '-')
           || ',' || coalesce(p_lease::text, '-')
           || ',' || coalesce(encode(p_prev_value, 'hex'), '-')
           || ',' || coalesce(p_prev_create::text, '-')
           || ',' || coalesce(p_prev_mod::text, '-')
           || ',' || coalesce(p_prev_version::text, '-')
           || ',' || coalesce(p_prev_lease::text, '-')
$$;

-- Tells listeners (the watch hubs) that revision p_rev committed, with its changes when they
-- fit: the payload is `<revision>` then each change's change_text() in idx order. A payload
-- that would not fit NOTIFY's limit (a block less 192 bytes: 8000 by default) is the revision
-- alone, and the hub reads the log. Called by every write, under the revision lock, after its
-- log rows: notifications are queued in commit order, which is revision order.
CREATE OR REPLACE FUNCTION {s}.notify(p_rev bigint, p_changes text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_payload text := p_rev::text || p_changes;
BEGIN
    IF p_changes IS NULL
       OR octet_length(v_payload) >= current_setting('block_size')::integer - 192 THEN
        v_payload := p_rev::text;
    END IF;
    PERFORM pg_notify('{chan}', v_payload);
END
$$;

-- notify() with the changes read back from the log (writes of many keys: revoke, reap, a
-- range delete).
CREATE OR REPLACE FUNCTION {s}.notify(p_rev bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM {s}.notify(p_rev, (
        SELECT string_agg({s}.change_text(l.idx, l.deleted, l.key, l.value, l.create_revision,
                   l.version, l.lease, l.prev_value, l.prev_create_revision,
                   l.prev_mod_revision, l.prev_version, l.prev_lease), '' ORDER BY l.idx)
          FROM {s}.log l WHERE l.revision = p_rev));
END
$$;

-- Whether every compare holds. Targets: 0 create revision, 1 mod revision, 2 version,
-- 3 value, 4 lease; ops: 0 =, 1 <>, 2 >, 3 <. A missing key has 0 for the numbers, and a
-- value compare on it is false (etcd's rule). PL/pgSQL, not SQL: a SQL function with a FROM
-- clause is planned again on every call, which cost more than the rest of a transaction; a
-- PL/pgSQL statement's plan is cached per connection. One index lookup per compare.
CREATE OR REPLACE FUNCTION {s}.compares_hold(
    c_key bytea[], c_target smallint[], c_op smallint[], c_num bigint[], c_val bytea[])
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    k {s}.kv;
    v bigint;
    ok boolean;
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(c_key, 1), 0) LOOP
        SELECT * INTO k FROM {s}.kv WHERE kv.key = c_key[i];
        IF c_target[i] = 3 THEN
            IF NOT FOUND THEN
                RETURN false;
            END IF;
            ok := CASE c_op[i]
                WHEN 0 THEN k.value = c_val[i]
                WHEN 1 THEN k.value <> c_val[i]
                WHEN 2 THEN k.value > c_val[i]
                ELSE k.value < c_val[i] END;
        ELSE
            -- Not found: every field of k is NULL, so 0.
            v := coalesce(CASE c_target[i]
                WHEN 0 THEN k.create_revision
                WHEN 1 THEN k.mod_revision
                WHEN 2 THEN k.version
                ELSE k.lease END, 0);
            ok := CASE c_op[i]
                WHEN 0 THEN v = c_num[i]
                WHEN 1 THEN v <> c_num[i]
                WHEN 2 THEN v > c_num[i]
                ELSE v < c_num[i] END;
        END IF;
        IF NOT ok THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- The keys of [p_start, p_end) (p_end NULL: no end) as they were at revision p_rev: the
-- current keys with every later change undone (the first later change of a key holds the key
-- as it was before). Correct while the log holds every revision > p_rev, i.e. p_rev >= the
-- compact revision, which range_op checks in the same snapshot.
CREATE OR REPLACE FUNCTION {s}.state_at(p_rev bigint, p_start bytea, p_end bytea)
RETURNS SETOF {s}.kv LANGUAGE sql STABLE AS $$
    WITH changed AS (
        SELECT DISTINCT ON (l.key) l.key, l.prev_value, l.prev_create_revision,
               l.prev_mod_revision, l.prev_version, l.prev_lease
        FROM {s}.log l
        WHERE l.revision > p_rev AND l.key >= p_start AND (p_end IS NULL OR l.key < p_end)
        ORDER BY l.key, l.revision, l.idx
    )
    SELECT k.* FROM {s}.kv k
    WHERE k.key >= p_start AND (p_end IS NULL OR k.key < p_end)
      AND NOT EXISTS (SELECT 1 FROM changed c WHERE c.key = k.key)
    UNION ALL
    SELECT c.key, c.prev_value, c.prev_create_revision, c.prev_mod_revision, c.prev_version,
           c.prev_lease
    FROM changed c WHERE c.prev_create_revision IS NOT NULL
$$;

-- One range op: its header row, then its key-values. STABLE, so all its statements share the
-- snapshot of the calling statement (a count and its rows agree, the compaction check and the
-- log read agree). p_flags: bit 1 keys_only, bit 2 count_only, bits 4-6 the sort (0 none,
-- 1 key asc, 2 key desc, 3 create asc, 4 create desc, 5 mod asc, 6 mod desc). Ties keep key
-- order. `count` is taken before the max_* filters and the limit, as etcd does.
--
-- The bounded and unbounded forms are separate statements on purpose: with `p_end IS NULL OR
-- key < p_end` a cached generic plan would scan the index from p_start to the end of the
-- keyspace.
CREATE OR REPLACE FUNCTION {s}.range_op(
    p_op integer, p_header bigint, p_current bigint, p_start bytea, p_end bytea,
    p_flags integer, p_limit bigint, p_max_create bigint, p_max_mod bigint, p_rev bigint)
RETURNS SETOF {s}.result LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sort integer := (p_flags >> 4) & 7;
    v_keys_only boolean := (p_flags & 2) <> 0;
    v_count_only boolean := (p_flags & 4) <> 0;
    v_lim bigint := CASE WHEN p_limit > 0 THEN p_limit END;
    v_filtered boolean := p_max_create > 0 OR p_max_mod > 0;
    v_count bigint;
    v_kept bigint;
    v_compact bigint;
BEGIN
    IF p_rev <> 0 THEN
        IF p_rev > p_current THEN
            RAISE EXCEPTION USING ERRCODE = 'CO003',
                MESSAGE = format('required revision %s is a future revision (current: %s)',
                                 p_rev, p_current);
        END IF;
        SELECT compact_revision INTO v_compact FROM {s}.meta;
        IF p_rev < v_compact THEN
            RAISE EXCEPTION USING ERRCODE = 'CO002', DETAIL = v_compact::text,
                MESSAGE = format('required revision %s has been compacted (compact revision: %s)',
                                 p_rev, v_compact);
        END IF;
        SELECT count(*), count(*) FILTER (WHERE (p_max_create = 0 OR k.create_revision <= p_max_create)
                                            AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod))
          INTO v_count, v_kept FROM {s}.state_at(p_rev, p_start, p_end) k;
        RETURN NEXT ROW(p_op, p_header, v_count, v_lim IS NOT NULL AND v_kept > v_lim,
                        NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
        IF v_count_only OR v_count = 0 THEN RETURN; END IF;
        RETURN QUERY
            SELECT p_op, p_header, 0::bigint, false, k.key,
                   CASE WHEN v_keys_only THEN ''::bytea ELSE k.value END,
                   k.create_revision, k.mod_revision, k.version, k.lease
            FROM {s}.state_at(p_rev, p_start, p_end) k
            WHERE (p_max_create = 0 OR k.create_revision <= p_max_create)
              AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod)
            ORDER BY CASE WHEN v_sort = 2 THEN k.key END DESC,
                     CASE v_sort WHEN 3 THEN k.create_revision WHEN 5 THEN k.mod_revision END ASC,
                     CASE v_sort WHEN 4 THEN k.create_revision WHEN 6 THEN k.mod_revision END DESC,
                     k.key
            LIMIT v_lim;
        RETURN;
    END IF;

    -- The common read (a key, a prefix, no filter, no limit): one scan, counted as it goes.
    IF NOT v_count_only AND NOT v_filtered AND v_lim IS NULL AND v_sort <= 1 THEN
        IF p_end IS NULL THEN
            RETURN QUERY
                SELECT p_op, p_header, 0::bigint, false, k.key,
                       CASE WHEN v_keys_only THEN ''::bytea ELSE k.value END,
                       k.create_revision, k.mod_revision, k.version, k.lease
                FROM {s}.kv k WHERE k.key >= p_start ORDER BY k.key;
        ELSE
            RETURN QUERY
                SELECT p_op, p_header, 0::bigint, false, k.key,
                       CASE WHEN v_keys_only THEN ''::bytea ELSE k.value END,
                       k.create_revision, k.mod_revision, k.version, k.lease
                FROM {s}.kv k WHERE k.key >= p_start AND k.key < p_end ORDER BY k.key;
        END IF;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        RETURN NEXT ROW(p_op, p_header, v_count, false, NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
        RETURN;
    END IF;

    IF p_end IS NULL THEN
        SELECT count(*), count(*) FILTER (WHERE (p_max_create = 0 OR k.create_revision <= p_max_create)
                                            AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod))
          INTO v_count, v_kept FROM {s}.kv k WHERE k.key >= p_start;
    ELSE
        SELECT count(*), count(*) FILTER (WHERE (p_max_create = 0 OR k.create_revision <= p_max_create)
                                            AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod))
          INTO v_count, v_kept FROM {s}.kv k WHERE k.key >= p_start AND k.key < p_end;
    END IF;
    RETURN NEXT ROW(p_op, p_header, v_count, v_lim IS NOT NULL AND v_kept > v_lim,
                    NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
    IF v_count_only OR v_kept = 0 THEN RETURN; END IF;
    IF p_end IS NULL THEN
        RETURN QUERY
            SELECT p_op, p_header, 0::bigint, false, k.key,
                   CASE WHEN v_keys_only THEN ''::bytea ELSE k.value END,
                   k.create_revision, k.mod_revision, k.version, k.lease
            FROM {s}.kv k
            WHERE k.key >= p_start
              AND (p_max_create = 0 OR k.create_revision <= p_max_create)
              AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod)
            ORDER BY CASE WHEN v_sort = 2 THEN k.key END DESC,
                     CASE v_sort WHEN 3 THEN k.create_revision WHEN 5 THEN k.mod_revision END ASC,
                     CASE v_sort WHEN 4 THEN k.create_revision WHEN 6 THEN k.mod_revision END DESC,
                     k.key
            LIMIT v_lim;
    ELSE
        RETURN QUERY
            SELECT p_op, p_header, 0::bigint, false, k.key,
                   CASE WHEN v_keys_only THEN ''::bytea ELSE k.value END,
                   k.create_revision, k.mod_revision, k.version, k.lease
            FROM {s}.kv k
            WHERE k.key >= p_start AND k.key < p_end
              AND (p_max_create = 0 OR k.create_revision <= p_max_create)
              AND (p_max_mod = 0 OR k.mod_revision <= p_max_mod)
            ORDER BY CASE WHEN v_sort = 2 THEN k.key END DESC,
                     CASE v_sort WHEN 3 THEN k.create_revision WHEN 5 THEN k.mod_revision END ASC,
                     CASE v_sort WHEN 4 THEN k.create_revision WHEN 6 THEN k.mod_revision END DESC,
                     k.key
            LIMIT v_lim;
    END IF;
END
$$;

-- Deletes [p_start, p_end) at revision p_rev, logging each deleted key from log index p_idx
-- on, in key order. Returns the deleted keys (as result rows of op p_op) when p_prev, and
-- sets the count either way. Used by txn_w, lease_revoke and reap (under the revision lock).
CREATE OR REPLACE FUNCTION {s}.delete_range(
    p_op integer, p_rev bigint, p_idx integer, p_start bytea, p_end bytea, p_lease bigint,
    p_prev boolean, OUT n bigint, OUT rows {s}.result[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_lease <> 0 THEN
        WITH d AS (DELETE FROM {s}.kv k WHERE k.lease = p_lease RETURNING k.*),
             l AS (INSERT INTO {s}.log
                   SELECT p_rev, p_idx + (row_number() OVER (ORDER BY d.key))::integer - 1,
                          d.key, true, NULL, NULL, NULL, NULL,
                          d.value, d.create_revision, d.mod_revision, d.version, d.lease
                   FROM d RETURNING *)
        SELECT count(*) INTO n FROM l;
        RETURN;
    END IF;
    IF p_end IS NULL THEN
        WITH d AS (DELETE FROM {s}.kv k WHERE k.key >= p_start RETURNING k.*),
             l AS (INSERT INTO {s}.log
                   SELECT p_rev, p_idx + (row_number() OVER (ORDER BY d.key))::integer - 1,
                          d.key, true, NULL, NULL, NULL, NULL,
                          d.value, d.create_revision, d.mod_revision, d.version, d.lease
                   FROM d RETURNING *)
        SELECT count(*),
               CASE WHEN p_prev THEN array_agg(ROW(p_op, p_rev, 0, false, l.key, l.prev_value,
                   l.prev_create_revision, l.prev_mod_revision, l.prev_version, l.prev_lease
                   )::{s}.result ORDER BY l.key) END
          INTO n, rows FROM l;
    ELSE
        WITH d AS (DELETE FROM {s}.kv k WHERE k.key >= p_start AND k.key < p_end RETURNING k.*),
             l AS (INSERT INTO {s}.log
                   SELECT p_rev, p_idx + (row_number() OVER (ORDER BY d.key))::integer - 1,
                          d.key, true, NULL, NULL, NULL, NULL,
                          d.value, d.create_revision, d.mod_revision, d.version, d.lease
                   FROM d RETURNING *)
        SELECT count(*),
               CASE WHEN p_prev THEN array_agg(ROW(p_op, p_rev, 0, false, l.key, l.prev_value,
                   l.prev_create_revision, l.prev_mod_revision, l.prev_version, l.prev_lease
                   )::{s}.result ORDER BY l.key) END
          INTO n, rows FROM l;
    END IF;
END
$$;

-- A transaction with writes, in one statement: take the revision lock, evaluate the compares,
-- run the chosen branch's ops in order (later ops see earlier ones), log each change at the
-- one new revision, bump the revision once if anything changed, and NOTIFY the revision with
-- its changes (notify(): the log stays the truth; NOTIFY is delivered at COMMIT, after the
-- change is visible).
-- Ops: o_kind 0 range, 1 put, 2 delete; o_branch true = success branch; o_flags bit 0 prev_kv,
-- bit 3 "one key" (a delete of KeyRange::Key), range flags as in range_op. A put naming an unknown or expired lease raises CO001, which
-- rolls the whole statement back: nothing is written.
CREATE OR REPLACE FUNCTION {s}.txn_w(
    c_key bytea[], c_target smallint[], c_op smallint[], c_num bigint[], c_val bytea[],
    o_branch boolean[], o_kind smallint[], o_key bytea[], o_end bytea[], o_value bytea[],
    o_lease bigint[], o_flags integer[], o_limit bigint[], o_max_create bigint[],
    o_max_mod bigint[], o_rev bigint[])
RETURNS SETOF {s}.result LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur bigint;
    v_rev bigint;
    v_ok boolean;
    v_idx integer := 0;
    v_changed boolean := false;
    v_op integer := 0;
    v_prev {s}.kv;
    v_n bigint;
    v_rows {s}.result[];
    -- The NOTIFY payload's changes, built as they are made (no read of the log back); NULL
    -- once a range delete made changes this function does not see one by one.
    v_changes text := '';
    i integer;
BEGIN
    -- Lock and bump in one statement (most write transactions change something); undone
    -- below when nothing changed. The row lock is held until COMMIT either way.
    UPDATE {s}.revision SET revision = revision + 1 RETURNING revision INTO v_rev;
    v_cur := v_rev - 1;
    v_ok := {s}.compares_hold(c_key, c_target, c_op, c_num, c_val);
    FOR i IN 1 .. coalesce(array_length(o_kind, 1), 0) LOOP
        CONTINUE WHEN o_branch[i] <> v_ok;
        IF o_kind[i] = 0 THEN
            RETURN QUERY SELECT * FROM {s}.range_op(v_op,
                CASE WHEN v_changed THEN v_rev ELSE v_cur END,
                CASE WHEN v_changed THEN v_rev ELSE v_cur END,
                o_key[i], o_end[i], o_flags[i], o_limit[i], o_max_create[i], o_max_mod[i],
                o_rev[i]);
        ELSIF o_kind[i] = 1 THEN
            IF o_lease[i] <> 0 AND NOT EXISTS (
                SELECT 1 FROM {s}.lease l WHERE l.id = o_lease[i] AND l.expires_at > now()) THEN
                RAISE EXCEPTION USING ERRCODE = 'CO001', DETAIL = o_lease[i]::text,
                    MESSAGE = format('requested lease not found: %s', o_lease[i]);
            END IF;
            SELECT k.* INTO v_prev FROM {s}.kv k WHERE k.key = o_key[i];
            IF FOUND THEN
                UPDATE {s}.kv SET value = o_value[i], mod_revision = v_rev,
                       version = v_prev.version + 1, lease = o_lease[i]
                 WHERE key = o_key[i];
            ELSE
                INSERT INTO {s}.kv VALUES (o_key[i], o_value[i], v_rev, v_rev, 1, o_lease[i]);
            END IF;
            INSERT INTO {s}.log VALUES (v_rev, v_idx, o_key[i], false, o_value[i],
                coalesce(v_prev.create_revision, v_rev), coalesce(v_prev.version, 0) + 1,
                o_lease[i], v_prev.value, v_prev.create_revision, v_prev.mod_revision,
                v_prev.version, v_prev.lease);
            v_changes := v_changes || {s}.change_text(v_idx, false, o_key[i], o_value[i],
                coalesce(v_prev.create_revision, v_rev), coalesce(v_prev.version, 0) + 1,
                o_lease[i], v_prev.value, v_prev.create_revision, v_prev.mod_revision,
                v_prev.version, v_prev.lease);
            v_idx := v_idx + 1;
            v_changed := true;
            RETURN NEXT ROW(v_op, v_rev, 0, false, NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
            IF (o_flags[i] & 1) <> 0 AND v_prev.key IS NOT NULL THEN
                RETURN NEXT ROW(v_op, v_rev, 0, false, v_prev.key, v_prev.value,
                    v_prev.create_revision, v_prev.mod_revision, v_prev.version,
                    v_prev.lease)::{s}.result;
            END IF;
        ELSIF (o_flags[i] & 8) <> 0 THEN
            -- One key (an unlock): a plain DELETE … RETURNING, no CTE or aggregate.
            DELETE FROM {s}.kv WHERE kv.key = o_key[i] RETURNING * INTO v_prev;
            v_n := 0;
            v_rows := NULL;
            IF FOUND THEN
                INSERT INTO {s}.log VALUES (v_rev, v_idx, v_prev.key, true, NULL, NULL, NULL, NULL,
                    v_prev.value, v_prev.create_revision, v_prev.mod_revision, v_prev.version,
                    v_prev.lease);
                v_changes := v_changes || {s}.change_text(v_idx, true, v_prev.key, NULL, NULL,
                    NULL, NULL, v_prev.value, v_prev.create_revision, v_prev.mod_revision,
                    v_prev.version, v_prev.lease);
                v_n := 1;
                IF (o_flags[i] & 1) <> 0 THEN
                    v_rows := ARRAY[ROW(v_op, v_rev, 0, false, v_prev.key, v_prev.value,
                        v_prev.create_revision, v_prev.mod_revision, v_prev.version,
                        v_prev.lease)::{s}.result];
                END IF;
            END IF;
            IF v_n > 0 THEN
                v_idx := v_idx + 1;
                v_changed := true;
            END IF;
            RETURN NEXT ROW(v_op, CASE WHEN v_changed THEN v_rev ELSE v_cur END, v_n, false,
                            NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
            IF v_rows IS NOT NULL THEN
                RETURN QUERY SELECT * FROM unnest(v_rows);
            END IF;
        ELSE
            SELECT d.n, d.rows INTO v_n, v_rows
              FROM {s}.delete_range(v_op, v_rev, v_idx, o_key[i], o_end[i], 0,
                                    (o_flags[i] & 1) <> 0) d;
            IF v_n > 0 THEN
                v_idx := v_idx + v_n::integer;
                v_changed := true;
                v_changes := NULL;
            END IF;
            RETURN NEXT ROW(v_op, CASE WHEN v_changed THEN v_rev ELSE v_cur END, v_n, false,
                            NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
            IF v_rows IS NOT NULL THEN
                RETURN QUERY SELECT * FROM unnest(v_rows);
            END IF;
        END IF;
        v_op := v_op + 1;
    END LOOP;
    IF v_changed AND v_changes IS NOT NULL THEN
        PERFORM {s}.notify(v_rev, v_changes);
    ELSIF v_changed THEN
        PERFORM {s}.notify(v_rev);
    ELSE
        UPDATE {s}.revision SET revision = v_cur;
    END IF;
    RETURN NEXT ROW(-1, CASE WHEN v_changed THEN v_rev ELSE v_cur END,
                    CASE WHEN v_ok THEN 1 ELSE 0 END, false,
                    NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
END
$$;

-- The release of a held key (a mutex's unlock, a resignation): txn_w's answer to the
-- transaction "if create_revision(p_ckey) = p_crev then delete the one key p_key", without
-- the generic machinery (arrays, the op loop, compares_hold()): the release is on every
-- handoff's critical path.
CREATE OR REPLACE FUNCTION {s}.txn_guarded_delete(p_ckey bytea, p_crev bigint, p_key bytea)
RETURNS SETOF {s}.result LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_rev bigint;
    v_ok boolean;
    v_prev {s}.kv;
BEGIN
    UPDATE {s}.revision SET revision = revision + 1 RETURNING revision INTO v_rev;
    v_ok := coalesce((SELECT k.create_revision FROM {s}.kv k WHERE k.key = p_ckey), 0) = p_crev;
    IF v_ok THEN
        DELETE FROM {s}.kv WHERE kv.key = p_key RETURNING * INTO v_prev;
        IF FOUND THEN
            INSERT INTO {s}.log VALUES (v_rev, 0, v_prev.key, true, NULL, NULL, NULL, NULL,
                v_prev.value, v_prev.create_revision, v_prev.mod_revision, v_prev.version,
                v_prev.lease);
            PERFORM {s}.notify(v_rev, {s}.change_text(0, true, v_prev.key, NULL, NULL, NULL,
                NULL, v_prev.value, v_prev.create_revision, v_prev.mod_revision,
                v_prev.version, v_prev.lease));
            RETURN NEXT ROW(0, v_rev, 1, false, NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
            RETURN NEXT ROW(-1, v_rev, 1, false, NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
            RETURN;
        END IF;
    END IF;
    -- Nothing changed: the revision stays.
    UPDATE {s}.revision SET revision = v_rev - 1;
    IF v_ok THEN
        RETURN NEXT ROW(0, v_rev - 1, 0, false, NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
    END IF;
    RETURN NEXT ROW(-1, v_rev - 1, CASE WHEN v_ok THEN 1 ELSE 0 END, false,
                    NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
END
$$;

-- A transaction without writes: no lock, one snapshot for all of it (STABLE), same arguments
-- and rows as txn_w (the client sends here only transactions whose branches only read).
CREATE OR REPLACE FUNCTION {s}.txn_r(
    c_key bytea[], c_target smallint[], c_op smallint[], c_num bigint[], c_val bytea[],
    o_branch boolean[], o_kind smallint[], o_key bytea[], o_end bytea[], o_value bytea[],
    o_lease bigint[], o_flags integer[], o_limit bigint[], o_max_create bigint[],
    o_max_mod bigint[], o_rev bigint[])
RETURNS SETOF {s}.result LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_cur bigint;
    v_ok boolean;
    v_op integer := 0;
    i integer;
BEGIN
    SELECT r.revision INTO v_cur FROM {s}.revision r;
    v_ok := {s}.compares_hold(c_key, c_target, c_op, c_num, c_val);
    FOR i IN 1 .. coalesce(array_length(o_kind, 1), 0) LOOP
        CONTINUE WHEN o_branch[i] <> v_ok;
        RETURN QUERY SELECT * FROM {s}.range_op(v_op, v_cur, v_cur, o_key[i], o_end[i],
            o_flags[i], o_limit[i], o_max_create[i], o_max_mod[i], o_rev[i]);
        v_op := v_op + 1;
    END LOOP;
    RETURN NEXT ROW(-1, v_cur, CASE WHEN v_ok THEN 1 ELSE 0 END, false,
                    NULL, NULL, NULL, NULL, NULL, NULL)::{s}.result;
END
$$;

-- Ends one lease under the revision lock (held by the caller): deletes its keys at revision
-- p_rev (if it has any) and the lease. Returns the number of keys deleted.
CREATE OR REPLACE FUNCTION {s}.end_lease(p_id bigint, p_rev bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_n bigint;
BEGIN
    SELECT d.n INTO v_n FROM {s}.delete_range(0, p_rev, 0, NULL, NULL, p_id, false) d;
    DELETE FROM {s}.lease WHERE id = p_id;
    RETURN v_n;
END
$$;

-- Revoke: the lease's keys go at one revision, with delete events. CO001 when there is no
-- such lease (revoked, or reaped after expiring).
CREATE OR REPLACE FUNCTION {s}.lease_revoke(p_id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur bigint;
    v_n bigint;
BEGIN
    SELECT r.revision INTO v_cur FROM {s}.revision r FOR UPDATE;
    PERFORM 1 FROM {s}.lease WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'CO001', DETAIL = p_id::text,
            MESSAGE = format('requested lease not found: %s', p_id);
    END IF;
    v_n := {s}.end_lease(p_id, v_cur + 1);
    IF v_n > 0 THEN
        UPDATE {s}.revision SET revision = v_cur + 1;
        PERFORM {s}.notify(v_cur + 1);
        RETURN v_cur + 1;
    END IF;
    RETURN v_cur;
END
$$;

-- The reaper's pass: ends up to p_max leases whose time has passed, each at its own revision
-- (as etcd does), under the revision lock, skipping leases being renewed right now (SKIP
-- LOCKED: a renewal that commits first wins, one that waits for us finds the lease gone).
-- Several reapers in several processes are safe: they queue on the revision lock and each
-- sees what the previous one left. A pass that finds nothing due takes no lock. Returns how
-- many leases it ended, the seconds until the next lease is due (NULL: none), the current and
-- the compact revision (so the caller knows whether to compact without another query).
CREATE OR REPLACE FUNCTION {s}.reap(p_max integer,
    OUT reaped integer, OUT next_due double precision, OUT cur_revision bigint,
    OUT compact_rev bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur bigint;
    v_rev bigint;
    v_id bigint;
BEGIN
    reaped := 0;
    IF EXISTS (SELECT 1 FROM {s}.lease WHERE expires_at <= now()) THEN
        SELECT r.revision INTO v_cur FROM {s}.revision r FOR UPDATE;
        v_rev := v_cur;
        FOR v_id IN SELECT l.id FROM {s}.lease l WHERE l.expires_at <= now()
                    ORDER BY l.expires_at LIMIT p_max FOR UPDATE SKIP LOCKED LOOP
            IF {s}.end_lease(v_id, v_rev + 1) > 0 THEN
                v_rev := v_rev + 1;
                PERFORM {s}.notify(v_rev);
            END IF;
            reaped := reaped + 1;
        END LOOP;
        IF v_rev > v_cur THEN
            UPDATE {s}.revision SET revision = v_rev;
        END IF;
    END IF;
    SELECT extract(epoch FROM min(l.expires_at) - now()) INTO next_due FROM {s}.lease l;
    SELECT r.revision INTO cur_revision FROM {s}.revision r;
    SELECT m.compact_revision INTO compact_rev FROM {s}.meta m;
END
$$;

-- Explicit compaction, etcd's rules: a future revision is CO003, one at or below the compact
-- revision CO002. Needs no revision lock: readers read the compact revision and the log in
-- one snapshot, and this changes both in one transaction.
CREATE OR REPLACE FUNCTION {s}.compact(p_rev bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur bigint;
    v_compact bigint;
BEGIN
    SELECT r.revision INTO v_cur FROM {s}.revision r;
    IF p_rev > v_cur THEN
        RAISE EXCEPTION USING ERRCODE = 'CO003',
            MESSAGE = format('required revision %s is a future revision (current: %s)', p_rev, v_cur);
    END IF;
    SELECT m.compact_revision INTO v_compact FROM {s}.meta m FOR UPDATE;
    IF p_rev <= v_compact THEN
        RAISE EXCEPTION USING ERRCODE = 'CO002', DETAIL = v_compact::text,
            MESSAGE = format('required revision %s has been compacted (compact revision: %s)',
                             p_rev, v_compact);
    END IF;
    UPDATE {s}.meta SET compact_revision = p_rev;
    DELETE FROM {s}.log WHERE revision < p_rev;
    RETURN p_rev;
END
$$;

-- Automatic compaction, one batch: moves the compact revision towards "keep the last p_keep
-- revisions" but never past p_cap (what this process's watches still need), by at most
-- p_batch revisions, so each transaction deletes a bounded number of log rows. Returns the
-- compact revision after it.
CREATE OR REPLACE FUNCTION {s}.compact_auto(p_keep bigint, p_cap bigint, p_batch bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur bigint;
    v_compact bigint;
    v_target bigint;
BEGIN
    SELECT r.revision INTO v_cur FROM {s}.revision r;
    v_target := least(v_cur - p_keep + 1, p_cap);
    SELECT m.compact_revision INTO v_compact FROM {s}.meta m FOR UPDATE;
    IF v_target <= v_compact THEN
        RETURN v_compact;
    END IF;
    v_target := least(v_target, v_compact + p_batch);
    UPDATE {s}.meta SET compact_revision = v_target;
    DELETE FROM {s}.log WHERE revision < v_target;
    RETURN v_target;
END
$$;

-- Log rows with p_after < revision <= p_upto, of [p_start, p_end) (p_start NULL: every key),
-- with a header row holding the current and the compact revision of the same snapshot.
-- The watch hub reads every key; a watch being opened replays its own range.
CREATE OR REPLACE FUNCTION {s}.changes(p_after bigint, p_upto bigint, p_start bytea, p_end bytea)
RETURNS SETOF {s}.change LANGUAGE sql STABLE AS $$
    SELECT 0::smallint, r.revision, 0, NULL::bytea, NULL::boolean, NULL::bytea, m.compact_revision,
           NULL::bigint, NULL::bigint, NULL::bytea, NULL::bigint, NULL::bigint, NULL::bigint,
           NULL::bigint
    FROM {s}.revision r, {s}.meta m
    UNION ALL
    SELECT 1::smallint, l.revision, l.idx, l.key, l.deleted, l.value, l.create_revision,
           l.version, l.lease, l.prev_value, l.prev_create_revision, l.prev_mod_revision,
           l.prev_version, l.prev_lease
    FROM {s}.log l
    WHERE l.revision > p_after AND l.revision <= p_upto
      AND (p_start IS NULL OR (l.key >= p_start AND (p_end IS NULL OR l.key < p_end)))
$$;
