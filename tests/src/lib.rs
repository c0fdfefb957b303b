//! End-to-end test support: [`TestGateway`] starts the real gateway in-process on
//! `127.0.0.1:0`, with freshly generated PKI and a test token issuer, and hands out typed,
//! authenticated clients.

#![forbid(unsafe_code)]

pub mod bench;
pub mod browser;
pub mod child;
pub mod crash;
pub mod fixtures;
pub mod gateway;
pub mod https_server;
pub mod jwks_server;
pub mod oidc_provider;
pub mod powercut;
pub mod replicas;
pub mod scenario;
pub mod tls_probe;
pub mod web;

pub use gateway::{Caller, TestGateway, TestOrg};
