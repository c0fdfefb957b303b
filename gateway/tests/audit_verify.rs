//! `casegate audit verify` against tampered logs: each kind of tampering fails, naming the
//! first bad index or the reason.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use casegate_audit::{
    checkpoint::{Checkpoint, Signer},
    entry::{Entry, EntryKind, Fields},
    log::{AuditLog, LogOptions},
    segment,
};

const BIN: &str = env!("CARGO_BIN_EXE_casegate");
const ORIGIN: &str = "verify.casegate.test/audit";
const ENTRIES: u64 = 60;

/// A segment's records as (index, offset, frame bytes).
type Frames = Vec<(u64, usize, Vec<u8>)>;

struct Fixture {
    dir: tempfile::TempDir,
    vkey: String,
    early_checkpoint: PathBuf,
}

impl Fixture {
    /// A closed log of 60 entries over several small segments, its verifier key, and a
    /// checkpoint file from when it held 20 entries.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::generate(ORIGIN).expect("key");
        let vkey = signer.verifier().to_vkey();
        let options = LogOptions {
            segment_bytes: 1500,
            ..LogOptions::new(ORIGIN)
        };
        let (log, _) = AuditLog::open(&dir.path().join("audit"), signer, options).expect("open");
        let early_checkpoint = dir.path().join("trusted.checkpoint");
        for n in 0..ENTRIES {
            let fields = Fields {
                reason: Some("no_consent".into()),
                request_id: Some(format!("req-{n:04}")),
                ..Fields::default()
            };
            let time = 1_700_000_000_000_000 + n as i64;
            let entry = Entry::from_fields(EntryKind::DisclosureRefused, time, fields);
            let appended = log
                .append_blocking(entry.encode().expect("encode"))
                .expect("append");
            if n == 19 {
                fs::write(&early_checkpoint, &appended.checkpoint.note).expect("write");
            }
        }
        log.close().expect("close");
        Self {
            dir,
            vkey,
            early_checkpoint,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    /// Runs the verifier; returns (success, the verdict line).
    fn verify(&self, trusted: bool) -> (bool, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["audit", "verify", "--vkey", &self.vkey, "--log"])
            .arg(self.log());
        if trusted {
            cmd.arg("--trusted").arg(&self.early_checkpoint);
        }
        let out = cmd.output().expect("run verifier");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            stdout.lines().count(),
            1,
            "one-line verdict, got {stdout:?}"
        );
        (out.status.success(), stdout.trim().to_owned())
    }

    fn expect_failure(&self, needle: &str) {
        let (ok, line) = self.verify(false);
        assert!(!ok, "verification passed: {line}");
        assert!(line.contains(needle), "expected {needle:?} in {line:?}");
    }

    fn segments(&self) -> Vec<(u64, PathBuf)> {
        segment::list(&self.log().join("segments")).expect("segments")
    }

    /// The segment holding `index`, and each of its records as (index, offset, frame bytes).
    fn frames_around(&self, index: u64) -> (PathBuf, Vec<u8>, Frames) {
        let (first, path) = self
            .segments()
            .into_iter()
            .rfind(|(first, _)| *first <= index)
            .expect("segment");
        let bytes = fs::read(&path).expect("read");
        let mut frames = Vec::new();
        segment::scan(&bytes, first, |i, offset, payload| {
            let mut frame = Vec::new();
            segment::encode_frame(i, payload, &mut frame);
            frames.push((i, offset as usize, frame));
        });
        (path, bytes, frames)
    }

    /// Rewrites the segment holding `index` with its frames transformed by `edit`.
    fn rewrite(&self, index: u64, edit: impl FnOnce(&mut Frames)) {
        let (path, bytes, mut frames) = self.frames_around(index);
        edit(&mut frames);
        let mut out = bytes[..segment::HEADER_LEN as usize].to_vec();
        for (_, _, frame) in frames {
            out.extend_from_slice(&frame);
        }
        fs::write(path, out).expect("write");
    }
}

fn frame_of(frames: &Frames, index: u64) -> usize {
    frames
        .iter()
        .position(|(i, _, _)| *i == index)
        .expect("frame present")
}

#[test]
fn an_untouched_log_verifies_and_is_consistent_with_an_older_checkpoint() {
    let fx = Fixture::new();
    assert!(
        fx.segments().len() >= 3,
        "the fixture spans several segments"
    );
    let (ok, line) = fx.verify(true);
    assert!(ok, "{line}");
    assert!(
        line.starts_with(&format!("OK: {ENTRIES} entries")),
        "{line}"
    );
    assert!(
        line.contains("consistent with the trusted checkpoint of 20 entries"),
        "{line}"
    );
}

#[test]
fn flipping_any_byte_of_a_record_names_that_record() {
    // Every part of a frame: length, checksum, index and payload, in several records.
    for index in [0, 17, 33, ENTRIES - 1] {
        for at in [0usize, 5, 12, 16, 30] {
            let fx = Fixture::new();
            let (path, mut bytes, frames) = fx.frames_around(index);
            let offset = frames[frame_of(&frames, index)].1;
            bytes[offset + at] ^= 0x20;
            fs::write(&path, bytes).expect("write");
            fx.expect_failure(&format!("FAILED at index {index}:"));
        }
    }
}

