//! The `casegate` command line.

mod audit_tools;
pub(crate) mod officer;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use audit_tools::replay_verdict;
pub use officer::{Connection, OutputFormat, QueryArgs};

use clap::{Parser, Subcommand};

use crate::client::render;

#[derive(Debug, Parser)]
#[command(
    name = "casegate",
    version,
    about = "Consent-gated case-sharing gateway"
)]
/// The `casegate` command line, as parsed by clap.
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands of `casegate`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with a configuration file (settings may be overridden by CASEGATE_… variables).
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and every file it names, without serving. Exit 0 if it is
    /// usable, 64 (listing every problem) if not.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Bring the PostgreSQL database's schema up to date (`storage.backend = "postgres"`),
    /// as every replica does at start. Exit 0 when it is current, 1 if it cannot be (a
    /// schema newer than this build, another build's, or no database), 64 for a config
    /// problem.
    Migrate {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Key lifecycle (run with the gateway stopped).
    Keys {
        /// The key to create or rotate.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Audit log tools: offline verification, keys, index, replay; queries and reports
    /// against a running gateway.
    Audit {
        /// The tool to run.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Run on the embedded development setup (generated PKI, token issuer and config).
    #[command(args_conflicts_with_subcommands = true)]
    Dev {
        /// A dev tool to run instead of serving; serve when absent.
        #[command(subcommand)]
        action: Option<DevAction>,
        /// The development data folder.
        #[arg(long, value_name = "DIR", default_value = "./casegate-data")]
        data: PathBuf,
        /// Listen address for this run (overrides the config file).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Serve N replicas on one throwaway PostgreSQL (started from this machine's own
        /// binaries, deleted at exit) instead of the embedded stores, on N consecutive ports
        /// from the listen address.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
        cluster: Option<u16>,
    },
}

/// The subcommands of `casegate audit`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Verify an audit log offline, from its files and the public verifier key alone.
    #[command(group = clap::ArgGroup::new("source").required(true).args(["log", "export"]))]
    Verify {
        /// The audit log folder (`<data_dir>/audit`).
        #[arg(long, value_name = "DIR")]
        log: Option<PathBuf>,
        /// An export file (entries and their checkpoint), as the officers' web pages download it.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// A verifier key (`name+id+key`), or a file holding it. Repeat it to accept the
        /// keys of earlier rotations: each checkpoint must be signed by one of them.
        #[arg(long, value_name = "VKEY", required = true)]
        vkey: Vec<String>,
        /// An older signed checkpoint (a file) the log must be consistent with.
        #[arg(long, value_name = "CHECKPOINT_FILE")]
        trusted: Option<PathBuf>,
    },
    /// Print the verifier key of the gateway's checkpoint signing key.
    Vkey {
        /// The gateway's configuration file.
        #[arg(
            long,
            short,
            value_name = "FILE",
            env = "CASEGATE_CONFIG",
            default_value = "./casegate-data/casegate.toml"
        )]
        config: PathBuf,
    },
    /// Rebuild the audit query index from the log's segment files (with the gateway stopped).
    Reindex {
        /// The gateway's configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Re-run a recorded disclosure decision from the consent versions it relied on (each
    /// checked against the record hash the log pinned) and say whether it reproduces.
    Replay {
        /// The audit log folder (`<data_dir>/audit`).
        #[arg(long, value_name = "DIR")]
        log: PathBuf,
        /// The consent versions: a report written with `casegate audit report --format json`,
        /// or a JSON array of canonical consent documents.
        #[arg(long, value_name = "EXPORT")]
        consents: PathBuf,
        /// The index of the `disclosure_permitted` or `disclosure_refused` entry.
        #[arg(long, value_name = "N")]
        index: u64,
        /// The gateway's configuration file, for its vocabulary (the default vocabulary
        /// otherwise).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Query a running gateway's audit log as a privacy officer (entries oldest first).
    Query {
        /// The gateway's address and the officer's certificate, key and token.
        #[command(flatten)]
        connection: Connection,
        /// Which entries to return.
        #[command(flatten)]
        filter: QueryArgs,
        /// How to print the entries.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Fetch a subject access report from a running gateway: every consent version and every
    /// recorded step about one jobseeker, each with an inclusion proof checked here against
    /// the report's signed checkpoint.
    Report {
        /// The gateway's address and the officer's certificate, key and token.
        #[command(flatten)]
        connection: Connection,
        /// The jobseeker's national identity number or D-number.
        #[arg(long, value_name = "NNIN")]
        subject: String,
        /// The gateway's verifier key (`name+id+key`) or a file holding it, as its operator
        /// hands it out: the report's checkpoint must be signed by it. Required: a key the
        /// report itself named would let a dishonest gateway sign a log of its own making.
        #[arg(long, value_name = "VKEY")]
        vkey: String,
        /// How to print the verified report.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Create a new checkpoint signing key file (readable by its owner only).
    Keygen {
        /// The key's name: use the log's origin, e.g. casegate.hospital.example/audit.
        #[arg(long)]
        name: String,
        /// Where to write the signer key; must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// The subcommands of `casegate keys`.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Add a new note encryption key: new notes are sealed with it; notes sealed before stay
    /// readable with the older keys, which stay in the keyring.
    RotateNotes {
        /// The gateway's configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Create the web tier's token signing key (Ed25519, PKCS#8 PEM, readable by its owner only)
    /// and its public key set (JWKS) for the `[[auth.issuers]]` entry that trusts it.
    WebIssuer {
        /// The `iss` the web tier's tokens carry (`[web] issuer`).
        #[arg(long)]
        iss: String,
        /// Where to write the private key; must not exist.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the JWKS; must not exist.
        #[arg(long, value_name = "FILE")]
        jwks: PathBuf,
    },
    /// Replace the audit checkpoint signing key: records the rotation in the log, leaves the
    /// newest checkpoint signed by both keys, keeps the old key file as `<file>.retired-<id>`,
    /// and prints the new verifier key.
    RotateAudit {
        /// The gateway's configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
}

/// The subcommands of `casegate dev`.
#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Print a signed access token for one of the development organisations.
    Token {
        /// The development data folder.
        #[arg(long, value_name = "DIR", default_value = "./casegate-data")]
        data: PathBuf,
        /// clinic, nav, ips, privacy or portal.
        #[arg(long, value_name = "SLUG")]
        org: String,
        /// clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin.
        #[arg(long)]
        role: String,
        /// The token subject (user id); defaults to `<org>-<role>`.
        #[arg(long, value_name = "ID")]
        sub: Option<String>,
        /// The jobseeker's own identity number (for role jobseeker).
        #[arg(long, value_name = "NNIN")]
        pid: Option<String>,
        /// How long the token is valid, e.g. 15m, 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Exit code for unusable arguments or configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Runs an `audit` subcommand, printing its one-line verdict or result.
pub fn audit(action: AuditAction) -> std::process::ExitCode {
    use std::process::ExitCode;

    use casegate_audit::{
        checkpoint::{Signer, Verifier},
        verify,
    };

    match action {
        AuditAction::Verify {
            log,
            export,
            vkey,
            trusted,
        } => {
            let mut verifiers = Vec::new();
            for vkey in vkey {
                match read_vkey(&vkey) {
                    Ok(v) => verifiers.push(v),
                    Err(e) => {
                        eprintln!("casegate audit verify: {e}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
            }
            let trusted = match trusted.map(std::fs::read_to_string).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("casegate audit verify: --trusted: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let result = match (log, export) {
                (Some(log), _) => verify::verify_with(&log, &verifiers, trusted.as_deref()),
                (None, export) => {
                    let export = export.unwrap_or_default();
                    match std::fs::read_to_string(&export) {
                        Ok(text) => verify::verify_export(&text, &verifiers, trusted.as_deref()),
                        Err(e) => {
                            eprintln!("casegate audit verify: --export {}: {e}", export.display());
                            return ExitCode::from(EXIT_USAGE);
                        }
                    }
                }
            };
            match result {
                Ok(report) => {
                    let labels: Vec<String> = verifiers.iter().map(Verifier::label).collect();
                    let mut line = format!(
                        "OK: {} entries; checkpoint of {} entries signed by {} verifies",
                        report.entries,
                        report.checkpoint.size,
                        labels.join(" or ")
                    );
                    if let Some(size) = report.consistent_with {
                        line.push_str(&format!(
                            "; consistent with the trusted checkpoint of {size} entries"
                        ));
                    }
                    if report.uncovered > 0 {
                        line.push_str(&format!(
                            "; {} newer entries not yet covered by a checkpoint",
                            report.uncovered
                        ));
                    }
                    if report.torn_tail_bytes > 0 {
                        line.push_str(&format!(
                            "; {} bytes of an unacknowledged torn write at the end",
                            report.torn_tail_bytes
                        ));
                    }
                    // Key names come from the command line, counts from the files.
                    println!("{}", render::terminal(&line));
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    // Failures that locate themselves read "index N: why".
                    let failure_index = failure.index();
                    // Reasons may quote the files (an origin, a segment's name).
                    let failure = render::terminal(&failure.to_string()).into_owned();
                    match failure_index {
                        Some(_) => println!("FAILED at {failure}"),
                        None => println!("FAILED: {failure}"),
                    }
                    ExitCode::FAILURE
                }
            }
        }
        AuditAction::Reindex { config } => audit_tools::reindex(&config),
        AuditAction::Replay {
            log,
            consents,
            index,
            config,
        } => audit_tools::replay(&log, &consents, index, config.as_deref()),
        AuditAction::Query {
            connection,
            filter,
            format,
        } => officer::query(&connection, filter, format),
        AuditAction::Report {
            connection,
            subject,
            vkey,
            format,
        } => officer::report(&connection, &subject, &vkey, format),
        AuditAction::Vkey { config } => {
            let config = match crate::runtime::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("casegate audit vkey: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match crate::app::audit::load_signer(&config.audit.signing_key) {
                Ok(signer) => {
                    println!("{}", signer.verifier().to_vkey());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("casegate audit vkey: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        AuditAction::Keygen { name, out } => {
            let signer = match Signer::generate(&name) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("casegate audit keygen: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let written = casegate_audit::durable::write_new_file(
                &out,
                format!("{}\n", signer.to_skey()).as_bytes(),
            );
            match written {
                Ok(()) => {
                    println!("{}", signer.verifier().to_vkey());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("casegate audit keygen: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A verifier key given on the command line: the key itself (`name+id+key`) or a file
/// holding it.
fn read_vkey(arg: &str) -> Result<casegate_audit::checkpoint::Verifier, String> {
    let text = if arg.contains('+') && !std::path::Path::new(arg).exists() {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).map_err(|e| format!("--vkey {arg}: {e}"))?
    };
    casegate_audit::checkpoint::Verifier::from_vkey(&text).map_err(|e| format!("--vkey: {e}"))
}

/// `casegate keys web-issuer`.
pub fn web_issuer(
    iss: &str,
    key: &std::path::Path,
    jwks: &std::path::Path,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let issuer = match crate::crypto::issuer::TokenIssuer::generate(iss, "") {
        Ok(issuer) => issuer,
        Err(e) => {
            eprintln!("casegate keys web-issuer: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, text) in [(key, issuer.private_key_pem()), (jwks, issuer.jwks_json())] {
        if let Err(e) = casegate_audit::durable::write_new_file(path, text.as_bytes()) {
            eprintln!("casegate keys web-issuer: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("key id {}", issuer.kid());
    ExitCode::SUCCESS
}

/// `casegate check-config FILE`.
pub fn check_config(path: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let checked = crate::runtime::config::Config::load(path).and_then(|config| {
        crate::runtime::server::Material::load(&config).map(|material| (config, material))
    });
    match checked {
        Ok((config, material)) => {
            // Usable, but worth the operator's attention.
            for stale in material.tls.stale_crls(std::time::SystemTime::now()) {
                println!("warning: {stale}");
            }
            println!(
                "{}: OK (listen {}, {} token issuer{}, data in {})",
                path.display(),
                config.server.listen,
                config.auth.issuers.len(),
                if config.auth.issuers.len() == 1 {
                    ""
                } else {
                    "s"
                },
                config.storage.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("casegate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `casegate migrate`.
pub fn migrate(path: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;

    use crate::{runtime::config::Backend, store::postgres};
    let config = match crate::runtime::config::Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("casegate: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Backend::Postgres(settings) = &config.storage.backend else {
        eprintln!(
            "casegate migrate: {}: storage.backend is \"embedded\": there is no database to migrate",
            path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("casegate migrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let migrated = runtime.block_on(async {
        let db = postgres::Database::connect(settings)?;
        postgres::migrate(&db).await
    });
    match migrated {
        Ok(postgres::Migrated { from, to }) if from == to => {
            println!("schema version {to}: up to date");
            ExitCode::SUCCESS
        }
        Ok(postgres::Migrated { from, to }) => {
            println!("schema version {from} -> {to}: migrated");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("casegate migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `casegate keys rotate-audit`.
pub fn rotate_audit(path: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;

    use casegate_audit::{
        checkpoint::Signer,
        entry::{Entry, Event, KeyRotated},
        log::rotate_key,
    };

    let fail = |message: String| {
        eprintln!("casegate keys rotate-audit: {message}");
        ExitCode::FAILURE
    };
    // The gateway must not be running: the audit log has one writer.
    let (config, data) = match stopped_gateway(path, "rotate-audit") {
        Ok(found) => found,
        Err(code) => return code,
    };
    let key_path = &config.audit.signing_key;
    let old = match crate::app::audit::load_signer(key_path) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let new = match Signer::generate(old.name()) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let (old_label, new_label) = (old.verifier().label(), new.verifier().label());
    let rotated = Event::KeyRotated(KeyRotated {
        old_key: old_label.clone(),
        new_key: new_label.clone(),
    });
    let entry = match Entry::new(crate::app::audit::now_micros(), rotated).encode() {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()),
    };
    // The new key first, beside the old one: a crash at any point leaves a usable key.
    let next = key_path.with_extension("next");
    if let Err(e) = write_private(&next, &format!("{}\n", new.to_skey())) {
        return fail(format!("{}: {e}", next.display()));
    }
    let options = crate::app::audit::log_options(&config.audit);
    if let Err(e) = rotate_key(&data.path().join("audit"), old, &new, options, entry) {
        return fail(e.to_string());
    }
    let retired = std::path::PathBuf::from(format!(
        "{}.retired-{}",
        key_path.display(),
        old_label.rsplit('+').next().unwrap_or("old")
    ));
    // The old key gets its second name first, then the new key replaces the first name in
    // one rename: at no moment is there no key at the configured path.
    let moved = casegate_audit::durable::remove_file(&retired)
        .and_then(|()| std::fs::hard_link(key_path, &retired))
        .and_then(|()| casegate_audit::durable::rename(&next, key_path));
    if let Err(e) = moved {
        return fail(format!("{}: {e}", key_path.display()));
    }
    eprintln!(
        "rotated: {old_label} -> {new_label}; the old key is kept at {}; \
         give privacy officers the new verifier key (below) and keep the old one for older checkpoints",
        retired.display()
    );
    println!("{}", new.verifier().to_vkey());
    ExitCode::SUCCESS
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    casegate_audit::durable::write_file(path, text.as_bytes())
}

/// `casegate keys rotate-notes`.
pub fn rotate_notes(path: &std::path::Path) -> std::process::ExitCode {
    use std::{io::Write, process::ExitCode};

    use crate::crypto::keyring::Keyring;

    let fail = |message: String| {
        eprintln!("casegate keys rotate-notes: {message}");
        ExitCode::FAILURE
    };
    // The gateway reads the keyring at start: rotate while it is stopped.
    let (config, _data) = match stopped_gateway(path, "rotate-notes") {
        Ok(found) => found,
        Err(code) => return code,
    };
    let file = &config.notes.keyring;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    if let Err(e) = Keyring::parse(&text) {
        return fail(format!("{}: {e}", file.display()));
    }
    // Key ids k1, k2, …: the next free one.
    let next = (1..)
        .map(|n| format!("k{n}"))
        .find(|id| {
            !text
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id))
        })
        .unwrap_or_else(|| "k0".into());
    let line = match Keyring::new_line(&next) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let separator = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .and_then(|mut f| {
            f.write_all(format!("{separator}{line}").as_bytes())?;
            f.sync_all()
        });
    match appended {
        Ok(()) => {
            println!("{next}");
            eprintln!(
                "new notes will be sealed with key {next}; older keys stay in {}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: {e}", file.display())),
    }
}

/// The configuration at `path` and its data folder, locked: maintenance runs only while no
/// gateway uses the folder.
fn stopped_gateway(
    path: &std::path::Path,
    command: &str,
) -> Result<
    (
        crate::runtime::config::Config,
        crate::runtime::data_dir::DataDir,
    ),
    std::process::ExitCode,
> {
    let config = crate::runtime::config::Config::load(path).map_err(|e| {
        eprintln!("casegate: {e}");
        std::process::ExitCode::from(EXIT_USAGE)
    })?;
    let data = crate::runtime::data_dir::DataDir::open(&config.storage.data_dir).map_err(|e| {
        eprintln!("casegate keys {command}: {e} (stop the gateway first)");
        std::process::ExitCode::FAILURE
    })?;
    Ok((config, data))
}
