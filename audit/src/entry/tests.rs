use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ æøåÆØÅ=:,<>-]{0,40}"
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

prop_compose! {
    fn actor()(orgnr in "[0-9]{9}", user_id in text(), role in text(), cert_sha256 in hash()) -> Actor {
        Actor { orgnr, user_id, role, cert_sha256 }
    }
}

prop_compose! {
    fn consent()(id in text(), version in any::<u32>(), record_sha256 in hash()) -> ConsentRef {
        ConsentRef { id, version, record_sha256 }
    }
}

/// Details of the forms the gateway writes, and others.
fn detail() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        Just("casegate 0.1.0".to_owned()),
        Just("audit checkpoint key a+1 replaced by b+2".to_owned()),
        Just("recipient_role=employment_specialist approval=attested".to_owned()),
        Just("approval=attested".to_owned()),
        Just("login=https://idp.example acr=high".to_owned()),
        Just("list_consents shown=3 login=x".to_owned()),
        Just("get_consent".to_owned()),
        Just("scope=all login=x acr=y".to_owned()),
        Just(
            "subject=<pseudonym> kinds=note_purged start_index=0 limit=5 scope=org:910000071"
                .to_owned()
        ),
        Just("summary from=2026-01-01T00:00:00Z reasons=no_consent scope=all".to_owned()),
    ]
}

prop_compose! {
    fn fields()(
        actor in prop::option::of(actor()),
        subject_pseudonym in prop::option::of(hash()),
        consent in prop::option::of(consent()),
        strings in prop::collection::vec(prop::option::of(text()), 8),
        content_sha256 in prop::option::of(hash()),
        detail in prop::option::of(detail()),
    ) -> Fields {
        let mut s = strings.into_iter();
        let mut next = || s.next().flatten();
        Fields {
            actor, subject_pseudonym, consent,
            category: next(), purpose: next(), sender_orgnr: next(), recipient_orgnr: next(),
            content_sha256,
            reason: next(), request_id: next(), policy_version: next(), disclosure_id: next(),
            detail,
        }
    }
}

fn kind() -> impl Strategy<Value = EntryKind> {
    prop::sample::select(EntryKind::ALL.to_vec())
}

proptest! {
    #[test]
    fn any_fields_decode_and_re_encode_to_the_same_bytes(kind in kind(), time in any::<i64>(), f in fields()) {
        let bytes = layout::encode(kind, time, &f.view()).expect("encodes");
        let entry = Entry::decode(&bytes).expect("decodes");
        prop_assert_eq!(entry.kind(), kind);
        prop_assert_eq!(Entry::time_of(&bytes), Some(time));
        prop_assert_eq!(Entry::check(&bytes), Ok(time));
        prop_assert_eq!(entry.encode().expect("re-encodes"), bytes);
    }

    #[test]
    fn every_proper_prefix_is_truncated_and_any_suffix_is_trailing(kind in kind(), f in fields(), extra in 1usize..8) {
        let bytes = layout::encode(kind, 0, &f.view()).expect("encodes");
        for cut in 1..bytes.len() {
            prop_assert_eq!(Entry::decode(&bytes[..cut]), Err(DecodeError::Truncated));
            prop_assert_eq!(Entry::check(&bytes[..cut]), Err(DecodeError::Truncated));
        }
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(Entry::decode(&longer), Err(DecodeError::TrailingBytes(extra)));
        prop_assert_eq!(Entry::check(&longer), Err(DecodeError::TrailingBytes(extra)));
    }

    #[test]
    fn accepted_bytes_re_encode_to_themselves(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(e) = Entry::decode(&bytes) {
            prop_assert_eq!(Entry::time_of(&bytes), Some(e.time_micros));
            prop_assert_eq!(e.encode().expect("encodes"), bytes);
        }
    }

    #[test]
    fn an_encoded_event_decodes_to_itself(e in event(), time in any::<i64>()) {
        let entry = Entry::new(time, e);
        let bytes = entry.encode().expect("encodes");
        prop_assert_eq!(Entry::decode(&bytes), Ok(entry));
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9_:/.+-]{1,12}"
}

