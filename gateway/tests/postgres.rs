//! The PostgreSQL backend's foundations against a real server: a throwaway cluster per test
//! (`casegate::dev::postgres::Cluster`, from the machine's own binaries) on loopback. Schema
//! migrations (once, concurrently, refused when newer or foreign, by `casegate migrate`), TLS
//! to the database verified against the configured CA, and the gateway refusing to serve on a
//! backend it does not serve from.
//!
//! With `CI=true` a machine without PostgreSQL fails these tests; elsewhere they are skipped
//! with a message.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use casegate::{
    dev::{self, DevCa, postgres::Cluster},
    postgres::{
        Database, DatabaseError, MIGRATIONS, Migrated, PostgresConfig, SCHEMA_VERSION,
        audit as pg_audit, consents as pg_consents, feed as pg_feed, flows as pg_flows, migrate,
        notes as pg_notes, schema_version,
    },
    pseudonym::Pseudonymizer,
};
use casegate_audit::{
    checkpoint::Signer,
    entry::{EncodeError, Entry, EntryKind, Fields},
    merkle,
    verify::{self, EXPORT_HEADER},
};
use casegate_consent::{
    OrgNumber, Role, SubjectId, Vocabulary,
    decision::{Decision, DisclosureRequest, Reason},
    record::{
        Actor, ConsentId, ConsentRecord, Evidence, NewConsent, Party, Period, Provision, Timestamp,
    },
    storage::{ConsentStorage, conformance::Harness as ConsentHarness},
    store::{LoggedChange, LostGrants, Reconciled, StoreError},
};
use casegate_notes::{
    Existing, Expiry, JournalStats, Note, NoteError, NoteStorage,
    storage::model::Harness as NotesHarness,
};

/// A fresh cluster in a fresh folder (serving TLS with a certificate by `tls`, if given), or
/// `None` (skipped) on a machine without PostgreSQL outside CI.
fn cluster(tls: Option<&DevCa>) -> Option<(tempfile::TempDir, Cluster)> {
    if dev::postgres::binaries().is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no PostgreSQL server binaries: .ci/run installs them"
        );
        eprintln!("skipped: no PostgreSQL server binaries on this machine");
        return None;
    }
    let dir = tempfile::tempdir().expect("folder");
    let mut settings = Vec::new();
    if let Some(ca) = tls {
        let (cert, key) = server_tls(dir.path(), ca);
        settings = vec![
            ("ssl", "on".to_owned()),
            ("ssl_cert_file", cert),
            ("ssl_key_file", key),
        ];
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = Cluster::start(dir.path(), &settings).expect("throwaway cluster starts");
    Some((dir, cluster))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn count(db: &Database, sql: &str) -> i64 {
    db.client()
        .await
        .expect("client")
        .query_one(sql, &[])
        .await
        .expect("query")
        .get(0)
}

#[test]
fn migrating_an_empty_database_applies_every_migration_once_and_again_changes_nothing() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    cluster.create_database("casegate").expect("database");
    runtime().block_on(async {
        let db = Database::connect(&PostgresConfig::local(cluster.url("casegate"))).expect("pool");
        assert_eq!(schema_version(&db).await.expect("version"), 0);
        assert_eq!(
            migrate(&db).await.expect("migrates"),
            Migrated {
                from: 0,
                to: SCHEMA_VERSION
            }
        );
        assert_eq!(schema_version(&db).await.expect("version"), SCHEMA_VERSION);
        // The first migration's tables are there.
        for table in [
            "casegate_consent_subject",
            "casegate_consent_version",
            "casegate_consent_mark",
        ] {
            let found = count(
                &db,
                &format!(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
                ),
            )
            .await;
            assert_eq!(found, 1, "{table}");
        }
        assert_eq!(
            migrate(&db).await.expect("again"),
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            }
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM casegate_schema").await,
            i64::try_from(MIGRATIONS.len()).expect("few")
        );
    });
}

#[test]
fn replicas_migrating_at_once_apply_each_migration_exactly_once() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    cluster.create_database("casegate").expect("database");
    runtime().block_on(async {
        let url = cluster.url("casegate");
        let mut replicas = Vec::new();
        for _ in 0..6 {
            let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
            replicas.push(tokio::spawn(async move { migrate(&db).await }));
        }
        let mut from_empty = 0;
        for replica in replicas {
            let migrated = replica.await.expect("task").expect("migrates");
            assert_eq!(migrated.to, SCHEMA_VERSION);
            if migrated.from == 0 {
                from_empty += 1;
            } else {
                assert_eq!(migrated.from, SCHEMA_VERSION);
            }
        }
        assert_eq!(from_empty, 1, "exactly one replica applied the migrations");
        let db = Database::connect(&PostgresConfig::local(url)).expect("pool");
        assert_eq!(
            count(&db, "SELECT count(*) FROM casegate_schema").await,
            i64::try_from(MIGRATIONS.len()).expect("few")
        );
    });
}

/// A dev configuration (every file it names exists) pointed at `url` by overrides.
fn dev_config(root: &Path) -> std::path::PathBuf {
    dev::prepare(root).expect("dev config")
}

fn casegate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_casegate"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .env_remove("CASEGATE_CONFIG")
        .output()
        .expect("runs")
}

#[test]
fn a_schema_newer_or_foreign_is_refused_and_left_as_it_is_by_gateway_and_command() {
    let Some((dir, cluster)) = cluster(None) else {
        return;
    };
    cluster.create_database("newer").expect("database");
    cluster.create_database("foreign").expect("database");
    let rt = runtime();
    let newer = Database::connect(&PostgresConfig::local(cluster.url("newer"))).expect("pool");
    let foreign = Database::connect(&PostgresConfig::local(cluster.url("foreign"))).expect("pool");
    rt.block_on(async {
        migrate(&newer).await.expect("migrates");
        newer
            .client()
            .await
            .expect("client")
            .execute(
                "INSERT INTO casegate_schema (version, name) VALUES ($1, 'from a later build')",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .expect("a later build's migration");
        let refused = migrate(&newer).await.expect_err("newer");
        assert!(
            matches!(refused, DatabaseError::SchemaTooNew { found, known }
                if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
            "{refused}"
        );
        assert!(matches!(
            schema_version(&newer).await,
            Err(DatabaseError::SchemaTooNew { .. })
        ));

        migrate(&foreign).await.expect("migrates");
        foreign
            .client()
            .await
            .expect("client")
            .execute("UPDATE casegate_schema SET name = 'accounts' WHERE version = 1", &[])
            .await
            .expect("another build's name");
        let refused = migrate(&foreign).await.expect_err("foreign");
        assert!(
            matches!(&refused, DatabaseError::SchemaMismatch { version: 1, found, .. } if found == "accounts"),
            "{refused}"
        );
        // Nothing was changed by the refusals.
        assert_eq!(
            count(&newer, "SELECT count(*) FROM casegate_schema").await,
            i64::try_from(MIGRATIONS.len()).expect("few") + 1
        );
    });

    // The same through `casegate migrate`, configured by overrides of the dev config.
    let config = dev_config(&dir.path().join("dev"));
    let config = config.to_str().expect("utf-8 path");
    let port = cluster.port();
    let run = |database: &str| {
        let url = format!(
            "postgresql://{}@127.0.0.1:{port}/{database}",
            dev::postgres::USER
        );
        casegate(
            &["migrate", "--config", config],
            &[
                ("CASEGATE_STORAGE__BACKEND", "postgres"),
                ("CASEGATE_STORAGE__POSTGRES__URL", &url),
            ],
        )
    };
    let out = run("newer");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the database's schema is version {}, newer than this gateway knows ({SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        )),
        "{stderr}"
    );
    cluster.create_database("fresh").expect("database");
    let out = run("fresh");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("schema version 0 -> {SCHEMA_VERSION}: migrated")
    );
    let out = run("fresh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("schema version {SCHEMA_VERSION}: up to date")
    );
    // No server: a readable failure within the connect timeout, not a hang.
    drop(cluster);
    let out = run("fresh");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the database"),
        "{out:?}"
    );

    // The embedded config has nothing to migrate; serving on a database that cannot be reached
    // fails at start with a readable reason.
    let out = casegate(&["migrate", "--config", config], &[]);
    assert_eq!(out.status.code(), Some(64));
    let out = casegate(
        &["serve", "--config", config],
        &[
            ("CASEGATE_STORAGE__BACKEND", "postgres"),
            (
                "CASEGATE_STORAGE__POSTGRES__URL",
                "postgresql://casegate@127.0.0.1:1/casegate",
            ),
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the database"),
        "{out:?}"
    );
}

