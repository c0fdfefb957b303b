//! Accepting TCP connections without ever giving up on a listener that still works: which
//! `accept(2)` errors belong to one connection (try again at once), which to the process's
//! resources (back off, boundedly), and which mean the listening socket itself is unusable
//! (the only ones that end the accept loop).

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};

/// What an `accept(2)` error says about the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// A network error of the connection being accepted (Linux passes these on from
    /// `accept`: ECONNABORTED, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH,
    /// EOPNOTSUPP, ENETDOWN, ENETUNREACH, ETIMEDOUT; EPERM from a firewall rule), or an
    /// interrupted call. The next connection is unaffected.
    Connection,
    /// Out of file descriptors, socket buffers or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM),
    /// or an error not known to be fatal: try again after a pause, as connections close.
    Resource,
    /// The listening socket itself is unusable (EBADF, EINVAL, ENOTSOCK, EFAULT).
    Listener,
}

/// Linux `errno` values (asm-generic) that `accept(2)` documents.
mod errno {
    pub(super) const EPERM: i32 = 1;
    pub(super) const EINTR: i32 = 4;
    pub(super) const EBADF: i32 = 9;
    pub(super) const EAGAIN: i32 = 11;
    pub(super) const EFAULT: i32 = 14;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ENONET: i32 = 64;
    pub(super) const EPROTO: i32 = 71;
    pub(super) const ENOTSOCK: i32 = 88;
    pub(super) const ENOPROTOOPT: i32 = 92;
    pub(super) const EOPNOTSUPP: i32 = 95;
    pub(super) const ENETDOWN: i32 = 100;
    pub(super) const ENETUNREACH: i32 = 101;
    pub(super) const ECONNABORTED: i32 = 103;
    pub(super) const ECONNRESET: i32 = 104;
    pub(super) const ETIMEDOUT: i32 = 110;
    pub(super) const EHOSTDOWN: i32 = 112;
    pub(super) const EHOSTUNREACH: i32 = 113;
}

impl AcceptFailure {
    /// Classifies an error returned by `accept`.
    pub(crate) fn of(e: &io::Error) -> Self {
        use errno::*;
        match e.raw_os_error() {
            Some(EBADF | EINVAL | ENOTSOCK | EFAULT) => Self::Listener,
            Some(
                EPERM | EINTR | EAGAIN | ENONET | EPROTO | ENOPROTOOPT | EOPNOTSUPP | ENETDOWN
                | ENETUNREACH | ECONNABORTED | ECONNRESET | ETIMEDOUT | EHOSTDOWN | EHOSTUNREACH,
            ) => Self::Connection,
            Some(_) => Self::Resource,
            None => match e.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => Self::Connection,
                _ => Self::Resource,
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Resource => "resource",
            Self::Listener => "listener",
        }
    }
}

/// Pauses between failed accepts: none for the first few connection errors in a row, then
/// from [`Backoff::FIRST`] doubling up to [`Backoff::MAX`]. A successful accept resets it.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Failures in a row.
    failures: u32,
    /// Pauses in a row (each twice the one before).
    pauses: u32,
}

impl Backoff {
    /// The first pause.
    pub(crate) const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub(crate) const MAX: Duration = Duration::from_secs(1);
    /// Connection errors in a row retried at once before pausing (a storm of them is
    /// treated like a resource shortage).
    const IMMEDIATE: u32 = 16;

    /// The pause before the next accept after a failure of `kind`.
    pub(crate) fn next(&mut self, kind: AcceptFailure) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if kind == AcceptFailure::Connection && self.failures <= Self::IMMEDIATE {
            return Duration::ZERO;
        }
        let doublings = self.pauses.min(16);
        self.pauses = self.pauses.saturating_add(1);
        Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX)
    }

    /// After a successful accept: the next failure starts the sequence again.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Accepts the next connection on `listener`, retrying connection and resource errors (each
/// logged as a warning and counted in `casegate_accept_errors_total`, with `name` naming the
/// listener). Returns an error only when the listening socket itself is unusable.
pub(crate) async fn accept(
    listener: &TcpListener,
    name: &'static str,
    backoff: &mut Backoff,
) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                backoff.reset();
                return Ok(accepted);
            }
            Err(e) => {
                let kind = AcceptFailure::of(&e);
                crate::base::metrics::accept_error(name, kind.label());
                if kind == AcceptFailure::Listener {
                    return Err(e);
                }
                let pause = backoff.next(kind);
                tracing::warn!(
                    listener = name,
                    error = %e,
                    kind = kind.label(),
                    pause = ?pause,
                    "accept failed; retrying"
                );
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn errors_of_one_connection_resources_and_the_listener_are_told_apart() {
        use errno::*;
        for code in [
            EPROTO,
            EHOSTUNREACH,
            ECONNABORTED,
            ENETUNREACH,
            EPERM,
            EINTR,
        ] {
            assert_eq!(
                AcceptFailure::of(&os(code)),
                AcceptFailure::Connection,
                "{code}"
            );
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, and something unexpected.
        for code in [24, 23, 105, 12, 999] {
            assert_eq!(
                AcceptFailure::of(&os(code)),
                AcceptFailure::Resource,
                "{code}"
            );
        }
        for code in [EBADF, EINVAL, ENOTSOCK, EFAULT] {
            assert_eq!(
                AcceptFailure::of(&os(code)),
                AcceptFailure::Listener,
                "{code}"
            );
        }
    }

    #[test]
    fn back_off_is_bounded_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next(AcceptFailure::Resource), Backoff::FIRST);
        assert_eq!(backoff.next(AcceptFailure::Resource), Backoff::FIRST * 2);
        let pauses: Vec<Duration> = (0..40)
            .map(|_| backoff.next(AcceptFailure::Resource))
            .collect();
        assert!(pauses.iter().all(|p| *p <= Backoff::MAX));
        assert_eq!(pauses.last(), Some(&Backoff::MAX));
        backoff.reset();
        assert_eq!(backoff.next(AcceptFailure::Connection), Duration::ZERO);
        // A storm of connection errors is paused like a resource shortage, starting from
        // the first pause, not from where the count of errors would put it.
        let storm: Vec<Duration> = (0..19)
            .map(|_| backoff.next(AcceptFailure::Connection))
            .collect();
        assert!(storm[..15].iter().all(Duration::is_zero), "{storm:?}");
        assert_eq!(
            storm[15..],
            [
                Backoff::FIRST,
                Backoff::FIRST * 2,
                Backoff::FIRST * 4,
                Backoff::FIRST * 8
            ]
        );
    }
}
