//! The [`TestGateway`] harness.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use casegate::{
    config::Config,
    dev::{DevCa, TokenClaims, TokenIssuer, pki::CertifiedKey},
    server::{Drained, Gateway, ServeError},
    tls,
};
use casegate_proto::v1::{
    audit_service_client::AuditServiceClient, consent_service_client::ConsentServiceClient,
    disclosure_service_client::DisclosureServiceClient,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

pub const ISSUER: &str = "https://idp.test.casegate.invalid";
pub const AUDIENCE: &str = "casegate-test";
pub const AUDIT_ORIGIN: &str = "test.casegate.invalid/audit";

/// A test organisation: its certificate, key and number.
#[derive(Debug, Clone)]
pub struct TestOrg {
    pub slug: &'static str,
    pub orgnr: String,
    pub cert: CertifiedKey,
}

impl TestOrg {
    /// SHA-256 of the certificate's DER, as bound in tokens.
    pub fn cert_sha256(&self) -> [u8; 32] {
        let der = CertificateDer::from_pem_slice(self.cert.cert_pem.as_bytes()).expect("cert PEM");
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        digest.as_ref().try_into().expect("32 bytes")
    }
}

/// A gateway running in this process on loopback.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub ca: DevCa,
    pub issuer: TokenIssuer,
    /// Verifies the gateway's audit checkpoints.
    pub audit_verifier: casegate_audit::checkpoint::Verifier,
    orgs: Vec<TestOrg>,
    overrides: Vec<(String, String)>,
    /// Where metrics are served, when the configuration asks for them.
    pub metrics_addr: Option<SocketAddr>,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<Drained, ServeError>>>,
}

impl std::fmt::Debug for TestGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGateway")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The `iss` of the web tier's tokens in the test configuration.
pub const WEB_ISSUER: &str = "casegate-test-web";

/// Synthetic organisations: numbers with valid check digits, used by no real organisation here.
/// `authority` is a supervisory organisation: its privacy officers see every audit entry.
const ORGS: [(&str, &str); 6] = [
    ("clinic", "910000063"),
    ("nav", "910000071"),
    ("ips", "910000098"),
    ("privacy", "910000101"),
    ("portal", "910000128"),
    ("authority", "910000136"),
];

/// An mTLS channel to `addr`, whose server certificate names `localhost` and is signed by
/// `ca_pem`, presenting `client` (certificate and key PEM) or no certificate. Each call is
/// bounded to 10 s.
pub async fn mtls_channel(addr: SocketAddr, ca_pem: &str, client: Option<(&str, &str)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

impl TestGateway {
    /// Starts a gateway with the default test configuration.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a gateway whose config file has `extra` appended (TOML).
    pub async fn start_with(extra: &str) -> Self {
        Self::start_with_overrides(extra, &[]).await
    }

    /// As [`TestGateway::start_with`], with `CASEGATE_…` overrides applied.
    pub async fn start_with_overrides(extra: &str, overrides: &[(&str, &str)]) -> Self {
        let mut gw = Self::prepare(extra, overrides);
        gw.launch().await;
        gw
    }

    /// The files of a test gateway (PKI, keys, `casegate.toml`), not started: for running the
    /// gateway in another process ([`TestGateway::attach`] then points the clients at it).
    pub fn prepare(extra: &str, overrides: &[(&str, &str)]) -> Self {
        tls::install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::generate("casegate test CA").expect("CA");
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"])
            .expect("server cert");
        let issuer = TokenIssuer::generate(ISSUER, AUDIENCE).expect("issuer");
        let orgs: Vec<TestOrg> = ORGS
            .iter()
            .map(|(slug, orgnr)| TestOrg {
                slug,
                orgnr: (*orgnr).to_owned(),
                cert: ca.issue_client(slug, Some(orgnr)).expect("client cert"),
            })
            .collect();
        let write = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents).expect("write test file");
        };
        write("ca.pem", &ca.cert_pem);
        write("client-ca.crl.pem", &ca.crl(&[], 1).expect("empty CRL"));
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key_pem);
        write("jwks.json", &issuer.jwks_json());
        // What a `[web]` section (crate::web::CONFIG) refers to: each organisation's
        // certificate and key, and the web tier's own token issuer.
        for org in &orgs {
            write(&format!("{}.pem", org.slug), &org.cert.cert_pem);
            write(&format!("{}.key", org.slug), &org.cert.key_pem);
        }
        let web_issuer = TokenIssuer::generate(WEB_ISSUER, AUDIENCE).expect("web issuer");
        write("web-issuer.key", &web_issuer.private_key_pem());
        write("web-jwks.json", &web_issuer.jwks_json());
        let audit_key =
            casegate_audit::checkpoint::Signer::generate(AUDIT_ORIGIN).expect("audit key");
        write("audit.key", &audit_key.to_skey());
        write(
            "notes.keyring",
            &casegate::keyring::Keyring::new_line("k1").expect("note key"),
        );
        write(
            "pseudonym.key",
            &casegate::pseudonym::Pseudonymizer::generate_text().expect("pseudonym key"),
        );
        let portal = ORGS[4].1;
        let authority = ORGS[5].1;
        let names: String = ORGS
            .iter()
            .map(|(slug, orgnr)| {
                format!(
                    "\"{orgnr}\" = {{ name = \"Test {slug}\", contact = \"https://{slug}.test.casegate.invalid/contact\" }}\n"
                )
            })
            .collect();
        let config_text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