/// Writes the database server's TLS files (certificate for 127.0.0.1 by `ca`) into `folder`,
/// its key readable by its owner alone, as PostgreSQL requires; returns their paths.
fn server_tls(folder: &Path, ca: &DevCa) -> (String, String) {
    let server = ca.issue_server(&["127.0.0.1"]).expect("server certificate");
    let (cert, key) = (folder.join("server.pem"), folder.join("server.key"));
    std::fs::write(&cert, &server.cert_pem).expect("cert");
    std::fs::write(&key, &server.key_pem).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    (text(&cert), text(&key))
}

#[test]
fn the_database_is_reached_over_tls_only_when_its_certificate_chains_to_the_configured_ca() {
    let ca = DevCa::generate("casegate test database CA").expect("CA");
    let other = DevCa::generate("another CA").expect("CA");
    let settings_dir = tempfile::tempdir().expect("folder");
    let (ca_file, other_file) = (
        settings_dir.path().join("ca.pem"),
        settings_dir.path().join("other.pem"),
    );
    std::fs::write(&ca_file, ca.certified().cert_pem).expect("ca");
    std::fs::write(&other_file, other.certified().cert_pem).expect("other");
    let Some((_dir, cluster)) = cluster(Some(&ca)) else {
        return;
    };
    cluster.create_database("casegate").expect("database");
    let settings = |ca: &Path| PostgresConfig {
        ca: Some(ca.to_owned()),
        connect_timeout: Duration::from_secs(3),
        ..PostgresConfig::local(cluster.url("casegate"))
    };
    runtime().block_on(async {
        let db = Database::connect(&settings(&ca_file)).expect("pool");
        let client = db.client().await.expect("TLS connection");
        let tls: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("query")
            .get(0);
        assert!(tls, "the connection uses TLS");
        drop(client);
        assert_eq!(migrate(&db).await.expect("over TLS").to, SCHEMA_VERSION);

        let wrong = Database::connect(&settings(&other_file)).expect("pool");
        let refused = wrong.client().await.expect_err("unknown issuer");
        assert!(
            matches!(&refused, DatabaseError::Unavailable(m) if m.contains("UnknownIssuer")),
            "{refused}"
        );
    });
}

// === the audit log as one log for every replica ===

const ORIGIN: &str = "casegate.test/audit";

/// A replica's handle on the log in `url`, signing with a copy of `signer`.
async fn replica(url: &str, signer: &Signer) -> pg_audit::AuditLog {
    replica_on(&PostgresConfig::local(url), signer).await.1
}

/// A replica's pool on `config` and its handle on the log there.
async fn replica_on(config: &PostgresConfig, signer: &Signer) -> (Database, pg_audit::AuditLog) {
    let db = Database::connect(config).expect("pool");
    let key = Signer::from_skey(&signer.to_skey()).expect("key");
    let log = pg_audit::AuditLog::open(db.clone(), key, ORIGIN, true)
        .await
        .expect("log");
    (db, log)
}

/// Settings for `url` at READ COMMITTED, or at SERIALIZABLE (as CockroachDB runs).
fn settings(url: &str, serializable: bool) -> PostgresConfig {
    PostgresConfig {
        serializable,
        ..PostgresConfig::local(url)
    }
}

/// A small entry at `time` (µs since the Unix epoch) named by `n`.
fn entry_at(n: u64, time: i64) -> Vec<u8> {
    let fields = Fields {
        request_id: Some(format!("request-{n}")),
        ..Fields::default()
    };
    Entry::from_fields(EntryKind::AuditQueried, time, fields)
        .encode()
        .expect("encodes")
}

/// A database with the schema, and its URL.
fn migrated(cluster: &Cluster, name: &str, rt: &tokio::runtime::Runtime) -> String {
    cluster.create_database(name).expect("database");
    let url = cluster.url(name);
    rt.block_on(async {
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        migrate(&db).await.expect("migrates");
    });
    url
}

/// `log`'s entries and newest checkpoint as an export file, for the offline verifier.
async fn export(log: &pg_audit::AuditLog) -> String {
    use base64::Engine;
    let checkpoint = log.checkpoint();
    let entries = log
        .entries(0, checkpoint.checkpoint.size)
        .await
        .expect("entries");
    let lines: Vec<String> = entries
        .iter()
        .map(|e| base64::engine::general_purpose::STANDARD.encode(e))
        .collect();
    format!(
        "{EXPORT_HEADER}\n{}\n\n{}",
        lines.join("\n"),
        checkpoint.note
    )
}

#[test]
fn three_replicas_sequencing_at_once_build_one_log_whose_receipts_and_export_verify() {
    three_replicas_sequence_at_once(false);
}

