//! The schema: created and versioned on first use, and the SQL text of every statement.
//!
//! The tables and functions (`schema.sql`) live in the configured schema. `meta.schema_version`
//! says which version of them is installed. On connect, one query reads it; when the schema
//! is missing or older, the installer runs in one transaction under a transaction-scoped
//! advisory lock (so concurrent first connects of several processes are safe: the second
//! waits, then finds the schema installed), creating or migrating. A newer version than this
//! crate knows is an error: an older binary must not run against functions it did not write.

use coord_core::{Error, Result};
use tokio_postgres::error::SqlState;

use crate::error::{self, PgError};

/// The version of the tables and functions this crate writes. 2: NOTIFY carries the
/// revision's changes (`notify()`). 3: `txn_w` builds that payload as it writes
/// (`change_text()`); `txn_guarded_delete()`.
pub(crate) const SCHEMA_VERSION: i32 = 3;

/// The tables and types, version [`SCHEMA_VERSION`].
const SQL: &str = include_str!("schema.sql");

/// Every function, as `CREATE OR REPLACE`: run after installing the tables and after every
/// upgrade, so migrations only change tables.
const FUNCTIONS: &str = include_str!("functions.sql");

/// `MIGRATIONS[i]` upgrades the tables of an installed version `i + 1` to `i + 2` (SQL with
/// the same placeholders as `schema.sql`); the functions are replaced afterwards.
const MIGRATIONS: &[&str] = &[
    // 1 → 2 (notify()) and 2 → 3 (change_text(), notify(rev, changes), txn_guarded_delete()):
    // functions only.
    "", "",
];

/// The first key of the advisory lock taken while installing ("coor"); the second is the hash
/// of the schema name, so installs of different schemas do not wait for each other.
const INSTALL_LOCK: i32 = 0x636f_6f72;

/// The SQL texts of one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) schema: String,
    pub(crate) channel: String,
    pub(crate) txn_w: String,
    pub(crate) txn_r: String,
    pub(crate) txn_guarded_delete: String,
    pub(crate) grant: String,
    pub(crate) keep_alive: String,
    pub(crate) time_to_live: String,
    pub(crate) lease_list: String,
    pub(crate) revoke: String,
    pub(crate) compact: String,
    pub(crate) current: String,
    pub(crate) changes: String,
    pub(crate) hub_changes: String,
    pub(crate) reap: String,
    pub(crate) compact_auto: String,
    pub(crate) vacuum: String,
    pub(crate) listen: String,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Sql {
    /// The statements of `schema` (already checked to be a plain identifier).
    pub(crate) fn new(schema: &str) -> Sql {
        let s = quote_ident(schema);
        // At most 48 + 8 bytes: within PostgreSQL's 63-byte names.
        let channel = format!("{schema}.changes");
        let txn_args = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16";
        Sql {
            txn_w: format!("SELECT * FROM {s}.txn_w({txn_args})"),
            txn_r: format!("SELECT * FROM {s}.txn_r({txn_args})"),
            txn_guarded_delete: format!("SELECT * FROM {s}.txn_guarded_delete($1, $2, $3)"),
            grant: format!(
                "INSERT INTO {s}.lease (id, ttl, expires_at) \
                 VALUES ($1::bigint, $2::bigint, now() + $2::bigint * interval '1 second') \
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            // Only a lease that has not expired is renewed: an expired lease never comes back,
            // even before a reaper deleted it.
            keep_alive: format!(
                "UPDATE {s}.lease SET expires_at = now() + ttl * interval '1 second' \
                 WHERE id = $1 AND expires_at > now() RETURNING ttl"
            ),
            time_to_live: format!(
                "SELECT l.ttl, ceil(extract(epoch FROM l.expires_at - now()))::bigint, \
                 CASE WHEN $2 THEN ARRAY(SELECT k.key FROM {s}.kv k WHERE k.lease = l.id \
                 ORDER BY k.key) END \
                 FROM {s}.lease l WHERE l.id = $1 AND l.expires_at > now()"
            ),
            lease_list: format!("SELECT id FROM {s}.lease WHERE expires_at > now() ORDER BY id"),
            revoke: format!("SELECT {s}.lease_revoke($1)"),
            compact: format!("SELECT {s}.compact($1)"),
            current: format!("SELECT revision FROM {s}.revision"),
            changes: format!("SELECT * FROM {s}.changes($1, $2, $3, $4)"),
            // The hub's read, every key: a plain statement rather than `changes()`, because a
            // SQL function is planned again on each call and this runs on every wake-up. Each
            // row carries the current and compact revision of the snapshot; with no change in
            // the window, one row of NULLs after them.
            hub_changes: format!(
                "SELECT r.revision, m.compact_revision, l.revision, l.idx, l.key, l.deleted, \
                 l.value, l.create_revision, l.version, l.lease, l.prev_value, \
                 l.prev_create_revision, l.prev_mod_revision, l.prev_version, l.prev_lease \
                 FROM {s}.revision r CROSS JOIN {s}.meta m LEFT JOIN LATERAL \
                 (SELECT * FROM {s}.log WHERE revision > $1 AND revision <= $2) l ON true"
            ),
            reap: format!("SELECT * FROM {s}.reap($1)"),
            compact_auto: format!("SELECT {s}.compact_auto($1, $2, $3)"),
            // SKIP_LOCKED: another process's compactor vacuuming the same tables is enough.
            vacuum: format!(
                "VACUUM (SKIP_LOCKED, TRUNCATE false) {s}.log, {s}.kv, {s}.lease, {s}.revision, {s}.meta"
            ),
            listen: format!("LISTEN {}", quote_ident(&channel)),
            schema: s,
            channel,
        }
    }

    /// `text` with the placeholders of `schema.sql` filled in.
    fn fill(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
            .replace("{chan}", &self.channel.replace('\'', "''"))
    }
}

/// Makes sure the schema is installed at [`SCHEMA_VERSION`], installing or migrating it.
pub(crate) async fn ensure(
    client: &mut tokio_postgres::Client,
    sql: &Sql,
    name: &str,
) -> Result<()> {
    let read = format!("SELECT schema_version FROM {}.meta", sql.schema);
    match client.query_one(&read, &[]).await {
        Ok(row) if row.get::<_, i32>(0) == SCHEMA_VERSION => return Ok(()),
        Ok(row) => check_version(row.get(0), name)?,
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) => {}
        Err(e) => return Err(error::from_client(e, 0)),
    }
    install(client, sql, name)
        .await
        .map_err(|e| error::from_client(e, 0))
        .and_then(|r| r)
}

