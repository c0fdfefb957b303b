//! `casegate`: parse the command line, load and check the configuration (every problem at once,
//! before any port is bound), bind, serve until SIGINT/SIGTERM, drain, exit.

#![forbid(unsafe_code)]

/// mimalloc rather than the system allocator: many threads allocate and free small buffers
/// (gRPC frames, TLS records, sled pages); with glibc's allocator the load generator measured
/// about a third less throughput and far more resident memory (see the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use casegate::{
    cli::{Cli, Command, DevAction},
    config::{Config, LogFormat},
    dev,
    server::{Gateway, StartError},
    shutdown, tls,
    web::Web,
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use casegate::cli::EXIT_USAGE as EXIT_CONFIG;

fn main() -> ExitCode {
    tls::install_provider();
    match Cli::parse().command {
        Command::Serve { config } => run(&config, std::env::vars().collect(), None),
        Command::Audit { action } => casegate::cli::audit(action),
        Command::CheckConfig { config } => casegate::cli::check_config(&config),
        Command::Migrate { config } => casegate::cli::migrate(&config),
        Command::Keys {
            action: casegate::cli::KeysAction::RotateAudit { config },
        } => casegate::cli::rotate_audit(&config),
        Command::Keys {
            action: casegate::cli::KeysAction::RotateNotes { config },
        } => casegate::cli::rotate_notes(&config),
        Command::Keys {
            action: casegate::cli::KeysAction::WebIssuer { iss, key, jwks },
        } => casegate::cli::web_issuer(&iss, &key, &jwks),
        Command::Dev {
            action:
                Some(DevAction::Token {
                    data,
                    org,
                    role,
                    sub,
                    pid,
                    ttl,
                }),
            ..
        } => {
            let request = dev::TokenRequest {
                org,
                role,
                sub,
                pid,
                ttl,
            };
            match dev::token(&data, &request) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("casegate dev token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev {
            action: None,
            data,
            listen,
            cluster,
        } => {
            let config = match dev::prepare(&data) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("casegate dev: cannot prepare {}: {e}", data.display());
                    return ExitCode::FAILURE;
                }
            };
            let mut env: Vec<(String, String)> = std::env::vars().collect();
            if let Some(listen) = listen {
                env.push(("CASEGATE_SERVER__LISTEN".into(), listen.to_string()));
            }
            match cluster {
                Some(replicas) => run_cluster(&config, env, &data, replicas),
                None => run(&config, env, Some(data)),
            }
        }
    }
}