/// Three replicas append 40 entries each at once; returns the transactions they tried again.
fn three_replicas_sequence_at_once(serializable: bool) -> Option<u64> {
    let (_dir, cluster) = cluster(None)?;
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    rt.block_on(async {
        let mut replicas = Vec::new();
        let mut pools = Vec::new();
        for _ in 0..3 {
            let (db, log) = replica_on(&settings(&url, serializable), &signer).await;
            pools.push(db);
            replicas.push(std::sync::Arc::new(log));
        }
        // Each replica's clock 1 ms behind the one before: entries from the slower clocks
        // would go back in time.
        let base = 1_800_000_000_000_000i64;
        let mut tasks = Vec::new();
        for (r, log) in replicas.iter().enumerate() {
            for i in 0..40u64 {
                let log = log.clone();
                let n = r as u64 * 1000 + i;
                let time = base + i as i64 * 100 - r as i64 * 1000;
                tasks.push(tokio::spawn(async move {
                    let bytes = entry_at(n, time);
                    (bytes.clone(), log.append(&bytes).await.expect("appended"))
                }));
            }
        }
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.push(task.await.expect("task"));
        }
        let mut indexes: Vec<u64> = receipts.iter().map(|(_, a)| a.index).collect();
        indexes.sort_unstable();
        assert_eq!(
            indexes,
            (0..120).collect::<Vec<_>>(),
            "contiguous, each once"
        );

        let verifier = signer.verifier();
        let log = &replicas[0];
        log.refresh().await.expect("refresh");
        let newest = log.checkpoint();
        assert_eq!(newest.checkpoint.size, 120);
        let mut restamped = 0;
        for (bytes, appended) in &receipts {
            // The receipt's checkpoint is signed by the log's key and covers the entry.
            let checkpoint = verifier
                .verify(&appended.checkpoint.note)
                .expect("signed by the log's key");
            assert!(checkpoint.size > appended.index);
            let proof = log
                .inclusion_proof(appended.index, checkpoint.size)
                .await
                .expect("proof");
            merkle::verify_inclusion(
                &appended.leaf_hash,
                appended.index,
                checkpoint.size,
                &proof,
                &checkpoint.root,
            )
            .expect("the receipt's proof verifies against its checkpoint");
            // The log holds the bytes the receipt's leaf hash is of: the entry as written, or
            // with its time raised to its predecessor's.
            let stored = log.entry(appended.index).await.expect("entry");
            assert_eq!(merkle::leaf_hash(&stored), appended.leaf_hash);
            if stored != *bytes {
                restamped += 1;
                let (mut written, logged) = (
                    Entry::decode(bytes).expect("decodes"),
                    Entry::decode(&stored).expect("decodes"),
                );
                assert!(logged.time_micros > written.time_micros);
                written.time_micros = logged.time_micros;
                assert_eq!(written, logged, "only the time differs");
            }
            // Every earlier checkpoint is consistent with the newest.
            let consistency = log
                .consistency_proof(checkpoint.size, 120)
                .await
                .expect("consistency proof");
            merkle::verify_consistency(
                checkpoint.size,
                120,
                &consistency,
                &checkpoint.root,
                &newest.checkpoint.root,
            )
            .expect("consistent");
        }
        eprintln!("{restamped} of 120 entries were given their predecessor's time");
        assert_eq!(
            log.root(120).await.expect("root"),
            newest.checkpoint.root,
            "the root from stored nodes is the signed one"
        );
        // Every replica sees the same log.
        for other in &replicas[1..] {
            other.refresh().await.expect("refresh");
            assert_eq!(other.checkpoint().note, newest.note);
        }
        // The export verifies offline: entries decode, times never go back, the root and
        // the signature hold.
        let report = verify::verify_export(&export(log).await, &[verifier], None)
            .expect("the exported log verifies");
        assert_eq!(report.entries, 120);
        assert_eq!(report.checkpoint.size, 120);
        Some(pools.iter().map(Database::conflicts_retried).sum())
    })
}

#[test]
fn an_entry_is_logged_exactly_when_the_transaction_that_queued_it_commits() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    rt.block_on(async {
        let log = replica(&url, &signer).await;
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let mut client = db.client().await.expect("client");

        let tx = client.transaction().await.expect("begin");
        let rolled_back =
            pg_audit::AuditLog::enqueue(&tx, &entry_at(1, 1_800_000_000_000_000), None)
                .await
                .expect("queued");
        tx.rollback().await.expect("rollback");
        let refused = log.wait(rolled_back).await.expect_err("never queued");
        assert!(refused.to_string().contains("did not commit"), "{refused}");

        let tx = client.transaction().await.expect("begin");
        tx.execute("CREATE TABLE change_it_records (n INTEGER)", &[])
            .await
            .expect("the change");
        let committed = pg_audit::AuditLog::enqueue(&tx, &entry_at(2, 1_800_000_000_000_001), None)
            .await
            .expect("queued");
        tx.commit().await.expect("commit");
        let appended = log.wait(committed).await.expect("logged");
        assert_eq!(appended.index, 0, "the rolled-back entry took no index");
        assert_eq!(log.size(), 1);
    });
}

#[test]
fn entries_a_stopped_replica_queued_are_sequenced_by_another_and_a_foreign_key_is_refused() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    rt.block_on(async {
        let a = replica(&url, &signer).await;
        a.close();
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let client = db.client().await.expect("client");
        for n in 0..5 {
            pg_audit::AuditLog::enqueue(&client, &entry_at(n, 1_800_000_000_000_000), None)
                .await
                .expect("queued");
        }
        drop(a);
        // Another replica, not asked to wait for them, sequences them within its poll.
        let b = replica(&url, &signer).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.size() < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not sequenced in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.refresh().await.expect("refresh");
        }
        assert_eq!(b.size(), 5);

        // One log, one key: a replica with another key cannot open it.
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let other = Signer::generate(ORIGIN).expect("key");
        let refused = pg_audit::AuditLog::open(db, other, ORIGIN, true)
            .await
            .expect_err("another key");
        assert!(
            refused
                .to_string()
                .contains("does not verify with this gateway's key"),
            "{refused}"
        );
    });
}

// === consents ===

/// The PostgreSQL consents behind the storage trait the embedded store implements, each call
/// run to its end on a runtime of the test's: so the trait's one suite of expectations runs
/// against them unchanged.
#[derive(Debug)]
struct BlockingConsents {
    rt: std::sync::Arc<tokio::runtime::Runtime>,
    store: pg_consents::Consents,
}

impl ConsentStorage for BlockingConsents {
    fn prepare_grant(
        &self,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        self.rt
            .block_on(self.store.prepare_grant(new, supersedes, now))
    }

    fn commit_grant(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        self.rt.block_on(self.store.commit_grant(record))
    }

    fn withdraw(
        &self,
        id: &ConsentId,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        self.rt
            .block_on(self.store.withdraw(id, by, reason, evidence, now))
    }

    fn get(&self, id: &ConsentId, version: Option<u32>) -> Result<ConsentRecord, StoreError> {
        self.rt.block_on(self.store.get(id, version))
    }

    fn for_subject(&self, subject: &SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        self.rt.block_on(self.store.for_subject(subject))
    }

    fn decide(
        &self,
        subject: &SubjectId,
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
    ) -> Result<Decision, StoreError> {
        self.rt
            .block_on(self.store.decide(subject, request, at, vocabulary))
    }

    fn reconciled_through(&self) -> Result<Option<u64>, StoreError> {
        self.rt.block_on(self.store.reconciled_through())
    }

    fn set_reconciled_through(&self, size: u64) -> Result<(), StoreError> {
        self.rt.block_on(self.store.set_reconciled_through(size))
    }

    fn reconcile(
        &self,
        change: &LoggedChange,
        lost_grants: LostGrants,
    ) -> Result<Reconciled, StoreError> {
        self.rt.block_on(self.store.reconcile(change, lost_grants))
    }
}

/// A fresh database per store; reopening is a new pool on the same database.
struct PgConsents<'c> {
    cluster: &'c Cluster,
    rt: std::sync::Arc<tokio::runtime::Runtime>,
    pseudonyms: std::sync::Arc<Pseudonymizer>,
    made: usize,
}

impl PgConsents<'_> {
    fn open(&self, url: String) -> BlockingConsents {
        let db = Database::connect(&PostgresConfig::local(url)).expect("pool");
        BlockingConsents {
            rt: self.rt.clone(),
            store: pg_consents::Consents::new(db, self.pseudonyms.clone(), keyring()),
        }
    }
}

impl ConsentHarness for PgConsents<'_> {
    type Store = BlockingConsents;

    fn fresh(&mut self) -> BlockingConsents {
        self.made += 1;
        let url = migrated(self.cluster, &format!("consents_{}", self.made), &self.rt);
        self.open(url)
    }

    fn reopen(&mut self, store: BlockingConsents) -> BlockingConsents {
        drop(store);
        self.open(self.cluster.url(&format!("consents_{}", self.made)))
    }
}

/// The deployment's note keyring (it seals consent records too): one for every replica, as
/// they share one keyring file.
fn keyring() -> std::sync::Arc<casegate::keyring::Keyring> {
    use casegate::keyring::Keyring;
    static KEYRING: std::sync::OnceLock<std::sync::Arc<Keyring>> = std::sync::OnceLock::new();
    KEYRING
        .get_or_init(|| {
            std::sync::Arc::new(
                Keyring::parse(&Keyring::new_line("k1").expect("key")).expect("keyring"),
            )
        })
        .clone()
}

