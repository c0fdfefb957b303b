//! Checksummed records for append-only files, as the note journal and the audit index's
//! postings file write them:
//!
//! ```text
//! [payload length u32 LE][CRC-32C (Castagnoli) of kind ‖ payload, u32 LE][kind u8][payload]
//! ```
//!
//! A reader tells a whole record from one cut short by a crash (the file ends inside it) and
//! from a damaged one (its checksum does not match); what a file does about either is its own
//! rule. (The log's segments frame records with their index and end batches with commit
//! frames: their layout is in [`crate::segment`], unchanged since logs were first written.)

use std::io::{self, BufReader, Read};

/// Bytes before a record's payload: length, CRC-32C, kind.
pub const HEADER_LEN: usize = 9;

/// Appends the record of `kind` holding `payload` to `out`.
///
/// # Panics
/// If `payload` is 4 GiB or longer (callers bound their payloads far below).
pub fn encode_into(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a record payload under 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(kind, payload).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The record of `kind` holding `payload`.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut out, kind, payload);
    out
}

/// The kind and payload of `bytes` if they start with one whole record whose checksum
/// matches (bytes after it are ignored).
pub fn decode(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let kind = *bytes.get(8)?;
    let payload = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    (checksum(kind, payload) == crc).then_some((kind, payload))
}

/// The offset of the first whole record in `bytes` that starts after offset 0, checking only
/// positions whose header and first payload bytes `plausible(kind, payload)` accepts (so a
/// tail of garbage costs time in proportion to its length): how a file tells a write cut
/// short, with nothing after it, from damage to records that were synced.
pub fn next_intact(bytes: &[u8], plausible: impl Fn(u8, usize, &[u8]) -> bool) -> Option<usize> {
    (1..bytes.len()).find(|&at| {
        let rest = &bytes[at..];
        let Some(header) = rest.get(..HEADER_LEN) else {
            return false;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        plausible(header[8], len, &rest[HEADER_LEN..]) && decode(rest).is_some()
    })
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload)
}

/// What [`Reader::read_next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A whole record with a matching checksum, starting at `offset`, `len` bytes in all.
    Record {
        /// The record's kind.
        kind: u8,
        /// Its payload.
        payload: &'a [u8],
        /// Where the record starts in the file.
        offset: u64,
        /// Its length, header included.
        len: u32,
    },
    /// The file ends here, after whole records.
    End,
    /// At `offset` the file ends inside a record, or holds one whose checksum does not match.
    Flaw {
        /// Where the flawed record starts.
        offset: u64,
    },
}

/// Reads records one after another from a file of `size` bytes.
#[derive(Debug)]
pub struct Reader<R> {
    inner: BufReader<R>,
    offset: u64,
    size: u64,
    record: Vec<u8>,
}

impl<R: Read> Reader<R> {
    /// A reader of the `size` bytes of `inner`, from its start, through a 1 MiB buffer.
    pub fn new(inner: R, size: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(1 << 20, inner),
            offset: 0,
            size,
            record: Vec::new(),
        }
    }

    /// The next record. After [`Next::End`] or [`Next::Flaw`] the reader is not to be used
    /// again.
    ///
    /// # Errors
    /// A read error of the file.
    pub fn read_next(&mut self) -> io::Result<Next<'_>> {
        let offset = self.offset;
        let left = self.size - offset;
        if left == 0 {
            return Ok(Next::End);
        }
        if left < HEADER_LEN as u64 {
            return Ok(Next::Flaw { offset });
        }
        self.record.resize(HEADER_LEN, 0);
        self.inner.read_exact(&mut self.record)?;
        let len = u32::from_le_bytes([
            self.record[0],
            self.record[1],
            self.record[2],
            self.record[3],
        ]);
        let whole = HEADER_LEN as u64 + u64::from(len);
        if whole > left {
            return Ok(Next::Flaw { offset });
        }
        self.record.resize(whole as usize, 0);
        self.inner.read_exact(&mut self.record[HEADER_LEN..])?;
        match decode(&self.record) {
            Some((kind, payload)) => {
                self.offset += whole;
                Ok(Next::Record {
                    kind,
                    payload,
                    offset,
                    len: whole as u32,
                })
            }
            None => Ok(Next::Flaw { offset }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<u8> {
        let mut file = Vec::new();
        encode_into(&mut file, 1, b"first");
        encode_into(&mut file, 2, b"");
        encode_into(&mut file, 3, &[7; 300]);
        file
    }

    fn read_all(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, Next<'static>) {
        let mut reader = Reader::new(bytes, bytes.len() as u64);
        let mut out = Vec::new();
        loop {
            match reader.read_next().expect("read") {
                Next::Record { kind, payload, .. } => out.push((kind, payload.to_vec())),
                Next::End => return (out, Next::End),
                Next::Flaw { offset } => return (out, Next::Flaw { offset }),
            }
        }
    }

    #[test]
    fn records_read_back_in_order_and_the_end_is_told_apart_from_a_cut() {
        let file = records();
        let (read, end) = read_all(&file);
        assert_eq!(
            read,
            [(1, b"first".to_vec()), (2, Vec::new()), (3, vec![7; 300])]
        );
        assert_eq!(end, Next::End);
        // Where each record ends.
        let ends = [HEADER_LEN + 5, 2 * HEADER_LEN + 5, file.len()];
        for cut in 0..file.len() {
            let (read, end) = read_all(&file[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(read.len(), whole, "cut at {cut}");
            if cut == 0 || ends.contains(&cut) {
                assert_eq!(end, Next::End, "cut at {cut}");
            } else {
                let start = ends[..whole].last().copied().unwrap_or(0) as u64;
                assert_eq!(end, Next::Flaw { offset: start }, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_a_flaw_at_its_start() {
        let file = records();
        let first_len = HEADER_LEN + 5;
        for byte in 0..first_len {
            for bit in 0..8 {
                let mut damaged = file.clone();
                damaged[byte] ^= 1 << bit;
                let (read, end) = read_all(&damaged);
                assert!(read.is_empty(), "byte {byte} bit {bit}");
                assert_eq!(end, Next::Flaw { offset: 0 }, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn the_next_intact_record_after_damage_is_found() {
        let mut file = vec![0xAB; 20];
        let garbage = file.len();
        file.extend(records());
        assert_eq!(next_intact(&file, |_, _, _| true), Some(garbage));
        assert_eq!(
            next_intact(&file, |kind, _, _| kind == 2),
            Some(garbage + 14)
        );
        assert_eq!(next_intact(&file[..garbage], |_, _, _| true), None);
    }
}
