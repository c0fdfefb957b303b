//! The open client connections and their certificate chains, so that a CRL reload can cut the
//! connections whose certificate it now revokes (a handshake is the only other place a CRL
//! is checked, and HTTP/2 keep-alives can hold a connection open indefinitely).

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::Context,
};

use futures_util::task::AtomicWaker;
use rustls_pki_types::CertificateDer;

/// The registry of open connections: connection id → the client's certificate chain (leaf
/// first, as presented) and the switch that cuts the connection.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Live>>,
}

#[derive(Debug)]
struct Live {
    chain: Arc<[CertificateDer<'static>]>,
    cut: Arc<Cut>,
}

/// A connection's entry in the registry; dropping it (with the connection) removes the entry.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    registry: Arc<LiveConnections>,
    cut: Arc<Cut>,
    /// The timer that cuts the connection at the end of its lifetime.
    expiry: Option<tokio::task::AbortHandle>,
}

/// Set once to end a connection (its certificate revoked, or its lifetime over): its next
/// read or write (and any read or write waiting now) fails with `ConnectionAborted`.
#[derive(Debug, Default)]
pub struct Cut {
    done: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

// === impl LiveConnections ===

impl LiveConnections {
    /// Records a connection whose client presented `chain` (leaf first). With `lifetime`,
    /// the connection is cut that long from now (needs a Tokio runtime).
    pub fn register(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        lifetime: Option<std::time::Duration>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Cut::default());
        let expiry = lifetime.map(|lifetime| {
            let cut = cut.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lifetime).await;
                cut.cut();
            })
            .abort_handle()
        });
        self.lock().insert(
            id,
            Live {
                chain: chain.into(),
                cut: cut.clone(),
            },
        );
        Registration {
            id,
            registry: self.clone(),
            cut,
            expiry,
        }
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts every open connection whose chain `revoked` says is revoked; returns how many.
    /// The chains are checked outside the lock (a check may parse several CRLs).
    pub fn cut_where(&self, revoked: impl Fn(&[CertificateDer<'static>]) -> bool) -> usize {
        let open: Vec<(Arc<[CertificateDer<'static>]>, Arc<Cut>)> = self
            .lock()
            .values()
            .map(|live| (live.chain.clone(), live.cut.clone()))
            .collect();
        let mut cut = 0;
        for (chain, switch) in open {
            if !switch.is_done() && revoked(&chain) {
                switch.cut();
                cut += 1;
            }
        }
        cut
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Registration ===

impl Registration {
    /// `Err(ConnectionAborted)` once the connection was cut. Registers the polling task to be
    /// woken when it is, so a read or write that is waiting ends too.
    pub fn check(&self, cx: &mut Context<'_>, reading: bool) -> io::Result<()> {
        self.cut.check(cx, reading)
    }

    /// Whether the connection was cut.
    pub fn is_cut(&self) -> bool {
        self.cut.is_done()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(expiry) = &self.expiry {
            expiry.abort();
        }
        self.registry.lock().remove(&self.id);
    }
}

// === impl Cut ===

impl Cut {
    fn cut(&self) {
        self.done.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn check(&self, cx: &mut Context<'_>, reading: bool) -> io::Result<()> {
        let waker = if reading { &self.reader } else { &self.writer };
        waker.register(cx.waker());
        if self.is_done() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed: its client certificate is revoked or its lifetime is over",
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    #[test]
    fn only_the_connections_the_check_names_are_cut_and_closed_ones_leave() {
        let live = Arc::new(LiveConnections::default());
        let a = live.register(vec![CertificateDer::from(vec![1u8])], None);
        let b = live.register(vec![CertificateDer::from(vec![2u8])], None);
        assert_eq!(live.len(), 2);
        let cut = live.cut_where(|chain| chain[0].as_ref() == [1u8]);
        assert_eq!(cut, 1);
        let mut cx = noop_cx();
        let seen = a.check(&mut cx, true);
        assert!(
            matches!(&seen, Err(e) if e.kind() == io::ErrorKind::ConnectionAborted),
            "{seen:?}"
        );
        assert!(b.check(&mut cx, false).is_ok());
        // A connection already cut is not counted again.
        assert_eq!(live.cut_where(|_| true), 1);
        drop(a);
        drop(b);
        assert!(live.is_empty());
    }

    #[tokio::test]
    async fn a_connection_is_cut_when_its_lifetime_is_over_and_not_before() {
        let live = Arc::new(LiveConnections::default());
        let short = live.register(vec![], Some(std::time::Duration::from_millis(100)));
        let long = live.register(vec![], Some(std::time::Duration::from_secs(3600)));
        assert!(!short.is_cut());
        for _ in 0..100 {
            if short.is_cut() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(short.is_cut());
        assert!(!long.is_cut());
    }
}
