//! A server in a child process: the gateway (for crash tests and the load generator) or the
//! load generator's baseline. The child prints `listening on ADDR` (and, when it serves
//! metrics, `metrics on ADDR`) then serves until its standard input closes; the parent reads
//! the lines, and can kill the child, stop it, or read its peak resident memory.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use casegate::{config::Config, server::Gateway};

/// Resolves when standard input reaches its end (the parent closed it or exited).
pub async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Prints the address line(s) a [`ServerProcess`] waits for.
pub fn announce(addr: SocketAddr, metrics: Option<SocketAddr>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}").expect("stdout");
    if let Some(metrics) = metrics {
        writeln!(out, "metrics on {metrics}").expect("stdout");
    }
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
}

/// The child's side for a gateway: builds it from `config` (its own configuration file),
/// announces its addresses and serves until `until` resolves, then drains.
pub async fn serve_gateway(config: &Path, until: impl Future<Output = ()> + Send + 'static) {
    let config = Config::load(config).expect("config");
    let metrics = config.metrics_listen;
    let mut gateway = Gateway::start(config).await.expect("gateway");
    let listener = tokio::net::TcpListener::bind(gateway.config().server.listen)
        .await
        .expect("bind");
    let mut metrics_addr = None;
    if let Some(addr) = metrics {
        let admin = casegate::metrics::bind(addr).await.expect("bind metrics");
        metrics_addr = admin.local_addr().ok();
        gateway = gateway.with_metrics(admin);
    }
    announce(listener.local_addr().expect("addr"), metrics_addr);
    gateway.serve(listener, until).await.expect("serve");
}

/// The parent's handle on a server child.
#[derive(Debug)]
pub struct ServerProcess {
    process: std::process::Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `command` and waits for its announcement.
    pub fn spawn(command: Command) -> Self {
        Self::try_spawn(command).expect("start server child")
    }

    /// As [`ServerProcess::spawn`], with an error (the child reaped) when it cannot be
    /// started or ends its output without announcing an address.
    pub fn try_spawn(mut command: Command) -> std::io::Result<Self> {
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let Some(stdout) = process.stdout.take() else {
            return Err(std::io::Error::other("no standard output"));
        };
        let (mut addr, mut metrics) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parse = |rest: &str| rest.trim().parse::<SocketAddr>().ok();
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr = parse(rest);
            } else if let Some(rest) = line.strip_prefix("metrics on ") {
                metrics = parse(rest);
            } else if line == "ready" {
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = process.kill();
            let status = process.wait()?;
            return Err(std::io::Error::other(format!(
                "the child announced no address ({status})"
            )));
        };
        Ok(Self {
            addr,
            metrics,
            process,
        })
    }

    /// The child's peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(&format!("/proc/{}/status", self.process.id()))
    }

    /// CPU time the child has used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.process.id()))
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.process.kill().expect("SIGKILL");
        self.process.wait().expect("reap");
    }

    /// Closes its standard input (it drains and exits) and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        drop(self.process.stdin.take());
        self.process.wait().expect("wait for the child")
    }
}

/// `VmHWM` of a `/proc/…/status` file, in MiB (0 if unreadable).
pub fn peak_rss_mib(status: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// User plus system CPU time of a `/proc/…/stat` file, in seconds (0 if unreadable).
pub fn cpu_seconds(stat: &str) -> f64 {
    stat_seconds(stat, false)
}

/// [`cpu_seconds`] plus the CPU time of the children the process has waited for.
pub fn cpu_seconds_with_children(stat: &str) -> f64 {
    stat_seconds(stat, true)
}

/// The process ids whose parent is `pid`, now.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

fn stat_seconds(stat: &str, with_children: bool) -> f64 {
    /// Clock ticks per second of `/proc` times on Linux.
    const TICKS: f64 = 100.0;
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) end with `)`.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
            let ticks =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            // cutime and cstime (fields 16 and 17) follow: the children waited for.
            let waited = if with_children {
                fields.get(13)?.parse::<f64>().ok()? + fields.get(14)?.parse::<f64>().ok()?
            } else {
                0.0
            };
            Some((ticks + waited) / TICKS)
        })
        .unwrap_or(0.0)
}
