//! The gateway's configuration: a TOML file, optionally overridden by `CASEGATE_…` environment
//! variables, checked as a whole so that every problem is reported at once, before any port
//! is bound.

mod web;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use casegate_consent::{Category, CategoryRule, Purpose, Role, Vocabulary};
use toml::{Table, Value};

pub use crate::base::problem::Problem;
use crate::base::settings::{
    Problems, Schema, Section, count, days, duration, flag, list, path, secs, table, text,
};
pub use web::{AudienceConfig, OidcConfig, WebConfig};

pub use crate::{
    app::audit::AuditConfig,
    edge::{
        auth::{AuthConfig, IssuerConfig, JwksLocation},
        tls::{StaleCrls, TlsConfig},
    },
};

/// Prefix of environment variables that override settings: `CASEGATE_SERVER__LISTEN` sets
/// `server.listen` (sections separated by a double underscore).
pub const ENV_PREFIX: &str = "CASEGATE_";

pub use crate::edge::auth::ALLOWED_ALGORITHMS;

/// The whole configuration, every section checked and every named file found readable.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config was read from; relative paths in it were resolved against its folder.
    pub source: PathBuf,
    /// `[server]`: the gRPC listener and its connection bounds.
    pub server: ServerConfig,
    /// `[tls]`: the server certificate, the client CA and its CRLs.
    pub tls: TlsConfig,
    /// `[auth]`: the token issuers and who may act as a jobseeker.
    pub auth: AuthConfig,
    /// `[storage]`: the data folder.
    pub storage: StorageConfig,
    /// `[audit]`: the audit log's origin, signing key and writer settings.
    pub audit: AuditConfig,
    /// `[privacy]`: the pseudonym key and the supervisory organisations.
    pub privacy: PrivacyConfig,
    /// `[notes]`: the note keyring and how long notes are kept.
    pub notes: NotesConfig,
    /// `[limits]`: message sizes, deadlines, concurrency and rate limits.
    pub limits: Limits,
    /// `[log]`: the log format and filter.
    pub log: LogConfig,
    /// Where Prometheus metrics are served (off when absent).
    pub metrics_listen: Option<SocketAddr>,
    /// The categories (with who may send them, and whether approval is required) and
    /// purposes of `[vocabulary]`; the built-in vocabulary when the section names neither.
    pub vocabulary: Vocabulary,
    /// The longest validity period a consent may have.
    pub max_consent_period: Duration,
    /// Registered names of organisations, for reports (`[organisations]`: orgnr = name, or
    /// orgnr = { name, contact }).
    pub organisations: BTreeMap<casegate_consent::OrgNumber, String>,
    /// Where a jobseeker can ask an organisation about what it received (`contact` in
    /// `[organisations]`): an `https:`, `mailto:` or `tel:` URI.
    pub contacts: BTreeMap<casegate_consent::OrgNumber, String>,
    /// The web tier; off when absent.
    pub web: Option<WebConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The gRPC listener's address (`listen`, required).
    pub listen: SocketAddr,
    /// How long in-flight calls may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Open client connections at most; a connection beyond it is closed as soon as it is
    /// accepted, before its handshake.
    pub max_connections: usize,
    /// A connection older than this is asked to close (HTTP/2 GOAWAY, RFC 9113 §6.8) and
    /// cut `max_connection_age_grace` later: the longest a connection can outlive a
    /// revocation of its certificate if no CRL reload reaches it.
    pub max_connection_age: Duration,
    /// How long calls may finish on a connection past its maximum age.
    pub max_connection_age_grace: Duration,
    /// Silence on a connection after which the gateway sends an HTTP/2 PING (RFC 9113 §6.7)…
    pub keepalive_interval: Duration,
    /// …and how long the client has to answer it before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data folder (`data_dir`, required): the consent store, the note store, the audit
    /// log and its index, under one exclusive lock; created if missing.
    pub data_dir: PathBuf,
    /// Where the deployment's state lives (`backend`: `"embedded"`, the default, or
    /// `"postgres"` with a `[storage.postgres]` section).
    pub backend: Backend,
}

