//! The schema's versioned migrations: SQL files under `schema/`, numbered from 1, each applied
//! once in order and recorded in `casegate_schema`. Every replica runs [`migrate`] at start
//! (and `casegate migrate` runs it alone); replicas starting together serialise on one row
//! lock, so each migration is applied exactly once, in one transaction with its record (a
//! migration is all or nothing: PostgreSQL's DDL is transactional). A database migrated
//! further than this build knows is refused, never written.

use std::time::Duration;

use super::{Database, DatabaseError};

/// One step of the schema.
#[derive(Debug)]
pub struct Migration {
    /// Its number: 1 for the first, one more for each after it.
    pub version: i32,
    /// A short name, recorded beside the number (a database migrated by another build with
    /// the same number is caught by it).
    pub name: &'static str,
    /// The statements.
    sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "consents",
        sql: include_str!("schema/0001_consents.sql"),
    },
    Migration {
        version: 2,
        name: "audit log",
        sql: include_str!("schema/0002_audit_log.sql"),
    },
    Migration {
        version: 3,
        name: "notes",
        sql: include_str!("schema/0003_notes.sql"),
    },
    Migration {
        version: 4,
        name: "audit query index",
        sql: include_str!("schema/0004_audit_query_index.sql"),
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const _: () = {
    // Numbered 1, 2, 3, … with no gap: the order they are applied in.
    let mut i = 0;
    while i < MIGRATIONS.len() {
        assert!(MIGRATIONS[i].version == i as i32 + 1);
        i += 1;
    }
};

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found (0: an empty database).
    pub from: i32,
    /// The schema version left ([`SCHEMA_VERSION`]).
    pub to: i32,
}

/// The bookkeeping tables, created if missing; idempotent.
const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS casegate_schema_lock (id INTEGER PRIMARY KEY);
INSERT INTO casegate_schema_lock (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS casegate_schema (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);";

/// Brings the schema to [`SCHEMA_VERSION`]: applies every migration the database lacks, in
/// order, under the schema lock row, in one transaction with their records; a lost conflict
/// is tried again as every transaction is ([`Database::retrying`]).
///
/// # Errors
/// [`DatabaseError::SchemaTooNew`] or [`DatabaseError::SchemaMismatch`] (nothing is
/// changed); a connection or statement failure (the migrations are rolled back).
pub async fn migrate(db: &Database) -> Result<Migrated, DatabaseError> {
    db.retrying(|| async {
        let mut client = db.client().await?;
        attempt_migrate(&mut client).await
    })
    .await
}

async fn attempt_migrate(
    client: &mut deadpool_postgres::Client,
) -> Result<Migrated, DatabaseError> {
    bookkeeping(client).await?;
    let tx = client.transaction().await?;
    tx.query_one(
        "SELECT id FROM casegate_schema_lock WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await?;
    let from = checked(&applied(&tx).await?)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO casegate_schema (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// Creates the bookkeeping tables if missing. Sessions creating them at once can fail in
/// several ways (a duplicate type or relation, a catalog row updated concurrently); every
/// statement is idempotent, so any refusal by the server is tried again a few times.
async fn bookkeeping(client: &deadpool_postgres::Client) -> Result<(), DatabaseError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.batch_execute(BOOKKEEPING).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 && e.as_db_error().is_some() => {
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The database's schema version (0 before any migration), checked against this build's
/// migrations without changing anything.
///
/// # Errors
/// As [`migrate`], without applying anything.
pub async fn schema_version(db: &Database) -> Result<i32, DatabaseError> {
    let client = db.client().await?;
    let exists = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'casegate_schema'",
            &[],
        )
        .await?
        .get::<_, i64>(0)
        > 0;
    if !exists {
        return Ok(0);
    }
    checked(&applied(&client).await?)
}

/// The versions and names `casegate_schema` records, in order.
async fn applied(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<(i32, String)>, DatabaseError> {
    Ok(client
        .query(
            "SELECT version, name FROM casegate_schema ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// The version `applied` amounts to, if this build can work on it: versions 1 to n without
/// a gap, each under this build's name for it, and n no newer than [`SCHEMA_VERSION`].
fn checked(applied: &[(i32, String)]) -> Result<i32, DatabaseError> {
    let found = applied.last().map_or(0, |(v, _)| *v);
    if found > SCHEMA_VERSION {
        return Err(DatabaseError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (m, (version, name)) in MIGRATIONS.iter().zip(applied) {
        if m.version != *version || m.name != name {
            return Err(DatabaseError::SchemaMismatch {
                version: m.version,
                found: if m.version == *version {
                    name.clone()
                } else {
                    format!("missing (version {version} follows)")
                },
                known: m.name,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(i32, &str)]) -> Vec<(i32, String)> {
        list.iter().map(|(v, n)| (*v, (*n).to_owned())).collect()
    }

    #[test]
    fn a_schema_is_usable_only_as_this_build_numbered_and_named_it() {
        assert_eq!(checked(&[]).expect("empty"), 0);
        assert_eq!(checked(&rows(&[(1, "consents")])).expect("v1"), 1);
        let newer = checked(&rows(&[(1, "consents"), (SCHEMA_VERSION + 1, "later")]));
        assert!(
            matches!(newer, Err(DatabaseError::SchemaTooNew { found, known })
                if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
            "{newer:?}"
        );
        let renamed = checked(&rows(&[(1, "accounts")]));
        assert_eq!(
            renamed.expect_err("another build's").to_string(),
            "the database's schema version 1 is \"accounts\", but this gateway's is \
             \"consents\": the database was migrated by another build"
        );
    }
}
