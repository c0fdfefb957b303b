//! Test helper for crash tests: runs the gateway from a configuration file in this process
//! (so a test can SIGKILL it), listening where the file says, and prints `listening on ADDR`.
//!
//! Usage: gateway_child CONFIG_FILE

#![forbid(unsafe_code)]

use std::io::Write;

use casegate::{config::Config, server::Gateway, tls};

#[tokio::main]
async fn main() {
    tls::install_provider();
    let path = std::env::args().nth(1).expect("CONFIG_FILE");
    let config = Config::load(std::path::Path::new(&path)).expect("config");
    let gateway = Gateway::build(config).expect("gateway");
    let listener = tokio::net::TcpListener::bind(gateway.config().server.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    println!("listening on {addr}");
    std::io::stdout().flush().expect("flush");
    gateway
        .serve(listener, std::future::pending())
        .await
        .expect("serve");
}
