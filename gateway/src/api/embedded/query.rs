//! Audit queries on the embedded log: candidates from its query index, then the newest
//! entries the index has not taken in yet, each checked with the filter.

use casegate_audit::{entry::Entry, index::Filter, merkle::Hash};
use tonic::Status;

use crate::{
    app::audit::Audit,
    edge::status::{self, read_error},
};

/// The most recent entries a query reads straight from the log rather than waiting for the
/// index to take them in (the background indexer keeps the gap to about a second of traffic).
const UNINDEXED_SCAN: u64 = 50_000;

/// Calls `each` with every entry in `start..end` that `filter` matches (its index, decoded
/// form, leaf hash and canonical bytes), in log order, at most `limit` of them. Reads the
/// index's candidates, then the few newest entries the index has not taken in yet; a query
/// never writes to the index unless it lags by more than [`UNINDEXED_SCAN`] entries.
pub(super) fn matching(
    audit: &Audit,
    filter: &Filter,
    start: u64,
    end: u64,
    limit: usize,
    mut each: impl FnMut(u64, Entry, Hash, Vec<u8>) -> Result<(), Status>,
) -> Result<(), Status> {
    let index = audit.index();
    let mut indexed = index.indexed().map_err(status::index_error)?;
    if end.saturating_sub(indexed) > UNINDEXED_SCAN {
        audit.catch_up_index().map_err(status::index_error)?;
        indexed = index.indexed().map_err(status::index_error)?;
    }
    let log = audit.log();
    let unindexed = indexed.max(start)..end;
    let candidates = index
        .candidates(filter, start, end.min(indexed))
        .map_err(status::index_error)?
        .chain(unindexed.map(Ok));
    let mut found = 0;
    for index in candidates {
        if found == limit {
            break;
        }
        let index = index.map_err(status::index_error)?;
        let bytes = log.entry(index).map_err(read_error)?;
        let Ok(entry) = Entry::decode(&bytes) else {
            continue;
        };
        if filter.matches(&entry) {
            let leaf = casegate_audit::merkle::leaf_hash(&bytes);
            each(index, entry, leaf, bytes)?;
            found += 1;
        }
    }
    Ok(())
}
