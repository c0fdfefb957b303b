use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use proptest::prelude::*;
use serde_json::Value;

use super::*;

// === reference implementation (RFC 6962 §2.1, recursive) ===

fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// A tree kept the way the log keeps it: every completed node, by level.
#[derive(Default)]
struct MemTree {
    range: CompactRange,
    levels: Vec<Vec<Hash>>,
}

impl MemTree {
    fn with_leaves(n: u64) -> (Self, Vec<Hash>) {
        let mut tree = MemTree::default();
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for leaf in &leaves {
            let levels = &mut tree.levels;
            tree.range.append(*leaf, |level, index, hash| {
                let level = level as usize;
                if levels.len() <= level {
                    levels.push(Vec::new());
                }
                assert_eq!(levels[level].len() as u64, index, "nodes complete in order");
                levels[level].push(*hash);
            });
        }
        (tree, leaves)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, String> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| format!("no node ({level}, {index})"))
    }
}

#[test]
fn empty_and_single_leaf_roots() {
    assert_eq!(
        STANDARD.encode(empty_root()),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    let (tree, leaves) = MemTree::with_leaves(1);
    assert_eq!(tree.range.root(), leaves[0]);
}

proptest! {
    #[test]
    fn compact_range_root_matches_the_recursive_definition(n in 0u64..300) {
        let (tree, leaves) = MemTree::with_leaves(n);
        prop_assert_eq!(tree.range.root(), mth(&leaves));
        let rebuilt = CompactRange::from_store(n, |l, i| tree.node(l, i)).expect("stored");
        prop_assert_eq!(rebuilt, tree.range.clone());
    }

    #[test]
    fn inclusion_proofs_round_trip(n in 1u64..300, pick in any::<prop::sample::Index>()) {
        let (tree, leaves) = MemTree::with_leaves(n);
        let index = pick.index(n as usize) as u64;
        let root = tree.range.root();
        let proof = inclusion_proof(index, n, |l, i| tree.node(l, i)).expect("stored").expect("in range");
        prop_assert!(proof.len() <= 64 - (n - 1).leading_zeros() as usize);
        prop_assert_eq!(verify_inclusion(&leaves[index as usize], index, n, &proof, &root), Ok(()));
        // Any other leaf, index or root is refused.
        let other = leaf_hash(b"not in the tree");
        prop_assert!(verify_inclusion(&other, index, n, &proof, &root).is_err());
        if n > 1 {
            let wrong = (index + 1) % n;
            prop_assert!(verify_inclusion(&leaves[index as usize], wrong, n, &proof, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaves[index as usize], index, n, &proof, &other).is_err());
    }

    #[test]
    fn consistency_proofs_round_trip(n2 in 1u64..300, pick in any::<prop::sample::Index>()) {
        let (tree, leaves) = MemTree::with_leaves(n2);
        let n1 = pick.index(n2 as usize) as u64 + 1;
        let root1 = mth(&leaves[..n1 as usize]);
        let root2 = tree.range.root();
        let proof = consistency_proof(n1, n2, |l, i| tree.node(l, i)).expect("stored").expect("sizes");
        prop_assert_eq!(verify_consistency(n1, n2, &proof, &root1, &root2), Ok(()));
        let forged = leaf_hash(b"rewritten history");
        prop_assert!(verify_consistency(n1, n2, &proof, &forged, &root2).is_err());
        prop_assert!(verify_consistency(n1, n2, &proof, &root1, &forged).is_err());
        if let Some((last, rest)) = proof.split_last() {
            let mut tampered = rest.to_vec();
            let mut bad = *last;
            bad[0] ^= 1;
            tampered.push(bad);
            prop_assert!(verify_consistency(n1, n2, &tampered, &root1, &root2).is_err());
        }
    }
}

// === transparency-dev test vectors (testdata/merkle, Apache-2.0) ===

fn vectors(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/merkle")
        .join(kind);
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("vector folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("vector");
                files.push((path, serde_json::from_str(&text).expect("vector JSON")));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn bytes(v: &Value) -> Vec<u8> {
    match v.as_str() {
        None => Vec::new(), // JSON null: an absent hash
        Some(s) => STANDARD.decode(s).expect("base64"),
    }
}

/// A proof as the API takes it; a component that is not 32 bytes cannot be expressed, which
/// counts as a refusal.
fn proof(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()
        .map(|items| items.iter().map(|p| bytes(p).try_into().ok()).collect())
        .unwrap_or(Some(Vec::new()))
}

fn check(kind: &str, verify: impl Fn(&Value) -> Result<(), String>) {
    let cases = vectors(kind);
    assert!(
        cases.len() > 80,
        "only {} {kind} vectors found",
        cases.len()
    );
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (path, case) in &cases {
        let want_err = case["wantErr"].as_bool().expect("wantErr");
        let got = verify(case);
        match (want_err, &got) {
            (true, Err(_)) => refused += 1,
            (false, Ok(())) => accepted += 1,
            _ => failures.push(format!(
                "{}: wantErr={want_err}, got {got:?}",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn every_inclusion_vector() {
    check("inclusion", |c| {
        let proof = proof(&c["proof"]).ok_or("malformed proof component")?;
        let leaf: Hash = bytes(&c["leafHash"])
            .try_into()
            .map_err(|_| "leaf hash is not 32 bytes")?;
        verify_inclusion(
            &leaf,
            c["leafIdx"].as_u64().expect("leafIdx"),
            c["treeSize"].as_u64().expect("treeSize"),
            &proof,
            &bytes(&c["root"]),
        )
        .map_err(|e| e.to_string())
    });
}

#[test]
fn every_consistency_vector() {
    check("consistency", |c| {
        let proof = proof(&c["proof"]).ok_or("malformed proof component")?;
        verify_consistency(
            c["size1"].as_u64().expect("size1"),
            c["size2"].as_u64().expect("size2"),
            &proof,
            &bytes(&c["root1"]),
            &bytes(&c["root2"]),
        )
        .map_err(|e| e.to_string())
    });
}
