use proptest::prelude::*;

use super::*;
use crate::storage::model::note;

fn sealed(len: usize) -> Sealed {
    Sealed {
        key_id: "key-2026".into(),
        nonce: [5; 12],
        ciphertext: (0..len).map(|i| i as u8).collect(),
    }
}

fn time() -> impl Strategy<Value = Option<Timestamp>> {
    prop::option::of(any::<i64>().prop_map(Timestamp))
}

fn progress() -> impl Strategy<Value = Progress> {
    (
        0..4usize,
        prop::option::of(any::<u64>()),
        any::<bool>(),
        time(),
        time(),
        time(),
    )
        .prop_map(
            |(state, audit_index, delivered, acknowledged_at, purge_after, purged_at)| Progress {
                state: NoteState::ALL[state],
                audit_index,
                delivered,
                acknowledged_at,
                purge_after,
                purged_at,
            },
        )
}

proptest! {
    #[test]
    fn a_note_record_decodes_to_the_note_it_encodes(
        progress in progress(),
        request_id in "\\PC{0,40}",
        content_type in "[a-z/+.-]{0,30}",
        body in prop::option::of(0..2_000usize),
        role in prop::option::of(0..Role::ALL.len()),
    ) {
        let mut original = note(1_234);
        progress.apply(&mut original);
        original.request_id = request_id;
        original.content_type = content_type;
        original.recipient_role = role.map(|r| Role::ALL[r]);
        original.sealed = body.map(sealed);
        let payload = encode_note(&original);
        prop_assert_eq!(decode_note(&payload).expect("decodes"), original);
    }

    #[test]
    fn a_progress_record_decodes_to_the_progress_it_encodes(progress in progress()) {
        let id = Uuid::now_v7();
        let payload = encode_progress(&id, &progress);
        prop_assert!(plausible(crate::journal::KIND_PROGRESS, &payload));
        prop_assert_eq!(decode_progress(&payload).expect("decodes"), (id, progress));
    }

    #[test]
    fn a_secret_decodes_to_the_secret_it_encodes(
        title in "\\PC{0,60}",
        body in prop::collection::vec(any::<u8>(), 0..500),
        approval in prop::option::of(("[0-9]{1,9}", any::<i64>())),
    ) {
        let secret = Secret {
            subject: SubjectId::synthetic_all().nth(3).expect("subject"),
            title,
            body,
            approval: approval.map(|(hpr_number, at)| Approval {
                hpr_number,
                approved_at: Timestamp(at),
            }),
        };
        prop_assert_eq!(Secret::decode(&secret.encode()).expect("decodes"), secret);
    }
}

#[test]
fn every_cut_or_extended_record_is_refused() {
    let mut original = note(1_000);
    original.sealed = Some(sealed(40));
    let note_payload = encode_note(&original);
    let progress_payload = encode_progress(&original.id, &Progress::of(&original));
    for cut in 0..note_payload.len() {
        assert!(
            decode_note(&note_payload[..cut]).is_err(),
            "note cut at {cut}"
        );
    }
    for cut in 0..progress_payload.len() {
        assert!(
            decode_progress(&progress_payload[..cut]).is_err(),
            "progress cut at {cut}"
        );
    }
    let mut longer = note_payload.clone();
    longer.push(0);
    assert!(decode_note(&longer).is_err());
    let mut other_format = note_payload;
    other_format[0] = 2;
    assert!(decode_note(&other_format).is_err());
}

#[test]
fn a_record_holds_bytes_as_bytes() {
    // The hashes and the ciphertext are in the payload as they are, not as base64 text.
    let mut original = note(1_000);
    original.sealed = Some(sealed(64));
    let payload = encode_note(&original);
    let contains = |needle: &[u8]| payload.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&original.content_sha256));
    assert!(contains(&original.subject_pseudonym));
    assert!(contains(
        &original.sealed.as_ref().expect("sealed").ciphertext
    ));
    assert!(!contains(
        STANDARD.encode(original.content_sha256).as_bytes()
    ));
}

#[test]
fn a_secret_sealed_before_as_json_is_read() {
    let subject = SubjectId::synthetic_all().next().expect("subject");
    let json = format!(
        r#"{{"subject":"{}","title":"Progress","body":"{}","approval":{{"hpr_number":"123456","approved_at":900}}}}"#,
        subject.expose(),
        STANDARD.encode(b"worked three days")
    );
    let secret = Secret::decode(json.as_bytes()).expect("decodes");
    assert_eq!(secret.subject, subject);
    assert_eq!(secret.title, "Progress");
    assert_eq!(secret.body, b"worked three days");
    assert_eq!(
        secret.approval,
        Some(Approval {
            hpr_number: "123456".into(),
            approved_at: Timestamp(900)
        })
    );
}
