//! Nothing acknowledged is lost, nothing is delivered without its audit entry: a gateway
//! process under disclosure load is killed with SIGKILL at varied moments, ten times; then
//! every acknowledged disclosure is delivered exactly once, and every delivered note has its
//! `disclosure permitted` entry in the log.

use std::{
    collections::{HashMap, HashSet},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use casegate_audit::entry::{Entry, Event as AuditEvent};
use casegate_consent::SubjectId;
use casegate_proto::v1::{DiscloseRequest, ExportEntriesRequest, stream_inbox_response::Event};
use casegate_tests::{TestGateway, child::ServerProcess};
use tokio_stream::StreamExt;

const CHILD: &str = env!("CARGO_BIN_EXE_gateway_child");
const KILLS: u64 = 10;

fn start(gw: &mut TestGateway) -> ServerProcess {
    let mut command = Command::new(CHILD);
    command.arg(gw.config_path()).stderr(Stdio::null());
    let child = ServerProcess::spawn(command);
    gw.attach(child.addr);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_disclosure_load_loses_no_acknowledged_note() {
    let mut gw = TestGateway::prepare("", &[]);
    let me = SubjectId::synthetic_all().nth(7000).expect("subject");
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    for round in 0..KILLS {
        let child = start(&mut gw);
        if round == 0 {
            let grant = casegate_tests::fixtures::consent(
                &gw,
                &me,
                "nav",
                "ips",
                "benefit_counselling",
                "ips_follow_up",
            );
            gw.jobseeker(&me)
                .await
                .consent
                .grant_consent(grant)
                .await
                .expect("grant");
        }
        let caller = gw.caller("nav", "nav_counsellor").await;
        let mut senders = Vec::new();
        for client in 0..8u64 {
            let (mut caller, acked, me, ips) = (
                caller.clone(),
                acked.clone(),
                me,
                gw.org("ips").orgnr.clone(),
            );
            senders.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let request_id = format!("crash-{round}-{client}-{n}");
                    let request = DiscloseRequest {
                        request_id: request_id.clone(),
                        subject_id: me.expose(),
                        recipient_orgnr: ips.clone(),
                        category: "benefit_counselling".into(),
                        purpose: "ips_follow_up".into(),
                        title: "Update".into(),
                        body: request_id.clone().into_bytes(),
                        content_type: "text/plain".into(),
                        ..Default::default()
                    };
                    match caller.disclosure.disclose(request).await {
                        Ok(response) => {
                            let receipt = response.into_inner().receipt.expect("receipt");
                            acked
                                .lock()
                                .expect("acked")
                                .insert(receipt.disclosure_id, request_id);
                        }
                        Err(_) => return, // the gateway is gone
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(60 + (round * 37) % 200)).await;
        child.kill();
        for s in senders {
            let _ = s.await;
        }
    }

    // After the last crash: a clean start delivers every acknowledged note, exactly once.
    let child = start(&mut gw);
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("stream in time")
            .expect("stream ok")
            .expect("open");
        match message.event.expect("event") {
            Event::Note(note) => {
                *delivered.entry(note.disclosure_id.clone()).or_default() += 1;
                bodies.insert(note.disclosure_id, note.body);
            }
            Event::BacklogComplete(_) => break,
        }
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 20,
        "only {} disclosures were acknowledged",
        acked.len()
    );
    for (id, request_id) in &acked {
        assert_eq!(
            delivered.get(id),
            Some(&1),
            "acknowledged {request_id} delivered {:?} times",
            delivered.get(id)
        );
        assert_eq!(bodies[id], request_id.as_bytes(), "intact");
    }
    // Every delivered note has its entry in the log.
    let mut officer = gw.caller("authority", "privacy_officer").await;
    let permitted: HashSet<String> = officer
        .audit
        .export_entries(ExportEntriesRequest::default())
        .await
        .expect("export")
        .into_inner()
        .filter_map(|item| {
            let entry = Entry::decode(&item.expect("entry").entry).expect("decode");
            match entry.event {
                AuditEvent::DisclosurePermitted(p) => Some(p.disclosure_id),
                _ => None,
            }
        })
        .collect()
        .await;
    for id in delivered.keys() {
        assert!(
            permitted.contains(id),
            "note {id} delivered without its audit entry"
        );
    }
    child.kill();
}
