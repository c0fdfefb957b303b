//! The `casegate` binary restarted with its system clock set back an hour (`faketime`): an
//! expired consent must not permit again, and no audit entry may be stamped earlier than its
//! predecessor. The gateway refuses calls (UNAVAILABLE, health NOT_SERVING) until the clock
//! catches up with its audit log, and serves again once it has.

mod support;

use std::time::Duration;

use casegate_consent::SubjectId;
use casegate_proto::v1::{
    CheckDisclosureRequest, GrantConsentRequest, Party, Period, Provision, ReasonCode,
    consent_service_client::ConsentServiceClient,
};
use support::{BIN, dev_channel, dev_orgnr, dev_token, dev_token_with, start_dev, with};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Debian's `libfaketime` (package `faketime`), preloaded into the gateway itself so that
/// signals reach it (the `faketime` wrapper does not pass SIGTERM on); `None` when it is
/// missing and the run is not CI (on CI it must be there: `.ci/run` installs it).
fn libfaketime() -> Option<std::path::PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libfaketime is missing (apt-get install faketime; .ci/run installs it)"
        );
        eprintln!("libfaketime is missing: the clock-step test cannot run here");
    }
    found
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The dry-run decision NAV gets for the jobseeker: Ok((permitted, reason)) or the status.
/// The token is minted under `clock` (the gateway's faked clock, or none), as NAV's own
/// identity provider would mint it on the same wrong clock.
async fn nav_checks(
    data: &std::path::Path,
    addr: &str,
    subject: &SubjectId,
    clock: &[(&str, &str)],
) -> Result<(bool, ReasonCode), tonic::Status> {
    let token = dev_token_with(data, "nav", "nav_counsellor", None, clock);
    let mut nav = ConsentServiceClient::new(dev_channel(data, "nav", addr).await);
    let decision = nav
        .check_disclosure(with(
            &token,
            CheckDisclosureRequest {
                subject_id: subject.expose(),
                recipient: Some(Party {
                    orgnr: dev_orgnr("clinic"),
                    roles: vec![],
                }),
                category: "benefit_counselling".into(),
                purpose: "ips_follow_up".into(),
                approval_attested: false,
            },
        ))
        .await?
        .into_inner()
        .decision
        .expect("decision");
    Ok((decision.permitted, decision.reason()))
}

async fn health(data: &std::path::Path, addr: &str) -> ServingStatus {
    support::health(data, "nav", addr).await.expect("health")
}

#[tokio::test]
async fn a_clock_set_back_an_hour_neither_revives_an_expired_consent_nor_rewinds_the_log() {
    let Some(libfaketime) = libfaketime() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let subject = SubjectId::synthetic(3, 4, 1991, 212).expect("synthetic");

    // A consent in force since two hours ago, whose period ends in ten seconds.
    let gateway = start_dev(&data, &[]).await;
    let token = dev_token(&data, "portal", "jobseeker", Some(&subject.expose()));
    let mut portal = ConsentServiceClient::new(dev_channel(&data, "portal", &gateway.addr).await);
    let now = unix_now();
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    portal
        .grant_consent(with(
            &token,
            GrantConsentRequest {
                subject_id: subject.expose(),
                provisions: vec![Provision {
                    senders: vec![Party {
                        orgnr: dev_orgnr("nav"),
                        roles: vec![],
                    }],
                    recipients: vec![Party {
                        orgnr: dev_orgnr("clinic"),
                        roles: vec![],
                    }],
                    categories: vec!["benefit_counselling".into()],
                    purposes: vec!["ips_follow_up".into()],
                }],
                period: Some(Period {
                    start: at(now - 7200),
                    end: at(now + 10),
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("grant");
    assert_eq!(
        nav_checks(&data, &gateway.addr, &subject, &[])
            .await
            .expect("check"),
        (true, ReasonCode::Unspecified)
    );
    // Past its end (waiting on the wall clock, at most 30 s), it is expired.
    let expired = (false, ReasonCode::ConsentExpired);
    let mut decided = (true, ReasonCode::Unspecified);
    for _ in 0..150 {
        if unix_now() > now + 10 {
            decided = nav_checks(&data, &gateway.addr, &subject, &[])
                .await
                .expect("check");
            if decided == expired {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(decided, expired);
    let (exit, _) = gateway.stop().await;
    assert!(exit.success());

    // Restarted an hour in the past: no decision at all, rather than a permit.
    let faked = [
        ("LD_PRELOAD", libfaketime.to_str().expect("path")),
        ("FAKETIME", "-1h"),
        // Timers and timeouts run on the monotonic clock, which is not the point here.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let behind = start_dev(&data, &faked).await;
    let refused = nav_checks(&data, &behind.addr, &subject, &faked)
        .await
        .expect_err("refused while the clock is behind");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("clock is 3") && refused.message().contains("behind"),
        "{}",
        refused.message()
    );
    // Health says so (the watch runs every second).
    let mut status = health(&data, &behind.addr).await;
    for _ in 0..30 {
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = health(&data, &behind.addr).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
    let (exit, log) = behind.stop().await;
    assert!(exit.success(), "{exit:?}");
    let text = log.join("\n");
    assert!(
        text.contains("the system clock is behind the audit log's newest entry"),
        "log:\n{text}"
    );

    // Back on the right time: the consent is expired, as it was.
    let again = start_dev(&data, &[]).await;
    assert_eq!(
        nav_checks(&data, &again.addr, &subject, &[])
            .await
            .expect("check"),
        (false, ReasonCode::ConsentExpired)
    );
    assert_eq!(health(&data, &again.addr).await, ServingStatus::Serving);
    let (exit, _) = again.stop().await;
    assert!(exit.success());

    // And the log's times never went back, the run under the old clock included.
    let config = data.join("casegate.toml");
    let vkey = std::process::Command::new(BIN)
        .args(["audit", "vkey", "--config"])
        .arg(&config)
        .output()
        .expect("audit vkey");
    let vkey = String::from_utf8(vkey.stdout).expect("utf8");
    let verified = std::process::Command::new(BIN)
        .args(["audit", "verify", "--vkey", vkey.trim(), "--log"])
        .arg(data.join("audit"))
        .output()
        .expect("audit verify");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}
