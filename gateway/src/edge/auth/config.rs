//! The `[auth]` section: its types and its reading and checking (each issuer's `iss`,
//! audience, allowed algorithms and key set location).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::Algorithm;

use crate::base::settings::{Schema, Section, duration, list, path, secs, table, text};

/// Token authentication settings (`[auth]`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The trusted issuers, at least one, each `iss` once.
    pub issuers: Vec<IssuerConfig>,
    /// Organisations (the jobseekers' portal) whose tokens may carry role `jobseeker`; from any
    /// other organisation such a token is refused. Empty: no jobseeker tokens at all.
    pub jobseeker_orgs: Vec<casegate_consent::OrgNumber>,
}

/// One trusted token issuer (`[[auth.issuers]]`).
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` claim.
    pub iss: String,
    /// The `aud` claim tokens for this gateway must carry.
    pub audience: String,
    /// The signature algorithms accepted from this issuer, from
    /// [`ALLOWED_ALGORITHMS`](crate::config::ALLOWED_ALGORITHMS); a token's `alg` must also
    /// fit the key its `kid` names.
    pub algorithms: Vec<Algorithm>,
    /// Where its public keys (a JWKS, RFC 7517) come from.
    pub jwks: JwksLocation,
}

/// Where an issuer's key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// A JWKS file, read at start.
    File(PathBuf),
    /// An HTTPS address, fetched at start and again (at most every `min_refresh`) when a token
    /// names an unknown key; the last good set is kept while the issuer is unreachable.
    Url {
        /// The `https://` address of the JWKS.
        url: String,
        /// PEM roots to trust for it; the public web PKI when absent.
        ca: Option<PathBuf>,
        /// The shortest time between two fetches (`jwks_min_refresh`, default 30 s).
        min_refresh: Duration,
    },
}

/// Token signature algorithms the gateway accepts at all. HMAC and `none` are never allowed.
pub const ALLOWED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// `[auth]`'s keys.
pub(crate) static SCHEMA: Schema = Schema {
    section: "auth",
    keys: &[
        duration("leeway", secs(30), Duration::ZERO, secs(300)),
        table("issuers"),
        list("jobseeker_orgs", false),
    ],
};

/// The keys of each `[[auth.issuers]]`.
pub(crate) static ISSUER: Schema = Schema {
    section: "auth.issuers",
    keys: &[
        text("iss", true),
        text("audience", true),
        list("algorithms", true),
        path("jwks_file", false),
        text("jwks_url", false),
        path("jwks_ca", false),
        duration("jwks_min_refresh", secs(30), Duration::ZERO, secs(3600)),
    ],
};

impl AuthConfig {
    /// Reads the `[auth]` section (and its `[[auth.issuers]]`) from `s`; file paths are
    /// relative to `base`. Every problem is reported to `s`; `None` without a usable issuer
    /// list.
    pub(crate) fn read(s: &mut Section<'_>, base: &Path) -> Option<Self> {
        let leeway = s.duration("leeway");
        let issuers = read_issuers(s, base);
        let jobseeker_orgs = s.org_numbers("jobseeker_orgs");
        issuers.map(|issuers| Self {
            leeway,
            issuers,
            jobseeker_orgs,
        })
    }
}

/// The `[[auth.issuers]]` tables: each issuer's `iss`, `audience`, `algorithms` and key set
/// (a file, or an HTTPS address with an optional CA and minimum refresh interval).
fn read_issuers(s: &mut Section<'_>, base: &Path) -> Option<Vec<IssuerConfig>> {
    let Some(tables) = s.tables("issuers") else {
        s.problem("issuers", "at least one [[auth.issuers]] is required");
        return None;
    };
    if tables.is_empty() {
        s.problem("issuers", "at least one [[auth.issuers]] is required");
    }
    let mut issuers = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (path, table) in tables {
        let mut t = Section::new(path, table, s.problems(), &ISSUER);
        let iss = t.text("iss");
        if let Some(iss) = &iss {
            if iss.is_empty() {
                t.problem("iss", "must not be empty");
            } else if !seen.insert(iss.clone()) {
                t.problem("iss", format!("issuer {iss:?} is configured twice"));
            }
        }
        let audience = t.text("audience");
        if audience.as_deref() == Some("") {
            t.problem("audience", "must not be empty");
        }
        let algorithms = t.strings("algorithms").map(|names| {
            if names.is_empty() {
                t.problem("algorithms", "at least one algorithm is required");
            }
            let mut algs = Vec::new();
            for name in names {
                match name.parse::<Algorithm>() {
                    Ok(alg) if ALLOWED_ALGORITHMS.contains(&alg) => algs.push(alg),
                    _ => t.problem(
                        "algorithms",
                        format!("{name:?} is not allowed (use EdDSA, ES256 or RS256)"),
                    ),
                }
            }
            algs
        });
        let jwks_file = t.file("jwks_file", base);
        let jwks_url = t.text("jwks_url");
        let jwks_ca = t.file("jwks_ca", base);
        let min_refresh = t.duration("jwks_min_refresh");
        let jwks = match (jwks_file, jwks_url) {
            (Some(file), None) => Some(JwksLocation::File(file)),
            (None, Some(url)) => match crate::edge::https::parse_url(&url) {
                Ok(_) => Some(JwksLocation::Url {
                    url,
                    ca: jwks_ca,
                    min_refresh,
                }),
                Err(e) => {
                    t.problem("jwks_url", e);
                    None
                }
            },
            (Some(_), Some(_)) => {
                t.problem("jwks_url", "give either jwks_file or jwks_url, not both");
                None
            }
            (None, None) => {
                t.problem("jwks_file", "missing (expected jwks_file or jwks_url)");
                None
            }
        };
        t.finish();
        if let (Some(iss), Some(audience), Some(algorithms), Some(jwks)) =
            (iss, audience, algorithms, jwks)
        {
            issuers.push(IssuerConfig {
                iss,
                audience,
                algorithms,
                jwks,
            });
        }
    }
    Some(issuers)
}
