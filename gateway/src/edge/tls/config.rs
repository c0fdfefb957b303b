//! The `[tls]` section: its type and its reading and checking.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::base::settings::{Schema, Section, duration, list, path, secs, text};

/// The server's TLS settings (`[tls]`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain of the server, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM certificate(s) of the CA(s) that issue client (organisation) certificates.
    pub client_ca: PathBuf,
    /// PEM certificate revocation lists of the client CA(s); a revoked organisation
    /// certificate is refused in the handshake.
    pub client_crls: Vec<PathBuf>,
    /// How often the CRL files are checked for changes (SIGHUP reloads at once); a reload
    /// also closes open connections whose certificate it revokes.
    pub crl_reload_interval: Duration,
    /// What to do with a CRL past its `nextUpdate` (RFC 5280 §5.1.2.5).
    pub stale_crls: StaleCrls,
}

/// What the gateway does with a CRL whose `nextUpdate` has passed. Either way it is logged,
/// counted in the `casegate_tls_stale_crls` metric and shown by `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleCrls {
    /// Use it (the newest revocations the gateway has) and warn.
    Warn,
    /// Refuse it: loading it is a configuration problem (start, `check-config` and a reload
    /// fail), and while the loaded one is stale the certificates of its CA are refused in
    /// the handshake.
    Refuse,
}

/// `[tls]`'s keys.
pub(crate) static SCHEMA: Schema = Schema {
    section: "tls",
    keys: &[
        path("cert", true),
        path("key", true),
        path("client_ca", true),
        list("client_crls", false),
        duration(
            "crl_reload_interval",
            secs(30),
            Duration::from_millis(100),
            secs(3600),
        ),
        text("stale_crls", false),
    ],
};

impl TlsConfig {
    /// Reads the `[tls]` section from `s`; file paths are relative to `base` (the
    /// configuration file's folder). Every problem is reported to `s`; `None` when a required
    /// key is missing or wrong.
    pub(crate) fn read(s: &mut Section<'_>, base: &Path) -> Option<Self> {
        let cert = s.file("cert", base);
        let key = s.file("key", base);
        let client_ca = s.file("client_ca", base);
        let client_crls = s.files("client_crls", base);
        let crl_reload_interval = s.duration("crl_reload_interval");
        let stale_crls = match s.text("stale_crls").as_deref() {
            None | Some("warn") => StaleCrls::Warn,
            Some("refuse") => StaleCrls::Refuse,
            Some(other) => {
                s.problem(
                    "stale_crls",
                    format!("{other:?} is not one of \"warn\", \"refuse\""),
                );
                StaleCrls::Warn
            }
        };
        match (cert, key, client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(Self {
                cert,
                key,
                client_ca,
                client_crls,
                crl_reload_interval,
                stale_crls,
            }),
            _ => None,
        }
    }
}
