use super::*;

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "casegate.test/audit".into(),
        size,
        root: crate::merkle::leaf_hash(&size.to_be_bytes()),
    }
}

#[test]
fn signs_and_verifies_in_the_c2sp_format() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let signed = signer.sign(&checkpoint(42));
    let lines: Vec<&str> = signed.note.lines().collect();
    assert_eq!(lines[0], "casegate.test/audit");
    assert_eq!(lines[1], "42");
    assert_eq!(lines[3], "");
    assert!(lines[4].starts_with("\u{2014} casegate.test/audit "));
    let verifier = Verifier::from_vkey(&signer.verifier().to_vkey()).expect("vkey");
    assert_eq!(verifier.verify(&signed.note), Ok(checkpoint(42)));
    let again = Signer::from_skey(&signer.to_skey()).expect("skey");
    assert_eq!(again.verifier(), signer.verifier());
}

/// The key id must follow the C2SP derivation, checked here against an independent
/// computation over the published formula.
#[test]
fn key_id_is_the_c2sp_hash() {
    let signer = Signer::generate("example.com/log").expect("key");
    let vkey = signer.verifier().to_vkey();
    let parts: Vec<&str> = vkey.splitn(3, '+').collect();
    let raw = STANDARD.decode(parts[2]).expect("b64");
    assert_eq!(raw[0], 1);
    let mut input = b"example.com/log\n".to_vec();
    input.extend_from_slice(&raw);
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    assert_eq!(parts[1], hex(&digest.as_ref()[..4]));
}

#[test]
fn a_cosigned_note_verifies_with_either_key() {
    let old = Signer::generate("casegate.test/audit").expect("key");
    let new = Signer::generate("casegate.test/audit").expect("key");
    let note = Signer::cosign(&[&old, &new], &checkpoint(9)).note;
    assert_eq!(old.verifier().verify(&note), Ok(checkpoint(9)));
    assert_eq!(new.verifier().verify(&note), Ok(checkpoint(9)));
    let stranger = Signer::generate("casegate.test/audit").expect("key");
    assert!(stranger.verifier().verify(&note).is_err());
}

#[test]
fn tampering_and_foreign_keys_are_refused() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let other = Signer::generate("casegate.test/audit").expect("key");
    let verifier = signer.verifier();
    let note = signer.sign(&checkpoint(7)).note;

    let bigger = note.replacen("\n7\n", "\n8\n", 1);
    assert!(matches!(
        verifier.verify(&bigger),
        Err(CheckpointError::BadSignature(_))
    ));
    let foreign = other.sign(&checkpoint(7)).note;
    assert!(matches!(
        verifier.verify(&foreign),
        Err(CheckpointError::NotSigned(_))
    ));
    // A second signature by another key does not hurt; it is ignored.
    let cosigned = format!("{note}{}", foreign.lines().last().expect("sig")) + "\n";
    assert_eq!(verifier.verify(&cosigned), Ok(checkpoint(7)));
    assert!(verifier.verify("casegate.test/audit\n7\n").is_err());
    assert!(Verifier::from_vkey("name+00000000+AQ==").is_err());
    let vkey = verifier.to_vkey();
    let key = vkey.splitn(3, '+').nth(2).expect("key");
    let wrong_id = format!("{}+00000000+{key}", verifier.name());
    assert!(Verifier::from_vkey(&wrong_id).is_err());
    assert!(Signer::generate("has space").is_err());
    assert!(Signer::generate("has\u{1b}escape").is_err());
    let escaped = format!("a\u{1b}b+{}", vkey.split_once('+').expect("name").1);
    assert_eq!(Verifier::from_vkey(&escaped), Err(CheckpointError::KeyName));
}

/// A verifier key text for raw public-key bytes, with the C2SP key id they imply.
fn vkey_for(name: &str, public: &[u8]) -> String {
    let mut raw = vec![ED25519_ALG];
    raw.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        hex(&key_id(name, public)),
        STANDARD.encode(raw)
    )
}

/// The identity point (0x01 then 31 zero bytes) as a verifier key: every message verifies
/// under it with the signature 0x01 then 63 zero bytes, so it is refused at load.
#[test]
fn a_verifier_key_with_the_identity_point_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let refused = Verifier::from_vkey(&vkey_for("casegate.test/audit", &identity));
    assert_eq!(
        refused,
        Err(CheckpointError::PublicKey(KeyError::SmallOrder))
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("small-order"), "{message}");
    // The same point encoded non-canonically (y = p + 1).
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    assert!(matches!(
        Verifier::from_vkey(&vkey_for("casegate.test/audit", &non_canonical)),
        Err(CheckpointError::PublicKey(_))
    ));
}

