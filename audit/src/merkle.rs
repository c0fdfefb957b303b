//! RFC 6962 / RFC 9162 Merkle trees: hashing, incremental appends over a compact range,
//! O(log n) inclusion and consistency proofs from stored perfect-subtree hashes, and proof
//! verification.
//!
//! A *node* `(level, index)` is the root of the perfect subtree over leaves
//! `[index << level, (index + 1) << level)`. Appends emit every node they complete, so a store
//! that keeps them can answer any proof without re-hashing.

use ring::digest::{Context, SHA256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The zero-based leaf index.
        index: u64,
        /// The tree size, in leaves.
        size: u64,
    },
    /// The proof has too few or too many hashes for the index and sizes.
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    /// The proof's hashes do not lead to the expected root (or roots).
    #[error("computed root does not match")]
    RootMismatch,
    /// The two tree sizes admit no consistency proof; says why.
    #[error("sizes are inconsistent: {0}")]
    Sizes(&'static str),
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The roots of the perfect subtrees that cover `[0, size)`, largest (leftmost) first: all an
/// appender needs to know to extend the tree and compute its root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A range from stored parts; `hashes` must have one entry per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(Self { size, hashes })
    }

    /// Rebuilds the range of a tree of `size` leaves from its stored nodes.
    pub fn from_store<E>(size: u64, node: impl Fn(u32, u64) -> Result<Hash, E>) -> Result<Self, E> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                hashes.push(node(level, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(Self { size, hashes })
    }

    /// The number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first: one per set bit of the size.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash, reporting every node it completes as `(level, index, hash)`,
    /// the leaf itself first.
    pub fn append(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut index = self.size;
        let mut level = 0u32;
        let mut hash = leaf;
        completed(level, index, &hash);
        while index & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                break; // unreachable: one stored hash per set bit
            };
            hash = node_hash(&left, &hash);
            index >>= 1;
            level += 1;
            completed(level, index, &hash);
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree's root hash.
    pub fn root(&self) -> Hash {
        fold(&self.hashes)
    }
}

/// Folds perfect-subtree roots (largest first) into one root, right to left.
fn fold(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |acc, left| node_hash(left, &acc))
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start:end])` from stored nodes: the range decomposes into at most 2·log n aligned
/// perfect subtrees.
pub fn subtree_root<E>(
    start: u64,
    end: u64,
    node: &impl Fn(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    let mut parts = Vec::new();
    let mut at = start;
    while at < end {
        let mut level = if at == 0 { 63 } else { at.trailing_zeros() };
        while level > 0 && at + (1u64 << level) > end {
            level -= 1;
        }
        parts.push(node(level, at >> level)?);
        at += 1u64 << level;
    }
    Ok(fold(&parts))
}

/// The RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    node: impl Fn(u32, u64) -> Result<Hash, E>,
) -> Result<Option<Vec<Hash>>, E> {
    if index >= size {
        return Ok(None);
    }
    let mut proof = Vec::new();
    // Walk down from the whole tree, collecting siblings; reverse to get leaf-up order.
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            proof.push(subtree_root(start + k, end, &node)?);
            end = start + k;
        } else {
            proof.push(subtree_root(start, start + k, &node)?);
            start += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(Some(proof))
}

/// The RFC 9162 consistency proof between trees of `size1` and `size2` leaves
/// (`0 < size1 ≤ size2`).
pub fn consistency_proof<E>(
    size1: u64,
    size2: u64,
    node: impl Fn(u32, u64) -> Result<Hash, E>,
) -> Result<Option<Vec<Hash>>, E> {
    if size1 == 0 || size1 > size2 {
        return Ok(None);
    }
    let mut proof = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, size2, size1, true);
    while m != end - start {
        let k = split(end - start);
        if m <= k {
            proof.push(subtree_root(start + k, end, &node)?);
            end = start + k;
        } else {
            proof.push(subtree_root(start, start + k, &node)?);
            start += k;
            m -= k;
            whole = false;
        }
    }
    if !whole {
        proof.push(subtree_root(start, end, &node)?);
    }
    proof.reverse();
    Ok(Some(proof))
}

/// The proof walk shared by both verifications (RFC 9162 §2.1.3.2 and §2.1.4.2): from node
/// `f` of a tree whose last node is `s`, each proof hash is a sibling on the left or on the
/// right; the walk must end exactly at the root.
fn walk(
    mut f: u64,
    mut s: u64,
    path: &[Hash],
    mut step: impl FnMut(&Hash, bool),
) -> Result<(), ProofError> {
    for p in path {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            step(p, true);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            step(p, false);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(())
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut r: Vec<u8> = leaf_hash.to_vec();
    walk(index, size - 1, proof, |p, sibling_on_left| {
        r = if sibling_on_left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        }
        .to_vec();
    })?;
    if r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1` (RFC 9162 §2.1.4.2). Consistency with the empty tree proves
/// nothing and is refused.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::Sizes(
            "the second tree is smaller than the first",
        ));
    }
    if size1 == 0 {
        return Err(ProofError::Sizes(
            "consistency with the empty tree proves nothing",
        ));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // With size1 a power of two, the old root is itself the first node of the path.
    let (seed, path): (&[u8], &[Hash]) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        (first, rest)
    };
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = seed.to_vec();
    let mut sr = seed.to_vec();
    walk(f, s, path, |c, sibling_on_left| {
        if sibling_on_left {
            fr = node_hash(c, &fr).to_vec();
            sr = node_hash(c, &sr).to_vec();
        } else {
            sr = node_hash(&sr, c).to_vec();
        }
    })?;
    if fr != root1 || sr != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
