//! Load generator: drives `Disclose` with N concurrent clients over real mutual TLS and JWT
//! against a gateway it starts on loopback, and — in the same run, same machine — a bare tonic
//! server with the same mutual TLS answering a trivial unary call (`grpc.health.v1/Check`) as
//! the baseline. Bounded by count and by time. Prints throughput, latency percentiles, the
//! ratio to the baseline, CPU time per call and the peak RSS of the gateway, of the baseline
//! server and of the load generator itself.
//!
//! The gateway is measured three times, the same number of calls each: disclosures with
//! invalid input (authenticated, parsed, refused before any decision: the gateway's own frame),
//! disclosures refused for want of consent (decided, refusal durably audited, nothing stored),
//! and permitted disclosures (the whole path). The first two bound what the third can reach.
//!
//! Each server runs alone in a child process (this program, started again with `--serve-echo`
//! or `--serve-gateway`), so the clients, the baseline and the gateway do not share a runtime
//! or a heap and each figure is the process's own; the baseline runs first and has stopped
//! before the gateway starts.
//!
//! With `--target ADDR --dev-data DIR` it drives a gateway already running at `ADDR` — the
//! `casegate dev` gateway whose folder is `DIR` (its PKI and token issuer are the clients'
//! credentials) — instead of starting one; its RSS and CPU are then not reported.
//!
//! With `--postgres N` the gateway is N replicas on a throwaway PostgreSQL (the machine's own
//! server binaries), each a child process, the clients' connections spread over them; CPU
//! per call is then reported for the replicas together and for the database server apart.
//!
//! Usage: loadgen [--clients 64] [--count 20000] [--seconds 60] [--connections 8]
//!                [--postgres N | --target ADDR --dev-data DIR [--metrics ADDR]]
//! (release build: `cargo run --release -p casegate-tests --bin loadgen`)

#![forbid(unsafe_code)]

/// The gateway binary's allocator, so the gateway measured here is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use casegate::{
    config::TlsConfig,
    dev::{self, DevLayout},
    tls,
};
use casegate_consent::SubjectId;
use casegate_proto::v1::{DiscloseRequest, Role};
use casegate_tests::{
    Caller, TestGateway,
    child::{self, ServerProcess},
    gateway::mtls_channel,
    replicas::{Mode, Replicas},
};
use tonic::transport::Server;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const USAGE: &str = "usage: loadgen [--clients 64] [--count 20000] [--seconds 60] [--connections 8]
               [--postgres N | --target ADDR --dev-data DIR [--metrics ADDR]]";

struct Args {
    clients: usize,
    count: u64,
    seconds: u64,
    connections: usize,
    target: Option<SocketAddr>,
    dev_data: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    postgres: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        clients: 64,
        count: 20_000,
        seconds: 60,
        connections: 8,
        target: None,
        dev_data: None,
        metrics: None,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag} needs a number"))
        };
        let address = || -> SocketAddr {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag} needs an address such as 127.0.0.1:50051"))
        };
        match flag.as_str() {
            "--clients" => a.clients = number() as usize,
            "--count" => a.count = number(),
            "--seconds" => a.seconds = number(),
            "--connections" => a.connections = number().max(1) as usize,
            "--target" => a.target = Some(address()),
            "--dev-data" => a.dev_data = Some(PathBuf::from(&value)),
            "--metrics" => a.metrics = Some(address()),
            "--postgres" => a.postgres = Some(number().max(1) as usize),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.target.is_none() || a.dev_data.is_some(),
        "--target needs --dev-data (the folder of the casegate dev gateway it names)"
    );
    a
}

/// What the gateway runs measure, each against the same gateway, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Disclosures with an empty content type: authenticated, parsed and refused as
    /// `INVALID_ARGUMENT` before any decision — the gateway's own frame, nothing stored.
    Invalid,
    /// Disclosures about jobseekers without consent: decided and refused (`no_consent`), the
    /// refusal durably audited, no note stored.
    Refused,
    /// Disclosures under a consent: the whole path, note stored and audited, receipt answered.
    Permitted,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Permitted => "permitted",
        }
    }

    fn row(self) -> &'static str {
        match self {
            Self::Invalid => "gateway: Disclose, invalid input",
            Self::Refused => "gateway: Disclose, refused (audited)",
            Self::Permitted => "gateway: Disclose, permitted",
        }
    }

    fn expected(self) -> tonic::Code {
        match self {
            Self::Invalid => tonic::Code::InvalidArgument,
            Self::Refused => tonic::Code::PermissionDenied,
            Self::Permitted => tonic::Code::Ok,
        }
    }
}

