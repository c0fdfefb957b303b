//! The casegate gateway: configuration, mutual TLS, token authentication, the `casegate.v1`
//! gRPC services, the web pages, the embedded development setup and the command line.
//!
//! The code is in layers, each a folder that may use only the layers below it (checked by
//! `tests/layers.rs`):
//!
//! | layer | holds |
//! |---|---|
//! | `tools` | the command line, `casegate dev` |
//! | [`web`] | the pages for jobseekers and privacy officers (DESIGN §6) |
//! | `runtime` | configuration, data folder, server assembly, background tasks, shutdown |
//! | `store` | storage backends beyond the embedded one: PostgreSQL (pool, TLS, migrations) |
//! | `client` | a gateway as clients see it: reports verified, decisions replayed, output |
//! | `api` | the thin `casegate.v1` gRPC handlers |
//! | `edge` | mutual TLS, identity, authentication, limits, wire conversion, error → status |
//! | `app` | the audit trail, the note store, reconciliation, the verified caller |
//! | `crypto` | the note keyring, pseudonyms, the token issuer |
//! | `base` | the clock, metrics, Oslo time, the rule for outside text |
//!
//! The public surface is what the `casegate` binary, the end-to-end tests and the load
//! generator use, re-exported below; everything else is private to the crate.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod api;
mod app;
mod base;
mod client;
mod crypto;
mod edge;
mod runtime;
mod store;
mod tools;
pub mod web;

pub use app::reconcile;
pub use base::metrics;
pub use client::{replay, report};
pub use crypto::{keyring, pseudonym};
pub use edge::{https, tls};
pub use runtime::{config, server, shutdown};
pub use store::postgres;
pub use tools::{cli, dev};
