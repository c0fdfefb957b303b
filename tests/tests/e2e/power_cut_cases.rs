//! Named power-cut cases: a withdrawal acknowledged a moment before the power goes still holds
//! after it. (The audit log's own cases — a zero-length checkpoint file, a lagging one that
//! must not let recovery cut an acknowledged record — are tests of `casegate_audit::log`.)

use std::{fs::File, os::unix::fs::DirBuilderExt, time::Duration};

use casegate_proto::v1::{
    CheckDisclosureRequest, ConsentStatus, GetConsentRequest, Party, WithdrawConsentRequest,
};
use casegate_tests::{TestGateway, powercut, scenario};

const CHILD: &str = env!("CARGO_BIN_EXE_gateway_child");

/// A power-cut filesystem mounted at `mnt` in a new temporary folder: (the folder, the mount,
/// `mnt`). `None` when FUSE cannot be used here (see [`powercut::mount_for_test`]).
fn power_cut_folder() -> Option<(tempfile::TempDir, powercut::Mounted, std::path::PathBuf)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let fs = powercut::mount_for_test(&mnt)?;
    Some((dir, fs, mnt))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_acknowledged_just_before_a_power_cut_still_holds_after_it() {
    let Some((dir, mut fs, mnt)) = power_cut_folder() else {
        return;
    };
    let data = mnt.join("data");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .and_then(|()| File::open(&mnt)?.sync_all())
        .expect("data folder");
    let mut gw = TestGateway::prepare("", &[]);
    let log = |name: &str| dir.path().join(name);

    // Three times, as the fault was seen: grant, wait two seconds, withdraw (OK), and cut the
    // power at once.
    for try_n in 0..3 {
        let child = powercut::start_child(&mut gw, CHILD.as_ref(), &data, &log("run.log"))
            .expect("the gateway starts");
        let subject = scenario::subject(9100 + try_n);
        let mut jobseeker = gw.jobseeker(&subject).await;
        let granted = jobseeker
            .consent
            .grant_consent(scenario::ips_consent(&gw, &subject))
            .await
            .expect("grant")
            .into_inner()
            .consent
            .expect("consent");
        tokio::time::sleep(Duration::from_secs(2)).await;
        jobseeker
            .consent
            .withdraw_consent(WithdrawConsentRequest {
                consent_id: granted.consent_id.clone(),
                ..Default::default()
            })
            .await
            .expect("the withdrawal is acknowledged");
        child.kill();
        fs.cut_power().expect("cut the power");

        let child = powercut::start_child(&mut gw, CHILD.as_ref(), &data, &log("check.log"))
            .expect("the gateway starts after the cut");
        // The consent is there, withdrawn: the grant and the withdrawal were both answered OK.
        let mut jobseeker = gw.jobseeker(&subject).await;
        let held = jobseeker
            .consent
            .get_consent(GetConsentRequest {
                consent_id: granted.consent_id.clone(),
                version: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("try {try_n}: the acknowledged grant is gone: {e:?}"))
            .into_inner()
            .consent
            .expect("consent");
        assert_eq!(
            held.status(),
            ConsentStatus::Withdrawn,
            "try {try_n}: the acknowledged withdrawal was undone by the power cut"
        );
        let mut nav = gw.caller("nav", "nav_counsellor").await;
        let decision = nav
            .consent
            .check_disclosure(CheckDisclosureRequest {
                subject_id: subject.expose(),
                recipient: Some(Party {
                    orgnr: gw.org("ips").orgnr.clone(),
                    roles: vec![],
                }),
                category: "benefit_counselling".into(),
                purpose: "ips_follow_up".into(),
                approval_attested: false,
            })
            .await
            .expect("check")
            .into_inner()
            .decision
            .expect("decision");
        assert!(
            !decision.permitted,
            "try {try_n}: the withdrawn consent permits again after the power cut: {decision:?}"
        );
        let refused = nav
            .disclosure
            .disclose(scenario::update(
                &gw,
                &subject,
                &format!("after-cut-{try_n}"),
                "note",
            ))
            .await
            .expect_err("a disclosure under the withdrawn consent is refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        child.stop();
    }
}

/// A consent record large enough that sled keeps it in a blob file of its own (sled writes
/// those without syncing them) is still there after a power cut.
#[test]
fn a_consent_record_in_a_sled_blob_file_survives_a_power_cut() {
    use std::collections::BTreeSet;

    use casegate_consent::{
        OrgNumber, SubjectId,
        record::{Actor, Evidence, NewConsent, Party, Period, Provision, Timestamp},
        store::ConsentStore,
    };

    let Some((_dir, mut fs, mnt)) = power_cut_folder() else {
        return;
    };
    let path = mnt.join("consents");
    // Synthetic organisation numbers: those with a valid check digit from 910000000 on.
    let orgs: Vec<OrgNumber> = (910_000_000u32..)
        .filter_map(|n| n.to_string().parse().ok())
        .take(200)
        .collect();
    let party = |orgnr: OrgNumber| Party {
        orgnr,
        roles: BTreeSet::new(),
    };
    let new = NewConsent {
        subject: SubjectId::synthetic_all().nth(9200).expect("subject"),
        recorded_by: Actor {
            orgnr: orgs[0],
            user_id: "nav-1".into(),
            role: casegate_consent::Role::NavCounsellor,
        },
        // 200 provisions × 200 recipients: a record of over a megabyte of JSON.
        provisions: orgs
            .iter()
            .map(|&sender| Provision {
                senders: vec![party(sender)],
                recipients: orgs.iter().map(|&o| party(o)).collect(),
                categories: ["benefit_counselling".parse().expect("term")].into(),
                purposes: ["ips_follow_up".parse().expect("term")].into(),
            })
            .collect(),
        period: Period {
            start: Timestamp(1_800_000_000_000_000),
            end: Timestamp(1_800_000_000_000_000 + 86_400_000_000),
        },
        evidence: Evidence::SignedForm {
            sha256: [1; 32],
            reference: "form-1".into(),
        },
    };
    let granted = {
        let store = ConsentStore::open(&path).expect("open");
        let record = store
            .prepare_grant(new, None, Timestamp(1_800_000_000_000_000))
            .expect("prepare");
        store
            .commit_grant(&record)
            .expect("the grant is acknowledged");
        record
    };
    let blobs = std::fs::read_dir(path.join("blobs"))
        .expect("blobs")
        .count();
    assert!(
        blobs > 0,
        "the record is not in a blob file: the test tests nothing"
    );
    // sled's threads end a moment after the last handle is dropped.
    std::thread::sleep(Duration::from_millis(500));
    fs.cut_power().expect("cut the power");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let store = loop {
        match ConsentStore::open(&path) {
            Ok(store) => break store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the store does not open after the cut: {e}"),
        }
    };
    let held = store
        .get(&granted.id, None)
        .expect("the acknowledged grant survives the power cut");
    assert_eq!(held, granted);
}