fn any_login() -> impl Strategy<Value = Option<Login>> {
    prop::option::of((word(), prop::option::of(word())).prop_map(|(idp, acr)| Login { idp, acr }))
}

fn an_actor() -> impl Strategy<Value = Actor> {
    (word(), word(), word(), hash()).prop_map(|(orgnr, user_id, role, cert_sha256)| Actor {
        orgnr,
        user_id,
        role,
        cert_sha256,
    })
}

fn a_consent() -> impl Strategy<Value = ConsentRef> {
    (word(), any::<u32>(), hash()).prop_map(|(id, version, record_sha256)| ConsentRef {
        id,
        version,
        record_sha256,
    })
}

fn kinds() -> impl Strategy<Value = Vec<EntryKind>> {
    prop::collection::vec(kind(), 0..3)
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::All), "[0-9]{9}".prop_map(Scope::Org)]
}

prop_compose! {
    fn any_terms()(actor in an_actor(), subject_pseudonym in hash(), t in prop::collection::vec(word(), 5)) -> DecisionTerms {
        let [category, purpose, sender_orgnr, recipient_orgnr, policy_version] =
            <[String; 5]>::try_from(t).expect("five");
        DecisionTerms { actor, subject_pseudonym, category, purpose, sender_orgnr, recipient_orgnr, policy_version }
    }
}

prop_compose! {
    fn any_note()(subject_pseudonym in hash(), consent in a_consent(), content_sha256 in hash(), t in prop::collection::vec(word(), 7)) -> NoteRef {
        let [disclosure_id, category, purpose, sender_orgnr, recipient_orgnr, request_id, policy_version] =
            <[String; 7]>::try_from(t).expect("seven");
        NoteRef { disclosure_id, subject_pseudonym, consent, category, purpose, sender_orgnr, recipient_orgnr, content_sha256, request_id, policy_version }
    }
}

fn query() -> impl Strategy<Value = AuditQuery> {
    let entries = (
        any::<bool>(),
        prop::option::of(word()),
        prop::option::of(word()),
        prop::option::of(word()),
        kinds(),
        prop::collection::vec(word(), 0..3),
        any::<u64>(),
        any::<u32>(),
        scope(),
    )
        .prop_map(
            |(subject, orgnr, from, until, kinds, reasons, start_index, limit, scope)| {
                AuditQuery::Entries(
                    QueryFilter {
                        subject,
                        orgnr,
                        from,
                        until,
                        kinds,
                        reasons,
                        start_index,
                        limit,
                    },
                    scope,
                )
            },
        );
    let summary = (
        word(),
        prop::option::of(word()),
        kinds(),
        prop::collection::vec(word(), 0..3),
        scope(),
    )
        .prop_map(|(from, until, kinds, reasons, scope)| {
            AuditQuery::Summary(
                SummaryFilter {
                    from,
                    until,
                    kinds,
                    reasons,
                },
                scope,
            )
        });
    prop_oneof![entries, summary]
}

fn access<T: std::fmt::Debug + Clone>(
    answered: impl Strategy<Value = T>,
) -> impl Strategy<Value = Access<T>> {
    prop_oneof![
        answered.prop_map(Access::Answered),
        word().prop_map(Access::Refused)
    ]
}