fn pseudonyms() -> std::sync::Arc<Pseudonymizer> {
    let key = Pseudonymizer::generate_text().expect("key");
    std::sync::Arc::new(Pseudonymizer::from_text(&key).expect("pseudonyms"))
}

#[test]
fn consents_in_postgres_meet_the_storage_expectations_the_embedded_store_meets() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let mut harness = PgConsents {
        cluster: &cluster,
        rt: std::sync::Arc::new(runtime()),
        pseudonyms: pseudonyms(),
        made: 0,
    };
    casegate_consent::storage::conformance::run(&mut harness);
    assert_eq!(harness.made, 7, "every case ran on a database of its own");
}

const NAV: &str = "910000071";
const CLINIC: &str = "910000063";

fn org(text: &str) -> OrgNumber {
    text.parse().expect("orgnr")
}

/// The subject's consent: NAV may send benefit counselling to the clinic for IPS follow-up,
/// for a day from `now`.
fn nav_to_clinic(subject: SubjectId, now: Timestamp) -> NewConsent {
    NewConsent {
        subject,
        recorded_by: Actor {
            orgnr: org(NAV),
            user_id: "nav-1".into(),
            role: Role::NavCounsellor,
        },
        provisions: vec![Provision {
            senders: vec![Party {
                orgnr: org(NAV),
                roles: Default::default(),
            }],
            recipients: vec![Party {
                orgnr: org(CLINIC),
                roles: Default::default(),
            }],
            categories: ["benefit_counselling".parse().expect("term")].into(),
            purposes: ["ips_follow_up".parse().expect("term")].into(),
        }],
        period: Period {
            start: now,
            end: Timestamp(now.0 + 86_400_000_000),
        },
        evidence: Evidence::SignedForm {
            sha256: [1; 32],
            reference: "form-1".into(),
        },
    }
}

/// A NAV counsellor's benefit counselling for the clinic.
fn benefit_counselling_to_clinic() -> DisclosureRequest {
    DisclosureRequest {
        sender_org: org(NAV),
        sender_role: Role::NavCounsellor,
        recipient_org: org(CLINIC),
        recipient_role: None,
        category: "benefit_counselling".parse().expect("term"),
        purpose: "ips_follow_up".parse().expect("term"),
        approval_attested: false,
    }
}

/// Another replica's withdrawal of `granted` (version 1), in flight in `tx`: the subject's row
/// (keyed `pseudonym`) locked and the version withdrawn, not yet committed.
async fn withdraw_uncommitted(
    tx: &deadpool_postgres::Transaction<'_>,
    consents: &pg_consents::Consents,
    pseudonym: &[u8; 32],
    granted: &ConsentRecord,
    now: Timestamp,
) {
    tx.query_one(
        "SELECT changes FROM casegate_consent_subject WHERE subject_key = $1 FOR UPDATE",
        &[&pseudonym.to_vec()],
    )
    .await
    .expect("lock");
    let mut withdrawn = granted.clone();
    casegate_consent::store::withdraw(&mut withdrawn, granted.recorded_by.clone(), None, None, now)
        .expect("withdraw");
    tx.execute(
        "UPDATE casegate_consent_version SET status = 2, record = $1 WHERE version = 1",
        &[&consents.seal(&withdrawn).expect("sealed")],
    )
    .await
    .expect("withdrawn");
}

#[test]
fn a_decision_waits_for_a_withdrawal_in_flight_and_sees_it() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let consents = pg_consents::Consents::new(db.clone(), pseudonyms.clone(), keyring());
        let subject = SubjectId::synthetic_all().nth(4321).expect("subject");
        let now = Timestamp(1_800_000_000_000_000);
        let granted = consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        consents.commit_grant(&granted).await.expect("grant");
        // Stored sealed: the identity number is nowhere in the row.
        let stored: Vec<u8> = db
            .client()
            .await
            .expect("client")
            .query_one("SELECT record FROM casegate_consent_version", &[])
            .await
            .expect("row")
            .get(0);
        let identity = subject.expose();
        assert!(
            !stored
                .windows(identity.len())
                .any(|w| w == identity.as_bytes()),
            "the record is sealed"
        );
        let request = benefit_counselling_to_clinic();
        let vocabulary = Vocabulary::default();
        assert!(matches!(
            consents.decide(&subject, &request, now, &vocabulary).await,
            Ok(Decision::Permit(_))
        ));

        // Another replica's withdrawal, in flight.
        let mut other = db.client().await.expect("client");
        let tx = other.transaction().await.expect("begin");
        withdraw_uncommitted(
            &tx,
            &consents,
            &pseudonyms.pseudonym(&subject),
            &granted,
            now,
        )
        .await;

        let deciding = {
            let (consents, vocabulary, request) =
                (consents.clone(), vocabulary.clone(), request.clone());
            tokio::spawn(async move { consents.decide(&subject, &request, now, &vocabulary).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !deciding.is_finished(),
            "the decision waits for the withdrawal"
        );
        tx.commit().await.expect("commit");
        let decided = deciding.await.expect("task").expect("decided");
        assert!(
            matches!(&decided, Decision::Deny(d) if d.reason == Reason::ConsentWithdrawn),
            "{decided:?}"
        );
    });
}

// === notes ===

/// The PostgreSQL notes behind the storage trait the embedded journal implements, each call
/// run to its end on a runtime of the test's, so the journal's model-based suite runs against
/// them unchanged. Nothing waits for a flush there: every change is committed when it returns.
#[derive(Debug)]
struct BlockingNotes {
    rt: std::sync::Arc<tokio::runtime::Runtime>,
    store: pg_notes::Notes,
}

impl NoteStorage for BlockingNotes {
    fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: uuid::Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError> {
        self.rt
            .block_on(self.store.reserve(sender, request_id, id, fingerprint))
    }

    fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError> {
        self.rt.block_on(self.store.release(sender, request_id))
    }

    fn stage_pending(&self, note: &Note) -> Result<(), NoteError> {
        self.rt.block_on(self.store.stage_pending(note))
    }

    fn make_deliverable(&self, note: Note, audit_index: u64) -> Result<Note, NoteError> {
        self.rt
            .block_on(self.store.make_deliverable(&note, audit_index))
    }

    fn mark_delivered(&self, id: &uuid::Uuid) -> Result<(), NoteError> {
        self.rt.block_on(self.store.mark_delivered(id))
    }

    fn acknowledge(
        &self,
        id: &uuid::Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError> {
        self.rt
            .block_on(self.store.acknowledge(id, at, purge_after))
    }

    fn purge(&self, id: &uuid::Uuid) -> Result<Note, NoteError> {
        self.rt.block_on(self.store.purge(id))
    }

    fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError> {
        self.rt.block_on(self.store.undelivered_for(consent))
    }

    fn drop_pending(&self, note: &Note) -> Result<(), NoteError> {
        self.rt.block_on(self.store.drop_pending(note))
    }

    fn forget_purged(&self, before: Timestamp, limit: usize) -> Result<usize, NoteError> {
        self.rt.block_on(self.store.forget_purged(before, limit))
    }

    fn get(&self, id: &uuid::Uuid) -> Result<Note, NoteError> {
        self.rt.block_on(self.store.get(id))
    }

    fn pending(&self) -> Result<Vec<Note>, NoteError> {
        self.rt.block_on(self.store.pending())
    }

    fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<Vec<Note>, NoteError> {
        self.rt.block_on(self.store.inbox_page(org, after, limit))
    }

    fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError> {
        self.rt.block_on(self.store.due(ttl_cutoff, now, limit))
    }

    fn flush(&self) -> Result<(), NoteError> {
        Ok(())
    }

    fn sync_now(&self) -> Result<(), NoteError> {
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        None
    }

    fn backlog(&self) -> usize {
        self.rt.block_on(self.store.backlog()).expect("backlog")
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            notes: self.rt.block_on(self.store.held()).expect("count"),
            files: 0,
            bytes: 0,
            live_bytes: 0,
        }
    }

