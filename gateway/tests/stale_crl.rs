//! The `casegate` binary with a CRL past its `nextUpdate` (RFC 5280 §5.1.2.5): `check-config`
//! warns (or, with `tls.stale_crls = "refuse"`, fails), and a serving gateway logs it and
//! exports it as a metric.

mod support;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const STALE_CRL: &str = "pki/stale-ca.crl.pem";
/// The CRL setting (`tls.client_crls`) pointing at the stale CRL.
const CRLS: &str = "[\"pki/stale-ca.crl.pem\"]";

/// The binary, its CRL setting pointing at the stale CRL.
fn casegate() -> Command {
    let mut cmd = support::casegate();
    cmd.env("CASEGATE_TLS__CLIENT_CRLS", CRLS);
    cmd
}

/// A development setup in `data` whose CA has published a CRL that expired three days ago.
fn prepare(data: &Path) -> std::path::PathBuf {
    let config = casegate::dev::prepare(data).expect("dev setup");
    let pki = data.join("pki");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).expect("pki file");
    let ca = casegate::dev::DevCa::load(&read("ca.pem"), &read("ca.key")).expect("dev CA");
    let three_days_ago = SystemTime::now() - Duration::from_secs(3 * 86_400);
    let crl = ca.crl_until(&[], 7, three_days_ago).expect("CRL");
    std::fs::write(data.join(STALE_CRL), crl).expect("write CRL");
    config
}

#[tokio::test]
async fn check_config_warns_about_a_stale_crl_and_fails_when_told_to_refuse_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());

    let crls = ("CASEGATE_TLS__CLIENT_CRLS", CRLS);
    let out = support::check_config(&config, &[crls]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("warning: tls.client_crls[0]: ") && stdout.contains("past its nextUpdate"),
        "{stdout}"
    );

    let out = support::check_config(&config, &[crls, ("CASEGATE_TLS__STALE_CRLS", "refuse")]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("tls.client_crls[0]: ") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_serving_gateway_logs_a_stale_crl_and_exports_it_as_a_metric() {
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let mut child = casegate()
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("CASEGATE_SERVER__SHUTDOWN_GRACE", "1s")
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start casegate dev");
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warned = async {
        while let Ok(Some(line)) = log.next_line().await {
            if line.contains("CRL past its nextUpdate is in use") {
                return true;
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(60), warned)
            .await
            .unwrap_or(false),
        "the log names the stale CRL"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let metrics = async {
        while let Ok(Some(line)) = out.next_line().await {
            if let Some(rest) = line.split("http://").nth(1)
                && let Some(addr) = rest.strip_suffix("/metrics")
            {
                return Some(addr.trim().to_owned());
            }
        }
        None
    };
    let addr = tokio::time::timeout(Duration::from_secs(10), metrics)
        .await
        .expect("the metrics address in time")
        .expect("the metrics address");
    let (status, body) = support::http_get(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("casegate_tls_stale_crls 1"), "{body}");
    assert!(
        body.contains("casegate_tls_crl_next_update_timestamp_seconds"),
        "{body}"
    );
    child.start_kill().expect("stop");
    let _ = child.wait().await;
}