/// `storage.backend`.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The data folder alone: one gateway per folder (the default, and `casegate dev`).
    Embedded,
    /// A PostgreSQL database shared by every replica (DESIGN §7).
    Postgres(crate::store::postgres::PostgresConfig),
}

/// `[privacy]`.
#[derive(Debug, Clone)]
pub struct PrivacyConfig {
    /// The secret (base64, at least 32 bytes) that keys subject pseudonyms (HMAC-SHA-256).
    /// Changing it breaks the link between old and new audit entries about a subject.
    pub pseudonym_key: PathBuf,
    /// Organisations whose privacy officers see every audit entry (a supervisory authority,
    /// the operator's data protection officer). Other officers see the entries their own
    /// organisation is actor, sender or recipient of.
    pub supervisory_orgs: Vec<casegate_consent::OrgNumber>,
}

/// `[notes]`.
#[derive(Debug, Clone)]
pub struct NotesConfig {
    /// The note encryption keyring (`<key id> <base64 key>` lines, newest last).
    pub keyring: PathBuf,
    /// How long a note's body is kept after the recipient acknowledged it.
    pub retention: Duration,
    /// How long an unacknowledged note waits before it is purged.
    pub ttl: Duration,
    /// How often expired bodies are looked for.
    pub sweep_interval: Duration,
    /// How long a purged note is remembered (its request id, for idempotency; what it was,
    /// without its body) before it is forgotten.
    pub forget_after: Duration,
}

/// `[limits]`; every key has a default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Largest note body accepted by `Disclose`.
    pub max_body_bytes: usize,
    /// Deadline for unary calls.
    pub request_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Calls in progress across all connections; beyond it calls are refused at once
    /// (`RESOURCE_EXHAUSTED`) rather than queued.
    pub max_concurrent_calls: usize,
    /// Calls per second each organisation may make on average…
    pub rate_per_second: u32,
    /// …and in a burst.
    pub rate_burst: u32,
}

/// How log lines are written (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`"text"`, the default).
    Text,
    /// One JSON object per line (`"json"`).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The format of log lines.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `casegate=debug,info`.
    pub filter: String,
}

/// Why a configuration cannot be used. Display lists every problem, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not TOML; nothing else was checked.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// The file is TOML, but keys are missing, unknown or invalid, or named files are not
    /// readable.
    #[error("{}", render(.path, .problems))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found, in the order the keys were read.
        problems: Vec<Problem>,
    },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "config file {} has {} problem{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// Builds an `Invalid` error from problems found after parsing (files, keys).
    pub fn invalid(path: &Path, problems: Vec<Problem>) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads `path` and applies the process environment's overrides.
    ///
    /// # Errors
    /// As [`Config::load_with_env`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Reads `path` and applies the overrides among `env` (`CASEGATE_SECTION__KEY = value`
    /// pairs; see [`ENV_PREFIX`]); relative paths are resolved against the file's folder.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read; otherwise as [`Config::parse`].
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base, env)
    }

    /// Parses config text; `base` is the folder relative paths are resolved against. Every
    /// file the configuration names must be readable.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] if `text` is not TOML; [`ConfigError::Invalid`] with every
    /// problem found otherwise (bad overrides included).
    pub fn parse(
        text: &str,
        source: &Path,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::parse_with(text, source, base, env, |path| {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    /// [`Config::parse`] with `readable` deciding whether a named file can be read.
    ///
    /// # Errors
    /// As [`Config::parse`]; each file `readable` refuses is a problem naming its key.
    pub fn parse_with(
        text: &str,
        source: &Path,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        readable: impl Fn(&Path) -> Result<(), String>,
    ) -> Result<Self, ConfigError> {
        let mut table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source.to_owned(),
            message: e.message().to_owned(),
        })?;
        let mut problems = Problems::default();
        apply_env(&mut table, env, &mut problems);
        let config = read(table, source, base, &mut problems);
        for (key, path) in std::mem::take(&mut problems.1) {
            if let Err(e) = readable(&path) {
                problems.push(key, format!("{}: {e}", path.display()));
            }
        }
        match config {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(ConfigError::invalid(source, problems.0)),
        }
    }
}