/// The forgery of the identity key: a note "signed" with it does not verify, whether the
/// line names the weak key or borrows the real key's name and id.
#[test]
fn the_forged_identity_signature_does_not_verify() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let verifier = signer.verifier();
    let body = checkpoint(7).body();
    let mut forged = vec![1u8];
    forged.extend([0u8; 63]);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let line = |id: [u8; 4]| {
        let mut blob = id.to_vec();
        blob.extend_from_slice(&forged);
        format!("\u{2014} casegate.test/audit {}\n", STANDARD.encode(blob))
    };
    let weak = format!("{body}\n{}", line(key_id("casegate.test/audit", &identity)));
    assert!(matches!(
        verifier.verify(&weak),
        Err(CheckpointError::NotSigned(_))
    ));
    let borrowed = format!("{body}\n{}", line(verifier.id));
    assert!(matches!(
        verifier.verify(&borrowed),
        Err(CheckpointError::BadSignature(_))
    ));
}

/// A non-canonical S (S + L, the same signature under the lax equation) is refused.
#[test]
fn a_signature_with_a_non_canonical_s_is_refused() {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let note = signer.sign(&checkpoint(3)).note;
    let (head, sig_line) = note.rsplit_once("\n\n").expect("split");
    let b64 = sig_line.trim_end().rsplit(' ').next().expect("b64");
    let mut blob = STANDARD.decode(b64).expect("base64");
    // S is the last 32 bytes, little-endian; S + L fits in 256 bits when S < 2^252.
    let s = &mut blob[4 + 32..];
    let mut carry = 0u16;
    for (byte, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let altered = format!(
        "{head}\n\n\u{2014} casegate.test/audit {}\n",
        STANDARD.encode(&blob)
    );
    assert!(matches!(
        signer.verifier().verify(&altered),
        Err(CheckpointError::BadSignature(_))
    ));
}

#[test]
fn the_same_signature_line_twice_is_refused() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let note = signer.sign(&checkpoint(5)).note;
    let line = note.lines().last().expect("signature line");
    let doubled = format!("{note}{line}\n");
    assert_eq!(
        signer.verifier().verify(&doubled),
        Err(CheckpointError::DuplicateSignature(
            signer.verifier().label()
        ))
    );
    // Two lines by one unknown key are refused too: no key signs a note twice.
    let other = Signer::generate("other.example/log").expect("key");
    let foreign = other.sign(&checkpoint(5)).note;
    let foreign_line = foreign.lines().last().expect("line");
    let twice = format!("{note}{foreign_line}\n{foreign_line}\n");
    assert!(matches!(
        signer.verifier().verify(&twice),
        Err(CheckpointError::DuplicateSignature(_))
    ));
}

#[test]
fn control_characters_other_than_newline_are_refused() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let verifier = signer.verifier();
    let note = signer.sign(&checkpoint(5)).note;
    let crlf = note.replace('\n', "\r\n");
    assert!(matches!(
        verifier.verify(&crlf),
        Err(CheckpointError::NoteFormat(_))
    ));
    // Only the signature block with CR line ends.
    let (body, sigs) = note.split_at(note.rfind("\n\n").expect("split") + 2);
    let cr_sigs = format!("{body}{}", sigs.replace('\n', "\r\n"));
    assert!(matches!(
        verifier.verify(&cr_sigs),
        Err(CheckpointError::NoteFormat(_))
    ));
    for c in ['\t', '\0', '\u{1b}'] {
        let bad = note.replacen("casegate", &format!("case{c}gate"), 1);
        assert!(
            matches!(verifier.verify(&bad), Err(CheckpointError::NoteFormat(_))),
            "{c:?}"
        );
    }
}