    fn compact(&self) -> Result<usize, NoteError> {
        // Nothing to compact: PostgreSQL reclaims space itself (VACUUM).
        Ok(0)
    }
}

/// One database; a fresh store empties its note tables, reopening is a new pool.
struct PgNotes {
    url: String,
    rt: std::sync::Arc<tokio::runtime::Runtime>,
}

impl PgNotes {
    fn open(&self) -> Box<dyn NoteStorage> {
        let db = Database::connect(&PostgresConfig::local(self.url.clone())).expect("pool");
        Box::new(BlockingNotes {
            rt: self.rt.clone(),
            store: pg_notes::Notes::new(db),
        })
    }
}

impl NotesHarness for PgNotes {
    fn fresh(&mut self) -> Box<dyn NoteStorage> {
        self.rt.block_on(async {
            let db = Database::connect(&PostgresConfig::local(self.url.clone())).expect("pool");
            db.client()
                .await
                .expect("client")
                .batch_execute("TRUNCATE casegate_note, casegate_note_claim")
                .await
                .expect("emptied");
        });
        self.open()
    }

    fn reopen(&mut self, store: Box<dyn NoteStorage>) -> Box<dyn NoteStorage> {
        drop(store);
        self.open()
    }
}

#[test]
fn notes_in_postgres_answer_as_the_note_store_model_does() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = std::sync::Arc::new(runtime());
    let url = migrated(&cluster, "notes", &rt);
    let steps = casegate_notes::storage::model::check_against_model(&mut PgNotes { url, rt });
    assert!(steps >= 10_000, "{steps} steps");
}

#[test]
fn a_note_becomes_deliverable_in_the_batch_that_logs_its_entry_and_never_without_it() {
    use casegate_notes::{NoteState, storage::model::note};
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    rt.block_on(async {
        let log = replica(&url, &signer).await;
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let notes = pg_notes::Notes::new(db.clone());
        let (logged, rolled_back, purged) = (note(1), note(2), note(3));
        for n in [&logged, &rolled_back, &purged] {
            notes.stage_pending(n).await.expect("staged");
        }
        let mut client = db.client().await.expect("client");

        // Queued with its note and committed: deliverable under the entry's index.
        let tx = client.transaction().await.expect("begin");
        let queued =
            pg_audit::AuditLog::enqueue(&tx, &entry_at(1, 1_800_000_000_000_000), Some(logged.id))
                .await
                .expect("queued");
        tx.commit().await.expect("commit");
        let appended = log.wait(queued).await.expect("logged");
        let stored = notes.get(&logged.id).await.expect("held");
        assert_eq!(stored.state, NoteState::Deliverable);
        assert_eq!(stored.audit_index, Some(appended.index));
        assert_eq!(
            notes
                .inbox_page(logged.recipient_org, None, 10)
                .await
                .expect("inbox")
                .iter()
                .map(|n| n.id)
                .collect::<Vec<_>>(),
            [logged.id]
        );

        // Queued and rolled back: no entry, and the note stays pending.
        let tx = client.transaction().await.expect("begin");
        let queued = pg_audit::AuditLog::enqueue(
            &tx,
            &entry_at(2, 1_800_000_000_000_001),
            Some(rolled_back.id),
        )
        .await
        .expect("queued");
        tx.rollback().await.expect("rollback");
        log.wait(queued).await.expect_err("never logged");
        let stored = notes.get(&rolled_back.id).await.expect("held");
        assert_eq!(
            (stored.state, stored.audit_index),
            (NoteState::Pending, None)
        );

        // Purged (its consent withdrawn) before its entry was sequenced: the entry is
        // logged, the note stays purged.
        notes.purge(&purged.id).await.expect("purged");
        let tx = client.transaction().await.expect("begin");
        let queued =
            pg_audit::AuditLog::enqueue(&tx, &entry_at(3, 1_800_000_000_000_002), Some(purged.id))
                .await
                .expect("queued");
        tx.commit().await.expect("commit");
        let appended = log.wait(queued).await.expect("logged");
        assert_eq!(appended.index, 1, "the rolled-back entry took no index");
        assert_eq!(
            notes.get(&purged.id).await.expect("held").state,
            NoteState::Purged
        );
        assert_eq!(notes.backlog().await.expect("backlog"), 1);
    });
}

// === the cross-replica flows ===

/// One replica's handles on the shared database.
struct Replica {
    db: Database,
    flows: pg_flows::Flows,
    consents: pg_consents::Consents,
}

async fn replicas(
    config: &PostgresConfig,
    signer: &Signer,
    pseudonyms: &std::sync::Arc<Pseudonymizer>,
    n: usize,
) -> Vec<std::sync::Arc<Replica>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (db, log) = replica_on(config, signer).await;
        let consents = pg_consents::Consents::new(db.clone(), pseudonyms.clone(), keyring());
        out.push(std::sync::Arc::new(Replica {
            db: db.clone(),
            flows: pg_flows::Flows::new(db, std::sync::Arc::new(log), consents.clone()),
            consents,
        }));
    }
    out
}

/// The current time in microseconds since the Unix epoch.
fn micros_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros(),
    )
    .expect("fits")
}

/// A disclosure's entry and, when permitted, its note.
type Recorded = Result<(Vec<u8>, Option<Note>), EncodeError>;

/// Records a disclosure as the gateway does in shape: a permitted one with its pending note
/// (relying on the permit's consent version) and an entry, a refused one with an entry only.
fn disclosure_record(
    request_id: String,
    fingerprint: [u8; 32],
) -> impl Fn(&Decision, Option<&ConsentRecord>) -> Recorded + Send + Sync {
    about(request_id, fingerprint, [0; 32])
}

/// [`disclosure_record`] for a note naming the subject by `pseudonym`.
fn about(
    request_id: String,
    fingerprint: [u8; 32],
    pseudonym: [u8; 32],
) -> impl Fn(&Decision, Option<&ConsentRecord>) -> Recorded + Send + Sync {
    move |decision, _nearest| {
        let entry = entry_at(0, micros_now());
        match decision {
            Decision::Permit(permit) => {
                let mut note = casegate_notes::storage::model::note(micros_now());
                note.request_id = request_id.clone();
                note.fingerprint = fingerprint;
                note.sender.orgnr = org(NAV);
                note.recipient_org = org(CLINIC);
                note.consent_id = permit.consent_id;
                note.consent_version = permit.version;
                note.consent_record_hash = permit.record_hash;
                note.subject_pseudonym = pseudonym;
                Ok((entry, Some(note)))
            }
            Decision::Deny(_) => Ok((entry, None)),
        }
    }
}

#[test]
fn a_withdrawal_on_one_replica_purges_every_note_in_flight_on_the_others_and_none_stays_deliverable()
 {
    withdraw_while_others_disclose(false);
}