/// Applies `CASEGATE_A__B=value` as `a.b = value`. A value that parses as a TOML value
/// (number, boolean, quoted string, array) is taken as such, anything else as a string.
fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Problems,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            problems.push(
                name.clone(),
                "not a valid override name (CASEGATE_SECTION__KEY)",
            );
            continue;
        }
        let value = toml::from_str::<Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(Value::String(raw));
        if let Err(section) = insert_path(table, &path, value) {
            problems.push(name.clone(), format!("{section} is not a table"));
        }
    }
}

/// Sets `path` (all but the last element are tables, created as needed) to `value`.
/// On a non-table in the way, returns its name.
fn insert_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(inner) => insert_path(inner, rest, value),
            _ => Err(first.clone()),
        },
    }
}

// === the sections' keys ===

/// The file's sections.
pub(crate) static ROOT: Schema = Schema {
    section: "",
    keys: &[
        table("server"),
        table("tls"),
        table("auth"),
        table("storage"),
        table("audit"),
        table("privacy"),
        table("organisations"),
        table("notes"),
        table("limits"),
        table("log"),
        table("metrics"),
        table("vocabulary"),
        table("web"),
    ],
};

static SERVER: Schema = Schema {
    section: "server",
    keys: &[
        text("listen", true),
        duration("shutdown_grace", secs(10), Duration::ZERO, secs(300)),
        duration(
            "handshake_timeout",
            secs(10),
            Duration::from_millis(100),
            secs(120),
        ),
        count("max_connections", 10_000, 1_000_000),
        duration("max_connection_age", secs(3600), secs(1), days(7)),
        duration(
            "max_connection_age_grace",
            secs(30),
            Duration::ZERO,
            secs(3600),
        ),
        duration("keepalive_interval", secs(30), secs(1), secs(3600)),
        duration("keepalive_timeout", secs(10), secs(1), secs(300)),
    ],
};

static STORAGE: Schema = Schema {
    section: "storage",
    keys: &[
        path("data_dir", true),
        text("backend", false),
        table("postgres"),
    ],
};

static PRIVACY: Schema = Schema {
    section: "privacy",
    keys: &[path("pseudonym_key", true), list("supervisory_orgs", false)],
};

/// `[organisations]`: organisation numbers of the operator's choosing, each a name or a
/// table of [`ORGANISATION`].
static ORGANISATIONS: Schema = Schema {
    section: "organisations",
    keys: &[],
};

static ORGANISATION: Schema = Schema {
    section: "organisations.*",
    keys: &[text("name", true), text("contact", false)],
};

static NOTES: Schema = Schema {
    section: "notes",
    keys: &[
        path("keyring", true),
        duration("retention", days(7), Duration::ZERO, days(365)),
        duration("ttl", days(30), secs(1), days(365)),
        duration(
            "sweep_interval",
            secs(60),
            Duration::from_millis(100),
            secs(3600),
        ),
        duration("forget_after", days(30), Duration::ZERO, days(3650)),
    ],
};

static LIMITS: Schema = Schema {
    section: "limits",
    keys: &[
        count("max_message_bytes", 4 << 20, 64 << 20),
        count("max_body_bytes", 256 << 10, 16 << 20),
        duration(
            "request_timeout",
            secs(30),
            Duration::from_millis(100),
            secs(600),
        ),
        count("max_concurrent_streams", 100, 10_000),
        count("max_concurrent_calls", 1024, 100_000),
        count("rate_per_second", 200, 1_000_000),
        count("rate_burst", 400, 1_000_000),
    ],
};

