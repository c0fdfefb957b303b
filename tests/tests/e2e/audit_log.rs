//! The audit log over gRPC: signed checkpoints, proofs that verify against them, and raw
//! export for supervisory privacy officers.

use casegate_audit::{
    entry::{Entry, EntryKind},
    merkle::{self, Hash},
};
use casegate_proto::v1::{
    ExportEntriesRequest, ExportEntriesResponse, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest,
};
use casegate_tests::{Caller, TestGateway};
use tokio_stream::StreamExt;
use tonic::Code;

fn hashes(raw: &[Vec<u8>]) -> Vec<Hash> {
    raw.iter()
        .map(|h| Hash::try_from(h.as_slice()).expect("32-byte hash"))
        .collect()
}

/// Every entry from `start` to the newest checkpoint.
async fn export(caller: &mut Caller, start: u64) -> Vec<ExportEntriesResponse> {
    caller
        .audit
        .export_entries(ExportEntriesRequest {
            start_index: start,
            end_index: 0,
        })
        .await
        .expect("export")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream")
}

#[tokio::test]
async fn the_checkpoint_is_signed_by_the_configured_key_and_proves_the_start_entry() {
    let gw = TestGateway::start().await;
    let mut caller = gw.caller("clinic", "clinician").await;
    let response = caller
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner();
    assert_eq!(response.verifier_key, gw.audit_verifier.to_vkey());
    let wire = response.checkpoint.expect("checkpoint");
    let checkpoint = gw
        .audit_verifier
        .verify(&wire.signed_note)
        .expect("signature verifies");
    assert_eq!(checkpoint.size, wire.tree_size);
    assert_eq!(checkpoint.root.to_vec(), wire.root_hash);
    assert!(checkpoint.size >= 1, "the gateway's start is recorded");

    let proof = caller
        .audit
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf_index: 0,
            tree_size: 0,
        })
        .await
        .expect("proof")
        .into_inner();
    let leaf: Hash = proof.leaf_hash.as_slice().try_into().expect("leaf hash");
    let inclusion = proof.proof.expect("proof");
    assert_eq!(inclusion.tree_size, checkpoint.size);
    merkle::verify_inclusion(
        &leaf,
        0,
        checkpoint.size,
        &hashes(&inclusion.hashes),
        &checkpoint.root,
    )
    .expect("inclusion verifies against the signed root");

    for (request, code) in [
        (
            GetInclusionProofRequest {
                leaf_index: checkpoint.size,
                tree_size: 0,
            },
            Code::OutOfRange,
        ),
        (
            GetInclusionProofRequest {
                leaf_index: 0,
                tree_size: checkpoint.size + 1,
            },
            Code::OutOfRange,
        ),
    ] {
        let status = caller
            .audit
            .get_inclusion_proof(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
    }
}

#[tokio::test]
async fn a_restart_extends_the_log_consistently() {
    let gw = TestGateway::start().await;
    let mut caller = gw.caller("authority", "privacy_officer").await;
    let before = caller
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .expect("checkpoint");
    let before = gw
        .audit_verifier
        .verify(&before.signed_note)
        .expect("verifies");

    let gw = gw.restart().await;
    let mut caller = gw.caller("authority", "privacy_officer").await;
    let response = caller
        .audit
        .get_consistency_proof(GetConsistencyProofRequest {
            first_size: before.size,
            second_size: 0,
        })
        .await
        .expect("consistency proof")
        .into_inner();
    let after = gw
        .audit_verifier
        .verify(&response.checkpoint.expect("newest checkpoint").signed_note)
        .expect("verifies");
    assert_eq!(after.size, before.size + 1, "the restart is recorded");
    let proof = response.proof.expect("proof");
    merkle::verify_consistency(
        before.size,
        after.size,
        &hashes(&proof.hashes),
        &before.root,
        &after.root,
    )
    .expect("the new log extends the old one");

    let status = caller
        .audit
        .get_consistency_proof(GetConsistencyProofRequest {
            first_size: 0,
            second_size: 0,
        })
        .await
        .expect_err("size 0 proves nothing");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Export: every entry, decodable, hashing to its leaf; resumable from an index.
    let entries = export(&mut caller, 0).await;
    assert_eq!(entries.len() as u64, after.size);
    for (i, item) in entries.iter().enumerate() {
        assert_eq!(item.index, i as u64);
        assert_eq!(merkle::leaf_hash(&item.entry).to_vec(), item.leaf_hash);
        let entry = Entry::decode(&item.entry).expect("canonical entry");
        assert_eq!(entry.kind(), EntryKind::GatewayStarted);
    }
    let resumed = export(&mut caller, 1).await;
    assert_eq!(resumed.iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn only_supervisory_privacy_officers_export_and_ranges_are_checked() {
    let gw = TestGateway::start().await;
    // Not an officer; an officer of a non-supervisory organisation (who queries their own
    // organisation's entries instead).
    for (org, role, why) in [
        ("clinic", "clinician", "role clinician"),
        ("privacy", "privacy_officer", "supervisory"),
    ] {
        let mut caller = gw.caller(org, role).await;
        let Err(status) = caller
            .audit
            .export_entries(ExportEntriesRequest::default())
            .await
        else {
            panic!("refused");
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(why), "{status:?}");
    }

    let mut officer = gw.caller("authority", "privacy_officer").await;
    let Err(status) = officer
        .audit
        .export_entries(ExportEntriesRequest {
            start_index: 0,
            end_index: 1000,
        })
        .await
    else {
        panic!("refused");
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}