/// Two replicas disclose 32 notes while a third withdraws the consent; returns the
/// transactions they tried again.
fn withdraw_while_others_disclose(serializable: bool) -> Option<u64> {
    use casegate_notes::NoteState;
    let (_dir, cluster) = cluster(None)?;
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&settings(&url, serializable), &signer, &pseudonyms, 3).await;
        let (a, b, c) = (all[0].clone(), all[1].clone(), all[2].clone());
        let subject = SubjectId::synthetic_all().nth(777).expect("subject");
        let now = Timestamp(micros_now());
        let granted = c
            .consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        c.consents.commit_grant(&granted).await.expect("grant");
        let vocabulary = std::sync::Arc::new(Vocabulary::default());
        let disclose = |on: std::sync::Arc<Replica>, n: usize| {
            let vocabulary = vocabulary.clone();
            tokio::spawn(async move {
                let record = disclosure_record(format!("request-{n}"), [n as u8; 32]);
                on.flows
                    .disclose(
                        &subject,
                        &benefit_counselling_to_clinic(),
                        Timestamp(micros_now()),
                        &vocabulary,
                        &format!("request-{n}"),
                        &record,
                    )
                    .await
                    .expect("disclosed")
            })
        };
        // Two before the race, so some notes are surely in flight when it starts.
        let mut outcomes = vec![disclose(a.clone(), 0).await.expect("task")];
        outcomes.push(disclose(b.clone(), 1).await.expect("task"));
        let mut racing = Vec::new();
        for n in 2..32 {
            racing.push(disclose(if n % 2 == 0 { a.clone() } else { b.clone() }, n));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        let withdrawn = c
            .flows
            .withdraw(
                &granted.id,
                None,
                granted.recorded_by.clone(),
                None,
                None,
                Timestamp(micros_now()),
                &|_, purged| {
                    (0..=purged.len())
                        .map(|_| Ok(entry_at(0, micros_now())))
                        .collect()
                },
            )
            .await
            .expect("withdrawn");
        for task in racing {
            outcomes.push(task.await.expect("task"));
        }
        // After the withdrawal, on the replicas that did not withdraw: refused.
        outcomes.push(disclose(b.clone(), 99).await.expect("task"));

        let notes = pg_notes::Notes::new(
            Database::connect(&PostgresConfig::local(url.clone())).expect("pool"),
        );
        let (mut permitted, mut refused) = (Vec::new(), 0);
        for outcome in &outcomes {
            match outcome {
                pg_flows::Disclosure::Permitted { note, appended } => {
                    assert!(
                        appended.index < withdrawn.appended.index,
                        "every permitted disclosure was logged before the withdrawal"
                    );
                    permitted.push(*note);
                }
                pg_flows::Disclosure::Refused { deny, appended } => {
                    assert_eq!(deny.reason, Reason::ConsentWithdrawn);
                    assert!(appended.index > withdrawn.appended.index);
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            permitted.len() >= 2 && refused >= 1,
            "{} permitted, {refused} refused",
            permitted.len()
        );
        // Every note it permitted was undelivered, so the withdrawal purged them all; none is
        // in an inbox.
        let mut purged: Vec<_> = withdrawn.purged.iter().map(|n| n.id).collect();
        purged.sort();
        permitted.sort();
        assert_eq!(purged, permitted);
        for id in &permitted {
            let note = notes.get(id).await.expect("held");
            assert_eq!(note.state, NoteState::Purged);
            assert!(note.sealed.is_none(), "its body is gone");
        }
        assert_eq!(notes.backlog().await.expect("backlog"), 0);
        eprintln!(
            "{} permitted before the withdrawal, {refused} refused after it",
            permitted.len()
        );
        Some(all.iter().map(|r| r.db.conflicts_retried()).sum())
    })
}

#[test]
fn under_serializable_isolation_lost_conflicts_are_tried_again_and_every_invariant_holds() {
    let (Some(sequencing), Some(withdrawal)) = (
        three_replicas_sequence_at_once(true),
        withdraw_while_others_disclose(true),
    ) else {
        return;
    };
    eprintln!("tried again: {sequencing} while sequencing, {withdrawal} around the withdrawal");
    assert!(
        sequencing + withdrawal > 0,
        "serializable isolation made some transactions lose a conflict"
    );
}

#[test]
fn a_request_id_repeated_on_another_replica_gets_the_first_receipt_and_a_refusal_stores_nothing() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&PostgresConfig::local(url.clone()), &signer, &pseudonyms, 2).await;
        let subject = SubjectId::synthetic_all().nth(778).expect("subject");
        let now = Timestamp(micros_now());
        let granted = all[0]
            .consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        all[0].consents.commit_grant(&granted).await.expect("grant");
        let vocabulary = Vocabulary::default();
        let record = disclosure_record("request-1".into(), [7; 32]);
        let first = all[0]
            .flows
            .disclose(&subject, &benefit_counselling_to_clinic(), now, &vocabulary, "request-1", &record)
            .await
            .expect("disclosed");
        let pg_flows::Disclosure::Permitted { note, appended } = first else {
            panic!("permitted expected: {first:?}");
        };
        let again = all[1]
            .flows
            .disclose(&subject, &benefit_counselling_to_clinic(), now, &vocabulary, "request-1", &record)
            .await
            .expect("answered");
        let pg_flows::Disclosure::Repeated { existing, appended: again } = again else {
            panic!("a repeat expected: {again:?}");
        };
        assert_eq!((existing.id, existing.fingerprint), (note, [7; 32]));
        assert_eq!(
            (again.index, again.leaf_hash),
            (appended.index, appended.leaf_hash),
            "the first disclosure's receipt"
        );

        // A subject without consent: refused, logged, no note, and the request id stays free.
        let stranger = SubjectId::synthetic_all().nth(779).expect("subject");
        let refused = all[1]
            .flows
            .disclose(&stranger, &benefit_counselling_to_clinic(), now, &vocabulary, "request-2", &record)
            .await
            .expect("answered");
        assert!(
            matches!(&refused, pg_flows::Disclosure::Refused { deny, .. } if deny.reason == Reason::NoConsent),
            "{refused:?}"
        );
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        assert_eq!(count(&db, "SELECT count(*) FROM casegate_note").await, 1);
        assert_eq!(count(&db, "SELECT count(*) FROM casegate_audit_entry").await, 2);
    });
}