static LOG: Schema = Schema {
    section: "log",
    keys: &[text("format", false), text("filter", false)],
};

static METRICS: Schema = Schema {
    section: "metrics",
    keys: &[text("listen", false)],
};

static VOCABULARY: Schema = Schema {
    section: "vocabulary",
    keys: &[
        duration("max_consent_period", days(365), days(1), days(5 * 365)),
        table("categories"),
        table("purposes"),
    ],
};

static CATEGORY: Schema = Schema {
    section: "vocabulary.categories",
    keys: &[
        text("name", true),
        list("senders", true),
        flag("approval_required", false),
        text("description", false),
    ],
};

static PURPOSE: Schema = Schema {
    section: "vocabulary.purposes",
    keys: &[text("name", true), text("description", false)],
};

/// Every section's schema, for the checks of the example and the dev configuration.
#[cfg(test)]
pub(crate) fn schemas() -> Vec<&'static Schema> {
    let mut all = vec![
        &ROOT,
        &SERVER,
        &crate::edge::tls::CONFIG_SCHEMA,
        &crate::edge::auth::CONFIG_SCHEMA,
        &crate::edge::auth::ISSUER_SCHEMA,
        &STORAGE,
        &crate::store::postgres::CONFIG_SCHEMA,
        &crate::app::audit::CONFIG_SCHEMA,
        &PRIVACY,
        &ORGANISATIONS,
        &ORGANISATION,
        &NOTES,
        &LIMITS,
        &LOG,
        &METRICS,
        &VOCABULARY,
        &CATEGORY,
        &PURPOSE,
    ];
    all.extend(web::schemas());
    all
}

