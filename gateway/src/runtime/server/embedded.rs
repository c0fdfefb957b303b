//! The embedded backend's side of the gateway: opening the data folder's stores and log
//! (recovering and reconciling them), their background work while serving, and flushing them
//! at the end.

use casegate_audit::index::AuditIndex;
use casegate_consent::store::ConsentStore;

use super::*;
use crate::app::Consents;

/// The embedded stores, open.
#[derive(Debug)]
pub(super) struct EmbeddedState {
    pub(super) audit: Audit,
    pub(super) consents: Consents,
    pub(super) notes: Notes,
    pub(super) keyring: Arc<Keyring>,
    pub(super) data: DataDir,
    /// What reconciling the consent store with the audit log found at start.
    pub(super) reconciled: crate::app::reconcile::Summary,
}

impl Gateway {
    pub(super) fn build_embedded(config: Config, material: Material) -> Result<Self, StartError> {
        let Material {
            tls,
            auth,
            signer,
            pseudonyms,
            keyring,
        } = material;
        let data = DataDir::open(&config.storage.data_dir)?;
        let notes: Notes = Arc::new(NoteStore::open(&data.path().join("notes"))?);
        let (audit, recovery) = Audit::open(
            &data.path().join("audit"),
            AuditIndex::open(&data.path().join("audit-index")).map_err(StartError::Index)?,
            &config.audit,
            signer,
            &notes,
        )?;
        tracing::info!(
            entries = recovery.size,
            clean = recovery.clean,
            acknowledged = recovery.acknowledged,
            discarded_bytes = recovery.discarded_bytes,
            "audit log open"
        );
        if let Some(reason) = &recovery.checkpoint_file_rebuilt {
            tracing::warn!(
                reason = reason.as_str(),
                "audit checkpoint file was unusable and was rebuilt from the segments"
            );
        }
        let consents: Consents = Arc::new(ConsentStore::open(&data.path().join("consents"))?);
        let (made, dropped) = crate::app::notes::recover(notes.as_ref(), audit.log())?;
        if made + dropped > 0 {
            tracing::info!(made_deliverable = made, dropped, "pending notes recovered");
        }
        let reconciled = crate::app::reconcile::stores(
            audit.log(),
            consents.as_ref(),
            notes.as_ref(),
            config.notes.retention,
        )?;
        let purged = crate::app::reconcile::purge_withdrawn(
            notes.as_ref(),
            &audit,
            &reconciled.withdrawals_reapplied,
        )?;
        if reconciled.first || reconciled.to != reconciled.from {
            consents.set_reconciled_through(reconciled.to)?;
        }
        let summary = format!(
            "read entries {}..{}: {} consent changes; {} withdrawals applied again ({} waiting \
             notes purged), {} grants lost (still refused; {} earlier versions superseded), {} \
             versions differing from the log, {} withdrawals of versions not held, {} unreadable; \
             {} note deliveries, {} acknowledgements and {} purges finished{}",
            reconciled.from,
            reconciled.to,
            reconciled.changes,
            reconciled.withdrawals_reapplied.len(),
            purged,
            reconciled.grants_lost,
            reconciled.superseded,
            reconciled.different,
            reconciled.withdrawn_not_held,
            reconciled.unreadable,
            reconciled.deliveries_finished,
            reconciled.acknowledgements_finished,
            reconciled.purges_finished,
            if reconciled.first {
                " (first reconciliation of this data folder: the whole log was read, lost grants \
                 only reported)"
            } else {
                ""
            },
        );
        if reconciled.found_losses() {
            tracing::warn!(
                summary = summary.as_str(),
                "stores reconciled with the audit log: the consent store had lost changes"
            );
        } else {
            tracing::info!(
                summary = summary.as_str(),
                "consent store reconciled with the audit log"
            );
        }
        audit.record_start()?;
        let indexed = audit.catch_up_index().map_err(StartError::Index)?;
        if indexed > 0 {
            tracing::info!(entries = indexed, "audit index brought up to date");
        }
        Ok(Self {
            config,
            metrics: None,
            tls,
            auth,
            pseudonyms,
            state: State::Embedded(Box::new(EmbeddedState {
                audit,
                consents,
                notes,
                keyring,
                data,
                reconciled,
            })),
        })
    }
}

/// The embedded stores' background work: the audit index kept close to the log, the
/// consent store's reconciliation mark moved, the stores' health watched.
pub(super) fn spawn_embedded_tasks(tasks: &mut Supervisor, e: &EmbeddedState) {
    // Keeps the audit index close to the log, so queries rarely wait for it to catch up.
    // A failed catch-up is retried on the next tick; a panic stops the gateway.
    tasks.spawn("audit index catch-up", {
        let log = e.audit.clone();
        async move {
            let mut tick = tokio::time::interval(INDEX_INTERVAL);
            loop {
                tick.tick().await;
                let audit = log.clone();
                match crate::base::blocking::run(move || audit.catch_up_index()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "audit index did not catch up"),
                    Err(e) => return Err(format!("catch-up failed: {e}")),
                }
            }
        }
    });
    tasks.spawn("consent reconciliation mark", {
        let (consents, audit) = (e.consents.clone(), e.audit.clone());
        async move {
            let mut tick = tokio::time::interval(RECONCILED_MARK_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = crate::app::reconcile::mark(&consents, &audit).await {
                    tracing::error!(error = %e, "consent store reconciliation mark not moved");
                }
            }
        }
    });
    tasks.spawn("storage", {
        let (audit, notes) = (e.audit.clone(), e.notes.clone());
        async move {
            let mut tick = tokio::time::interval(STORAGE_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                if let Some(reason) = audit.log().failure() {
                    return Err(format!("the audit log accepts no more entries: {reason}"));
                }
                if let Some(reason) = notes.failure() {
                    return Err(format!("the note store accepts no more writes: {reason}"));
                }
            }
        }
    });
}

/// Flushes the embedded stores: consents (reconciled up to the log's end, so the next start
/// reads nothing), notes, then the audit log (which marks a clean shutdown) and its index.
pub(super) async fn close_embedded(e: EmbeddedState) {
    // Flush storage: consents (reconciled up to the log's end, so the next start reads
    // nothing), then the audit log (which marks a clean shutdown).
    if let Err(e) = crate::app::reconcile::mark(&e.consents, &e.audit).await {
        tracing::error!(error = %e, "consent store did not flush");
    }
    if let Err(e) = e.notes.flush() {
        tracing::error!(error = %e, "note store did not flush");
    }
    if let Err(e) = e.audit.close() {
        tracing::error!(error = %e, "audit log did not close cleanly");
    }
    if let Err(e) = e
        .audit
        .catch_up_index()
        .and_then(|_| e.audit.index().flush())
    {
        tracing::error!(error = %e, "audit index did not flush");
    }
    drop(e.data);
}
