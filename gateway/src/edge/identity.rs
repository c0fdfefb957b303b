//! The calling organisation, as proven by its client certificate: the orgnr in the subject's
//! `organizationIdentifier` (`NTRNO-<orgnr>`, as in Norwegian enterprise certificates) and the
//! certificate's SHA-256 fingerprint (for RFC 8705 token binding and the audit log).

use casegate_consent::OrgNumber;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// OID 2.5.4.97, `organizationIdentifier` (X.520).
const ORGANIZATION_IDENTIFIER: &str = "2.5.4.97";
/// The ETSI EN 319 412-1 semantics prefix for a national trade register number, Norway.
const PREFIX: &str = "NTRNO-";

/// The verified organisation behind a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub orgnr: OrgNumber,
    /// SHA-256 of the leaf certificate's DER encoding.
    pub cert_sha256: [u8; 32],
}

/// Why a client certificate names no organisation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate could not be parsed")]
    Unparseable,
    #[error("client certificate has no organizationIdentifier (NTRNO-<orgnr>)")]
    Missing,
    #[error("client certificate's organizationIdentifier is not NTRNO-<valid 9-digit orgnr>")]
    Invalid,
}

impl ClientIdentity {
    /// Reads the organisation from a (chain-verified) leaf certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparseable)?;
        let mut values = cert
            .subject()
            .iter_attributes()
            .filter(|a| a.attr_type().to_id_string() == ORGANIZATION_IDENTIFIER);
        let attr = values.next().ok_or(IdentityError::Missing)?;
        if values.next().is_some() {
            return Err(IdentityError::Invalid);
        }
        let text = attr.as_str().map_err(|_| IdentityError::Invalid)?;
        let orgnr = text
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<OrgNumber>().ok())
            .ok_or(IdentityError::Invalid)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut cert_sha256 = [0; 32];
        cert_sha256.copy_from_slice(digest.as_ref());
        Ok(Self { orgnr, cert_sha256 })
    }
}
