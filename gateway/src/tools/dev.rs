//! The embedded development setup behind `casegate dev`: on first run it creates a CA, a server
//! certificate for loopback, client certificates for five synthetic organisations, a token
//! issuer and a config file; later runs reuse them. Everything lives under one data folder.

pub mod pki;
pub mod postgres;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use casegate_consent::{Role, SubjectId};
use rustls_pki_types::{CertificateDer, pem::PemObject};

pub use crate::crypto::issuer::{TokenClaims, TokenIssuer};
use crate::edge::identity::ClientIdentity;
pub use pki::DevCa;

/// The dev token issuer's `iss` (`casegate dev token`, the tests' synthetic organisations).
pub const DEV_ISSUER: &str = "casegate-dev";
/// The `iss` of the web tier's own tokens.
pub const WEB_ISSUER: &str = "casegate-web";
/// Where `casegate dev` serves the web pages.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";
/// The `aud` the dev config expects of tokens from both dev issuers.
pub const DEV_AUDIENCE: &str = "casegate";
/// Where `casegate dev` serves gRPC (`[server] listen` of the dev config).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The dev audit log's origin (and its signing key's name).
pub const DEV_AUDIT_ORIGIN: &str = "dev.casegate.local/audit";

/// A synthetic organisation of the development setup. The numbers have valid check digits
/// and belong to no real organisation's published use in this setup.
#[derive(Debug, Clone, Copy)]
pub struct DevOrg {
    /// Its short name: `--org` of `casegate dev token`, and the stem of its certificate and
    /// key files under `pki/`.
    pub slug: &'static str,
    /// Its display name (the certificate's organisation, the config's `[organisations]`).
    pub name: &'static str,
    /// Its nine-digit organisation number (mod-11 check digit), in its certificate's
    /// `organizationIdentifier` as `NTRNO-<orgnr>`.
    pub orgnr: &'static str,
    /// The role its people typically act in.
    pub role: Role,
}

/// The synthetic organisations, in this order: clinic, NAV office, IPS team, privacy office
/// (supervisory in the dev config) and jobseeker portal (the only one whose tokens may act as
/// a jobseeker).
pub const ORGS: [DevOrg; 5] = [
    DevOrg {
        slug: "clinic",
        name: "Dev DPS Clinic",
        orgnr: "910000012",
        role: Role::Clinician,
    },
    DevOrg {
        slug: "nav",
        name: "Dev NAV Office",
        orgnr: "910000020",
        role: Role::NavCounsellor,
    },
    DevOrg {
        slug: "ips",
        name: "Dev IPS Team",
        orgnr: "910000039",
        role: Role::EmploymentSpecialist,
    },
    DevOrg {
        slug: "privacy",
        name: "Dev Privacy Office",
        orgnr: "910000047",
        role: Role::PrivacyOfficer,
    },
    DevOrg {
        slug: "portal",
        name: "Dev Jobseeker Portal",
        orgnr: "910000055",
        role: Role::Jobseeker,
    },
];