/// Typed events of every kind, their texts single words (which always read back).
fn event() -> impl Strategy<Value = Event> {
    let change = || {
        (an_actor(), hash(), a_consent(), word(), any_login()).prop_map(
            |(actor, subject_pseudonym, consent, policy_version, login)| ConsentChange {
                actor,
                subject_pseudonym,
                consent,
                policy_version,
                login,
            },
        )
    };
    prop_oneof![
        change().prop_map(Event::ConsentGranted),
        change().prop_map(Event::ConsentWithdrawn),
        (
            any_terms(),
            a_consent(),
            prop::option::of(word()),
            any::<bool>(),
            hash(),
            word(),
            word()
        )
            .prop_map(
                |(
                    terms,
                    consent,
                    recipient_role,
                    approval_attested,
                    content_sha256,
                    request_id,
                    disclosure_id,
                )| {
                    Event::DisclosurePermitted(DisclosurePermitted {
                        terms,
                        consent,
                        recipient_role,
                        approval_attested,
                        content_sha256,
                        request_id,
                        disclosure_id,
                    })
                }
            ),
        (
            any_terms(),
            word(),
            prop::option::of(a_consent()),
            prop::option::of(word()),
            any::<bool>(),
            hash(),
            word()
        )
            .prop_map(
                |(
                    terms,
                    reason,
                    nearest_consent,
                    recipient_role,
                    approval_attested,
                    content_sha256,
                    request_id,
                )| {
                    Event::DisclosureRefused(DisclosureRefused {
                        terms,
                        reason,
                        nearest_consent,
                        recipient_role,
                        approval_attested,
                        content_sha256,
                        request_id,
                    })
                }
            ),
        (
            any_terms(),
            prop_oneof![
                a_consent().prop_map(Answer::Permit),
                word().prop_map(Answer::Refuse)
            ]
        )
            .prop_map(
                |(terms, answer)| Event::DisclosureChecked(DisclosureChecked { terms, answer })
            ),
        (an_actor(), any_note())
            .prop_map(|(actor, note)| Event::NoteDelivered(NoteHandled { actor, note })),
        (an_actor(), any_note())
            .prop_map(|(actor, note)| Event::NoteAcknowledged(NoteHandled { actor, note })),
        (prop::option::of(an_actor()), any_note(), word()).prop_map(|(actor, note, reason)| {
            Event::NotePurged(NotePurged {
                actor,
                note,
                reason,
            })
        }),
        (
            an_actor(),
            prop::option::of(hash()),
            access(query()),
            any_login()
        )
            .prop_map(|(actor, subject_pseudonym, access, login)| {
                Event::AuditQueried(AuditQueried {
                    actor,
                    subject_pseudonym,
                    access,
                    login,
                })
            }),
        (an_actor(), hash(), access(scope()), any_login()).prop_map(
            |(actor, subject_pseudonym, access, login)| {
                Event::SubjectReportIssued(SubjectReportIssued {
                    actor,
                    subject_pseudonym,
                    access,
                    login,
                })
            }
        ),
        word().prop_map(|version| Event::GatewayStarted(GatewayStarted { version })),
        (word(), word())
            .prop_map(|(old_key, new_key)| Event::KeyRotated(KeyRotated { old_key, new_key })),
        (
            an_actor(),
            prop::option::of(hash()),
            prop_oneof![
                a_consent().prop_map(ConsentRead::Get),
                (word(), word()).prop_map(|(consent_id, reason)| ConsentRead::GetRefused {
                    consent_id,
                    reason
                }),
                any::<u32>().prop_map(|shown| ConsentRead::List { shown }),
                word().prop_map(ConsentRead::ListRefused),
            ],
            any_login()
        )
            .prop_map(|(actor, subject_pseudonym, read, login)| {
                Event::ConsentsRead(ConsentsRead {
                    actor,
                    subject_pseudonym,
                    read,
                    login,
                })
            }),
    ]
}

fn someone() -> Actor {
    Actor {
        orgnr: "910000071".into(),
        user_id: "nav-user".into(),
        role: "nav_counsellor".into(),
        cert_sha256: [7; 32],
    }
}

fn terms() -> DecisionTerms {
    DecisionTerms {
        actor: someone(),
        subject_pseudonym: [1; 32],
        category: "benefit_counselling".into(),
        purpose: "ips_follow_up".into(),
        sender_orgnr: "910000071".into(),
        recipient_orgnr: "910000098".into(),
        policy_version: "casegate-policy-2".into(),
    }
}

fn login() -> Option<Login> {
    Some(Login {
        idp: "https://login.example".into(),
        acr: Some("idporten-loa-high".into()),
    })
}

