//! Prometheus metrics on a separate admin listener: calls by method and status code, decisions
//! by outcome, audit batches, `fdatasync` latency, queue depth, the newest checkpoint and the
//! note store's figures. Label values come from fixed sets (method names of this API, status
//! codes, reason codes), never from request content, so no personal data can reach a label and
//! cardinality is bounded.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use casegate_audit::log::BatchStats;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Every method this gateway serves; anything else is counted as `unknown`.
const METHODS: &[&str] = &[
    "/casegate.v1.ConsentService/GrantConsent",
    "/casegate.v1.ConsentService/GetConsent",
    "/casegate.v1.ConsentService/ListConsents",
    "/casegate.v1.ConsentService/WithdrawConsent",
    "/casegate.v1.ConsentService/CheckDisclosure",
    "/casegate.v1.DisclosureService/Disclose",
    "/casegate.v1.DisclosureService/StreamInbox",
    "/casegate.v1.DisclosureService/Acknowledge",
    "/casegate.v1.AuditService/GetCheckpoint",
    "/casegate.v1.AuditService/GetInclusionProof",
    "/casegate.v1.AuditService/GetConsistencyProof",
    "/casegate.v1.AuditService/ExportEntries",
    "/casegate.v1.AuditService/QueryAudit",
    "/casegate.v1.AuditService/SubjectAccessReport",
    "/casegate.v1.AuditService/SummarizeAudit",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .map_or("unknown", |m| &m[1..])
}

/// The process-wide recorder (installed once; later gateways in the same process share it).
fn handle() -> Result<&'static PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    Ok(HANDLE.get_or_init(|| handle))
}

/// The metrics in the Prometheus text format (0.0.4).
///
/// # Errors
/// The recorder could not be installed.
pub fn render() -> Result<String, String> {
    handle().map(PrometheusHandle::render)
}

/// Makes sure the recorder exists before the first call is counted.
pub fn init() -> Result<(), String> {
    handle().map(|_| ())
}

/// Counts a finished call (`casegate_calls_total`) and records its duration in seconds
/// (`casegate_call_duration_seconds`): `path` is the gRPC path (`/package.Service/Method`),
/// labelled `unknown` if this gateway does not serve it; `code` is the gRPC status code.
pub fn call_done(path: &str, code: i32, elapsed: Duration) {
    let method = method_label(path);
    metrics::counter!("casegate_calls_total", "method" => method, "code" => code.to_string())
        .increment(1);
    metrics::histogram!("casegate_call_duration_seconds", "method" => method)
        .record(elapsed.as_secs_f64());
}

/// A consent decision's outcome: `permit` or a reason code.
pub fn decision(outcome: &'static str) {
    metrics::counter!("casegate_decisions_total", "outcome" => outcome).increment(1);
}

/// One group commit of the audit log.
pub fn audit_batch(stats: &BatchStats) {
    metrics::histogram!("casegate_audit_batch_entries").record(stats.entries as f64);
    metrics::histogram!("casegate_audit_fdatasync_seconds").record(stats.sync.as_secs_f64());
    metrics::gauge!("casegate_audit_queue_depth").set(stats.queue_depth as f64);
    metrics::gauge!("casegate_audit_checkpoint_size").set(stats.size as f64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!("casegate_audit_checkpoint_timestamp_seconds").set(now);
    metrics::counter!("casegate_audit_entries_total").increment(stats.entries as u64);
}

/// Notes waiting in inboxes (deliverable, not yet acknowledged).
pub fn inbox_backlog(notes: usize) {
    metrics::gauge!("casegate_inbox_backlog_notes").set(notes as f64);
}

/// A failed `accept` on `listener` (`grpc` or `metrics`), by what it says (`connection`,
/// `resource`, `listener`).
pub fn accept_error(listener: &'static str, kind: &'static str) {
    metrics::counter!("casegate_accept_errors_total", "listener" => listener, "kind" => kind)
        .increment(1);
}

/// The configured CRLs: how many are past their `nextUpdate` now, and the earliest
/// `nextUpdate` (seconds since the Unix epoch; absent when no CRL carries one).
pub fn crls(stale: usize, earliest_next_update: Option<i64>) {
    metrics::gauge!("casegate_tls_stale_crls").set(stale as f64);
    if let Some(next) = earliest_next_update {
        metrics::gauge!("casegate_tls_crl_next_update_timestamp_seconds").set(next as f64);
    }
}

/// Open connections closed because a CRL reload revoked their client certificate.
pub fn connections_cut_on_revocation(n: usize) {
    metrics::counter!("casegate_tls_connections_closed_revoked_total").increment(n as u64);
}

/// A database transaction that lost a conflict (serialization failure or deadlock) and is tried
/// again.
pub fn database_conflict_retried() {
    metrics::counter!("casegate_database_conflicts_retried_total").increment(1);
}

/// A new connection closed at once because the gateway already holds `server.max_connections`.
pub fn connection_over_limit() {
    metrics::counter!("casegate_connections_refused_total", "reason" => "too_many_connections")
        .increment(1);
}

/// Binds the admin listener for metrics.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_casegate_method_has_its_own_label() {
        let set = prost_types::FileDescriptorSet::decode(casegate_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(methods.len() >= 15, "{methods:?}");
        for method in methods {
            assert_eq!(method_label(&method), &method[1..], "{method}");
        }
        assert_eq!(method_label("/x.Y/Z"), "unknown");
    }
}
