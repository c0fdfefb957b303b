//! The web tier's way into the gateway: `casegate.v1` over mutual TLS, with a short-lived token
//! minted for the logged-in person on every call and bound (RFC 8705 `cnf.x5t#S256`) to the
//! certificate of the organisation the web tier acts through for that audience — the portal's
//! for jobseekers, the officer's organisation's for privacy officers. Every rule stays in the
//! gRPC services: the token says who the person is, the gateway decides what they may see.

use std::{path::Path, time::Duration};

use casegate_consent::{OrgNumber, Role, SubjectId};
use casegate_proto::v1::{
    audit_service_client::AuditServiceClient, consent_service_client::ConsentServiceClient,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::{
    client::bearer::Bearer,
    crypto::issuer::{TokenClaims, TokenIssuer},
    edge::identity::ClientIdentity,
    runtime::config::{AudienceConfig, WebConfig},
};

/// Who is logged in to the web tier, as the upstream login established it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Person {
    /// The person's stable id at the identity provider (`sub` of the ID token).
    pub sub: String,
    /// A jobseeker's national identity number (`pid`); none for officers. (`SubjectId`'s
    /// `Debug` hides it.)
    pub pid: Option<SubjectId>,
    /// Which audience the person belongs to; the minted token's role follows from it
    /// (`jobseeker` or `privacy_officer`).
    pub role: Audience,
    /// The identity provider that logged the person in (its `iss`, or `dev` for the picker).
    pub idp: String,
    /// The assurance level it reported (`acr`, e.g. `idporten-loa-high`).
    pub acr: String,
}

/// Which of the two audiences a person belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Audience {
    /// A jobseeker, acting through the portal's certificate (`[web.jobseekers]`).
    Jobseeker,
    /// A privacy officer, acting through their organisation's certificate (`[web.officers]`).
    Officer,
}

/// Why the web tier cannot reach the gateway as configured.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A key, certificate or CA file cannot be read, or a certificate is not PEM or carries
    /// no valid organisation number.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The gateway's URL (first) is not usable for a TLS channel (why, second).
    #[error("gateway address {0:?}: {1}")]
    Address(String, String),
    /// The web tier's token signing key (`[web] issuer_key`) is not a PKCS#8 v1 Ed25519 key.
    #[error("token issuer key: {0}")]
    Issuer(#[from] crate::crypto::issuer::IssuerError),
}

/// Clients for the gateway, one channel per audience.
#[derive(Debug)]
pub struct Upstream {
    issuer: TokenIssuer,
    ttl: Duration,
    jobseekers: Via,
    officers: Via,
}

/// One audience's channel and the organisation its certificate proves.
#[derive(Debug)]
struct Via {
    channel: Channel,
    identity: ClientIdentity,
}

type Intercepted = InterceptedService<Channel, Bearer>;

impl Upstream {
    /// Reads the keys and certificates and prepares (lazily connecting) channels to `url`;
    /// `audience` is the `aud` of the tokens it mints.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or an unusable address.
    pub fn new(config: &WebConfig, audience: &str, url: &str) -> Result<Self, UpstreamError> {
        let issuer = TokenIssuer::from_pem(&config.issuer, audience, &read(&config.issuer_key)?)?;
        let ca = read(&config.gateway_ca)?;
        Ok(Self {
            issuer,
            ttl: config.token_ttl,
            jobseekers: Via::new(&config.jobseekers, &ca, url)?,
            officers: Via::new(&config.officers, &ca, url)?,
        })
    }

    /// The organisation the web tier acts through for `audience`.
    pub fn orgnr(&self, audience: Audience) -> OrgNumber {
        self.via(audience).identity.orgnr
    }

    /// An audit-service client acting as `person`.
    pub(crate) fn audit(
        &self,
        person: &Person,
    ) -> Result<AuditServiceClient<Intercepted>, tonic::Status> {
        let (channel, bearer) = self.call(person)?;
        Ok(AuditServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(64 << 20))
    }

    /// A consent-service client acting as `person`.
    pub(crate) fn consent(
        &self,
        person: &Person,
    ) -> Result<ConsentServiceClient<Intercepted>, tonic::Status> {
        let (channel, bearer) = self.call(person)?;
        Ok(ConsentServiceClient::with_interceptor(channel, bearer))
    }

    fn via(&self, audience: Audience) -> &Via {
        match audience {
            Audience::Jobseeker => &self.jobseekers,
            Audience::Officer => &self.officers,
        }
    }

    fn call(&self, person: &Person) -> Result<(Channel, Bearer), tonic::Status> {
        let via = self.via(person.role);
        let role = match person.role {
            Audience::Jobseeker => Role::Jobseeker,
            Audience::Officer => Role::PrivacyOfficer,
        };
        let token = self
            .issuer
            .sign(&TokenClaims {
                sub: person.sub.clone(),
                org: via.identity.orgnr.to_string(),
                role: role.as_str().to_owned(),
                pid: person.pid.map(|p| p.expose()),
                bind_cert_sha256: Some(via.identity.cert_sha256),
                ttl: self.ttl,
                idp: (!person.idp.is_empty()).then(|| person.idp.clone()),
                acr: (!person.acr.is_empty()).then(|| person.acr.clone()),
            })
            .map_err(|e| tonic::Status::internal(format!("cannot sign the call's token: {e}")))?;
        let header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("the signed token is not header text"))?;
        Ok((via.channel.clone(), Bearer(header)))
    }
}

impl Via {
    fn new(config: &AudienceConfig, ca: &str, url: &str) -> Result<Self, UpstreamError> {
        let cert = read(&config.cert)?;
        let key = read(&config.key)?;
        let der =
            CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| UpstreamError::File {
                path: config.cert.display().to_string(),
                message: e.to_string(),
            })?;
        let identity = ClientIdentity::from_der(&der).map_err(|e| UpstreamError::File {
            path: config.cert.display().to_string(),
            message: e.to_string(),
        })?;
        let address =
            |e: &dyn std::fmt::Display| UpstreamError::Address(url.to_owned(), e.to_string());
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|e| address(&e))?
            .tls_config(tls)
            .map_err(|e| address(&e))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .connect_lazy();
        Ok(Self { channel, identity })
    }
}

fn read(path: &Path) -> Result<String, UpstreamError> {
    std::fs::read_to_string(path).map_err(|e| UpstreamError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
