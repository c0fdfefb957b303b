//! Running the real `casegate` binary in tests: `casegate dev` in a child process (optionally
//! under a wrapper such as `faketime`), mutual-TLS channels with its generated PKI, and its
//! development tokens.

#![allow(dead_code)] // Each test binary uses a part.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const BIN: &str = env!("CARGO_BIN_EXE_casegate");

/// A `casegate dev` child: its address and a task collecting its log (standard error).
pub struct DevGateway {
    pub child: Child,
    pub addr: String,
    /// The web pages' address, as the connection screen printed it.
    pub web: Option<String>,
    pub log: tokio::task::JoinHandle<Vec<String>>,
}

/// The `casegate` binary, with no `CASEGATE_` setting (nor `RUST_LOG`) leaking in from the
/// environment of whoever runs the tests.
pub fn casegate() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG").kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("CASEGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `casegate check-config CONFIG` with `env` set.
pub async fn check_config(config: &Path, env: &[(&str, &str)]) -> std::process::Output {
    casegate()
        .arg("check-config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run casegate check-config")
}

/// Starts `casegate dev` on an ephemeral loopback port over `data`, with a grace period of one
/// second and metrics and web pages on ephemeral ports unless `env` says otherwise, and waits
/// for its address.
pub async fn start_dev(data: &Path, env: &[(&str, &str)]) -> DevGateway {
    let mut child = casegate()
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("CASEGATE_SERVER__SHUTDOWN_GRACE", "1s")
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start casegate dev");
    let stderr = child.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let find = async {
        let mut addr = None;
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_owned);
            }
            // The screen names the web pages next (or says they are off).
            if let Some(rest) = line.trim().strip_prefix("web pages") {
                let web = rest
                    .split_whitespace()
                    .next()
                    .filter(|w| w.starts_with("http"));
                return addr.map(|a| (a, web.map(str::to_owned)));
            }
        }
        addr.map(|a| (a, None))
    };
    let (addr, web) = tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .expect("dev gateway printed its address in time")
        .expect("dev gateway printed its address");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    DevGateway {
        child,
        addr,
        web,
        log,
    }
}

/// Sends the signal `name` (`TERM`, `INT`, …) to `child`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

impl DevGateway {
    /// SIGTERM, then waits (at most 30 s) for the exit; returns its log.
    pub async fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        signal(&self.child, "TERM");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops after SIGTERM")
            .expect("wait");
        (exit, self.log.await.expect("log"))
    }
}

/// A mutual-TLS connection to a dev gateway as the development organisation `org`.
pub async fn connect(
    data: &Path,
    org: &str,
    addr: &str,
) -> Result<Channel, tonic::transport::Error> {
    let read =
        |name: String| std::fs::read_to_string(data.join("pki").join(name)).expect("pki file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .identity(Identity::from_pem(
            read(format!("{org}.pem")),
            read(format!("{org}.key")),
        ))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// As [`connect`], which must succeed.
pub async fn dev_channel(data: &Path, org: &str, addr: &str) -> Channel {
    connect(data, org, addr).await.expect("connect")
}

/// A development token from `casegate dev token`.
pub fn dev_token(data: &Path, org: &str, role: &str, pid: Option<&str>) -> String {
    dev_token_with(data, org, role, pid, &[])
}

/// A development token from `casegate dev token` run with `env` set (e.g. a faked clock).
pub fn dev_token_with(
    data: &Path,
    org: &str,
    role: &str,
    pid: Option<&str>,
    env: &[(&str, &str)],
) -> String {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["dev", "token", "--org", org, "--role", role, "--data"])
        .arg(data)
        .envs(env.iter().copied());
    if let Some(pid) = pid {
        cmd.args(["--pid", pid]);
    }
    let out = cmd.output().expect("token");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// The organisation number of a development organisation.
pub fn dev_orgnr(slug: &str) -> String {
    casegate::dev::ORGS
        .iter()
        .find(|o| o.slug == slug)
        .expect("org")
        .orgnr
        .to_owned()
}

/// The gateway's health as seen over `org`'s connection, or why it could not be asked.
pub async fn health(
    data: &Path,
    org: &str,
    addr: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = connect(data, org, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| format!("check: {e}"))?;
    Ok(response.into_inner().status())
}

/// The jobseeker's consent for `sender` to send benefit counselling to `recipient` (dev
/// organisation slugs) for `purpose`, valid from a minute ago for a day.
pub fn dev_grant(
    subject: &str,
    sender: &str,
    recipient: &str,
    purpose: &str,
) -> casegate_proto::v1::GrantConsentRequest {
    use casegate_proto::v1::{GrantConsentRequest, Party, Period, Provision};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let party = |slug| Party {
        orgnr: dev_orgnr(slug),
        roles: vec![],
    };
    GrantConsentRequest {
        subject_id: subject.to_owned(),
        provisions: vec![Provision {
            senders: vec![party(sender)],
            recipients: vec![party(recipient)],
            categories: vec!["benefit_counselling".into()],
            purposes: vec![purpose.into()],
        }],
        period: Some(Period {
            start: at(now - 60),
            end: at(now + 86_400),
        }),
        ..Default::default()
    }
}

/// NAV's disclosure to IPS about `subject` for `benefit_planning`, which a [`dev_grant`] for
/// `ips_follow_up` does not cover: the refusal's status.
pub async fn refused_disclosure(
    data: &Path,
    addr: &str,
    subject: &str,
    request_id: &str,
) -> tonic::Status {
    use casegate_proto::v1::{DiscloseRequest, disclosure_service_client::DisclosureServiceClient};
    let nav = dev_token(data, "nav", "nav_counsellor", None);
    DisclosureServiceClient::new(dev_channel(data, "nav", addr).await)
        .disclose(with(
            &nav,
            DiscloseRequest {
                request_id: request_id.into(),
                subject_id: subject.to_owned(),
                recipient_orgnr: dev_orgnr("ips"),
                category: "benefit_counselling".into(),
                purpose: "benefit_planning".into(),
                title: "t".into(),
                body: b"b".to_vec(),
                content_type: "text/plain".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not covered")
}

/// `message` with a bearer token.
pub fn with<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// `GET url` over plain HTTP (an admin or web listener on loopback) with the gateway's own
/// HTTP client: the status and the body, within 30 seconds.
pub async fn http_get(url: &str) -> (u16, String) {
    casegate::tls::install_provider();
    let client = casegate::https::client(rustls::RootCertStore::empty(), Duration::from_secs(30))
        .expect("HTTP client");
    let response = client.get(url).send().await.expect("HTTP answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}
