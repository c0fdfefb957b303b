//! A file's bytes as fixed-size pages, shared copy-on-write between the live and the durable
//! version: taking a durable snapshot copies page pointers, and a later write copies only the
//! pages it touches.

use std::sync::Arc;

/// Bytes per page.
pub const PAGE: usize = 4096;

type Page = [u8; PAGE];

/// A file's content. *Invariant:* every byte of an allocated page at or past `len` is zero, so
/// growing a file (by `truncate` or by a write past its end) reads zeros in the gap.
#[derive(Debug, Clone, Default)]
pub struct Pages {
    /// `None` is a hole (zeros). Never longer than `len` rounded up to whole pages.
    pages: Vec<Option<Arc<Page>>>,
    len: u64,
}

impl Pages {
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Pages holding bytes (holes excluded).
    pub fn allocated(&self) -> impl Iterator<Item = &Arc<Page>> {
        self.pages.iter().flatten()
    }

    /// Up to `size` bytes from `offset`, fewer at the end of the file.
    pub fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let (index, within) = split(at);
            let take = (PAGE - within).min((end - at) as usize);
            match self.pages.get(index).and_then(Option::as_ref) {
                Some(page) => out.extend_from_slice(&page[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file if it ends past the end.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        if end > self.len {
            self.len = end;
        }
        let needed = pages_for(end);
        if self.pages.len() < needed {
            self.pages.resize(needed, None);
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (index, within) = split(at);
            let take = (PAGE - within).min(rest.len());
            let page = self.pages[index].get_or_insert_with(|| Arc::new([0; PAGE]));
            Arc::make_mut(page)[within..within + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
        }
    }

    /// Sets the length: shrinking drops the bytes past `len`, growing adds zeros.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.pages.truncate(pages_for(len));
            let (index, within) = split(len);
            if within != 0
                && let Some(Some(page)) = self.pages.get_mut(index)
            {
                Arc::make_mut(page)[within..].fill(0);
            }
        }
        self.len = len;
    }

    /// How many byte positions differ between `self` and `other`; a position inside one
    /// version and past the end of the other counts as differing.
    pub fn differing_bytes(&self, other: &Pages) -> u64 {
        let len = self.len.max(other.len);
        let mut differing = 0;
        for index in 0..pages_for(len) {
            let start = (index * PAGE) as u64;
            let ours = self.pages.get(index).and_then(Option::as_ref);
            let theirs = other.pages.get(index).and_then(Option::as_ref);
            let same_page = match (ours, theirs) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            let page_end = (start + PAGE as u64).min(len);
            if same_page && start + PAGE as u64 <= self.len.min(other.len) {
                continue;
            }
            let zero = [0u8; PAGE];
            let a = ours.map_or(&zero, |p| &**p);
            let b = theirs.map_or(&zero, |p| &**p);
            for at in start..page_end {
                let i = (at - start) as usize;
                let in_ours = at < self.len;
                let in_theirs = at < other.len;
                if in_ours != in_theirs || (in_ours && a[i] != b[i]) {
                    differing += 1;
                }
            }
        }
        differing
    }
}

/// The page index and the offset within it of byte `at`.
fn split(at: u64) -> (usize, usize) {
    ((at / PAGE as u64) as usize, (at % PAGE as u64) as usize)
}

/// Pages needed to hold `len` bytes.
fn pages_for(len: u64) -> usize {
    len.div_ceil(PAGE as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_with_holes_as_zeros() {
        let mut p = Pages::default();
        p.write(10_000, b"abc");
        assert_eq!(p.len(), 10_003);
        assert_eq!(p.read(9_998, 10), b"\0\0abc");
        assert_eq!(p.allocated().count(), 1);
        p.write(4094, b"xyzw");
        assert_eq!(p.read(4094, 4), b"xyzw");
        assert_eq!(p.allocated().count(), 3);
    }

    #[test]
    fn shrinking_then_growing_reads_zeros() {
        let mut p = Pages::default();
        p.write(0, &[7; 5000]);
        p.set_len(4100);
        p.set_len(6000);
        assert_eq!(p.read(4098, 4), [7, 7, 0, 0]);
        p.set_len(0);
        assert_eq!(p.len(), 0);
        assert_eq!(p.allocated().count(), 0);
    }

    #[test]
    fn a_snapshot_shares_pages_until_written() {
        let mut live = Pages::default();
        live.write(0, &[1; 3 * PAGE]);
        let durable = live.clone();
        live.write(PAGE as u64 + 5, b"zz");
        let shared = live
            .allocated()
            .zip(durable.allocated())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 2);
        assert_eq!(durable.read(PAGE as u64 + 5, 2), [1, 1]);
        assert_eq!(live.differing_bytes(&durable), 2);
    }

    #[test]
    fn differing_bytes_counts_length_changes() {
        let mut a = Pages::default();
        a.write(0, b"hello");
        let mut b = a.clone();
        b.write(5, b" world");
        assert_eq!(b.differing_bytes(&a), 6);
        assert_eq!(a.differing_bytes(&b), 6);
        b.set_len(2);
        assert_eq!(b.differing_bytes(&a), 3);
    }
}
