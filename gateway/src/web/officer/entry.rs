//! One audit entry: every field, and its inclusion proof verified against the newest signed
//! checkpoint with the log's own key.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::{
    checkpoint,
    entry::{Entry, EntryKind},
    merkle,
};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::{
    client::output::{entry_json, hex},
    client::replay::{self, Outcome},
    web::{
        Web,
        chrome::{Chrome, failure, render},
        jobseeker::verified_report,
        sentence, session,
        session::Officer,
        text::Tr,
    },
};

#[derive(Debug, Template)]
#[template(path = "entry.html")]
struct EntryPage {
    c: Chrome,
    index: u64,
    fields: Vec<(String, String)>,
    proof: Vec<String>,
    proof_line: String,
    proof_ok: bool,
    /// A decision: the offline command, and the last in-page replay of it.
    replay: Option<String>,
    replayed: Option<Replayed>,
}

/// The result of replaying a decision, kept for the page after the redirect.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Replayed {
    index: u64,
    reproduced: bool,
    message: String,
}

/// `GET /officer/entries/{index}`: every field of one entry, decoded from its canonical bytes,
/// whose leaf hash's inclusion proof is verified against the newest signed checkpoint; and
/// how to replay its decision.
pub(crate) async fn entry(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Path(index): Path<u64>,
) -> Response {
    let here = format!("/officer/entries/{index}");
    let c = Chrome::new(&web, &s, "entry.title", &here).await;
    let found = async {
        let mut client = web.upstream.audit(&person)?;
        let mut stream = client
            .query_audit(v1::QueryAuditRequest {
                start_index: index,
                limit: 1,
                include_entry_bytes: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let answer = stream
            .message()
            .await?
            .filter(|a| a.entry.as_ref().is_some_and(|e| e.index == index))
            .ok_or_else(|| Status::not_found("no entry with this index is visible to you"))?;
        // What the page shows is decoded from the canonical bytes the proof is checked for.
        let entry = Entry::decode(&answer.entry_bytes)
            .map(|decoded| {
                let leaf = merkle::leaf_hash(&answer.entry_bytes);
                crate::edge::convert::audit::entry_to_wire(index, &decoded, &leaf)
            })
            .map_err(|e| Status::data_loss(format!("the entry's bytes do not decode: {e}")))?;
        let proof = client
            .get_inclusion_proof(v1::GetInclusionProofRequest {
                leaf_index: index,
                tree_size: 0,
            })
            .await?
            .into_inner();
        Ok::<_, Status>((entry, proof))
    }
    .await;
    let (entry, proof) = match found {
        Ok(f) => f,
        Err(status) => return failure(c, &status),
    };
    let (proof_ok, proof_line) = check_inclusion(&web, &c.t, &entry, &proof);
    let kind = u8::try_from(entry.kind).ok().and_then(EntryKind::from_code);
    let replay = matches!(
        kind,
        Some(EntryKind::DisclosurePermitted | EntryKind::DisclosureRefused)
    )
    .then(|| {
        format!(
            "casegate audit report … --subject <NNIN> --format json > report.json\n\
             casegate audit replay --log <data_dir>/audit --consents report.json --index {index} \
             --config {}",
            web.config_path.display()
        )
    });
    let replayed = session::peek::<Replayed>(&s, "replayed")
        .await
        .filter(|r| r.index == index);
    let fields = fields_of(&entry_json(&entry));
    let hashes = proof
        .proof
        .as_ref()
        .map(|p| p.hashes.iter().map(|h| hex(h)).collect())
        .unwrap_or_default();
    render(&EntryPage {
        c,
        index,
        fields,
        proof: hashes,
        proof_line,
        proof_ok,
        replay,
        replayed,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReplayForm {
    subject: String,
}

/// `POST /officer/entries/{index}/replay`: replays the decision from the jobseeker's subject
/// access report, verified as `casegate audit report` does — its grants and withdrawals and its
/// consent versions, each checked against the record hash the log pinned. The jobseeker is
/// named in the form, never in a URL.
pub(crate) async fn replay(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Path(index): Path<u64>,
    Form(form): Form<ReplayForm>,
) -> Response {
    let here = format!("/officer/entries/{index}");
    let c = Chrome::new(&web, &s, "entry.title", &here).await;
    let Ok(subject) = form.subject.trim().parse::<casegate_consent::SubjectId>() else {
        return failure(
            c,
            &Status::invalid_argument("not a national identity number"),
        );
    };
    let (report, _) = match verified_report(&web, &person, Some(&subject)).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let Some(target) = report.events.iter().find(|e| e.index == index) else {
        let replayed = Replayed {
            index,
            reproduced: false,
            message: c.t.get("replay.not_about"),
        };
        session::put(&s, "replayed", &replayed).await;
        return Redirect::to(&here).into_response();
    };
    let earlier = report
        .events
        .iter()
        .filter(|e| e.index < index)
        .map(|e| (e.index, e.entry.clone()));
    let versions: Vec<_> = report.consents.iter().map(|v| v.record.clone()).collect();
    let outcome = |o: &Outcome| match o {
        Outcome::Permit {
            consent_id,
            version,
            ..
        } => c.t.fill(
            "replay.permit",
            &[("consent", consent_id), ("version", &version.to_string())],
        ),
        Outcome::Refuse { reason } => c.t.fill(
            "replay.refuse",
            &[("reason", &sentence::reason(&c.t, reason))],
        ),
    };
    let replayed =
        match replay::replay_entry(index, &target.entry, earlier, &versions, &web.vocabulary) {
            Ok(r) => Replayed {
                index,
                reproduced: r.reproduced(),
                message: c.t.fill(
                    if r.reproduced() {
                        "replay.reproduced"
                    } else {
                        "replay.not_reproduced"
                    },
                    &[
                        ("recorded", &outcome(&r.recorded)),
                        ("replayed", &outcome(&r.replayed)),
                        ("versions", &r.checked_versions.to_string()),
                    ],
                ),
            },
            Err(e) => Replayed {
                index,
                reproduced: false,
                message: c.t.fill("replay.failed", &[("error", &e.to_string())]),
            },
        };
    session::put(&s, "replayed", &replayed).await;
    Redirect::to(&here).into_response()
}

/// Every field of an entry's JSON form as (name, text), nested objects flattened
/// (`actor.orgnr`).
fn fields_of(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(object) = json.as_object() else {
        return out;
    };
    for (key, value) in object {
        match value {
            serde_json::Value::Object(_) => {
                out.extend(
                    fields_of(value)
                        .into_iter()
                        .map(|(k, v)| (format!("{key}.{k}"), v)),
                );
            }
            serde_json::Value::String(s) => out.push((key.clone(), s.clone())),
            serde_json::Value::Null => out.push((key.clone(), String::new())),
            other => out.push((key.clone(), other.to_string())),
        }
    }
    out
}

/// Verifies the entry's inclusion proof against the checkpoint that came with it, whose
/// signature must verify with the log's own key.
fn check_inclusion(
    web: &Web,
    tr: &Tr,
    entry: &v1::AuditEntry,
    answer: &v1::GetInclusionProofResponse,
) -> (bool, String) {
    let result = (|| {
        let note = answer
            .checkpoint
            .as_ref()
            .ok_or("no checkpoint came with the proof")?;
        let signed = checkpoint::verify_log_checkpoint(&web.verifiers, &note.signed_note)
            .map_err(|e| e.to_string())?;
        let proof = answer.proof.as_ref().ok_or("no proof")?;
        let leaf: merkle::Hash = entry
            .leaf_hash
            .as_slice()
            .try_into()
            .map_err(|_| "the leaf hash is not 32 bytes")?;
        if answer.leaf_hash != entry.leaf_hash {
            return Err("the proof is for another leaf".to_owned());
        }
        let hashes: Vec<merkle::Hash> = proof
            .hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| "a proof hash is not 32 bytes")
            })
            .collect::<Result<_, _>>()?;
        merkle::verify_inclusion(&leaf, entry.index, signed.size, &hashes, &signed.root)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(signed.size)
    })();
    match result {
        Ok(size) => (
            true,
            tr.fill("entry.proof_ok", &[("size", &size.to_string())]),
        ),
        Err(e) => (false, tr.fill("entry.proof_failed", &[("error", &e)])),
    }
}
