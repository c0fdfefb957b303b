//! Segment files: the durable form of the log. A segment starts with a 16-byte header (magic,
//! index of its first record) and holds framed records:
//!
//! ```text
//! u32 payload length | u32 CRC-32C of (index, payload) | u64 index | payload
//! ```
//!
//! The index inside each frame makes a deleted, duplicated or reordered record visible even
//! when every frame is intact.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

pub const MAGIC: &[u8; 8] = b"CGAUDIT1";
pub const HEADER_LEN: u64 = 16;
pub const FRAME_HEADER_LEN: usize = 16;
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

pub fn header(first: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&first.to_be_bytes());
    h
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
    Index { found: u64 },
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
        }
    }
}

/// Where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Index the next record would have.
    pub next_index: u64,
    /// Byte offset just after the last good record.
    pub good_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub flaw: Option<Flaw>,
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
    if bytes.len() < HEADER_LEN as usize || bytes[..HEADER_LEN as usize] != header(first) {
        return ScanEnd {
            next_index: first,
            good_len: 0,
            flaw: Some(Flaw::Header),
        };
    }
    let mut at = HEADER_LEN as usize;
    let mut index = first;
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
                if len as usize > MAX_ENTRY_BYTES {
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
            };
        }
    }
    ScanEnd {
        next_index: index,
        good_len: at as u64,
        flaw: None,
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
}