/// Loads, builds, binds and serves; `dev_root` adds the development connection screen.
fn run(config_path: &Path, env: Vec<(String, String)>, dev_root: Option<PathBuf>) -> ExitCode {
    let config = match Config::load_with_env(config_path, env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("casegate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.log.format, &config.log.filter);
    // Record from the first audit batch (the start entry) on.
    if config.metrics_listen.is_some()
        && let Err(e) = casegate::metrics::init()
    {
        eprintln!("casegate: metrics: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(StartError::Config(e)) => {
                eprintln!("casegate: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                eprintln!("casegate: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One signal stops both listeners.
        let stop_rx = stop_signal();
        let addr = gateway.config().server.listen;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("casegate: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(%bound, "listening");
        let mut gateway = gateway;
        let mut metrics_at = None;
        if let Some(addr) = gateway.config().metrics_listen {
            match casegate::metrics::bind(addr).await {
                Ok(metrics) => {
                    metrics_at = metrics.local_addr().ok();
                    tracing::info!(metrics = ?metrics_at, "serving metrics");
                    gateway = gateway.with_metrics(metrics);
                }
                Err(e) => {
                    eprintln!("casegate: cannot serve metrics on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let web = match start_web(gateway.config(), bound, dev_root.is_some(), {
            let rx = stop_rx.clone();
            stopped(rx)
        })
        .await
        {
            Ok(web) => web,
            Err(e) => {
                eprintln!("casegate: web pages: {e}");
                return ExitCode::FAILURE;
            }
        };
        let web_at = web.as_ref().map(|(addr, _)| *addr);
        if let Some(root) = dev_root {
            println!(
                "{}",
                dev::connection_screen(&root, bound, metrics_at, web_at)
            );
        }
        let grace = gateway.config().server.shutdown_grace;
        let served = gateway.serve(listener, stopped(stop_rx)).await;
        // The pages stopped taking requests at the same signal; let those in flight finish.
        if let Some((_, task)) = web
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("web requests still running after the grace period were cut");
        }
        match served {
            Ok(drained) => {
                tracing::info!(?drained, "stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "gateway failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `casegate dev --cluster N`: a throwaway PostgreSQL cluster in the system's temporary
/// folder (PostgreSQL, run as the `postgres` user when this runs as root, must reach it) and `n`
/// replicas of the dev gateway on it, on consecutive ports from the configured listen address
/// (the web pages and metrics on the first); everything stops at SIGINT/SIGTERM and the
/// database is deleted.
fn run_cluster(config_path: &Path, env: Vec<(String, String)>, root: &Path, n: u16) -> ExitCode {
    let mut env = env;
    env.push(("CASEGATE_STORAGE__BACKEND".into(), "postgres".into()));
    // The whole configuration is checked before anything is created or started (the
    // database's address is known only once it runs; any loopback URL reads the same).
    let mut checked = env.clone();
    checked.push((
        "CASEGATE_STORAGE__POSTGRES__URL".into(),
        "postgresql://casegate@127.0.0.1/casegate".into(),
    ));
    if let Err(e) = Config::load_with_env(config_path, checked) {
        eprintln!("casegate: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let folder = std::env::temp_dir().join(format!("casegate-dev-cluster-{}", std::process::id()));
    // Throwaway: a cluster left by a killed run with this process id goes first.
    let _ = std::fs::remove_dir_all(&folder);
    if let Err(e) = std::fs::create_dir_all(&folder) {
        eprintln!("casegate dev: cannot create {}: {e}", folder.display());
        return ExitCode::FAILURE;
    }
    let database = match dev::postgres::Cluster::start(&folder, &[])
        .and_then(|c| c.create_database("casegate").map(|()| c))
    {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("casegate dev --cluster: cannot start PostgreSQL: {e}");
            return ExitCode::FAILURE;
        }
    };
    env.push((
        "CASEGATE_STORAGE__POSTGRES__URL".into(),
        database.url("casegate"),
    ));
    let first = match Config::load_with_env(config_path, env.clone()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("casegate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(first.log.format, &first.log.filter);
    let base = first.server.listen;
    let mut configs = vec![first];
    for i in 1..n {
        let mut env = env.clone();
        // Port 0 (any free port) stays 0 for every replica.
        let port = match base.port() {
            0 => 0,
            port => port.saturating_add(i),
        };
        let addr = std::net::SocketAddr::new(base.ip(), port);
        env.push(("CASEGATE_SERVER__LISTEN".into(), addr.to_string()));
        match Config::load_with_env(config_path, env) {
            Ok(mut config) => {
                // One metrics listener and one set of web pages, on the first replica.
                config.metrics_listen = None;
                config.web = None;
                configs.push(config);
            }
            Err(e) => {
                eprintln!("casegate: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = runtime.block_on(serve_cluster(configs, root));
    drop(runtime);
    drop(database);
    let _ = std::fs::remove_dir_all(&folder);
    code
}

/// Starts, binds and serves every replica of `configs` until SIGINT/SIGTERM.
async fn serve_cluster(configs: Vec<Config>, root: &Path) -> ExitCode {
    let stop_rx = stop_signal();
    if configs.first().is_some_and(|c| c.metrics_listen.is_some())
        && let Err(e) = casegate::metrics::init()
    {
        eprintln!("casegate: metrics: {e}");
        return ExitCode::FAILURE;
    }
    let mut serving = tokio::task::JoinSet::new();
    let mut bound = Vec::new();
    let (mut metrics_at, mut web) = (None, None);
    for config in configs {
        let addr = config.server.listen;
        // One after another: the first migrates the database; the others find it ready.
        let mut gateway = match Gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(e) => {
                eprintln!("casegate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("casegate: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let at = listener.local_addr().unwrap_or(addr);
        if let Some(addr) = gateway.config().metrics_listen {
            match casegate::metrics::bind(addr).await {
                Ok(metrics) => {
                    metrics_at = metrics.local_addr().ok();
                    gateway = gateway.with_metrics(metrics);
                }
                Err(e) => {
                    eprintln!("casegate: cannot serve metrics on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if gateway.config().web.is_some() {
            match start_web(gateway.config(), at, true, stopped(stop_rx.clone())).await {
                Ok(started) => web = started,
                Err(e) => {
                    eprintln!("casegate: web pages: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        bound.push(at);
        serving.spawn(gateway.serve(listener, stopped(stop_rx.clone())));
    }
    let Some(first) = bound.first().copied() else {
        return ExitCode::FAILURE;
    };
    println!(
        "{}",
        dev::connection_screen(root, first, metrics_at, web.as_ref().map(|(a, _)| *a))
    );
    println!("{}", dev::cluster_screen(&bound));
    let mut code = ExitCode::SUCCESS;
    while let Some(served) = serving.join_next().await {
        match served {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a replica failed");
                code = ExitCode::FAILURE;
            }
            Err(e) => {
                tracing::error!(error = %e, "a replica's task failed");
                code = ExitCode::FAILURE;
            }
        }
    }
    if let Some((_, task)) = web {
        let _ = task.await;
    }
    code
}

/// The async runtime, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("casegate: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Becomes true at SIGINT or SIGTERM (installed on the current runtime); every listener
/// stops on it.
fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let shutdown = shutdown::install();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves once `rx` (from [`stop_signal`]) turns true.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Binds and starts the web tier when the config has `[web]`; returns its address and its task
/// (which ends once `shutdown` has resolved and the requests in flight are answered).
async fn start_web(
    config: &Config,
    gateway: std::net::SocketAddr,
    dev: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>, String> {
    let Some(web) = Web::build(config, gateway, dev).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let addr = config.web.as_ref().map(|w| w.listen).unwrap_or(gateway);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%bound, "serving web pages");
    let router = web.router();
    let task = tokio::spawn(async move {
        if let Err(e) = casegate::web::serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "web listener failed");
        }
    });
    Ok(Some((bound, task)))
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
