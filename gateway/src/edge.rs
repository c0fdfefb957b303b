//! The network edge: mutual TLS, the calling organisation's identity, token authentication, rate
//! limits, the per-call span, wire ↔ domain conversion, and the one error → status table. Uses
//! `app`, `crypto` and `base`.

pub(crate) mod auth;
pub(crate) mod call_span;
pub(crate) mod convert;
pub mod https;
pub(crate) mod identity;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod status;
pub mod tls;
