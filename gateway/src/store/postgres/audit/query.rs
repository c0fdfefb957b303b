//! The log's query columns (migration 4): what audit queries select entries by — each entry's
//! kind and subject pseudonym, and the organisations it names — written by the sequencing
//! batch, filled for entries logged before they existed, and read as a query's candidates.

use casegate_audit::{entry::Entry, index::Filter, log::ReadError};

use super::{AuditLog, MAX_BATCH, Shared, as_i64, as_u64, read_failed};
use crate::store::postgres::{DatabaseError, Prepared as _};

impl AuditLog {
    /// Up to `max` entries in `from..to` (clipped to the size) that may match `filter`, in
    /// index order, as (index, canonical bytes): selected by the query columns — the subject,
    /// else the organisation, else the kinds, and the time range — which hold every entry the
    /// filter matches and maybe others; callers check each with [`Filter::matches`].
    ///
    /// # Errors
    /// A database failure.
    pub async fn candidates(
        &self,
        filter: &Filter,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        use tokio_postgres::types::ToSql;
        let to = to.min(self.size());
        if from >= to {
            return Ok(Vec::new());
        }
        let (from, to, max) = (
            as_i64(from),
            as_i64(to),
            i64::try_from(max).unwrap_or(i64::MAX),
        );
        // Consent entries widen what `visible_to` lets through beyond the organisation's own
        // entries: then only an explicit organisation narrows.
        let org = match filter.consents.is_empty() {
            true => filter.orgnr.as_deref().or(filter.visible_to.as_deref()),
            false => filter.orgnr.as_deref(),
        };
        let kinds: Vec<i16> = filter.kinds.iter().map(|k| i16::from(k.code())).collect();
        let subject = filter.subject.map(|s| s.to_vec());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&from, &to, &max];
        let mut sql = String::from("SELECT e.idx, e.entry FROM casegate_audit_entry e");
        // Only placeholders ($n) are written into the statement; every value is bound.
        let mut conditions = vec!["e.idx >= $1".to_owned(), "e.idx < $2".to_owned()];
        // Entries whose query columns are not filled yet (`kind IS NULL`: logged before
        // migration 4, or by an older replica since) are candidates for every filter.
        if let Some(subject) = &subject {
            params.push(subject);
            conditions.push(format!("(e.subject = ${} OR e.kind IS NULL)", params.len()));
        } else if let Some(org) = &org {
            params.push(org);
            conditions.push(format!(
                "(e.idx IN (SELECT o.idx FROM casegate_audit_org o WHERE o.orgnr = ${} \
                 AND o.idx >= $1 AND o.idx < $2) OR e.kind IS NULL)",
                params.len()
            ));
        } else if !kinds.is_empty() {
            params.push(&kinds);
            conditions.push(format!(
                "(e.kind = ANY(${}) OR e.kind IS NULL)",
                params.len()
            ));
        }
        if let Some(from_micros) = &filter.from_micros {
            params.push(from_micros);
            conditions.push(format!("e.time_micros >= ${}", params.len()));
        }
        if let Some(until_micros) = &filter.until_micros {
            params.push(until_micros);
            conditions.push(format!("e.time_micros < ${}", params.len()));
        }
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
        sql.push_str(" ORDER BY e.idx LIMIT $3");
        let client = self.shared.db.client().await.map_err(read_failed)?;
        let rows = client
            .query_cached(&sql, &params)
            .await
            .map_err(|e| read_failed(e.into()))?;
        Ok(rows
            .iter()
            .map(|row| (as_u64(row.get(0)), row.get(1)))
            .collect())
    }
}

impl Shared {
    /// Fills the query columns of entries sequenced before they existed (schema version 3),
    /// a batch at a time. Returns how many were filled.
    pub(super) async fn fill_query_columns(&self) -> Result<u64, DatabaseError> {
        let mut filled = 0;
        loop {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query_cached(
                    "SELECT idx, entry FROM casegate_audit_entry WHERE kind IS NULL
                     ORDER BY idx LIMIT $1 FOR UPDATE SKIP LOCKED",
                    &[&MAX_BATCH],
                )
                .await?;
            if rows.is_empty() {
                return Ok(filled);
            }
            for row in &rows {
                let index: i64 = row.get(0);
                let (kind, subject, orgs) = query_columns(row.get(1));
                tx.execute_cached(
                    "UPDATE casegate_audit_entry SET kind = $2, subject = $3 WHERE idx = $1",
                    &[&index, &kind, &subject],
                )
                .await?;
                for org in orgs {
                    tx.execute_cached(
                        "INSERT INTO casegate_audit_org (orgnr, idx) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&org, &index],
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            filled += rows.len() as u64;
        }
    }
}

/// What audit queries select an entry by: its kind code (0 when the bytes are not an entry
/// this build understands), its subject's pseudonym, and the organisations it names.
pub(super) fn query_columns(bytes: &[u8]) -> (i16, Option<Vec<u8>>, Vec<String>) {
    match Entry::decode(bytes) {
        Ok(entry) => {
            let mut orgs: Vec<String> = casegate_audit::index::organisations(&entry)
                .map(str::to_owned)
                .collect();
            orgs.sort_unstable();
            orgs.dedup();
            (
                i16::from(entry.kind().code()),
                entry.subject_pseudonym().map(|p| p.to_vec()),
                orgs,
            )
        }
        Err(_) => (0, None, Vec::new()),
    }
}
