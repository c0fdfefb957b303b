use casegate_audit::entry::Fields;

use super::*;

#[test]
fn a_consent_entry_before_the_decision_that_cannot_be_read_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(&segments).expect("dir");
    // A grant that names no consent fits no typed event; the decision after it is entry 1.
    let odd = Entry::from_fields(EntryKind::ConsentGranted, 1, Fields::default())
        .encode()
        .expect("encodes");
    let mut file = segment::header(0).to_vec();
    for (i, payload) in [odd.as_slice(), b"\x01\x03".as_slice()]
        .into_iter()
        .enumerate()
    {
        segment::encode_frame(i as u64, payload, &mut file);
    }
    std::fs::write(segments.join(segment::file_name(0)), file).expect("write");
    let error = replay(dir.path(), &[], 1, &Vocabulary::default()).expect_err("unreadable");
    assert!(
        matches!(error, ReplayError::Unreadable { index: 0, .. }),
        "{error}"
    );
}

#[test]
fn an_export_that_is_not_consent_versions_is_refused_by_name() {
    for (text, expected) in [
        ("not json", "the consent export: expected ident"),
        ("42", "expected an array of consent versions"),
        ("{\"other\": []}", "an object with `consent_versions`"),
        ("[{\"format\": \"x\"}]", "version [0]:"),
    ] {
        let error = read_export(text.as_bytes()).expect_err(text).to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
    assert!(read_export(b"[]").expect("empty").is_empty());
}

#[test]
fn a_missing_entry_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("segments")).expect("dir");
    let error = replay(dir.path(), &[], 5, &Vocabulary::default()).expect_err("empty log");
    assert_eq!(
        error.to_string(),
        "the log holds 0 entries; there is no entry 5"
    );
}
