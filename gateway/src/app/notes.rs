//! The disclosure workflow's side of the note store ([`casegate_notes`]): sealing and opening
//! a note's personal content with the keyring, and restoring the store's agreement with the
//! audit log after a crash.

pub(crate) use casegate_notes::{
    Approval, Existing, Expiry, Note, NoteError, NoteState, NoteStorage, NoteStore, Secret,
    purge_after,
};

use crate::crypto::keyring::Keyring;

/// Seals `secret` for note `id` (AES-256-GCM with the keyring's newest key), bound to the
/// note's id, subject pseudonym and recipient ([`Note::aad`]).
///
/// # Errors
/// [`NoteError::Seal`] if sealing fails (no nonce could be drawn).
pub(crate) fn seal(
    keyring: &Keyring,
    secret: &Secret,
    id: &uuid::Uuid,
    pseudonym: &[u8; 32],
    recipient: casegate_consent::OrgNumber,
) -> Result<casegate_notes::Sealed, NoteError> {
    keyring
        .seal(&secret.encode(), &Note::aad(id, pseudonym, recipient))
        .map_err(|e| NoteError::Seal(e.to_string()))
}

/// Opens a note's sealed part.
///
/// # Errors
/// [`NoteError::NotFound`] if it is purged; [`NoteError::Seal`] if its key is not in the
/// keyring or it does not authenticate; [`NoteError::Corrupt`] if the opened bytes do not
/// decode.
pub(crate) fn open_secret(note: &Note, keyring: &Keyring) -> Result<Secret, NoteError> {
    let sealed = note.sealed.as_ref().ok_or(NoteError::NotFound)?;
    let plain = keyring
        .open(
            sealed,
            &Note::aad(&note.id, &note.subject_pseudonym, note.recipient_org),
        )
        .map_err(|e| NoteError::Seal(e.to_string()))?;
    Secret::decode(&plain)
}

/// Restores the invariant after a crash: a pending note whose `disclosure permitted` entry is
/// in the log becomes deliverable; one without is dropped (its sender never got a receipt).
/// Returns (made deliverable, dropped).
pub(crate) fn recover(
    notes: &dyn NoteStorage,
    log: &dyn casegate_audit::storage::VerifiableLog,
) -> Result<(usize, usize), NoteError> {
    use casegate_audit::entry::{Entry, Event};
    let pending = notes.pending()?;
    let (mut made, mut dropped) = (0, 0);
    let size = log.size();
    for note in pending {
        let id = note.id.to_string();
        let mut found = None;
        for index in note.log_size_hint.min(size)..size {
            let bytes = log
                .entry(index)
                .map_err(|e| NoteError::Corrupt(format!("audit log: {e}")))?;
            if let Ok(Entry {
                event: Event::DisclosurePermitted(permitted),
                ..
            }) = Entry::decode(&bytes)
                && permitted.disclosure_id == id
            {
                found = Some(index);
                break;
            }
        }
        match found {
            Some(index) => {
                notes.make_deliverable(note, index)?;
                made += 1;
            }
            None => {
                notes.drop_pending(&note)?;
                dropped += 1;
            }
        }
    }
    notes.flush()?;
    Ok((made, dropped))
}

#[cfg(test)]
mod tests {
    use casegate_consent::record::Timestamp;

    use super::*;

    /// A note folder written by the JSON journal (main at e932ca0): six notes, sealed with the
    /// fixture's keyring, left pending, deliverable (audit index 11), delivered (12),
    /// acknowledged at 5,000 µs to be purged at 9,000 µs (13), purged then forgotten (14), and
    /// purged (15); titles name the states.
    const LEGACY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy-notes");

    #[test]
    fn a_note_folder_written_as_json_opens_with_every_note_and_sealed_part_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let notes = dir.path().join("notes");
        std::fs::create_dir(&notes).expect("dir");
        let journal = "journal-00000001";
        std::fs::copy(format!("{LEGACY}/notes/{journal}"), notes.join(journal)).expect("copy");
        let keyring = std::fs::read_to_string(format!("{LEGACY}/keyring")).expect("keyring");
        let keyring = Keyring::parse(&keyring).expect("keyring");

        let store = NoteStore::open(&notes).expect("open");
        let mut held: Vec<Note> = store.pending().expect("pending");
        let org = "910000071".parse().expect("orgnr");
        held.extend(store.inbox_page(org, None, 10).expect("inbox"));
        let due = store
            .due(Timestamp(i64::MAX), Timestamp(i64::MAX), 10)
            .expect("due");
        held.extend(
            due.into_iter()
                .filter(|(n, _)| n.state == NoteState::Acknowledged)
                .map(|(n, _)| n),
        );
        let states: Vec<(NoteState, Option<u64>, bool)> = held
            .iter()
            .map(|n| (n.state, n.audit_index, n.delivered))
            .collect();
        assert_eq!(
            states,
            [
                (NoteState::Pending, None, false),
                (NoteState::Deliverable, Some(11), false),
                (NoteState::Deliverable, Some(12), true),
                (NoteState::Acknowledged, Some(13), true),
            ]
        );
        assert_eq!(held[3].acknowledged_at, Some(Timestamp(5_000)));
        assert_eq!(held[3].purge_after, Some(Timestamp(9_000)));
        for (note, title) in
            held.iter()
                .zip(["pending", "deliverable", "delivered", "acknowledged"])
        {
            let secret = open_secret(note, &keyring).expect("opens");
            assert_eq!(secret.title, title);
            assert_eq!(
                secret.body,
                format!("body of the {title} note").into_bytes()
            );
            assert_eq!(note.request_id, format!("legacy-{title}"));
        }
        assert_eq!(
            store.stats().notes,
            5,
            "four held and one purged, one forgotten"
        );
        let sender = held[0].sender.orgnr;
        let reuse = |request: &str| {
            store
                .reserve(sender, request, uuid::Uuid::now_v7(), [0; 32])
                .expect("reserve")
        };
        assert!(reuse("legacy-forgotten").is_err(), "purged, still held");
        assert_eq!(
            reuse("legacy-purged"),
            Ok(()),
            "forgotten: its request id is free"
        );

        // Written on in the new layout, and read back after a restart.
        store
            .acknowledge(&held[1].id, Timestamp(6_000), Timestamp(7_000))
            .expect("acknowledge");
        store.purge(&held[2].id).expect("purge");
        drop(store);
        let store = NoteStore::open(&notes).expect("reopen");
        assert_eq!(
            store.get(&held[1].id).expect("note").state,
            NoteState::Acknowledged
        );
        let purged = store.get(&held[2].id).expect("note");
        assert_eq!((purged.state, purged.sealed), (NoteState::Purged, None));
        let kept = store.get(&held[3].id).expect("note");
        assert_eq!(
            open_secret(&kept, &keyring).expect("opens").title,
            "acknowledged"
        );
    }
}
