//! The `casegate` command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "casegate",
    version,
    about = "Consent-gated case-sharing gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with a configuration file (settings may be overridden by CASEGATE_… variables).
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE", env = "CASEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run on the embedded development setup (generated PKI, token issuer and config).
    #[command(args_conflicts_with_subcommands = true)]
    Dev {
        #[command(subcommand)]
        action: Option<DevAction>,
        /// The development data folder.
        #[arg(long, value_name = "DIR", default_value = "./casegate-data")]
        data: PathBuf,
        /// Listen address for this run (overrides the config file).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Print a signed access token for one of the development organisations.
    Token {
        /// The development data folder.
        #[arg(long, value_name = "DIR", default_value = "./casegate-data")]
        data: PathBuf,
        /// clinic, nav, ips, privacy or portal.
        #[arg(long, value_name = "SLUG")]
        org: String,
        /// clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin.
        #[arg(long)]
        role: String,
        /// The token subject (user id); defaults to `<org>-<role>`.
        #[arg(long, value_name = "ID")]
        sub: Option<String>,
        /// The jobseeker's own identity number (for role jobseeker).
        #[arg(long, value_name = "NNIN")]
        pid: Option<String>,
        /// How long the token is valid, e.g. 15m, 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}