#[test]
fn more_than_a_hundred_signature_lines_are_refused() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let verifier = signer.verifier();
    let note = signer.sign(&checkpoint(5)).note;
    let foreign = |n: usize| {
        (0..n)
            .map(|i| {
                let mut blob = (i as u32).to_be_bytes().to_vec();
                blob.extend([7u8; 64]);
                format!("\u{2014} foreign.example/{i} {}\n", STANDARD.encode(blob))
            })
            .collect::<String>()
    };
    let flood = format!("{note}{}", foreign(10_000));
    assert_eq!(
        verifier.verify(&flood),
        Err(CheckpointError::TooManySignatures)
    );
    // The bound itself is accepted: the own line and 99 foreign ones.
    let full = format!("{note}{}", foreign(MAX_SIGNATURES - 1));
    assert_eq!(verifier.verify(&full), Ok(checkpoint(5)));
    let over = format!("{note}{}", foreign(MAX_SIGNATURES));
    assert_eq!(
        verifier.verify(&over),
        Err(CheckpointError::TooManySignatures)
    );
}

/// Every signature by a known key must verify: a bad one is not outweighed by a good one.
#[test]
fn a_bad_signature_by_a_known_key_rejects_the_note() {
    let old = Signer::generate("casegate.test/audit").expect("key");
    let new = Signer::generate("casegate.test/audit").expect("key");
    let note = Signer::cosign(&[&old, &new], &checkpoint(9)).note;
    let lines: Vec<&str> = note.lines().collect();
    let other_body = Signer::cosign(&[&old], &checkpoint(10)).note;
    let old_line_for_other = other_body.lines().last().expect("line");
    let mixed = format!(
        "{}\n{}\n{}\n\n{old_line_for_other}\n{}\n",
        lines[0], lines[1], lines[2], lines[5]
    );
    let both = [old.verifier(), new.verifier()];
    assert!(matches!(
        verify_any(&both, &mixed),
        Err(CheckpointError::BadSignature(_))
    ));
    assert_eq!(verify_any(&both, &note).map(|(c, _)| c), Ok(checkpoint(9)));
}

/// A note for another origin signed by the log's key verifies as a note, but not as this
/// log's checkpoint.
#[test]
fn a_checkpoint_for_another_origin_is_not_the_logs() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let verifiers = [signer.verifier()];
    let own = signer.sign(&checkpoint(4)).note;
    assert_eq!(verify_log_checkpoint(&verifiers, &own), Ok(checkpoint(4)));
    let elsewhere = Checkpoint {
        origin: "other.example/log".into(),
        ..checkpoint(4)
    };
    let note = signer.sign(&elsewhere).note;
    assert_eq!(signer.verifier().verify(&note), Ok(elsewhere));
    assert!(matches!(
        verify_log_checkpoint(&verifiers, &note),
        Err(CheckpointError::OriginMismatch { .. })
    ));
}

#[test]
fn malformed_notes_and_bodies_are_refused() {
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let verifier = signer.verifier();
    let note = signer.sign(&checkpoint(5)).note;
    let cases = [
        format!("{note}\n"),                      // blank line at the end
        note.trim_end().to_owned(),               // no final newline
        format!("{note}\u{2014} {}\n", "x"),      // no signature
        format!("{note}\u{2014} a+b AAAAAAA=\n"), // '+' in the key name
        format!("{note}\u{2014} k AAAA\n"),       // only a key id
        format!("{note}- k AAAAAAA=\n"),          // not an em dash
        format!("{note}\u{2014} k AAAAAAA\n"),    // bad base64 padding
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert!(
            matches!(verifier.verify(bad), Err(CheckpointError::NoteFormat(_))),
            "case {i}: {:?}",
            verifier.verify(bad)
        );
    }
    // Body rules (C2SP tlog-checkpoint), signed so only the body is at fault.
    let sign_text = |text: &str| {
        let sig = signer.pair.sign(text.as_bytes());
        let mut blob = signer.id.to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!(
            "{text}\n\u{2014} casegate.test/audit {}\n",
            STANDARD.encode(blob)
        )
    };
    let body = checkpoint(5).body();
    assert_eq!(verifier.verify(&sign_text(&body)), Ok(checkpoint(5)));
    assert_eq!(
        verifier.verify(&sign_text(&format!("{body}ext line\n"))),
        Ok(checkpoint(5))
    );
    for bad in [
        format!("{body}\n"),                 // an empty extension line
        body.replacen("\n5\n", "\n05\n", 1), // leading zero
        body.replacen("\n5\n", "\n\n", 1),   // no size
        format!("\n{body}"),                 // empty origin
    ] {
        assert!(
            matches!(
                verifier.verify(&sign_text(&bad)),
                Err(CheckpointError::BodyFormat(_))
            ),
            "{bad:?}"
        );
    }
}
