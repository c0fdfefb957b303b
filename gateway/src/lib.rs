//! The casegate gateway: configuration, mutual TLS, token authentication, the `casegate.v1`
//! gRPC services, the embedded development setup and the command line.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
mod b64;
pub mod call_span;
pub mod cli;
pub mod clock;
pub mod config;
pub mod convert;
pub mod data_dir;
pub mod dev;
pub mod https;
pub mod identity;
pub mod issuer;
pub mod keyring;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod notes;
pub mod oslo;
pub mod principal;
pub mod pseudonym;
pub mod reconcile;
pub mod replay;
pub mod report;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod status;
pub mod supervisor;
pub mod text;
pub mod tls;
pub mod web;