#[test]
fn deleting_a_record_names_the_gap() {
    let fx = Fixture::new();
    fx.rewrite(25, |frames| {
        let at = frame_of(frames, 25);
        frames.remove(at);
    });
    fx.expect_failure("FAILED at index 25: found record 26 here");
}

#[test]
fn swapping_two_records_names_the_first() {
    let fx = Fixture::new();
    let (_, _, frames) = fx.frames_around(30);
    let a = frame_of(&frames, 30);
    assert!(a + 1 < frames.len(), "both records in one segment");
    let second = frames[a + 1].0;
    fx.rewrite(30, |frames| frames.swap(a, a + 1));
    fx.expect_failure(&format!("FAILED at index 30: found record {second} here"));
}

#[test]
fn truncating_below_the_checkpoint_names_the_first_missing_index() {
    let fx = Fixture::new();
    fx.rewrite(ENTRIES - 1, |frames| {
        frames.pop();
    });
    fx.expect_failure(&format!(
        "FAILED at index {}: the log ends here, but the signed checkpoint covers {ENTRIES} entries",
        ENTRIES - 1
    ));
    // Losing a whole segment is caught the same way.
    let fx = Fixture::new();
    let (first, last) = fx.segments().pop().expect("segment");
    fs::remove_file(last).expect("remove");
    fx.expect_failure(&format!("FAILED at index {first}:"));
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let fx = Fixture::new();
    let note_path = fx.log().join("checkpoint");
    let genuine = fs::read_to_string(&note_path).expect("checkpoint");
    // Same origin, size and root: only the key differs.
    let mut lines = genuine.lines();
    let origin = lines.next().expect("origin").to_owned();
    let size: u64 = lines.next().expect("size").parse().expect("size");
    let root = base64_root(lines.next().expect("root"));
    let impostor = Signer::generate(ORIGIN).expect("other key");
    let forged = impostor.sign(&Checkpoint { origin, size, root });
    fs::write(&note_path, forged.note).expect("write");
    fx.expect_failure("FAILED: newest checkpoint: checkpoint is not signed by key");
}

fn base64_root(text: &str) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

#[test]
fn a_bad_verifier_key_is_a_usage_error() {
    let fx = Fixture::new();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--vkey", "nonsense+key", "--log"])
        .arg(fx.log())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let _ = Path::new(".");
}

/// The identity point as a verifier key (with the key id C2SP derives for it): under it the
/// signature 0x01 followed by 63 zero bytes verifies for any message, so it is refused at load,
/// as a usage error naming the problem.
#[test]
fn a_verifier_key_with_the_identity_point_is_refused_with_a_clear_message() {
    use base64::Engine;
    let fx = Fixture::new();
    let mut key = vec![0x01, 0x01];
    key.extend([0u8; 31]);
    let mut hashed = format!("{ORIGIN}\n").into_bytes();
    hashed.extend_from_slice(&key);
    let digest = ring::digest::digest(&ring::digest::SHA256, &hashed);
    let id: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let vkey = format!(
        "{ORIGIN}+{id}+{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let out = Command::new(BIN)
        .args(["audit", "verify", "--vkey", &vkey, "--log"])
        .arg(fx.log())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("small-order"), "{stderr}");
}

/// A trusted checkpoint whose signature line ends in CR LF is not a signed note.
#[test]
fn a_trusted_checkpoint_with_crlf_line_ends_is_refused() {
    let fx = Fixture::new();
    let note = fs::read_to_string(&fx.early_checkpoint).expect("checkpoint");
    let split = note.rfind("\n\n").expect("signature block") + 2;
    let crlf = format!("{}{}", &note[..split], note[split..].replace('\n', "\r\n"));
    fs::write(&fx.early_checkpoint, crlf).expect("write");
    let (ok, line) = fx.verify(true);
    assert!(!ok, "verification passed: {line}");
    assert!(
        line.contains("trusted checkpoint: malformed signed note"),
        "{line}"
    );
}

/// The newest checkpoint with its signature line twice, or with 10,000 foreign signature
/// lines after it, is refused.
#[test]
fn a_checkpoint_with_a_repeated_or_flooded_signature_block_is_refused() {
    let fx = Fixture::new();
    let note_path = fx.log().join("checkpoint");
    let genuine = fs::read_to_string(&note_path).expect("checkpoint");
    let line = genuine.lines().last().expect("signature line").to_owned();
    fs::write(&note_path, format!("{genuine}{line}\n")).expect("write");
    fx.expect_failure("FAILED: newest checkpoint: the note has two signatures by key");

    let mut flood = genuine.clone();
    for i in 0..10_000u32 {
        use base64::Engine;
        let mut blob = i.to_be_bytes().to_vec();
        blob.extend([9u8; 64]);
        flood.push_str(&format!(
            "\u{2014} witness{i}.example {}\n",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ));
    }
    fs::write(&note_path, flood).expect("write");
    fx.expect_failure("FAILED: newest checkpoint: the note has more than 100 signature lines");
}