fn check_version(found: i32, name: &str) -> Result<()> {
    if found > SCHEMA_VERSION {
        return Err(Error::Backend {
            source: Box::new(PgError::Other(format!(
                "schema {name:?} is at version {found}, newer than this coord-postgres knows \
                 ({SCHEMA_VERSION}): upgrade coord-postgres, or use another schema"
            ))),
        });
    }
    Ok(())
}

/// Creates or migrates the schema in one transaction under the install lock. The outer
/// `Result` is the database's, the inner one a version this crate refuses.
async fn install(
    client: &mut tokio_postgres::Client,
    sql: &Sql,
    name: &str,
) -> std::result::Result<Result<()>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&INSTALL_LOCK, &name],
    )
    .await?;
    // CREATE SCHEMA needs the database's CREATE privilege even with IF NOT EXISTS: skip it
    // when a DBA made the schema already.
    let exists: bool = tx
        .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&sql.schema])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {}", sql.schema))
            .await?;
    }
    let meta = format!("{}.meta", sql.schema);
    let installed: Option<i32> = if tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])
        .await?
        .get(0)
    {
        Some(
            tx.query_one(&format!("SELECT schema_version FROM {meta}"), &[])
                .await?
                .get(0),
        )
    } else {
        None
    };
    match installed {
        None => {
            tx.batch_execute(&sql.fill(SQL)).await?;
            tx.batch_execute(&sql.fill(FUNCTIONS)).await?;
            tx.execute(
                &format!("INSERT INTO {meta} (schema_version, compact_revision) VALUES ($1, 0)"),
                &[&SCHEMA_VERSION],
            )
            .await?;
            tracing::info!(
                schema = name,
                version = SCHEMA_VERSION,
                "installed coord's schema"
            );
        }
        Some(v) if v > SCHEMA_VERSION => return Ok(check_version(v, name)),
        Some(v) => {
            for (i, step) in MIGRATIONS.iter().enumerate().skip((v - 1).max(0) as usize) {
                tx.batch_execute(&sql.fill(step)).await?;
                tracing::info!(schema = name, to = i + 2, "migrated coord's schema");
            }
            tx.batch_execute(&sql.fill(FUNCTIONS)).await?;
            tx.execute(
                &format!("UPDATE {meta} SET schema_version = $1"),
                &[&SCHEMA_VERSION],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        let sql = Sql::new("app_1");
        let filled = sql.fill(SQL);
        assert!(!filled.contains("{s}") && !filled.contains("{chan}"));
        assert!(filled.contains("\"app_1\".kv"));
        let functions = sql.fill(FUNCTIONS);
        assert!(!functions.contains("{s}") && !functions.contains("{chan}"));
        assert!(functions.contains("pg_notify('app_1.changes'"));
        assert!(
            !functions.contains("CREATE FUNCTION"),
            "every function is CREATE OR REPLACE"
        );
        assert_eq!(sql.listen, "LISTEN \"app_1.changes\"");
        assert_eq!(MIGRATIONS.len() as i32, SCHEMA_VERSION - 1);
    }
}
