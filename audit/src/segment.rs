//! Segment files: the durable form of the log. A segment starts with a 16-byte header (magic,
//! index of its first record) and holds framed records, each batch of them followed by a
//! commit frame:
//!
//! ```text
//! record: u32 payload length | u32 CRC-32C of (index, payload)        | u64 index | payload
//! commit: u32 0xFFFF_FFFF    | u32 CRC-32C of ("commit", size, root)  | u64 size  | 32-byte root
//! ```
//!
//! The index inside each frame makes a deleted, duplicated or reordered record visible even
//! when every frame is intact. A commit frame is written and synced with the batch it ends,
//! before any caller is answered: it names the log size (and RFC 6962 root) the batch's
//! callers were handed, so recovery knows from the segments themselves which records were
//! acknowledged. Segments written before commit frames existed start with magic `CGAUDIT1`;
//! they are read as before, and new records go to a new segment.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

/// The magic of segments written now (with commit frames).
pub const MAGIC: &[u8; 8] = b"CGAUDIT2";
/// The magic of segments written before commit frames existed.
pub const MAGIC_V1: &[u8; 8] = b"CGAUDIT1";
/// Bytes of a segment header: the magic, then the first record's index (u64 big-endian).
pub const HEADER_LEN: u64 = 16;
/// Bytes of a frame header: length (u32), CRC-32C (u32) and index or size (u64), big-endian.
pub const FRAME_HEADER_LEN: usize = 16;
/// The length field that marks a commit frame.
pub const COMMIT_MARK: u32 = u32::MAX;
/// The bytes a commit frame takes.
pub const COMMIT_LEN: usize = FRAME_HEADER_LEN + 32;
/// Largest entry the log accepts.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The file name of the segment whose first record has index `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The segments in `dir`, ordered by first index.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(first) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The header of a new segment ([`MAGIC`]) whose first record has index `first`.
pub fn header(first: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&first.to_be_bytes());
    h
}

/// Whether `bytes` start with the header of a segment whose first record is `first` (either
/// version).
fn header_ok(bytes: &[u8], first: u64) -> bool {
    bytes.len() >= HEADER_LEN as usize
        && (bytes[..8] == *MAGIC || bytes[..8] == *MAGIC_V1)
        && bytes[8..16] == first.to_be_bytes()
}

/// Whether a segment's bytes start with the magic of segments written before commit frames.
pub fn is_v1(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&MAGIC_V1[..])
}

fn commit_checksum(size: u64, root: &[u8; 32]) -> u32 {
    crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(b"commit"), &size.to_be_bytes()),
        root,
    )
}

/// Appends a commit frame: the batch before it leaves the log at `size` entries with RFC 6962
/// root `root`.
pub fn encode_commit(size: u64, root: &[u8; 32], out: &mut Vec<u8>) {
    out.extend_from_slice(&COMMIT_MARK.to_be_bytes());
    out.extend_from_slice(&commit_checksum(size, root).to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(root);
}

/// The commit frame at the start of `bytes`, if one is there intact: (size, root).
fn commit_at(bytes: &[u8]) -> Option<(u64, [u8; 32])> {
    let frame = bytes.get(..COMMIT_LEN)?;
    if frame[..4] != COMMIT_MARK.to_be_bytes() {
        return None;
    }
    let crc = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&frame[8..16]);
    let size = u64::from_be_bytes(size);
    let mut root = [0u8; 32];
    root.copy_from_slice(&frame[16..]);
    (commit_checksum(size, &root) == crc).then_some((size, root))
}

/// The largest size named by an intact commit frame anywhere in `bytes` from byte `from` on,
/// found by searching every position (a flaw may hide where frames start). Used after a
/// flaw: a commit frame beyond it means the flawed record was acknowledged.
pub fn commit_beyond(bytes: &[u8], from: usize) -> Option<u64> {
    let mark = COMMIT_MARK.to_be_bytes();
    let mut best = None;
    let mut at = from;
    while at + COMMIT_LEN <= bytes.len() {
        if bytes[at..at + 4] == mark
            && let Some((size, _)) = commit_at(&bytes[at..])
        {
            best = best.max(Some(size));
        }
        at += 1;
    }
    best
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_be_bytes()), payload)
}