client_crls = ["client-ca.crl.pem"]
crl_reload_interval = "100ms"

[auth]
jobseeker_orgs = ["{portal}"]

[[auth.issuers]]
iss = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["EdDSA"]
jwks_file = "jwks.json"

[[auth.issuers]]
iss = "{WEB_ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["EdDSA"]
jwks_file = "web-jwks.json"

[storage]
data_dir = "data"

[audit]
origin = "{AUDIT_ORIGIN}"
signing_key = "audit.key"

[privacy]
pseudonym_key = "pseudonym.key"
supervisory_orgs = ["{authority}"]

[notes]
keyring = "notes.keyring"

[organisations]
{names}
{extra}
"#
        );
        write("casegate.toml", &config_text);
        Self {
            metrics_addr: None,
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            ca,
            issuer,
            audit_verifier: audit_key.verifier(),
            orgs,
            dir,
            stop: None,
            task: None,
        }
    }

    /// Points the clients at a gateway serving this folder's configuration at `addr`.
    pub fn attach(&mut self, addr: SocketAddr) {
        self.addr = addr;
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("casegate.toml")
    }

    /// Builds and serves the gateway from the files in the test folder.
    async fn launch(&mut self) {
        let config_path: PathBuf = self.dir.path().join("casegate.toml");
        let config =
            Config::load_with_env(&config_path, self.overrides.clone()).expect("valid test config");
        let metrics = config.metrics_listen;
        // A gateway stopped in this process may hold sled's folder lock for a moment while
        // its last store handles are dropped (its background threads end after the drop).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut gateway = loop {
            match Gateway::start(config.clone()).await {
                Ok(gateway) => break gateway,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("gateway builds: {e}"),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        self.addr = listener.local_addr().expect("local addr");
        if let Some(addr) = metrics {
            let admin = casegate::metrics::bind(addr).await.expect("bind metrics");
            self.metrics_addr = admin.local_addr().ok();
            gateway = gateway.with_metrics(admin);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Publishes a new CRL revoking the certificates of `orgs` (picked up without a restart).
    pub fn revoke(&self, orgs: &[&str]) {
        let certs: Vec<&CertifiedKey> = orgs.iter().map(|o| &self.org(o).cert).collect();
        let next_update = std::time::SystemTime::now() + Duration::from_secs(86_400);
        self.publish_crl(&certs, next_update);
    }

    /// Publishes a new CRL of the test CA revoking `revoked` (organisation certificates or
    /// intermediate CAs), with `nextUpdate` at `next_update`.
    pub fn publish_crl(&self, revoked: &[&CertifiedKey], next_update: std::time::SystemTime) {
        static NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2);
        let number = NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let crl = self
            .ca
            .crl_until(revoked, number, next_update)
            .expect("CRL");
        let path = self.dir.path().join("client-ca.crl.pem");
        let tmp = self.dir.path().join("client-ca.crl.pem.tmp");
        std::fs::write(&tmp, crl).expect("write CRL");
        std::fs::rename(tmp, path).expect("publish CRL");
    }

    /// Stops the gateway cleanly and starts it again on the same data (a new port).
    pub async fn restart(self) -> Self {
        self.restart_after(|_| {}).await
    }

    /// As [`TestGateway::restart`], running `between(config file)` while it is stopped (as an
    /// operator's maintenance command would).
    pub async fn restart_after(mut self, between: impl FnOnce(&std::path::Path)) -> Self {
        self.shutdown().await;
        between(&self.dir.path().join("casegate.toml"));
        self.launch().await;
        self
    }

    async fn shutdown(&mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        task.await.expect("serve task").expect("serve result")
    }

    pub fn org(&self, slug: &str) -> &TestOrg {
        self.orgs
            .iter()
            .find(|o| o.slug == slug)
            .unwrap_or_else(|| panic!("no test organisation {slug}"))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The claims of a valid token for `org` acting as `role`, bound to its certificate.
    pub fn claims(&self, org: &str, role: &str) -> Value {
        let org = self.org(org);
        self.issuer.claims(&TokenClaims {
            sub: format!("{}-user", org.slug),
            org: org.orgnr.clone(),
            role: role.to_owned(),
            pid: None,
            bind_cert_sha256: Some(org.cert_sha256()),
            ttl: Duration::from_secs(600),
            ..TokenClaims::default()
        })
    }

    /// A valid token for `org` acting as `role`.
    pub fn token(&self, org: &str, role: &str) -> String {
        self.issuer
            .sign_value(&self.claims(org, role))
            .expect("sign token")
    }

    /// Typed clients for a jobseeker acting for themself through the portal.
    pub async fn jobseeker(&self, subject: &casegate_consent::SubjectId) -> Caller {
        self.jobseeker_at(self.addr, subject).await
    }

    /// [`TestGateway::jobseeker`] against the gateway (replica) at `addr`.
    pub async fn jobseeker_at(
        &self,
        addr: SocketAddr,
        subject: &casegate_consent::SubjectId,
    ) -> Caller {
        let portal = &self.org("portal").cert;
        Caller::new(
            mtls_channel(
                addr,
                &self.ca.cert_pem,
                Some((&portal.cert_pem, &portal.key_pem)),
            )
            .await,
            Some(self.jobseeker_token(subject)),
        )
    }

    /// [`TestGateway::caller`] against the gateway (replica) at `addr`.
    pub async fn caller_at(&self, addr: SocketAddr, org: &str, role: &str) -> Caller {
        let cert = &self.org(org).cert;
        Caller::new(
            mtls_channel(
                addr,
                &self.ca.cert_pem,
                Some((&cert.cert_pem, &cert.key_pem)),
            )
            .await,
            Some(self.token(org, role)),
        )
    }

    /// A valid token for the jobseeker `subject` acting for themself through the portal (to
    /// be used over a `portal` channel).
    pub fn jobseeker_token(&self, subject: &casegate_consent::SubjectId) -> String {
        let mut claims = self.claims("portal", "jobseeker");
        claims["sub"] = serde_json::json!(format!("portal-user-{}", &subject.expose()[6..]));
        claims["pid"] = serde_json::json!(subject.expose());
        self.issuer.sign_value(&claims).expect("sign token")
    }

    /// An mTLS channel presenting `client` (or no certificate).
    pub async fn channel_with(&self, client: Option<&CertifiedKey>) -> Channel {
        let client = client.map(|c| (c.cert_pem.as_str(), c.key_pem.as_str()));
        mtls_channel(self.addr, &self.ca.cert_pem, client).await
    }

    /// An mTLS channel as organisation `org`.
    pub async fn channel(&self, org: &str) -> Channel {
        self.channel_with(Some(&self.org(org).cert)).await
    }

    /// Typed clients for `org` acting as `role`, with a valid token on every call.
    pub async fn caller(&self, org: &str, role: &str) -> Caller {
        Caller::new(self.channel(org).await, Some(self.token(org, role)))
    }

    /// Checks an audit receipt: its checkpoint is signed by this gateway's audit key and its
    /// inclusion proof verifies against that checkpoint.
    pub fn verify_receipt(&self, receipt: &casegate_proto::v1::AuditReceipt) {
        use casegate_audit::merkle;
        let checkpoint = receipt.checkpoint.as_ref().expect("checkpoint");
        let signed = self
            .audit_verifier
            .verify(&checkpoint.signed_note)
            .expect("checkpoint signed by the gateway");
        let proof = receipt.inclusion_proof.as_ref().expect("proof");
        let hashes: Vec<merkle::Hash> = proof
            .hashes
            .iter()
            .map(|h| h.as_slice().try_into().expect("32 bytes"))
            .collect();
        let leaf: merkle::Hash = receipt.leaf_hash.as_slice().try_into().expect("leaf");
        merkle::verify_inclusion(
            &leaf,
            receipt.audit_index,
            signed.size,
            &hashes,
            &signed.root,
        )
        .expect("the receipt's inclusion proof verifies");
    }

    /// Every audit entry, as exported to a privacy officer: (canonical bytes, decoded).
    pub async fn audit_entries(&self) -> Vec<(Vec<u8>, casegate_audit::entry::Entry)> {
        use tokio_stream::StreamExt;
        let mut officer = self.caller("authority", "privacy_officer").await;
        officer
            .audit
            .export_entries(casegate_proto::v1::ExportEntriesRequest::default())
            .await
            .expect("export")
            .into_inner()
            .map(|item| {
                let item = item.expect("entry");
                let entry = casegate_audit::entry::Entry::decode(&item.entry).expect("decode");
                (item.entry, entry)
            })
            .collect()
            .await
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(mut self) -> Drained {
        self.shutdown().await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call (or nothing, when there is no token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}").parse().expect("ascii token")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// Typed `casegate.v1` clients sharing one channel and one token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub consent: ConsentServiceClient<Authed>,
    pub disclosure: DisclosureServiceClient<Authed>,
    pub audit: AuditServiceClient<Authed>,
}

impl Caller {
    /// Opens this organisation's whole inbox stream (backlog, then live notes).
    pub async fn inbox(&mut self) -> tonic::Streaming<casegate_proto::v1::StreamInboxResponse> {
        self.disclosure
            .stream_inbox(casegate_proto::v1::StreamInboxRequest { role: 0 })
            .await
            .expect("stream")
            .into_inner()
    }

    /// Discloses `request`, which must be permitted, and returns its receipt.
    pub async fn disclose_permitted(
        &mut self,
        request: casegate_proto::v1::DiscloseRequest,
    ) -> casegate_proto::v1::DisclosureReceipt {
        self.disclosure
            .disclose(request)
            .await
            .expect("permitted")
            .into_inner()
            .receipt
            .expect("receipt")
    }

    pub fn new(channel: Channel, token: Option<String>) -> Self {
        let bearer = Bearer::new(token.as_deref());
        Self {
            consent: ConsentServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            disclosure: DisclosureServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            audit: AuditServiceClient::with_interceptor(channel, bearer),
        }
    }
}