fn read(table: Table, source: &Path, base: &Path, problems: &mut Problems) -> Option<Config> {
    let mut root = Section::new("", table, problems, &ROOT);

    let server = {
        let mut s = root.section("server", &SERVER);
        let listen = s.text("listen").and_then(|text| match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                s.problem(
                    "listen",
                    format!("{text:?} is not an address like 127.0.0.1:50051"),
                );
                None
            }
        });
        let shutdown_grace = s.duration("shutdown_grace");
        let handshake_timeout = s.duration("handshake_timeout");
        let max_connections = s.count("max_connections");
        let max_connection_age = s.duration("max_connection_age");
        let max_connection_age_grace = s.duration("max_connection_age_grace");
        let keepalive_interval = s.duration("keepalive_interval");
        let keepalive_timeout = s.duration("keepalive_timeout");
        s.finish();
        listen.map(|listen| ServerConfig {
            listen,
            shutdown_grace,
            handshake_timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connection_age,
            max_connection_age_grace,
            keepalive_interval,
            keepalive_timeout,
        })
    };

    let tls = {
        let mut s = root.section("tls", &crate::edge::tls::CONFIG_SCHEMA);
        let tls = TlsConfig::read(&mut s, base);
        s.finish();
        tls
    };

    let auth = {
        let mut s = root.section("auth", &crate::edge::auth::CONFIG_SCHEMA);
        let auth = AuthConfig::read(&mut s, base);
        s.finish();
        auth
    };

    let storage = {
        let mut s = root.section("storage", &STORAGE);
        let data_dir = s.path("data_dir", base);
        let backend = match s.text("backend").as_deref() {
            None | Some("embedded") => {
                let mut p = s.section("postgres", &crate::store::postgres::CONFIG_SCHEMA);
                if !p.is_empty() {
                    p.entries();
                    p.problem("", "is read only with backend = \"postgres\"");
                }
                Some(Backend::Embedded)
            }
            Some("postgres") => {
                let mut p = s.section("postgres", &crate::store::postgres::CONFIG_SCHEMA);
                let postgres = crate::store::postgres::PostgresConfig::read(&mut p, base);
                p.finish();
                postgres.map(Backend::Postgres)
            }
            Some(other) => {
                s.problem(
                    "backend",
                    format!("must be \"embedded\" or \"postgres\", not {other:?}"),
                );
                None
            }
        };
        s.finish();
        data_dir
            .zip(backend)
            .map(|(data_dir, backend)| StorageConfig { data_dir, backend })
    };

    let audit = {
        let mut s = root.section("audit", &crate::app::audit::CONFIG_SCHEMA);
        let audit = AuditConfig::read(&mut s, base);
        s.finish();
        audit
    };

    let privacy = {
        let mut s = root.section("privacy", &PRIVACY);
        let pseudonym_key = s.file("pseudonym_key", base);
        let supervisory_orgs = s.org_numbers("supervisory_orgs");
        s.finish();
        pseudonym_key.map(|pseudonym_key| PrivacyConfig {
            pseudonym_key,
            supervisory_orgs,
        })
    };

    let (organisations, contacts) = {
        let mut s = root.section("organisations", &ORGANISATIONS);
        let mut names = BTreeMap::new();
        let mut contacts = BTreeMap::new();
        for (key, value) in s.entries() {
            let (name, contact) = match value {
                Value::String(name) => (Some(name), None),
                Value::Table(table) => {
                    let mut t = Section::new(s.key(&key), table, s.problems(), &ORGANISATION);
                    let name = t.text("name");
                    let contact = t.text("contact");
                    if let Some(uri) = &contact
                        && !["https://", "mailto:", "tel:"]
                            .iter()
                            .any(|scheme| uri.starts_with(scheme))
                    {
                        t.problem("contact", "must be an https:, mailto: or tel: URI");
                    }
                    t.finish();
                    (name, contact)
                }
                other => {
                    s.problem(
                        &key,
                        format!(
                            "expected a name or a table {{ name, contact }}, found {}",
                            other.type_str()
                        ),
                    );
                    continue;
                }
            };
            match key.parse::<casegate_consent::OrgNumber>() {
                Ok(org) => {
                    if let Some(name) = name {
                        names.insert(org, name);
                    }
                    if let Some(contact) = contact {
                        contacts.insert(org, contact);
                    }
                }
                Err(e) => s.problem(&key, e.to_string()),
            }
        }
        s.finish();
        (names, contacts)
    };

    let notes = {
        let mut s = root.section("notes", &NOTES);
        let keyring = s.file("keyring", base);
        let retention = s.duration("retention");
        let ttl = s.duration("ttl");
        let sweep_interval = s.duration("sweep_interval");
        let forget_after = s.duration("forget_after");
        s.finish();
        keyring.map(|keyring| NotesConfig {
            keyring,
            retention,
            ttl,
            sweep_interval,
            forget_after,
        })
    };

    let limits = {
        let mut s = root.section("limits", &LIMITS);
        let max_message_bytes = s.count("max_message_bytes");
        let max_body_bytes = s.count("max_body_bytes");
        if max_body_bytes + (64 << 10) > max_message_bytes {
            s.problem(
                "max_body_bytes",
                "must leave at least 64 KiB of max_message_bytes for the rest of the message",
            );
        }
        let request_timeout = s.duration("request_timeout");
        let max_concurrent_streams = s.count("max_concurrent_streams");
        let max_concurrent_calls = s.count("max_concurrent_calls");
        let rate_per_second = s.count("rate_per_second");
        let rate_burst = s.count("rate_burst");
        s.finish();
        Limits {
            max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            request_timeout,
            max_concurrent_streams: u32::try_from(max_concurrent_streams).unwrap_or(u32::MAX),
            max_concurrent_calls: usize::try_from(max_concurrent_calls).unwrap_or(usize::MAX),
            rate_per_second: u32::try_from(rate_per_second).unwrap_or(u32::MAX),
            rate_burst: u32::try_from(rate_burst).unwrap_or(u32::MAX),
        }
    };

    let log = {
        let mut s = root.section("log", &LOG);
        let format = match s.text("format").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                s.problem(
                    "format",
                    format!("{other:?} is not one of \"text\", \"json\""),
                );
                LogFormat::Text
            }
        };
        let filter = s.text("filter").unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
            s.problem("filter", format!("{filter:?} is not a tracing filter: {e}"));
        }
        s.finish();
        LogConfig { format, filter }
    };

    let metrics_listen = {
        let mut s = root.section("metrics", &METRICS);
        let listen = s.text("listen").and_then(|text| match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                s.problem(
                    "listen",
                    format!("{text:?} is not an address like 127.0.0.1:9464"),
                );
                None
            }
        });
        s.finish();
        listen
    };

    let (vocabulary, max_consent_period) = {
        let mut s = root.section("vocabulary", &VOCABULARY);
        let max = s.duration("max_consent_period");
        let vocabulary = read_vocabulary(&mut s);
        s.finish();
        (vocabulary, max)
    };

    let web = web::read(&mut root, base);
    if let (Some(web), Some(auth)) = (&web, &auth)
        && !auth.issuers.iter().any(|i| i.iss == web.issuer)
    {
        root.problems().push(
            "web.issuer",
            format!(
                "{:?} is not the iss of any [[auth.issuers]]: the gateway would refuse the web \
                 tier's tokens",
                web.issuer
            ),
        );
    }

    root.finish();
    Some(Config {
        source: source.to_owned(),
        server: server?,
        tls: tls?,
        auth: auth?,
        storage: storage?,
        audit: audit?,
        privacy: privacy?,
        notes: notes?,
        limits,
        log,
        metrics_listen,
        vocabulary: vocabulary?,
        max_consent_period,
        organisations,
        contacts,
        web,
    })
}

