use casegate_consent::Role;

use super::*;
use crate::edge::convert::audit::disclosure_detail;

#[test]
fn the_disclosure_detail_reads_back() {
    for (role, approval) in [
        (None, false),
        (Some(Role::EmploymentSpecialist), false),
        (None, true),
        (Some(Role::Clinician), true),
    ] {
        let detail = disclosure_detail(role, approval);
        assert_eq!(
            parse_disclosure_detail(detail.as_deref()),
            Ok((role, approval))
        );
    }
    assert!(parse_disclosure_detail(Some("recipient_role=pilot")).is_err());
    assert!(parse_disclosure_detail(Some("approval=maybe")).is_err());
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