/// Appends the frame of record `index` to `out`.
pub fn encode_frame(index: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&checksum(index, payload).to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The bytes a frame of `payload_len` takes.
pub fn frame_len(payload_len: usize) -> u64 {
    (FRAME_HEADER_LEN + payload_len) as u64
}

/// What is wrong at a position in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flaw {
    /// The header is missing or names another first index.
    Header,
    /// The file ends inside a frame.
    Incomplete,
    /// The length field is impossible.
    Length(u32),
    /// The checksum does not match: the record was changed or torn.
    Checksum,
    /// An intact frame carries another record's index.
    Index {
        /// The index the frame carries.
        found: u64,
    },
    /// An intact commit frame names a size other than the records before it.
    Commit {
        /// The size the commit frame names.
        size: u64,
    },
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flaw::Header => f.write_str("segment header is missing or wrong"),
            Flaw::Incomplete => f.write_str("record is incomplete (the file ends inside it)"),
            Flaw::Length(len) => write!(f, "record length {len} is impossible"),
            Flaw::Checksum => f.write_str("record checksum does not match (changed or torn)"),
            Flaw::Index { found } => write!(
                f,
                "found record {found} here (records deleted, duplicated or reordered)"
            ),
            Flaw::Commit { size } => write!(
                f,
                "a commit frame for size {size} stands here (records deleted or duplicated)"
            ),
        }
    }
}

/// Where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Index the next record would have.
    pub next_index: u64,
    /// Byte offset just after the last good frame.
    pub good_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub flaw: Option<Flaw>,
    /// The last good commit frame before the flaw or the end: (size, root).
    pub commit: Option<(u64, [u8; 32])>,
}

/// Reads a whole segment file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Walks the frames of a segment's bytes, calling `record(index, offset, payload)` for each
/// good one, and stops at the first flaw.
pub fn scan<'a>(
    bytes: &'a [u8],
    first: u64,
    mut record: impl FnMut(u64, u64, &'a [u8]),
) -> ScanEnd {
    if !header_ok(bytes, first) {
        return ScanEnd {
            next_index: first,
            good_len: 0,
            flaw: Some(Flaw::Header),
            commit: None,
        };
    }
    let mut at = HEADER_LEN as usize;
    let mut index = first;
    let mut commit = None;
    while at < bytes.len() {
        let flaw = match bytes.get(at..at + FRAME_HEADER_LEN) {
            None => Some(Flaw::Incomplete),
            Some(h) => {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let mut idx = [0u8; 8];
                idx.copy_from_slice(&h[8..16]);
                let found = u64::from_be_bytes(idx);
                let start = at + FRAME_HEADER_LEN;
                if len == COMMIT_MARK {
                    match commit_at(&bytes[at..]) {
                        None if bytes.len() < at + COMMIT_LEN => Some(Flaw::Incomplete),
                        None => Some(Flaw::Checksum),
                        Some((size, _)) if size != index => Some(Flaw::Commit { size }),
                        Some(found) => {
                            commit = Some(found);
                            at += COMMIT_LEN;
                            None
                        }
                    }
                } else if len as usize > MAX_ENTRY_BYTES {
                    Some(Flaw::Length(len))
                } else {
                    match bytes.get(start..start + len as usize) {
                        None => Some(Flaw::Incomplete),
                        Some(payload) if checksum(found, payload) != crc => Some(Flaw::Checksum),
                        Some(_) if found != index => Some(Flaw::Index { found }),
                        Some(payload) => {
                            record(index, at as u64, payload);
                            index += 1;
                            at = start + len as usize;
                            None
                        }
                    }
                }
            }
        };
        if let Some(flaw) = flaw {
            return ScanEnd {
                next_index: index,
                good_len: at as u64,
                flaw: Some(flaw),
                commit,
            };
        }
    }
    ScanEnd {
        next_index: index,
        good_len: at as u64,
        flaw: None,
        commit,
    }
}

