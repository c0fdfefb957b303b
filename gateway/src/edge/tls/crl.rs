//! The client CAs' certificate revocation lists (RFC 5280 §5): read from PEM files, with the
//! `nextUpdate` time of each (§5.1.2.5), so a list its issuer should have replaced by now is
//! reported rather than trusted silently.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use x509_parser::prelude::FromDer;

use crate::base::problem::Problem;

/// One configured CRL file as loaded: where it is and when its issuer promised the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFile {
    /// The configuration key, e.g. `tls.client_crls[0]`.
    pub key: String,
    /// The CRL file.
    pub path: PathBuf,
    /// The earliest `nextUpdate` of the lists in the file, in seconds since the Unix epoch;
    /// `None` when no list in it carries one (RFC 5280 requires it; some issuers omit it).
    pub next_update: Option<i64>,
}

/// A CRL file past its `nextUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCrl {
    /// The configuration key naming the file, e.g. `tls.client_crls[0]`.
    pub key: String,
    /// The CRL file.
    pub path: PathBuf,
    /// `nextUpdate`, seconds since the Unix epoch.
    pub next_update: i64,
    /// How long ago that was.
    pub overdue: Duration,
}

impl StaleCrl {
    /// What is wrong, without the configuration key.
    pub fn message(&self) -> String {
        let when = UNIX_EPOCH + Duration::from_secs(self.next_update.max(0).unsigned_abs());
        format!(
            "{}: past its nextUpdate ({}) by {}; the issuer should have published a newer CRL",
            self.path.display(),
            humantime::format_rfc3339_seconds(when),
            humantime::format_duration(Duration::from_secs(self.overdue.as_secs()))
        )
    }
}

impl fmt::Display for StaleCrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message())
    }
}

impl CrlFile {
    /// `Some` when `now` is past this file's `nextUpdate`.
    pub fn stale_at(&self, now: SystemTime) -> Option<StaleCrl> {
        let next = self.next_update?;
        let now = unix_seconds(now);
        (now > next).then(|| StaleCrl {
            key: self.key.clone(),
            path: self.path.clone(),
            next_update: next,
            overdue: Duration::from_secs((now - next).unsigned_abs()),
        })
    }
}

/// Reads every configured CRL file (PEM `X509 CRL` blocks), reporting unreadable, empty and
/// unparsable ones as problems.
pub fn read(
    paths: &[PathBuf],
    problems: &mut Vec<Problem>,
) -> (Vec<CertificateRevocationListDer<'static>>, Vec<CrlFile>) {
    let mut crls = Vec::new();
    let mut files = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let key = format!("tls.client_crls[{i}]");
        match CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        {
            Ok(found) if found.is_empty() => {
                problems.push(problem(&key, path, "holds no PEM X509 CRL"));
            }
            Ok(found) => {
                let mut next_update = None::<i64>;
                for der in &found {
                    match x509_parser::revocation_list::CertificateRevocationList::from_der(der) {
                        Ok((_, crl)) => {
                            if let Some(next) = crl.next_update() {
                                let next = next.timestamp();
                                next_update = Some(next_update.map_or(next, |n| n.min(next)));
                            }
                        }
                        Err(e) => problems.push(problem(
                            &key,
                            path,
                            &format!("not a valid X.509 CRL (RFC 5280): {e}"),
                        )),
                    }
                }
                files.push(CrlFile {
                    key,
                    path: path.clone(),
                    next_update,
                });
                crls.extend(found);
            }
            Err(e) => problems.push(problem(&key, path, &e.to_string())),
        }
    }
    (crls, files)
}

fn problem(key: &str, path: &Path, message: &str) -> Problem {
    Problem {
        key: key.to_owned(),
        message: format!("{}: {message}", path.display()),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_stale_only_after_its_next_update() {
        let file = CrlFile {
            key: "tls.client_crls[0]".into(),
            path: "/etc/casegate/ca.crl.pem".into(),
            next_update: Some(1_000_000),
        };
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(file.stale_at(at(999_999)), None);
        assert_eq!(file.stale_at(at(1_000_000)), None);
        let stale = file.stale_at(at(1_000_000 + 3 * 86_400)).expect("stale");
        assert_eq!(stale.overdue, Duration::from_secs(3 * 86_400));
        assert_eq!(
            stale.to_string(),
            "tls.client_crls[0]: /etc/casegate/ca.crl.pem: past its nextUpdate \
             (1970-01-12T13:46:40Z) by 3days; the issuer should have published a newer CRL"
        );
        let without = CrlFile {
            next_update: None,
            ..file
        };
        assert_eq!(without.stale_at(at(u64::from(u32::MAX))), None);
    }
}