/// Latencies of one run.
struct Run {
    done: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
    fn at(&self, q: f64) -> Duration {
        self.latencies[((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1)]
    }
}

/// Runs `clients` tasks calling `call(task, n)` until `count` calls or `seconds` have passed.
async fn drive<F, Fut>(clients: usize, count: u64, seconds: u64, call: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|task| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() >= deadline {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(task, n).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        done: latencies.len() as u64,
        elapsed,
        latencies,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The gateway's configuration beyond the test defaults: no rate limit, metrics served.
fn gateway_extra() -> String {
    format!(
        "{}[metrics]\nlisten = \"127.0.0.1:0\"\n",
        casegate_tests::bench::NO_RATE_LIMIT
    )
}

/// The server certificate, its key and the client CA of the gateway's mutual TLS.
struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

/// The child's side of the baseline: the gateway's mutual TLS in front of tonic's health
/// service, until standard input closes.
async fn serve_echo(files: ServerTls) {
    let baseline_tls = tls::TlsReloader::load(&TlsConfig {
        cert: files.cert,
        key: files.key,
        client_ca: files.client_ca,
        client_crls: vec![],
        crl_reload_interval: Duration::from_secs(3600),
        stale_crls: casegate::config::StaleCrls::Warn,
    })
    .expect("baseline TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (connections, _acceptor) = tls::accept(
        listener,
        Arc::new(baseline_tls),
        tls::AcceptBounds {
            handshake_timeout: Duration::from_secs(10),
            lifetime: None,
            max_connections: 100_000,
        },
    );
    let (_reporter, health) = tonic_health::server::health_reporter();
    child::announce(addr, None);
    Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(connections),
            child::stdin_closed(),
        )
        .await
        .expect("serve baseline");
}

/// This program again, as the child that serves `role` from `paths`.
fn server_child(role: &str, paths: &[&Path]) -> ServerProcess {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.arg(role).args(paths);
    ServerProcess::spawn(command)
}

/// The gateway under load, and the credentials its clients call it with.
enum Peer {
    /// A gateway on a test configuration, run by this program in a child process.
    Own {
        gw: Box<TestGateway>,
        server: Option<ServerProcess>,
    },
    /// Replicas on a throwaway PostgreSQL, started by this program.
    Cluster(Box<Replicas>),
    /// A running `casegate dev` gateway, called with the files of its folder.
    Dev {
        root: PathBuf,
        addr: SocketAddr,
        metrics: Option<SocketAddr>,
    },
}

impl Peer {
    /// The test configuration the gateway runs on, when this program started it.
    fn test_gateway(&self) -> Option<&TestGateway> {
        match self {
            Self::Own { gw, .. } => Some(gw),
            Self::Cluster(replicas) => Some(&replicas.gw),
            Self::Dev { .. } => None,
        }
    }

    fn server_tls(&self) -> ServerTls {
        match self {
            Self::Own { .. } | Self::Cluster(_) => {
                let gw = self.test_gateway().expect("a test gateway");
                let files = gw.config_path().parent().expect("test folder").to_owned();
                ServerTls {
                    cert: files.join("server.pem"),
                    key: files.join("server.key"),
                    client_ca: files.join("ca.pem"),
                }
            }
            Self::Dev { root, .. } => {
                let layout = DevLayout::new(root);
                ServerTls {
                    cert: layout.pki().join("server.pem"),
                    key: layout.pki().join("server.key"),
                    client_ca: layout.ca_cert(),
                }
            }
        }
    }

    /// The CA that signed the server's certificate, and `org`'s client certificate and key.
    fn client_tls(&self, org: &str) -> (String, String, String) {
        let read = |p: PathBuf| std::fs::read_to_string(&p).expect("read a PKI file");
        match self {
            Self::Own { .. } | Self::Cluster(_) => {
                let gw = self.test_gateway().expect("a test gateway");
                let cert = &gw.org(org).cert;
                (
                    gw.ca_pem().to_owned(),
                    cert.cert_pem.clone(),
                    cert.key_pem.clone(),
                )
            }
            Self::Dev { root, .. } => {
                let layout = DevLayout::new(root);
                (
                    read(layout.ca_cert()),
                    read(layout.cert(org)),
                    read(layout.key(org)),
                )
            }
        }
    }

    fn orgnr(&self, org: &str) -> String {
        match self {
            Self::Own { .. } | Self::Cluster(_) => self
                .test_gateway()
                .expect("a test gateway")
                .org(org)
                .orgnr
                .clone(),
            Self::Dev { .. } => dev::ORGS
                .iter()
                .find(|o| o.slug == org)
                .expect("a dev organisation")
                .orgnr
                .to_owned(),
        }
    }

    /// Starts the gateway (`replicas` of them on a cluster) if this program runs it.
    fn start(&mut self, replicas: usize) {
        if let Self::Cluster(cluster) = self {
            cluster.add(replicas);
        }
        if let Self::Own { gw, server } = self {
            let child = server_child("--serve-gateway", &[&gw.config_path()]);
            gw.attach(child.addr);
            *server = Some(child);
        }
    }

    fn metrics(&self) -> Option<SocketAddr> {
        match self {
            Self::Own { server, .. } => server.as_ref().and_then(|s| s.metrics),
            Self::Cluster(replicas) => replicas.processes().next().and_then(|s| s.metrics),
            Self::Dev { metrics, .. } => *metrics,
        }
    }

    /// Typed clients for `org` acting as `role` (as the jobseeker `pid`, through the portal);
    /// on replica `n` (modulo their number) of a cluster.
    async fn caller(&self, org: &str, role: &str, pid: Option<&SubjectId>, n: usize) -> Caller {
        match self {
            Self::Cluster(replicas) => {
                let addrs = replicas.addrs();
                let addr = addrs[n % addrs.len()];
                match pid {
                    Some(subject) => replicas.gw.jobseeker_at(addr, subject).await,
                    None => replicas.gw.caller_at(addr, org, role).await,
                }
            }
            Self::Own { gw, .. } => match pid {
                Some(subject) => gw.jobseeker(subject).await,
                None => gw.caller(org, role).await,
            },
            Self::Dev { root, addr, .. } => {
                let (ca, cert, key) = self.client_tls(org);
                let token = dev::token(
                    root,
                    &dev::TokenRequest {
                        org: org.to_owned(),
                        role: role.to_owned(),
                        sub: None,
                        pid: pid.map(SubjectId::expose),
                        ttl: Duration::from_secs(3600),
                    },
                )
                .expect("dev token");
                Caller::new(
                    mtls_channel(*addr, &ca, Some((&cert, &key))).await,
                    Some(token),
                )
            }
        }
    }

    /// The gateway's processes (one, or every replica), if this program runs them.
    fn processes(&self) -> Vec<&ServerProcess> {
        match self {
            Self::Own { server, .. } => server.iter().collect(),
            Self::Cluster(replicas) => replicas.processes().collect(),
            Self::Dev { .. } => Vec::new(),
        }
    }

    /// CPU time the gateway's processes have used so far, in seconds, if this program runs
    /// them.
    fn cpu_seconds(&self) -> Option<f64> {
        let processes = self.processes();
        (!processes.is_empty()).then(|| processes.iter().map(|p| p.cpu_seconds()).sum())
    }

    /// The gateway's processes' peak resident memory, summed, in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let processes = self.processes();
        (!processes.is_empty()).then(|| processes.iter().map(|p| p.peak_rss_mib()).sum())
    }

    /// CPU time the database server has used so far, in seconds (a cluster's).
    fn database_cpu_seconds(&self) -> Option<f64> {
        match self {
            Self::Cluster(replicas) => Some(replicas.database_cpu_seconds()),
            _ => None,
        }
    }

    fn stop(self) {
        if let Self::Cluster(replicas) = self {
            drop(replicas);
            return;
        }
        if let Self::Own {
            server: Some(server),
            ..
        } = self
        {
            let status = server.stop();
            assert!(status.success(), "the gateway exited with {status}");
        }
    }
}

#[tokio::main]
async fn main() {
    tls::install_provider();
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("--serve-gateway") => {
            let config = PathBuf::from(argv.next().expect("CONFIG_FILE"));
            return child::serve_gateway(&config, child::stdin_closed()).await;
        }
        Some("--serve-echo") => {
            let mut path = || PathBuf::from(argv.next().expect("CERT KEY CLIENT_CA"));
            let files = ServerTls {
                cert: path(),
                key: path(),
                client_ca: path(),
            };
            return serve_echo(files).await;
        }
        _ => {}
    }
    let args = args();
    let mut peer = match (args.target, &args.dev_data) {
        _ if args.postgres.is_some() => {
            let own = std::env::current_exe().expect("own path");
            Peer::Cluster(Box::new(
                // The replicas start after the baseline (`Peer::start`).
                Replicas::start_with(
                    0,
                    Mode::Listen,
                    &[own.into(), "--serve-gateway".into()],
                    &gateway_extra(),
                )
                .expect("PostgreSQL server binaries on this machine"),
            ))
        }
        (Some(addr), Some(root)) => Peer::Dev {
            root: root.clone(),
            addr,
            metrics: args.metrics,
        },
        _ => Peer::Own {
            gw: Box::new(TestGateway::prepare(&gateway_extra(), &[])),
            server: None,
        },
    };
    println!(
        "load generator: {} clients over {} connections, at most {} calls or {} s per run",
        args.clients, args.connections, args.count, args.seconds
    );