/// Each event, and the `detail` version 1 writes for it.
#[test]
fn typed_facts_are_written_as_the_detail_text_of_version_1() {
    let consent = ConsentRef {
        id: "0190f0a0-0000-7000-8000-000000000000".into(),
        version: 2,
        record_sha256: [3; 32],
    };
    let cases: Vec<(Event, Option<&str>)> = vec![
        (
            Event::GatewayStarted(GatewayStarted {
                version: "0.1.0".into(),
            }),
            Some("casegate 0.1.0"),
        ),
        (
            Event::KeyRotated(KeyRotated {
                old_key: "casegate.test/audit+0a0b0c0d".into(),
                new_key: "casegate.test/audit+01020304".into(),
            }),
            Some(
                "audit checkpoint key casegate.test/audit+0a0b0c0d replaced by \
                 casegate.test/audit+01020304",
            ),
        ),
        (
            Event::DisclosurePermitted(DisclosurePermitted {
                terms: terms(),
                consent: consent.clone(),
                recipient_role: Some("employment_specialist".into()),
                approval_attested: true,
                content_sha256: [4; 32],
                request_id: "s-1".into(),
                disclosure_id: "0190f0a0-0000-7000-8000-000000000001".into(),
            }),
            Some("recipient_role=employment_specialist approval=attested"),
        ),
        (
            Event::DisclosureRefused(DisclosureRefused {
                terms: terms(),
                reason: "no_consent".into(),
                nearest_consent: None,
                recipient_role: None,
                approval_attested: false,
                content_sha256: [4; 32],
                request_id: "s-1".into(),
            }),
            None,
        ),
        (
            Event::ConsentGranted(ConsentChange {
                actor: someone(),
                subject_pseudonym: [1; 32],
                consent: consent.clone(),
                policy_version: "casegate-policy-2".into(),
                login: login(),
            }),
            Some("login=https://login.example acr=idporten-loa-high"),
        ),
        (
            Event::AuditQueried(AuditQueried {
                actor: someone(),
                subject_pseudonym: Some([1; 32]),
                access: Access::Answered(AuditQuery::Entries(
                    QueryFilter {
                        subject: true,
                        orgnr: None,
                        from: Some("2026-01-01T00:00:00Z".into()),
                        until: None,
                        kinds: vec![EntryKind::DisclosureRefused, EntryKind::NotePurged],
                        reasons: vec!["no_consent".into()],
                        start_index: 0,
                        limit: 1000,
                    },
                    Scope::Org("910000101".into()),
                )),
                login: login(),
            }),
            Some(
                "subject=<pseudonym> from=2026-01-01T00:00:00Z \
                 kinds=disclosure_refused,note_purged reasons=no_consent start_index=0 \
                 limit=1000 scope=org:910000101 login=https://login.example \
                 acr=idporten-loa-high",
            ),
        ),
        (
            Event::AuditQueried(AuditQueried {
                actor: someone(),
                subject_pseudonym: None,
                access: Access::Answered(AuditQuery::Summary(
                    SummaryFilter {
                        from: "2026-01-01T00:00:00Z".into(),
                        until: Some("2026-02-01T00:00:00Z".into()),
                        kinds: Vec::new(),
                        reasons: Vec::new(),
                    },
                    Scope::All,
                )),
                login: None,
            }),
            Some("summary from=2026-01-01T00:00:00Z until=2026-02-01T00:00:00Z scope=all"),
        ),
        (
            Event::SubjectReportIssued(SubjectReportIssued {
                actor: someone(),
                subject_pseudonym: [1; 32],
                access: Access::Refused("permission_denied".into()),
                login: Some(Login {
                    idp: "dev".into(),
                    acr: None,
                }),
            }),
            Some("login=dev"),
        ),
        (
            Event::ConsentsRead(ConsentsRead {
                actor: someone(),
                subject_pseudonym: None,
                read: ConsentRead::GetRefused {
                    consent_id: consent.id.clone(),
                    reason: "not_visible".into(),
                },
                login: None,
            }),
            Some("get_consent 0190f0a0-0000-7000-8000-000000000000"),
        ),
        (
            Event::ConsentsRead(ConsentsRead {
                actor: someone(),
                subject_pseudonym: Some([1; 32]),
                read: ConsentRead::List { shown: 0 },
                login: login(),
            }),
            Some("list_consents shown=0 login=https://login.example acr=idporten-loa-high"),
        ),
    ];
    for (event, detail) in cases {
        let entry = Entry::new(1_800_000_000_000_000, event);
        assert_eq!(entry.detail_text().as_deref(), detail, "{entry:?}");
        let bytes = entry.encode().expect("encodes");
        assert_eq!(Entry::decode(&bytes), Ok(entry));
    }
}

