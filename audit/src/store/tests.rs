use super::*;

/// `n` distinct hashes, each filled with one byte from `seed` on.
fn hashes(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| [seed.wrapping_add(i as u8); 32])
        .collect()
}

fn hash(seed: u8, i: usize) -> Hash {
    [seed.wrapping_add(i as u8); 32]
}

#[test]
fn every_node_reads_back_whether_kept_in_memory_or_only_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TreeStore::open(dir.path()).expect("open");
    // Three times as many nodes as are kept in memory, in uneven batches.
    let total = 3 * TAIL_NODES;
    let mut written = 0;
    for batch in [1, 7, 500, 1, 1024, 2000, total].into_iter().cycle() {
        let n = batch.min(total - written);
        if n == 0 {
            break;
        }
        store
            .put(0, written as u64, &hashes(written as u8, n))
            .expect("put");
        written += n;
    }
    for i in 0..total {
        assert_eq!(
            store.node(0, i as u64).expect("node"),
            hash(0, i),
            "node {i}"
        );
    }
    // The newest are in memory; the oldest only in the file.
    let levels = store.levels.read().expect("levels");
    assert_eq!(levels[0].tail().hashes.len(), TAIL_NODES);
    assert!(levels[0].tail().get(0).is_none());
}

#[test]
fn rewritten_nodes_are_read_as_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TreeStore::open(dir.path()).expect("open");
    store.put(2, 0, &hashes(10, 10)).expect("put");
    store.put(2, 3, &hashes(100, 2)).expect("rewrite");
    for (i, want) in [
        (0, hash(10, 0)),
        (2, hash(10, 2)),
        (3, hash(100, 0)),
        (4, hash(100, 1)),
        (5, hash(10, 5)),
        (9, hash(10, 9)),
    ] {
        assert_eq!(store.node(2, i).expect("node"), want, "node {i}");
    }
    // Before what memory holds, and past a gap: both read back.
    store.put(2, 20, &hashes(50, 2)).expect("after a gap");
    store.put(2, 0, &hashes(70, 1)).expect("before");
    assert_eq!(store.node(2, 21).expect("node"), hash(50, 1));
    assert_eq!(store.node(2, 0).expect("node"), hash(70, 0));
}

#[test]
fn cleared_nodes_are_gone_from_memory_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TreeStore::open(dir.path()).expect("open");
    store.put(0, 0, &hashes(1, 10)).expect("put");
    store.clear().expect("clear");
    assert!(store.node(0, 7).is_err(), "a cleared node still reads");
    store.put(0, 0, &hashes(200, 5)).expect("put again");
    assert_eq!(store.node(0, 4).expect("node"), hash(200, 4));
    assert!(store.node(0, 7).is_err(), "a cleared node still reads");
    // A store opened again reads the file.
    drop(store);
    let store = TreeStore::open(dir.path()).expect("reopen");
    assert_eq!(store.node(0, 4).expect("node"), hash(200, 4));
}
