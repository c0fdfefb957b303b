//! The network edge: mutual TLS, the calling organisation's identity, token authentication, rate
//! limits, the per-call span, wire ↔ domain conversion, and the one error → status table. Uses
//! `app`, `crypto` and `base`.

pub mod auth;
pub mod call_span;
pub mod convert;
pub mod https;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod status;
pub mod tls;
