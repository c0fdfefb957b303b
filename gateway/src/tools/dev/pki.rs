//! A small certificate authority for development and tests: a CA, a server certificate for
//! loopback, and organisation client certificates carrying `organizationIdentifier`.
//! Keys are ECDSA P-256. Not for production: real deployments use their CA's certificates.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its ECDSA P-256 private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM: what a gateway's `tls.client_ca` or a client trusts.
    pub cert_pem: String,
    /// The CA's ECDSA P-256 private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// Why a key, certificate or CRL could not be made or loaded (rcgen's error).
pub type PkiError = rcgen::Error;

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

impl DevCa {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "casegate development");
        params.distinguished_name = dn;
        // One level of intermediate CAs may sit below it (as at most real client CAs).
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA, from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// An intermediate CA named `common_name`, issued by this CA, valid for five years. Its
    /// `cert_pem` is what a client appends to its own certificate to send the chain.
    pub fn issue_intermediate(&self, common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "casegate development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 1825);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// This CA's certificate and key, as a [`CertifiedKey`] (to revoke it in its issuer's CRL).
    pub fn certified(&self) -> CertifiedKey {
        CertifiedKey {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid for two years.
    pub fn issue_server(&self, names: &[&str]) -> Result<CertifiedKey, PkiError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 730);
        self.sign(&params)
    }

    /// An organisation's client certificate. With `orgnr`, the subject carries
    /// `organizationIdentifier = NTRNO-<orgnr>`; without, it has none (for negative tests).
    pub fn issue_client(
        &self,
        organisation: &str,
        orgnr: Option<&str>,
    ) -> Result<CertifiedKey, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{organisation} system"));
        dn.push(DnType::OrganizationName, organisation);
        if let Some(orgnr) = orgnr {
            dn.push(ORGANIZATION_IDENTIFIER.clone(), format!("NTRNO-{orgnr}"));
        }
        dn.push(DnType::CountryName, "NO");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 730);
        self.sign(&params)
    }

    /// A CRL (PEM) revoking `revoked`, numbered `number`, valid for a day.
    pub fn crl(&self, revoked: &[&CertifiedKey], number: u64) -> Result<String, PkiError> {
        let next_update = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        self.crl_until(revoked, number, next_update)
    }

    /// A CRL (PEM) revoking `revoked`, numbered `number`, whose `nextUpdate` is
    /// `next_update` (RFC 5280 §5.1.2.5; in the past for a stale list). `thisUpdate` is a
    /// minute before now, or before `next_update` if that is earlier.
    pub fn crl_until(
        &self,
        revoked: &[&CertifiedKey],
        number: u64,
        next_update: std::time::SystemTime,
    ) -> Result<String, PkiError> {
        let next_update = OffsetDateTime::from(next_update);
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        use x509_parser::prelude::FromDer;
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for cert in revoked {
            let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
                .map_err(|_| PkiError::CouldNotParseCertificate)?;
            let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|_| PkiError::CouldNotParseCertificate)?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(parsed.raw_serial()),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::minutes(1)).min(next_update - Duration::minutes(1)),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }

    fn sign(&self, params: &CertificateParams) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

static ORGANIZATION_IDENTIFIER: std::sync::LazyLock<DnType> =
    std::sync::LazyLock::new(|| DnType::CustomDnType(vec![2, 5, 4, 97]));

#[cfg(test)]
mod tests {
    use rustls_pki_types::{CertificateDer, pem::PemObject};

    use super::*;
    use crate::edge::identity::{ClientIdentity, IdentityError};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
    }

    #[test]
    fn client_certificates_carry_the_organisation() {
        let ca = DevCa::generate("test CA").expect("CA");
        let with = ca
            .issue_client("Test Clinic", Some("910000012"))
            .expect("cert");
        let id = ClientIdentity::from_der(&der(&with.cert_pem)).expect("identity");
        assert_eq!(id.orgnr.to_string(), "910000012");

        let without = ca.issue_client("Test Clinic", None).expect("cert");
        assert_eq!(
            ClientIdentity::from_der(&der(&without.cert_pem)),
            Err(IdentityError::Missing)
        );
        let bad = ca
            .issue_client("Test Clinic", Some("910000013"))
            .expect("cert");
        assert_eq!(
            ClientIdentity::from_der(&der(&bad.cert_pem)),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn a_loaded_ca_issues_like_the_original() {
        let ca = DevCa::generate("test CA").expect("CA");
        let again = DevCa::load(&ca.cert_pem, &ca.key_pem).expect("load");
        let cert = again
            .issue_server(&["localhost", "127.0.0.1"])
            .expect("cert");
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
