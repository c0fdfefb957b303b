//! Integrity: the newest checkpoint verified with the log's key, a consistency check from a
//! pasted older one, and downloads for offline verification.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::{checkpoint, merkle};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::{
    client::output::hex,
    web::{
        Web,
        chrome::{Chrome, download, failure, render},
        session,
        session::Officer,
        text::Tr,
    },
};

/// The result of a consistency check, kept for the page after the redirect.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Consistency {
    ok: bool,
    message: String,
}

#[derive(Debug, Template)]
#[template(path = "integrity.html")]
struct IntegrityPage {
    c: Chrome,
    note: String,
    size: u64,
    root: String,
    vkey: String,
    key_label: String,
    verified: bool,
    signed_line: String,
    check: Option<Consistency>,
    verify_command: String,
    export_command: String,
}

/// `GET /officer/integrity`: the newest signed checkpoint, verified with the log's key.
pub(crate) async fn integrity(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
    let c = Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await;
    let answer = newest_checkpoint(&web, &person).await;
    let answer = match answer {
        Ok(a) => a,
        Err(status) => return failure(c, &status),
    };
    let note = answer
        .checkpoint
        .as_ref()
        .map_or_else(String::new, |cp| cp.signed_note.clone());
    let signed = checkpoint::verify_log_checkpoint(&web.verifiers, &note);
    let key = web.verifiers.first();
    let vkey = key.map_or_else(String::new, checkpoint::Verifier::to_vkey);
    let check = session::peek::<Consistency>(&s, "consistency").await;
    render(&IntegrityPage {
        verified: signed.is_ok(),
        signed_line: c.t.fill(
            "integrity.signed",
            &[("size", &signed.as_ref().map_or(0, |c| c.size).to_string())],
        ),
        size: signed.as_ref().map_or(0, |c| c.size),
        root: signed
            .as_ref()
            .map_or_else(|_| String::new(), |c| hex(&c.root)),
        key_label: key.map_or_else(String::new, checkpoint::Verifier::label),
        verify_command: format!(
            "casegate audit verify --log <data_dir>/audit --vkey '{vkey}' --trusted checkpoint.txt"
        ),
        export_command: format!(
            "casegate audit verify --export casegate-audit-export.txt --vkey '{vkey}' --trusted checkpoint.txt"
        ),
        vkey,
        note,
        check,
        c,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct PastedCheckpoint {
    checkpoint: String,
}

/// `POST /officer/integrity`: is the log now consistent with the pasted (older) checkpoint?
pub(crate) async fn consistency(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Form(form): Form<PastedCheckpoint>,
) -> Response {
    let c = Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await;
    // Browsers send textarea line breaks as CRLF; a signed note's are LF.
    let pasted = form.checkpoint.replace("\r\n", "\n");
    let pasted = if pasted.ends_with('\n') {
        pasted
    } else {
        format!("{pasted}\n")
    };
    let check = match checkpoint::verify_log_checkpoint(&web.verifiers, &pasted) {
        Err(e) => Consistency {
            ok: false,
            message: c
                .t
                .fill("integrity.pasted_bad", &[("error", &e.to_string())]),
        },
        Ok(old) => {
            let answer = async {
                Ok::<_, Status>(
                    web.upstream
                        .audit(&person)?
                        .get_consistency_proof(v1::GetConsistencyProofRequest {
                            first_size: old.size,
                            second_size: 0,
                        })
                        .await?
                        .into_inner(),
                )
            }
            .await;
            match answer {
                Err(status) => return failure(c, &status),
                Ok(answer) => consistent(&web, &c.t, &old, &answer),
            }
        }
    };
    session::put(&s, "consistency", &check).await;
    Redirect::to("/officer/integrity").into_response()
}

fn consistent(
    web: &Web,
    tr: &Tr,
    old: &checkpoint::Checkpoint,
    answer: &v1::GetConsistencyProofResponse,
) -> Consistency {
    let result = (|| {
        let note = answer.checkpoint.as_ref().ok_or("no checkpoint")?;
        let new = checkpoint::verify_log_checkpoint(&web.verifiers, &note.signed_note)
            .map_err(|e| e.to_string())?;
        let proof = answer.proof.as_ref().ok_or("no proof")?;
        let hashes: Vec<merkle::Hash> = proof
            .hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| "a proof hash is not 32 bytes")
            })
            .collect::<Result<_, _>>()?;
        merkle::verify_consistency(old.size, new.size, &hashes, &old.root, &new.root)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(new.size)
    })();
    match result {
        Ok(size) => Consistency {
            ok: true,
            message: tr.fill(
                "integrity.consistent",
                &[("old", &old.size.to_string()), ("new", &size.to_string())],
            ),
        },
        Err(e) => Consistency {
            ok: false,
            message: tr.fill(
                "integrity.inconsistent",
                &[("old", &old.size.to_string()), ("error", &e)],
            ),
        },
    }
}

/// `GET /officer/integrity/checkpoint.txt`: the newest signed checkpoint as a file, to keep
/// and give to `casegate audit verify --trusted` later.
pub(crate) async fn checkpoint_file(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
    let answer = newest_checkpoint(&web, &person).await;
    match answer {
        Ok(a) => download(
            "text/plain; charset=utf-8",
            "checkpoint.txt",
            a.checkpoint.map(|c| c.signed_note).unwrap_or_default(),
        ),
        Err(status) => failure(
            Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await,
            &status,
        ),
    }
}

/// `GET /officer/integrity/export`: every entry up to the newest checkpoint and that checkpoint,
/// in the file `casegate audit verify --export` reads (`casegate_audit::verify::EXPORT_HEADER`),
/// streamed as the gateway exports it. `ExportEntries` is for officers of supervisory
/// organisations; others get the gateway's refusal.
pub(crate) async fn export_file(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
    use futures_util::StreamExt;
    let opened = async {
        let note = newest_checkpoint(&web, &person)
            .await?
            .checkpoint
            .map(|c| (c.tree_size, c.signed_note))
            .ok_or_else(|| Status::internal("the gateway sent no checkpoint"))?;
        let entries = web
            .upstream
            .audit(&person)?
            .export_entries(v1::ExportEntriesRequest {
                start_index: 0,
                end_index: note.0,
            })
            .await?
            .into_inner();
        Ok::<_, Status>((note.1, entries))
    }
    .await;
    let (note, entries) = match opened {
        Ok(o) => o,
        Err(status) => {
            return failure(
                Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await,
                &status,
            );
        }
    };
    let header = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(format!("{}\n", casegate_audit::verify::EXPORT_HEADER))
    });
    let lines = entries.map(|answer| {
        answer
            .map(|e| {
                let mut line =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &e.entry);
                line.push('\n');
                line
            })
            .map_err(|status| std::io::Error::other(status.message().to_owned()))
    });
    let footer = futures_util::stream::once(async move { Ok(format!("\n{note}")) });
    download(
        "text/plain; charset=utf-8",
        "casegate-audit-export.txt",
        axum::body::Body::from_stream(header.chain(lines).chain(footer)),
    )
}

/// The gateway's newest signed checkpoint and its verifier key, as it answered.
async fn newest_checkpoint(
    web: &Web,
    person: &crate::web::Person,
) -> Result<v1::GetCheckpointResponse, Status> {
    Ok(web
        .upstream
        .audit(person)?
        .get_checkpoint(v1::GetCheckpointRequest {})
        .await?
        .into_inner())
}