fn read_vocabulary(s: &mut Section<'_>) -> Option<Vocabulary> {
    let categories = s.tables("categories");
    let purposes = s.tables("purposes");
    if categories.is_none() && purposes.is_none() {
        return Some(Vocabulary::default());
    }
    let defaults = Vocabulary::default();
    let mut cats = Vec::new();
    match categories {
        Some(tables) => {
            for (path, table) in tables {
                let mut t = Section::new(path, table, s.problems(), &CATEGORY);
                let name = t.text("name").and_then(|n| match n.parse::<Category>() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        t.problem("name", e.to_string());
                        None
                    }
                });
                let senders = t.strings("senders").map(|names| {
                    names
                        .iter()
                        .filter_map(|n| match n.parse::<Role>() {
                            Ok(r) => Some(r),
                            Err(e) => {
                                t.problem("senders", format!("{n:?}: {e}"));
                                None
                            }
                        })
                        .collect::<BTreeSet<_>>()
                });
                let approval_required = t.flag("approval_required");
                let _description = t.text("description");
                t.finish();
                if let (Some(name), Some(senders)) = (name, senders) {
                    cats.push((
                        name,
                        CategoryRule {
                            senders,
                            approval_required,
                        },
                    ));
                }
            }
        }
        None => cats.extend(defaults.categories().map(|(c, r)| (c.clone(), r.clone()))),
    }
    let mut purs = Vec::new();
    match purposes {
        Some(tables) => {
            for (path, table) in tables {
                let mut t = Section::new(path, table, s.problems(), &PURPOSE);
                if let Some(name) = t.text("name") {
                    match name.parse::<Purpose>() {
                        Ok(p) => purs.push(p),
                        Err(e) => t.problem("name", e.to_string()),
                    }
                }
                let _description = t.text("description");
                t.finish();
            }
        }
        None => purs.extend(defaults.purposes().cloned()),
    }
    match Vocabulary::new(cats, purs) {
        Ok(v) => Some(v),
        Err(e) => {
            s.problem("", e.to_string());
            None
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests;