#[test]
fn replicas_go_on_after_postgres_restarts_and_lose_nothing_they_acknowledged() {
    let Some((_dir, mut cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let (a, b) =
        rt.block_on(async { (replica(&url, &signer).await, replica(&url, &signer).await) });
    let before: Vec<u64> = rt.block_on(async {
        let mut indexes = Vec::new();
        for n in 0..10 {
            indexes.push(
                a.append(&entry_at(n, micros_now()))
                    .await
                    .expect("appended")
                    .index,
            );
        }
        indexes
    });
    assert_eq!(before, (0..10).collect::<Vec<_>>());

    // The server dies as in a crash, and comes back on the same port.
    cluster.kill().expect("killed");
    rt.block_on(async {
        let refused = a.append(&entry_at(10, micros_now())).await;
        assert!(
            refused.is_err(),
            "nothing is acknowledged while the database is down"
        );
    });
    cluster.restart().expect("restarted");

    rt.block_on(async {
        // The same pools and sequencers, on both replicas.
        let mut after = Vec::new();
        for (n, log) in [(11, &a), (12, &b), (13, &a)] {
            after.push(
                log.append(&entry_at(n, micros_now()))
                    .await
                    .expect("appended after restart"),
            );
        }
        let indexes: Vec<u64> = after.iter().map(|x| x.index).collect();
        assert_eq!(
            indexes,
            [10, 11, 12],
            "contiguous after the acknowledged ten"
        );
        b.refresh().await.expect("refresh");
        assert_eq!(b.size(), 13);
        let report = verify::verify_export(&export(&b).await, &[signer.verifier()], None)
            .expect("the log verifies after the restart");
        assert_eq!(report.entries, 13);
    });
}

// === live inboxes across replicas ===

/// Stores `note` pending and logs its `disclosure permitted` entry with it, on one replica.
async fn disclose_note(db: &Database, log: &pg_audit::AuditLog, note: &Note) -> u64 {
    pg_notes::Notes::new(db.clone())
        .stage_pending(note)
        .await
        .expect("staged");
    let mut client = db.client().await.expect("client");
    let tx = client.transaction().await.expect("begin");
    let queued = pg_audit::AuditLog::enqueue(&tx, &entry_at(0, micros_now()), Some(note.id))
        .await
        .expect("queued");
    tx.commit().await.expect("commit");
    log.wait(queued).await.expect("logged").index
}

/// The next announcement, within 5 s.
async fn announced(
    feed: &mut tokio::sync::broadcast::Receiver<pg_feed::Deliverable>,
) -> pg_feed::Deliverable {
    tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("announced within 5 s")
        .expect("feed open")
}

#[test]
fn notes_disclosed_on_one_replica_reach_the_others_by_listen_or_polling_and_after_a_restart() {
    use casegate_notes::storage::model::note;
    for (mode, wakeup) in [
        // The safety poll is far longer than the wait: only a notification can be in time.
        (
            "listen",
            pg_feed::Wakeup::Listen {
                safety_poll: Duration::from_secs(60),
            },
        ),
        ("poll", pg_feed::Wakeup::Poll(Duration::from_millis(50))),
    ] {
        let Some((_dir, mut cluster)) = cluster(None) else {
            return;
        };
        let rt = runtime();
        let url = migrated(&cluster, "casegate", &rt);
        let signer = Signer::generate(ORIGIN).expect("key");
        let (a_db, a_log, feed) = rt.block_on(async {
            let a_db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
            let a_log = replica(&url, &signer).await;
            let b_db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
            (a_db, a_log, pg_feed::Feed::start(b_db, 0, wakeup))
        });
        let mut live = feed.subscribe();
        rt.block_on(async {
            // Let the listener subscribe before the first disclosure.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let first = note(1);
            let index = disclose_note(&a_db, &a_log, &first).await;
            let got = announced(&mut live).await;
            assert_eq!(
                (got.note, got.index, got.recipient),
                (first.id, index, first.recipient_org),
                "{mode}"
            );
        });

        // The database restarts; a note disclosed right after it reaches the feed too (a
        // listener resubscribes and catches up by its cursor).
        cluster.kill().expect("killed");
        cluster.restart().expect("restarted");
        rt.block_on(async {
            let second = note(2);
            let index = disclose_note(&a_db, &a_log, &second).await;
            let got = announced(&mut live).await;
            assert_eq!(
                (got.note, got.index),
                (second.id, index),
                "{mode} after a restart"
            );
            assert!(feed.cursor() > index, "{mode}");
        });
        drop(feed);
        drop(a_log);
    }
}

#[test]
fn replicas_sweeping_together_purge_each_due_note_exactly_once() {
    use casegate_notes::{NoteState, storage::model::note};
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&PostgresConfig::local(url.clone()), &signer, &pseudonyms, 3).await;
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let log = replica(&url, &signer).await;
        // 40 deliverable notes disclosed long ago (past their TTL), 5 recent ones (not).
        let mut old = Vec::new();
        for n in 0..45i64 {
            let at = if n < 40 { 1_000 + n } else { micros_now() };
            let mut pending = note(at);
            pending.request_id = format!("request-{n}");
            disclose_note(&db, &log, &pending).await;
            if n < 40 {
                old.push(pending.id);
            }
        }
        let cutoff = Timestamp(micros_now() - 60_000_000);
        let mut sweeps = Vec::new();
        for r in &all {
            let r = r.clone();
            sweeps.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let purged = r
                        .flows
                        .sweep(cutoff, cutoff, 4, &|_, _| Ok(entry_at(0, micros_now())))
                        .await
                        .expect("swept");
                    if purged.is_empty() {
                        return mine;
                    }
                    mine.extend(purged.into_iter().map(|(n, e)| {
                        assert_eq!(e, casegate_notes::Expiry::TtlElapsed);
                        n.id
                    }));
                }
            }));
        }
        let mut purged = Vec::new();
        let mut by_replica = Vec::new();
        for sweep in sweeps {
            let mine = sweep.await.expect("task");
            by_replica.push(mine.len());
            purged.extend(mine);
        }
        purged.sort();
        old.sort();
        assert_eq!(purged, old, "each due note purged once, by one replica");
        eprintln!("purged per replica: {by_replica:?}");
        let notes = pg_notes::Notes::new(db.clone());
        for id in &old {
            assert_eq!(notes.get(id).await.expect("held").state, NoteState::Purged);
        }
        assert_eq!(
            notes.backlog().await.expect("backlog"),
            5,
            "the recent ones stay"
        );
        // One purge entry per note: 45 disclosures + 40 purges.
        log.refresh().await.expect("refresh");
        let mut size = log.size();
        for _ in 0..100 {
            if size == 85 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            log.refresh().await.expect("refresh");
            size = log.size();
        }
        assert_eq!(size, 85);
    });
}

#[test]
fn a_note_is_delivered_only_while_its_consent_covers_it_even_with_a_withdrawal_in_flight() {
    use casegate_notes::NoteState;
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&PostgresConfig::local(url.clone()), &signer, &pseudonyms, 2).await;
        let (a, b) = (all[0].clone(), all[1].clone());
        let subject = SubjectId::synthetic_all().nth(780).expect("subject");
        let pseudonym = pseudonyms.pseudonym(&subject);
        let now = Timestamp(micros_now());
        let granted = a
            .consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        a.consents.commit_grant(&granted).await.expect("grant");
        let vocabulary = std::sync::Arc::new(Vocabulary::default());
        let mut disclosed = Vec::new();
        for n in 0..2u8 {
            let record = about(format!("request-{n}"), [n; 32], pseudonym);
            let outcome = a
                .flows
                .disclose(
                    &subject,
                    &benefit_counselling_to_clinic(),
                    now,
                    &vocabulary,
                    &format!("request-{n}"),
                    &record,
                )
                .await
                .expect("disclosed");
            let pg_flows::Disclosure::Permitted { note, .. } = outcome else {
                panic!("permitted expected: {outcome:?}");
            };
            disclosed.push(note);
        }
        let entry = |_: &Note, _: &Decision| Ok(entry_at(0, micros_now()));

        // Covered: delivered on another replica, and recorded.
        let delivered = b
            .flows
            .deliver(
                &disclosed[0],
                &benefit_counselling_to_clinic(),
                Timestamp(micros_now()),
                &vocabulary,
                &entry,
            )
            .await
            .expect("delivered");
        let pg_flows::Delivery::Delivered { note, .. } = delivered else {
            panic!("delivered expected: {delivered:?}");
        };
        assert!(note.delivered);

        // A withdrawal in flight on a third replica: the subject's row locked, the version
        // withdrawn, not yet committed. The delivery waits for it, sees it, and withholds.
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let mut other = db.client().await.expect("client");
        let tx = other.transaction().await.expect("begin");
        withdraw_uncommitted(&tx, &b.consents, &pseudonym, &granted, now).await;
        let delivering = {
            let (b, vocabulary, id) = (b.clone(), vocabulary.clone(), disclosed[1]);
            tokio::spawn(async move {
                b.flows
                    .deliver(
                        &id,
                        &benefit_counselling_to_clinic(),
                        Timestamp(micros_now()),
                        &vocabulary,
                        &|_, _| Ok(entry_at(0, micros_now())),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !delivering.is_finished(),
            "the delivery waits for the withdrawal"
        );
        tx.commit().await.expect("commit");
        let withheld = delivering.await.expect("task").expect("answered");
        let pg_flows::Delivery::Withheld { note, deny, .. } = withheld else {
            panic!("withheld expected: {withheld:?}");
        };
        assert_eq!(deny.reason, Reason::ConsentWithdrawn);
        assert_eq!(note.state, NoteState::Purged);
        assert!(note.sealed.is_none());

        // Out of the inbox now: nothing to deliver.
        let again = b
            .flows
            .deliver(
                &disclosed[1],
                &benefit_counselling_to_clinic(),
                Timestamp(micros_now()),
                &vocabulary,
                &entry,
            )
            .await
            .expect("answered");
        assert!(matches!(again, pg_flows::Delivery::Gone), "{again:?}");
    });
}

