//! Note-store benchmark: the embedded journal against redb (a kept embedded engine) for the
//! note store's write pattern, in one run on one disk. Batches of 64 notes with ~1 KiB sealed
//! bodies are made durable together (as the audit log's writer syncs the journal before each
//! batch), and each note is then made deliverable (a state change made durable with the next
//! batch). Prints notes stored per second, the time to open a store holding them all, and the
//! bytes on disk.
//!
//! redb is given the easier task: each note as ready-made bytes of the journal record's size
//! (nothing encoded), one table for notes and one for progress, and at open only its values
//! read (nothing decoded, no index rebuilt); the journal encodes every note and rebuilds its
//! indexes at open.
//!
//! Usage: note_store_bench [--notes N] [--dir DIR]
//! (release build: `cargo run --release -p casegate-tests --bin note_store_bench`)

#![forbid(unsafe_code)]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use casegate_notes::{Note, NoteStore, Sealed, storage::model::note};
use redb::{Database, Durability, ReadableTable, TableDefinition};

const NOTES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("notes");
const PROGRESS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("progress");
/// Notes made durable together.
const BATCH: usize = 64;
/// Bytes of a sealed ~1 KiB body (ciphertext and tag).
const SEALED_BYTES: usize = 1_040;

fn args() -> (usize, PathBuf) {
    let (mut notes, mut dir) = (64_000, PathBuf::from("target/note-store-bench"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--notes" => notes = value.parse().expect("--notes: a count"),
            "--dir" => dir = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    (notes, dir)
}

/// Stores `notes` in the journal at `dir`: (time, time to open again, bytes).
fn journal(dir: &std::path::Path, notes: &[Note]) -> (Duration, Duration, u64) {
    let store = NoteStore::open(dir).expect("open");
    let t = Instant::now();
    for chunk in notes.chunks(BATCH) {
        for n in chunk {
            store.stage_pending(n).expect("stage");
        }
        store.sync_now().expect("sync");
        for (i, n) in chunk.iter().enumerate() {
            store
                .make_deliverable(n.clone(), i as u64)
                .expect("deliverable");
        }
    }
    store.flush().expect("flush");
    let write = t.elapsed();
    drop(store);
    let t = Instant::now();
    let store = NoteStore::open(dir).expect("reopen");
    let open = t.elapsed();
    assert_eq!(store.stats().notes, notes.len());
    (write, open, store.stats().bytes)
}

/// Stores `notes` in redb at `path` the same way: (time, time to open again, bytes).
fn redb(path: &std::path::Path, notes: &[Note]) -> (Duration, Duration, u64) {
    let db = Database::create(path).expect("redb");
    let value = vec![9u8; SEALED_BYTES + 300];
    let progress = [3u8; 40];
    let t = Instant::now();
    let mut previous: &[Note] = &[];
    for chunk in notes.chunks(BATCH) {
        let mut txn = db.begin_write().expect("transaction");
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(NOTES).expect("notes");
            for n in chunk {
                table
                    .insert(n.id.as_bytes(), value.as_slice())
                    .expect("insert");
            }
            let mut table = txn.open_table(PROGRESS).expect("progress");
            for n in previous {
                table
                    .insert(n.id.as_bytes(), progress.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
        previous = chunk;
    }
    let write = t.elapsed();
    drop(db);
    let t = Instant::now();
    let db = Database::create(path).expect("reopen");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(NOTES).expect("notes");
    let mut read = 0usize;
    for item in table.iter().expect("iterate") {
        let (_, value) = item.expect("item");
        std::hint::black_box(value.value());
        read += 1;
    }
    let open = t.elapsed();
    assert_eq!(read, notes.len());
    (write, open, std::fs::metadata(path).expect("size").len())
}

fn main() {
    let (count, dir) = args();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench folder");
    let notes: Vec<Note> = (0..count)
        .map(|i| {
            let mut n = note(1_000 + i as i64);
            n.request_id = format!("req-{i:012}");
            n.sealed = Some(Sealed {
                key_id: "k1".into(),
                nonce: [1; 12],
                ciphertext: vec![7; SEALED_BYTES],
            });
            n
        })
        .collect();
    println!(
        "note store benchmark — {count} notes, batches of {BATCH}, ~1 KiB sealed bodies, folder {}",
        dir.display()
    );
    println!();
    println!("store      notes/s    open      on disk");
    for (name, (write, open, bytes)) in [
        ("journal", journal(&dir.join("journal"), &notes)),
        ("redb", redb(&dir.join("notes.redb"), &notes)),
    ] {
        println!(
            "{name:<8} {:>9.0}  {:>7.0} ms  {:>5} MiB",
            count as f64 / write.as_secs_f64(),
            open.as_secs_f64() * 1e3,
            bytes >> 20
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
