//! Load generator: drives `Disclose` with N concurrent clients over real mutual TLS and JWT
//! against a gateway it starts on loopback, and — in the same run, same machine — a bare tonic
//! server with the same mutual TLS answering a trivial unary call (`grpc.health.v1/Check`) as
//! the baseline. Bounded by count and by time. Prints throughput, latency percentiles, the
//! ratio to the baseline and the peak RSS of the gateway, of the baseline server and of the
//! load generator itself.
//!
//! Each server runs alone in a child process (this program, started again with `--serve-echo`
//! or `--serve-gateway`), so the clients, the baseline and the gateway do not share a runtime
//! or a heap and each figure is the process's own; the baseline runs first and has stopped
//! before the gateway starts.
//!
//! Usage: loadgen [--clients 64] [--count 20000] [--seconds 60] [--connections 8]
//! (release build: `cargo run --release -p casegate-tests --bin loadgen`)

#![forbid(unsafe_code)]

/// The gateway binary's allocator, so the gateway measured here is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use casegate::{config::TlsConfig, tls};
use casegate_consent::SubjectId;
use casegate_proto::v1::{DiscloseRequest, Role};
use casegate_tests::{
    Caller, TestGateway,
    child::{self, ServerProcess},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Args {
    clients: usize,
    count: u64,
    seconds: u64,
    connections: usize,
}

fn args() -> Args {
    let mut a = Args {
        clients: 64,
        count: 20_000,
        seconds: 60,
        connections: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--clients" => a.clients = value as usize,
            "--count" => a.count = value,
            "--seconds" => a.seconds = value,
            "--connections" => a.connections = value.max(1) as usize,
            other => panic!("unknown flag {other}"),
        }
    }
    a
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
const GATEWAY_EXTRA: &str = "[limits]\nrate_per_second = 1000000\nrate_burst = 1000000\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The child's side of the baseline: the gateway's mutual TLS (the files of `dir`) in front
/// of tonic's health service, until standard input closes.
async fn serve_echo(dir: &Path) {
    let baseline_tls = tls::TlsReloader::load(&TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
        client_crls: vec![],
        crl_reload_interval: Duration::from_secs(3600),
    })
    .expect("baseline TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (connections, _acceptor) =
        tls::accept(listener, Arc::new(baseline_tls), Duration::from_secs(10));
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

/// This program again, as the child that serves `role` from `path`.
fn server_child(role: &str, path: &Path) -> ServerProcess {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.arg(role).arg(path);
    ServerProcess::spawn(command)
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
            return serve_echo(&PathBuf::from(argv.next().expect("DIR"))).await;
        }
        _ => {}
    }
    let args = args();
    let mut gw = TestGateway::prepare(GATEWAY_EXTRA, &[]);
    let files = gw.config_path().parent().expect("test folder").to_owned();
    println!(
        "load generator: {} clients over {} connections, at most {} calls or {} s per run",
        args.clients, args.connections, args.count, args.seconds
    );

    // The baseline, alone.
    let echo = server_child("--serve-echo", &files);
    let ca = std::fs::read_to_string(files.join("ca.pem")).expect("CA");
    let nav_cert = gw.org("nav").cert.clone();
    let mut echoes = Vec::new();
    for _ in 0..args.connections {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(&nav_cert.cert_pem, &nav_cert.key_pem))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{}", echo.addr))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect baseline");
        echoes.push(HealthClient::new(channel));
    }
    let echoes = Arc::new(echoes);
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
    let echo_rss = echo.peak_rss_mib();
    echo.stop();

    // Then the gateway.
    let server = server_child("--serve-gateway", &gw.config_path());
    gw.attach(server.addr);
    let metrics_addr = server.metrics.expect("metrics listener");

    // Consents for 100 synthetic jobseekers: NAV may send benefit counselling to IPS.
    let subjects: Vec<SubjectId> = SubjectId::synthetic_all().skip(5000).take(100).collect();
    for subject in &subjects {
        let grant = casegate_tests::fixtures::consent(
            &gw,
            subject,
            "nav",
            "ips",
            "benefit_counselling",
            "ips_follow_up",
        );
        gw.jobseeker(subject)
            .await
            .consent
            .grant_consent(grant)
            .await
            .expect("grant");
    }

    // Channels, shared by the clients.
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        senders.push(gw.caller("nav", "nav_counsellor").await);
    }

    // Scrape the metrics endpoint while the gateway is under load.
    let scraper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        scrape(metrics_addr).await
    });
    let senders: Arc<Vec<Caller>> = Arc::new(senders);
    let subjects = Arc::new(subjects);
    let ips = gw.org("ips").orgnr.clone();
    let body = vec![b'x'; 1024];
    let refused = Arc::new(AtomicU64::new(0));
    let refused_count = refused.clone();
    let gateway = drive(args.clients, args.count, args.seconds, move |task, n| {
        let mut caller = senders[task % senders.len()].clone();
        let request = DiscloseRequest {
            request_id: format!("load-{n}"),
            subject_id: subjects[n as usize % subjects.len()].expose(),
            recipient_orgnr: ips.clone(),
            recipient_role: Role::Unspecified as i32,
            category: "benefit_counselling".into(),
            purpose: "ips_follow_up".into(),
            title: "Benefit update".into(),
            body: body.clone(),
            content_type: "text/plain".into(),
            approval: None,
        };
        let refused = refused_count.clone();
        async move {
            if caller.disclosure.disclose(request).await.is_err() {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;

    println!("\nrun                       calls/s     p50        p99        p99.9      calls");
    for (name, run) in [
        ("baseline: mTLS health", &baseline),
        ("gateway: Disclose", &gateway),
    ] {
        println!(
            "{name:<24} {:>9.0}   {:>9}  {:>9}  {:>9}  {:>7}",
            run.rate(),
            ms(run.at(0.50)),
            ms(run.at(0.99)),
            ms(run.at(0.999)),
            run.done
        );
    }
    let gateway_rss = server.peak_rss_mib();
    println!(
        "\nDisclose throughput / baseline: {:.1}%   errors: {}",
        100.0 * gateway.rate() / baseline.rate(),
        refused.load(Ordering::Relaxed),
    );
    println!(
        "peak RSS: gateway {gateway_rss:.0} MiB, baseline server {echo_rss:.0} MiB, load generator {:.0} MiB",
        child::peak_rss_mib("/proc/self/status")
    );
    match scraper.await {
        Ok(Ok(text)) => {
            println!("\nmetrics scraped during the run:");
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
    let status = server.stop();
    assert!(status.success(), "the gateway exited with {status}");
}

/// `GET /metrics` with a bare HTTP/1.1 request.
async fn scrape(addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text)
}