/// Calls `entry(index, payload)` for every good record of the log's segment folder, in order,
/// until the first flaw or a gap between segments, or until `entry` breaks. Returns the index
/// the next record would have.
pub fn scan_dir(
    seg_dir: &Path,
    mut entry: impl FnMut(u64, &[u8]) -> std::ops::ControlFlow<()>,
) -> io::Result<u64> {
    let mut next = 0u64;
    for (first, path) in list(seg_dir)? {
        if first != next {
            break;
        }
        let bytes = read(&path)?;
        let mut stopped = false;
        let end = scan(&bytes, first, |index, _, payload| {
            if !stopped && entry(index, payload).is_break() {
                stopped = true;
            }
        });
        next = end.next_index;
        if stopped || end.flaw.is_some() {
            break;
        }
    }
    Ok(next)
}

/// Reads the payload of the frame at `offset` of `file`, checking it is record `index`.
pub fn read_record(file: &fs::File, offset: u64, index: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut h, offset)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&h[8..16]);
    if len > MAX_ENTRY_BYTES || u64::from_be_bytes(idx) != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record {index} is not where the offset index says"),
        ));
    }
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, offset + FRAME_HEADER_LEN as u64)?;
    if checksum(index, &payload) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record {index} checksum does not match"),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = header(first).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_frame(first + i as u64, p, &mut bytes);
        }
        bytes
    }

    fn indexes(bytes: &[u8], first: u64) -> (Vec<u64>, ScanEnd) {
        let mut seen = Vec::new();
        let end = scan(bytes, first, |i, _, _| seen.push(i));
        (seen, end)
    }

    #[test]
    fn scans_good_frames_and_stops_at_each_kind_of_flaw() {
        let good = segment(10, &[b"a", b"bb", b"ccc"]);
        let (seen, end) = indexes(&good, 10);
        assert_eq!(seen, [10, 11, 12]);
        assert_eq!(
            (end.next_index, end.good_len, end.flaw),
            (13, good.len() as u64, None)
        );

        let (_, end) = indexes(&good[..good.len() - 1], 10);
        assert_eq!((end.next_index, end.flaw), (12, Some(Flaw::Incomplete)));

        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x40;
        assert_eq!(indexes(&flipped, 10).1.flaw, Some(Flaw::Checksum));

        // Record 11 deleted: the frame of 12 sits where 11 belongs.
        let mut deleted = segment(10, &[b"a"]);
        encode_frame(12, b"ccc", &mut deleted);
        let (seen, end) = indexes(&deleted, 10);
        assert_eq!(seen, [10]);
        assert_eq!(end.flaw, Some(Flaw::Index { found: 12 }));

        assert_eq!(indexes(&good, 11).1.flaw, Some(Flaw::Header));
    }

    #[test]
    fn commit_frames_are_scanned_checked_and_found_past_a_flaw() {
        let mut bytes = segment(0, &[b"a", b"bb"]);
        encode_commit(2, &[1u8; 32], &mut bytes);
        encode_frame(2, b"ccc", &mut bytes);
        encode_commit(3, &[2u8; 32], &mut bytes);
        let (seen, end) = indexes(&bytes, 0);
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(end.flaw, None);
        assert_eq!(end.commit, Some((3, [2u8; 32])));
        assert_eq!(end.good_len, bytes.len() as u64);

        // A commit frame for another size is a flaw (records deleted or duplicated).
        let mut wrong = segment(0, &[b"a"]);
        encode_commit(2, &[1u8; 32], &mut wrong);
        assert_eq!(indexes(&wrong, 0).1.flaw, Some(Flaw::Commit { size: 2 }));

        // A torn commit frame is incomplete; a changed one fails its checksum.
        let (_, end) = indexes(&bytes[..bytes.len() - 1], 0);
        assert_eq!(end.flaw, Some(Flaw::Incomplete));
        assert_eq!(end.commit, Some((2, [1u8; 32])));
        let mut changed = bytes.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(indexes(&changed, 0).1.flaw, Some(Flaw::Checksum));

        // A flaw in record 1's length hides the frames after it from the scan, but not from
        // the search for commit frames.
        let mut hidden = bytes.clone();
        let record_1 = HEADER_LEN as usize + frame_len(1) as usize;
        hidden[record_1] ^= 0x10;
        let end = indexes(&hidden, 0).1;
        assert_eq!(end.next_index, 1);
        assert_eq!(commit_beyond(&hidden, end.good_len as usize), Some(3));
        assert_eq!(commit_beyond(&bytes[..record_1], HEADER_LEN as usize), None);
    }
}
