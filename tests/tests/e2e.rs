//! End-to-end tests: the real gateway on loopback, real TLS, real tokens.

mod e2e {
    mod audit_crash;
    mod audit_fixture;
    mod audit_log;
    mod audit_queries;
    mod boundaries;
    mod browser;
    mod consent;
    mod disclosure;
    mod disclosure_crash;
    mod handshake;
    mod http2_limits;
    mod limits;
    mod power_cut;
    mod power_cut_cases;
    mod revocation;
    mod service_discovery;
    mod tokens;
    mod web;
    mod web_login;
}