#[test]
fn a_grant_and_an_acknowledgement_commit_with_their_entries_or_not_at_all() {
    use casegate_notes::NoteState;
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&PostgresConfig::local(url.clone()), &signer, &pseudonyms, 2).await;
        let (a, b) = (all[0].clone(), all[1].clone());
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let entries = || async { count(&db, "SELECT count(*) FROM casegate_audit_entry").await };
        let subject = SubjectId::synthetic_all().nth(781).expect("subject");
        let now = Timestamp(micros_now());
        let record = a
            .consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        let granted = a
            .flows
            .grant(&record, &entry_at(0, micros_now()))
            .await
            .expect("granted");
        assert_eq!(granted.index, 0);
        assert_eq!(
            b.consents.get(&record.id, None).await.expect("held"),
            record
        );
        // The same version again (on another replica): refused, and no entry.
        let again = b.flows.grant(&record, &entry_at(0, micros_now())).await;
        assert!(
            matches!(
                again,
                Err(pg_flows::FlowError::Consent(StoreError::NotActive(_)))
            ),
            "{again:?}"
        );
        assert_eq!(entries().await, 1);

        let vocabulary = Vocabulary::default();
        let disclosed = a
            .flows
            .disclose(
                &subject,
                &benefit_counselling_to_clinic(),
                now,
                &vocabulary,
                "request-1",
                &about("request-1".into(), [1; 32], pseudonyms.pseudonym(&subject)),
            )
            .await
            .expect("disclosed");
        let pg_flows::Disclosure::Permitted { note, .. } = disclosed else {
            panic!("permitted expected: {disclosed:?}");
        };
        let at = Timestamp(micros_now());
        let purge_after = Timestamp(at.0 + 86_400_000_000);
        let entry = |_: &Note| Ok(entry_at(0, micros_now()));
        let (acknowledged, appended) = b
            .flows
            .acknowledge(&note, at, purge_after, &entry)
            .await
            .expect("acknowledged");
        assert_eq!(acknowledged.state, NoteState::Acknowledged);
        assert!(appended.is_some(), "the acknowledgement is logged");
        // Repeated: answered as the first was, not logged twice.
        let (repeated, none) = a
            .flows
            .acknowledge(&note, at, purge_after, &entry)
            .await
            .expect("answered again");
        assert_eq!((repeated, none.is_none()), (acknowledged, true));
        // Another acknowledgement of it: refused.
        let refused = a
            .flows
            .acknowledge(&note, Timestamp(at.0 + 1), purge_after, &entry)
            .await;
        assert!(
            matches!(
                refused,
                Err(pg_flows::FlowError::Note(NoteError::NotDeliverable(
                    "acknowledged"
                )))
            ),
            "{refused:?}"
        );
        // Grant, disclosure, acknowledgement.
        assert_eq!(entries().await, 3);
    });
}

#[test]
fn a_withdrawal_is_refused_when_the_newest_version_is_one_the_caller_may_not_see() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    let pseudonyms = pseudonyms();
    rt.block_on(async {
        let all = replicas(&PostgresConfig::local(url.clone()), &signer, &pseudonyms, 2).await;
        let (a, b) = (all[0].clone(), all[1].clone());
        let subject = SubjectId::synthetic_all().nth(782).expect("subject");
        let now = Timestamp(micros_now());
        let first = a
            .consents
            .prepare_grant(nav_to_clinic(subject, now), None, now)
            .await
            .expect("prepare");
        a.flows
            .grant(&first, &entry_at(0, micros_now()))
            .await
            .expect("granted");
        // Version 1 is what the caller saw; another replica supersedes it meanwhile.
        let second = b
            .consents
            .prepare_grant(nav_to_clinic(subject, now), Some(first.id), now)
            .await
            .expect("prepare");
        b.flows
            .grant(&second, &entry_at(0, micros_now()))
            .await
            .expect("superseded");
        let no_entries = |_: &ConsentRecord, _: &[Note]| Ok(vec![entry_at(0, micros_now())]);
        // The caller may see version 1 only.
        let only_first = |r: &ConsentRecord| r.version == first.version;
        let refused = a
            .flows
            .withdraw(
                &first.id,
                Some(&only_first),
                first.recorded_by.clone(),
                None,
                None,
                Timestamp(micros_now()),
                &no_entries,
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(pg_flows::FlowError::Consent(StoreError::NotFound))
            ),
            "{refused:?}"
        );
        let newest = a.consents.get(&first.id, None).await.expect("held");
        assert_eq!(
            (newest.version, newest.status),
            (second.version, casegate_consent::record::Status::Active)
        );
        // A caller who may see the newest version withdraws it.
        let any = |_: &ConsentRecord| true;
        let withdrawn = a
            .flows
            .withdraw(
                &first.id,
                Some(&any),
                first.recorded_by.clone(),
                None,
                None,
                Timestamp(micros_now()),
                &no_entries,
            )
            .await
            .expect("withdrawn");
        assert_eq!(withdrawn.record.version, second.version);
    });
}

#[test]
fn entries_are_logged_in_the_order_the_database_queued_them_whatever_the_writers_clocks() {
    let Some((_dir, cluster)) = cluster(None) else {
        return;
    };
    let rt = runtime();
    let url = migrated(&cluster, "casegate", &rt);
    let signer = Signer::generate(ORIGIN).expect("key");
    rt.block_on(async {
        let db = Database::connect(&PostgresConfig::local(url.clone())).expect("pool");
        let client = db.client().await.expect("client");
        // A writer whose clock runs an hour ahead queues first (its id sorts last), then one
        // with the right time: the first queued is the first logged.
        let at = |seconds: u64| {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0))
        };
        let now = u64::try_from(micros_now() / 1_000_000).expect("positive");
        let (ahead, on_time) = (at(now + 3600), at(now));
        for (id, n) in [(ahead, 0), (on_time, 1)] {
            client
                .execute(
                    "INSERT INTO casegate_audit_outbox (id, entry) VALUES ($1, $2)",
                    &[&id, &entry_at(n, micros_now())],
                )
                .await
                .expect("queued");
        }
        let log = replica(&url, &signer).await;
        log.wait(on_time).await.expect("logged");
        let index_of = |id: uuid::Uuid| {
            let client = &client;
            async move {
                client
                    .query_one(
                        "SELECT idx FROM casegate_audit_entry WHERE outbox_id = $1",
                        &[&id],
                    )
                    .await
                    .expect("logged")
                    .get::<_, i64>(0)
            }
        };
        assert_eq!((index_of(ahead).await, index_of(on_time).await), (0, 1));
    });
}