#[test]
fn an_entry_no_event_fits_is_kept_whole() {
    for (kind, detail, why) in [
        (
            EntryKind::GatewayStarted,
            "after crash 3",
            "not `casegate <version>`",
        ),
        (
            EntryKind::ConsentsRead,
            "list_consents shown=many",
            "consent read",
        ),
        (
            EntryKind::AuditQueried,
            "kinds=made_up start_index=0 limit=1 scope=all",
            "unknown kind",
        ),
    ] {
        let fields = Fields {
            actor: Some(someone()),
            detail: Some(detail.into()),
            ..Fields::default()
        };
        let fields = if kind == EntryKind::GatewayStarted {
            Fields {
                actor: None,
                ..fields
            }
        } else {
            fields
        };
        let bytes = layout::encode(kind, 5, &fields.view()).expect("encodes");
        let entry = Entry::decode(&bytes).expect("decodes");
        let Event::Unfitted(unfitted) = &entry.event else {
            panic!("{entry:?} should not fit")
        };
        assert!(unfitted.why.contains(why), "{}", unfitted.why);
        assert_eq!(entry.kind(), kind);
        assert_eq!(entry.detail_text().as_deref(), Some(detail));
        assert_eq!(entry.encode(), Ok(bytes));
    }
    // A field its kind never has.
    let started = Fields {
        reason: Some("odd".into()),
        detail: Some("casegate 0.1.0".into()),
        ..Fields::default()
    };
    let bytes = layout::encode(EntryKind::GatewayStarted, 5, &started.view()).expect("encodes");
    assert!(matches!(
        Entry::decode(&bytes).expect("decodes").event,
        Event::Unfitted(_)
    ));
}

#[test]
fn an_event_whose_text_would_read_back_otherwise_is_refused() {
    let rotated = Entry::new(
        0,
        Event::KeyRotated(KeyRotated {
            old_key: "a replaced by b".into(),
            new_key: "c".into(),
        }),
    );
    assert!(matches!(
        rotated.encode(),
        Err(EncodeError::Ambiguous {
            kind: EntryKind::KeyRotated,
            ..
        })
    ));
    let spaced = Entry::new(
        0,
        Event::ConsentsRead(ConsentsRead {
            actor: someone(),
            subject_pseudonym: None,
            read: ConsentRead::List { shown: 1 },
            login: Some(Login {
                idp: "two words".into(),
                acr: None,
            }),
        }),
    );
    assert!(matches!(
        spaced.encode(),
        Err(EncodeError::Ambiguous { .. })
    ));
}

#[test]
fn version_kind_and_flags_are_checked() {
    let bytes =
        layout::encode(EntryKind::GatewayStarted, 1, &Fields::default().view()).expect("encodes");
    assert_eq!(bytes.len(), 12);
    assert_eq!(Entry::decode(&[]), Err(DecodeError::Empty));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(Entry::decode(&v2), Err(DecodeError::UnknownVersion(2)));
    let mut kind = bytes.clone();
    kind[1] = 99;
    assert_eq!(Entry::decode(&kind), Err(DecodeError::UnknownKind(99)));
    let mut flags = bytes.clone();
    flags[10] = 0x80;
    assert_eq!(
        Entry::decode(&flags),
        Err(DecodeError::UnknownFlags(0x8000))
    );
    let long = Entry::new(
        0,
        Event::GatewayStarted(GatewayStarted {
            version: "x".repeat(70_000),
        }),
    );
    assert_eq!(long.encode(), Err(EncodeError::FieldTooLong));
}