/// Why the dev folder could not be prepared or a dev token signed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file or folder of the dev folder could not be read, created or synced.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is unusable (a certificate that is not PEM or names no organisation),
    /// or a key for it could not be generated.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate or key could not be generated, or the CA could not be loaded.
    #[error("certificate generation failed: {0}")]
    Pki(#[from] pki::PkiError),
    /// The token issuer's key could not be generated, loaded or used to sign.
    #[error(transparent)]
    Issuer(#[from] crate::crypto::issuer::IssuerError),
    /// `--org` is none of the [`ORGS`] slugs.
    #[error("unknown organisation {0:?} (expected clinic, nav, ips, privacy or portal)")]
    UnknownOrg(String),
    /// `--role` is not a role name.
    #[error("--role: {0}")]
    Role(casegate_consent::ParseError),
    /// `--pid` is not a valid identity number or D-number.
    #[error("--pid: {0}")]
    Pid(casegate_consent::ParseError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<String, DevError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes a file that must not be readable by others (keys), or a public one.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), DevError> {
    let mode = if secret { 0o600 } else { 0o644 };
    casegate_audit::durable::write_new_file_with_mode(path, contents.as_bytes(), mode)
        .map_err(io_err(path))
}

/// The files of a dev data folder.
#[derive(Debug, Clone)]
pub struct DevLayout {
    /// The dev data folder (also the gateway's `storage.data_dir`).
    pub root: PathBuf,
}

impl DevLayout {
    /// The layout of the dev folder at `root`; nothing is read or created.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }
    /// `pki/`: the CA, certificates, keys and the issuers' key sets.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// `casegate.toml`, the dev configuration.
    pub fn config(&self) -> PathBuf {
        self.root.join("casegate.toml")
    }
    /// `pki/ca.pem`, the dev CA's certificate (its key is `pki/ca.key`).
    pub fn ca_cert(&self) -> PathBuf {
        self.pki().join("ca.pem")
    }
    /// `pki/<slug>.pem`, the certificate of `server`, `ca` or an organisation of [`ORGS`].
    pub fn cert(&self, slug: &str) -> PathBuf {
        self.pki().join(format!("{slug}.pem"))
    }
    /// `pki/<slug>.key`, the private key (PEM, mode 0600) beside [`DevLayout::cert`].
    pub fn key(&self, slug: &str) -> PathBuf {
        self.pki().join(format!("{slug}.key"))
    }
    /// `pki/issuer.key`, the Ed25519 key of the dev token issuer ([`DEV_ISSUER`]).
    pub fn issuer_key(&self) -> PathBuf {
        self.pki().join("issuer.key")
    }
    /// `pki/issuer-jwks.json`, the dev token issuer's public JWKS.
    pub fn jwks(&self) -> PathBuf {
        self.pki().join("issuer-jwks.json")
    }
    /// `pki/web-issuer.key`, the Ed25519 key the web tier mints its tokens with
    /// ([`WEB_ISSUER`]).
    pub fn web_issuer_key(&self) -> PathBuf {
        self.pki().join("web-issuer.key")
    }
    /// `pki/web-issuer-jwks.json`, the web tier issuer's public JWKS.
    pub fn web_jwks(&self) -> PathBuf {
        self.pki().join("web-issuer-jwks.json")
    }
    /// `audit-signing.key`, the audit log's checkpoint signing key (C2SP signed-note signer
    /// key, named [`DEV_AUDIT_ORIGIN`]).
    pub fn audit_key(&self) -> PathBuf {
        self.root.join("audit-signing.key")
    }
    /// `pseudonym.key`, the HMAC-SHA-256 key of the audit log's subject pseudonyms.
    pub fn pseudonym_key(&self) -> PathBuf {
        self.root.join("pseudonym.key")
    }
    /// `notes.keyring`, the note store's AES-256-GCM keyring (one key, `k1`).
    pub fn notes_keyring(&self) -> PathBuf {
        self.root.join("notes.keyring")
    }
}

/// Creates whatever the dev folder is missing; keeps what is there. Returns the config path.
/// Each new file is synced with its folder; keys are created with mode 0600.
///
/// # Errors
/// [`DevError`] if a file cannot be read or written, or a key or certificate cannot be made.
pub fn prepare(root: &Path) -> Result<PathBuf, DevError> {
    let layout = DevLayout::new(root);
    let pki = layout.pki();
    casegate_audit::durable::create_dirs(&pki).map_err(io_err(&pki))?;

    let ca = if layout.ca_cert().exists() {
        DevCa::load(&read(&layout.ca_cert())?, &read(&layout.key("ca"))?)?
    } else {
        let ca = DevCa::generate("casegate dev CA")?;
        write_new(&layout.key("ca"), &ca.key_pem, true)?;
        write_new(&layout.ca_cert(), &ca.cert_pem, false)?;
        ca
    };
    if !layout.cert("server").exists() {
        let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
        write_new(&layout.key("server"), &server.key_pem, true)?;
        write_new(&layout.cert("server"), &server.cert_pem, false)?;
    }
    for org in ORGS {
        if !layout.cert(org.slug).exists() {
            let client = ca.issue_client(org.name, Some(org.orgnr))?;
            write_new(&layout.key(org.slug), &client.key_pem, true)?;
            write_new(&layout.cert(org.slug), &client.cert_pem, false)?;
        }
    }
    if !layout.issuer_key().exists() {
        let issuer = TokenIssuer::generate(DEV_ISSUER, DEV_AUDIENCE)?;
        write_new(&layout.issuer_key(), &issuer.private_key_pem(), true)?;
        write_new(&layout.jwks(), &issuer.jwks_json(), false)?;
    }
    if !layout.web_issuer_key().exists() {
        let issuer = TokenIssuer::generate(WEB_ISSUER, DEV_AUDIENCE)?;
        write_new(&layout.web_issuer_key(), &issuer.private_key_pem(), true)?;
        write_new(&layout.web_jwks(), &issuer.jwks_json(), false)?;
    }
    if !layout.audit_key().exists() {
        let signer =
            casegate_audit::checkpoint::Signer::generate(DEV_AUDIT_ORIGIN).map_err(|e| {
                DevError::Invalid {
                    path: layout.audit_key(),
                    message: e.to_string(),
                }
            })?;
        write_new(
            &layout.audit_key(),
            &format!("{}\n", signer.to_skey()),
            true,
        )?;
    }
    if !layout.pseudonym_key().exists() {
        let text = crate::crypto::pseudonym::Pseudonymizer::generate_text().map_err(|message| {
            DevError::Invalid {
                path: layout.pseudonym_key(),
                message,
            }
        })?;
        write_new(&layout.pseudonym_key(), &text, true)?;
    }
    if !layout.notes_keyring().exists() {
        let line = crate::crypto::keyring::Keyring::new_line("k1").map_err(|message| {
            DevError::Invalid {
                path: layout.notes_keyring(),
                message,
            }
        })?;
        write_new(&layout.notes_keyring(), &line, true)?;
    }
    let config = layout.config();
    if !config.exists() {
        write_new(&config, &dev_config(), false)?;
    } else {
        add_web_section(&config)?;
    }
    Ok(config)
}

/// The web tier's part of the dev config: its token issuer and its `[web]` section.
fn web_config() -> String {
    let portal = ORGS[4].slug;
    let privacy = ORGS[3].slug;
    format!(
        r#"
# The web tier's own tokens (it mints one per call for the logged-in person).
[[auth.issuers]]
iss = "{WEB_ISSUER}"
audience = "{DEV_AUDIENCE}"
algorithms = ["EdDSA"]
jwks_file = "pki/web-issuer-jwks.json"

# Web pages for jobseekers and privacy officers; `casegate dev` adds a login picker.
[web]
listen = "{DEFAULT_WEB_LISTEN}"
gateway_ca = "pki/ca.pem"
issuer = "{WEB_ISSUER}"
issuer_key = "pki/web-issuer.key"

[web.jobseekers]
cert = "pki/{portal}.pem"
key = "pki/{portal}.key"

[web.officers]
cert = "pki/{privacy}.pem"
key = "pki/{privacy}.key"
"#
    )
}

/// Adds the web tier to a dev config written before it existed (a config `casegate dev`
/// wrote, recognised by its first line, and without `[web]`).
fn add_web_section(config: &Path) -> Result<(), DevError> {
    let text = read(config)?;
    if !text.starts_with(CONFIG_HEADER) || text.lines().any(|l| l.trim() == "[web]") {
        return Ok(());
    }
    let updated = format!("{text}{}", web_config());
    casegate_audit::durable::replace_file(config, updated.as_bytes()).map_err(io_err(config))
}

const CONFIG_HEADER: &str = "# casegate development configuration, written by `casegate dev`";

fn dev_config() -> String {
    const PORTAL: &str = ORGS[4].orgnr;
    const PRIVACY: &str = ORGS[3].orgnr;
    let names: String = ORGS
        .iter()
        .map(|o| {
            format!(
                "\"{}\" = {{ name = \"{}\", contact = \"https://{}.casegate.example/contact\" }}\n",
                o.orgnr, o.name, o.slug
            )
        })
        .collect();
    format!(
        r#"{CONFIG_HEADER} on first run.
# Paths are relative to this file. Any setting can be overridden by an environment variable:
# CASEGATE_<SECTION>__<KEY>, e.g. CASEGATE_SERVER__LISTEN=127.0.0.1:50052.

[server]
listen = "{DEFAULT_LISTEN}"
shutdown_grace = "10s"
# Connections get GOAWAY after this long and are cut after the grace period.
max_connection_age = "1h"
max_connection_age_grace = "30s"
max_connections = 10000

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
# With client_crls set: what to do with a CRL past its nextUpdate ("warn" or "refuse").
stale_crls = "warn"

[auth]
# Only the portal's tokens may act as a jobseeker.
jobseeker_orgs = ["{PORTAL}"]

[[auth.issuers]]
iss = "{DEV_ISSUER}"
audience = "{DEV_AUDIENCE}"
algorithms = ["EdDSA"]
jwks_file = "pki/issuer-jwks.json"

[storage]
data_dir = "."

[audit]
origin = "{DEV_AUDIT_ORIGIN}"
signing_key = "audit-signing.key"

[privacy]
pseudonym_key = "pseudonym.key"
# The privacy office is the operator's: its officers see every audit entry. Officers of other
# organisations see the entries their organisation is actor, sender or recipient of.
supervisory_orgs = ["{PRIVACY}"]

[notes]
keyring = "notes.keyring"

# Registered names, shown in subject access reports and on the web pages, and where a
# jobseeker can ask each organisation about what it received.
[organisations]
{names}
[log]
format = "text"
filter = "info"

[metrics]
listen = "127.0.0.1:9464"
{web}"#,
        web = web_config()
    )
}

/// What `casegate dev token` needs.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The organisation's slug (`clinic`, `nav`, `ips`, `privacy` or `portal`).
    pub org: String,
    /// The role's name, as `Role` parses it (for example `nav_counsellor`).
    pub role: String,
    /// The token's `sub`; `<slug>-<role>` if `None`.
    pub sub: Option<String>,
    /// The jobseeker's identity number or D-number (11 digits), as the token's `pid` claim.
    pub pid: Option<String>,
    /// How long the token is valid (its `exp` minus its `iat`).
    pub ttl: Duration,
}

/// Signs a dev token for one of the synthetic organisations, bound to its client certificate.
/// Prepares the folder first, so tokens and the gateway agree whichever runs first.
///
/// # Errors
/// As [`prepare`]; [`DevError::UnknownOrg`], [`DevError::Role`] or [`DevError::Pid`] for a
/// bad request; [`DevError::Invalid`] if the organisation's certificate cannot be read.
pub fn token(root: &Path, request: &TokenRequest) -> Result<String, DevError> {
    prepare(root)?;
    let layout = DevLayout::new(root);
    let org = ORGS
        .iter()
        .find(|o| o.slug == request.org)
        .ok_or_else(|| DevError::UnknownOrg(request.org.clone()))?;
    let role: Role = request.role.parse().map_err(DevError::Role)?;
    if let Some(pid) = &request.pid {
        pid.parse::<SubjectId>().map_err(DevError::Pid)?;
    }
    let issuer = TokenIssuer::from_pem(DEV_ISSUER, DEV_AUDIENCE, &read(&layout.issuer_key())?)?;
    let cert_path = layout.cert(org.slug);
    let der = CertificateDer::from_pem_slice(read(&cert_path)?.as_bytes()).map_err(|e| {
        DevError::Invalid {
            path: cert_path.clone(),
            message: e.to_string(),
        }
    })?;
    let identity = ClientIdentity::from_der(&der).map_err(|e| DevError::Invalid {
        path: cert_path,
        message: e.to_string(),
    })?;
    Ok(issuer.sign(&TokenClaims {
        sub: request
            .sub
            .clone()
            .unwrap_or_else(|| format!("{}-{}", org.slug, role)),
        org: org.orgnr.to_owned(),
        role: role.as_str().to_owned(),
        pid: request.pid.clone(),
        bind_cert_sha256: Some(identity.cert_sha256),
        ttl: request.ttl,
        ..TokenClaims::default()
    })?)
}

/// What `casegate dev --cluster` prints after the connection screen: every replica's address
/// (each serves every call; the audit log is one log across them).
pub fn cluster_screen(replicas: &[SocketAddr]) -> String {
    let mut out = format!(
        "{} replicas on one PostgreSQL database (throwaway: deleted at exit), one audit log:\n",
        replicas.len()
    );
    for (i, addr) in replicas.iter().enumerate() {
        out.push_str(&format!("  replica {}          {addr}\n", i + 1));
    }
    out.push_str(
        "  audit log          in the database, not under the data folder: export it with\n\
         \x20                    ExportEntries (an officer of a supervisory organisation) and\n\
         \x20                    verify the export offline (casegate audit verify --export)\n",
    );
    out
}

/// The screen `casegate dev` prints once it is listening.
pub fn connection_screen(
    root: &Path,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    web: Option<SocketAddr>,
) -> String {
    let root = root.display();
    let port = addr.port();
    let metrics = metrics.map_or_else(
        || "off ([metrics] listen in the config)".to_owned(),
        |m| format!("http://{m}/metrics"),
    );
    let web = web.map_or_else(
        || "off (no [web] in the config)".to_owned(),
        |w| format!("http://{w}/  (log in as a synthetic jobseeker or officer)"),
    );
    let mut orgs = String::new();
    for org in ORGS {
        orgs.push_str(&format!(
            "    {:<8} {:<22} orgnr {}  typical role: {}\n",
            org.slug, org.name, org.orgnr, org.role
        ));
    }
    format!(
        r#"
casegate dev gateway listening on {addr} (mutual TLS; every casegate.v1 call needs a token)

  web pages          {web}

  CA certificate     {root}/pki/ca.pem
  organisations      {root}/pki/<slug>.pem and {root}/pki/<slug>.key
{orgs}
  a token            casegate dev token --data {root} --org nav --role nav_counsellor
                     (bound to that organisation's certificate; --ttl 1h, --sub ID, --pid NNIN)
  health             grpcurl -cacert {root}/pki/ca.pem -cert {root}/pki/clinic.pem \
                       -key {root}/pki/clinic.key localhost:{port} grpc.health.v1.Health/Check
  list services      grpcurl ... localhost:{port} list
  a call             grpcurl ... -H "authorization: Bearer $TOKEN" \
                       localhost:{port} casegate.v1.AuditService/GetCheckpoint
  metrics            {metrics}
  audit log          {root}/audit   (verify offline: casegate audit verify --log {root}/audit \
                       --vkey "$(casegate audit vkey --config {root}/casegate.toml)")
  audit queries      casegate dev token --data {root} --org privacy --role privacy_officer > officer.token
                     casegate audit query --gateway https://{addr} --ca {root}/pki/ca.pem \
                       --cert {root}/pki/privacy.pem --key {root}/pki/privacy.key \
                       --token-file officer.token [--subject NNIN] [--format csv]

Stop with Ctrl-C (in-flight calls get the configured grace period).
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_orgs_have_valid_distinct_numbers() {
        let numbers: Vec<casegate_consent::OrgNumber> =
            ORGS.iter().filter_map(|o| o.orgnr.parse().ok()).collect();
        assert_eq!(numbers.len(), ORGS.len());
        let mut unique = numbers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ORGS.len());
    }

    #[test]
    fn a_dev_config_from_before_the_web_pages_gets_them_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = prepare(dir.path()).expect("first run");
        let text = fs::read_to_string(&config).expect("config");
        let web_part = text
            .find("\n# The web tier's own tokens")
            .expect("the web part");
        // A config written before the web tier existed: everything but its part.
        fs::write(&config, &text[..web_part]).expect("write the old config");
        let old =
            crate::runtime::config::Config::load_with_env(&config, []).expect("the old config");
        assert!(old.web.is_none());
        prepare(dir.path()).expect("second run");
        prepare(dir.path()).expect("third run");
        let upgraded = fs::read_to_string(&config).expect("config");
        assert_eq!(upgraded.matches("\n[web]\n").count(), 1, "{upgraded}");
        let parsed =
            crate::runtime::config::Config::load_with_env(&config, []).expect("valid config");
        assert_eq!(
            parsed.web.expect("web pages").listen.to_string(),
            DEFAULT_WEB_LISTEN
        );
        // A config the operator wrote (not casegate dev's) is left alone.
        fs::write(&config, &text[web_part..]).expect("write a foreign config");
        prepare(dir.path()).expect("fourth run");
        assert_eq!(
            fs::read_to_string(&config).expect("config"),
            text[web_part..]
        );
    }

    #[test]
    fn prepare_creates_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = prepare(dir.path()).expect("first run");
        let layout = DevLayout::new(dir.path());
        let ca_before = fs::read(layout.ca_cert()).expect("ca");
        let jwks_before = fs::read(layout.jwks()).expect("jwks");
        assert_eq!(prepare(dir.path()).expect("second run"), config);
        assert_eq!(fs::read(layout.ca_cert()).expect("ca"), ca_before);
        assert_eq!(fs::read(layout.jwks()).expect("jwks"), jwks_before);
        let parsed =
            crate::runtime::config::Config::load_with_env(&config, []).expect("valid config");
        assert_eq!(parsed.server.listen.to_string(), DEFAULT_LISTEN);
        let token = token(
            dir.path(),
            &TokenRequest {
                org: "nav".into(),
                role: "nav_counsellor".into(),
                sub: None,
                pid: None,
                ttl: Duration::from_secs(60),
            },
        )
        .expect("token");
        assert_eq!(token.split('.').count(), 3);
    }
}