    // The baseline, alone.
    let files = peer.server_tls();
    let echo = server_child("--serve-echo", &[&files.cert, &files.key, &files.client_ca]);
    let (ca, cert, key) = peer.client_tls("nav");
    let mut echoes = Vec::new();
    for _ in 0..args.connections {
        echoes.push(HealthClient::new(
            mtls_channel(echo.addr, &ca, Some((&cert, &key))).await,
        ));
    }
    let echoes = Arc::new(echoes);
    let echo_cpu = echo.cpu_seconds();
    let baseline = drive(args.clients, args.count, args.seconds, move |task, _| {
        let mut client = echoes[task % echoes.len()].clone();
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("baseline call");
        }
    })
    .await;
    let echo_cpu = echo.cpu_seconds() - echo_cpu;
    let echo_rss = echo.peak_rss_mib();
    echo.stop();

    // Then the gateway.
    peer.start(args.postgres.unwrap_or(1));

    // Consents for 100 synthetic jobseekers: NAV may send benefit counselling to IPS.
    let subjects: Arc<Vec<SubjectId>> =
        Arc::new(SubjectId::synthetic_all().skip(5000).take(100).collect());
    let (nav, ips) = (peer.orgnr("nav"), peer.orgnr("ips"));
    for subject in subjects.iter() {
        let grant = casegate_tests::fixtures::consent_between(
            subject,
            &nav,
            &ips,
            "benefit_counselling",
            "ips_follow_up",
        );
        peer.caller("portal", "jobseeker", Some(subject), 0)
            .await
            .consent
            .grant_consent(grant)
            .await
            .expect("grant");
    }

    // Channels, shared by the clients.
    let mut senders = Vec::new();
    for n in 0..args.connections {
        senders.push(peer.caller("nav", "nav_counsellor", None, n).await);
    }
    let senders: Arc<Vec<Caller>> = Arc::new(senders);
    // Jobseekers who gave no consent: every disclosure about them is refused (and audited).
    let strangers: Vec<SubjectId> = SubjectId::synthetic_all().skip(6000).take(100).collect();
    // Request ids unique to this run: a gateway that outlives it must not see repeats.
    let run = format!(
        "{}-{}",
        casegate_tests::fixtures::now_seconds(),
        std::process::id()
    );
    let template = DiscloseRequest {
        request_id: String::new(),
        subject_id: String::new(),
        recipient_orgnr: ips,
        recipient_role: Role::Unspecified as i32,
        category: "benefit_counselling".into(),
        purpose: "ips_follow_up".into(),
        title: "Benefit update".into(),
        body: vec![b'x'; 1024],
        content_type: "text/plain".into(),
        approval: None,
    };

    let mut runs = vec![(
        "baseline: mTLS health",
        baseline,
        Some(echo_cpu),
        Some(echo_rss),
    )];
    let mut scraper = None;
    // Database CPU per call, by run (a cluster's).
    let mut database: Vec<(&str, f64)> = Vec::new();
    for kind in [Kind::Invalid, Kind::Refused, Kind::Permitted] {
        if kind == Kind::Permitted {
            // Scrape the metrics endpoint while the gateway is under load.
            scraper = peer.metrics().map(|addr| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    scrape(addr).await
                })
            });
        }
        let unexpected = Arc::new(AtomicU64::new(0));
        let counter = unexpected.clone();
        let (senders, run, template) = (senders.clone(), run.clone(), template.clone());
        let who = match kind {
            Kind::Refused => Arc::new(strangers.clone()),
            Kind::Invalid | Kind::Permitted => subjects.clone(),
        };
        let cpu_before = peer.cpu_seconds();
        let db_before = peer.database_cpu_seconds();
        let result = drive(args.clients, args.count, args.seconds, move |task, n| {
            let mut caller = senders[task % senders.len()].clone();
            let mut request = template.clone();
            request.request_id = format!("load-{run}-{}-{n}", kind.label());
            request.subject_id = who[n as usize % who.len()].expose();
            if kind == Kind::Invalid {
                request.content_type.clear();
            }
            let unexpected = counter.clone();
            async move {
                let code = match caller.disclosure.disclose(request).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                if code != kind.expected() {
                    unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
        let cpu = match (peer.cpu_seconds(), cpu_before) {
            (Some(after), Some(before)) => Some(after - before),
            _ => None,
        };
        if let (Some(after), Some(before)) = (peer.database_cpu_seconds(), db_before) {
            database.push((
                kind.row(),
                (after - before) * 1e6 / result.done.max(1) as f64,
            ));
        }
        let wrong = unexpected.load(Ordering::Relaxed);
        if wrong > 0 {
            println!("{}: {wrong} calls did not end as expected", kind.row());
        }
        let rss = peer.peak_rss_mib();
        runs.push((kind.row(), result, cpu, rss));
    }

    println!(
        "\nrun                                   calls/s   vs base    p50        p99        p99.9      calls   CPU/call  peak RSS"
    );
    let base_rate = runs[0].1.rate();
    for (name, run, cpu, rss) in &runs {
        let per_call = cpu.map_or_else(
            || "-".to_owned(),
            |s| format!("{:.0} µs", s * 1e6 / run.done as f64),
        );
        let rss = rss.map_or_else(|| "-".to_owned(), |r| format!("{r:.0} MiB"));
        println!(
            "{name:<36} {:>9.0}   {:>6.1}%  {:>9}  {:>9}  {:>9}  {:>7}   {per_call:>8}  {rss:>8}",
            run.rate(),
            100.0 * run.rate() / base_rate,
            ms(run.at(0.50)),
            ms(run.at(0.99)),
            ms(run.at(0.999)),
            run.done
        );
    }
    if !database.is_empty() {
        println!(
            "\nPostgreSQL server CPU per call (the gateway's CPU/call above is the {} \
             replicas' together):",
            peer.processes().len()
        );
        for (name, per_call) in &database {
            println!("  {name:<36} {per_call:>6.0} µs");
        }
    }
    let unknown = || "not known (not started here)".to_owned();
    let gateway_rss = peer
        .peak_rss_mib()
        .map_or_else(unknown, |r| format!("{r:.0} MiB"));
    println!(
        "\npeak RSS: gateway {gateway_rss}, baseline server {echo_rss:.0} MiB, load generator {:.0} MiB",
        child::peak_rss_mib("/proc/self/status")
    );
    let Some(scraper) = scraper else {
        return peer.stop();
    };
    match scraper.await {
        Ok(Ok(text)) => {
            println!(
                "\nmetrics scraped 2 s into the permitted run (totals since the gateway started):"
            );
            for name in [
                "casegate_calls_total",
                "casegate_decisions_total",
                "casegate_audit_entries_total",
                "casegate_audit_fdatasync_seconds_count",
                "casegate_audit_queue_depth",
            ] {
                let total: f64 = text
                    .lines()
                    .filter(|l| l.starts_with(name))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                println!("  {name:<42} {total}");
            }
        }
        other => println!("\nmetrics scrape failed: {other:?}"),
    }
    peer.stop();
}

/// `GET /metrics` from the admin listener.
async fn scrape(addr: std::net::SocketAddr) -> Result<String, String> {
    let page = casegate_tests::web::WebClient::to(&format!("http://{addr}"))
        .get("/metrics")
        .await;
    match page.status {
        200 => Ok(page.body),
        status => Err(format!("HTTP status {status}")),
    }
}
