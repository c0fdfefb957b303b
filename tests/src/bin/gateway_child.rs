//! Test helper for crash tests: runs the gateway from a configuration file in this process
//! (so a test can SIGKILL it), announcing its address as [`casegate_tests::child`] describes,
//! until its standard input closes.
//!
//! Usage: gateway_child CONFIG_FILE

#![forbid(unsafe_code)]

use casegate::tls;
use casegate_tests::child;

#[tokio::main]
async fn main() {
    tls::install_provider();
    let path = std::env::args().nth(1).expect("CONFIG_FILE");
    child::serve_gateway(std::path::Path::new(&path), child::stdin_closed()).await;
}
