//! The `casegate` binary when `accept(2)` fails: errors of one connection or of the process's
//! resources are retried and the gateway keeps serving; an unusable listening socket stops
//! it with a non-zero exit code (so a supervisor restarts it). The failures are injected by an
//! `LD_PRELOAD` shim compiled here with the system C compiler.

mod support;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use support::DevGateway;
use tonic_health::pb::health_check_response::ServingStatus;

/// Wraps `accept` and `accept4`. `SHIM_ACCEPT_ERRNOS="71,23"` makes the first accepts that
/// find a connection take it, close it and fail with those errno values in turn;
/// `SHIM_ACCEPT_ERRNO_ALWAYS=22` makes every one fail so.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int calls;

static int injected(void) {
    const char *always = getenv("SHIM_ACCEPT_ERRNO_ALWAYS");
    if (always) return atoi(always);
    const char *list = getenv("SHIM_ACCEPT_ERRNOS");
    if (!list) return 0;
    int n = __atomic_fetch_add(&calls, 1, __ATOMIC_SEQ_CST);
    for (const char *p = list; *p; p++) {
        if (n == 0) return atoi(p);
        while (*p && *p != ',') p++;
        if (!*p) break;
        n--;
    }
    return 0;
}

static int fail_taken(int fd) {
    if (fd < 0) return fd;
    int code = injected();
    if (code == 0) return fd;
    close(fd);
    errno = code;
    return -1;
}

int accept4(int s, struct sockaddr *a, socklen_t *l, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    return fail_taken(real(s, a, l, flags));
}

int accept(int s, struct sockaddr *a, socklen_t *l) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    return fail_taken(real(s, a, l));
}
"#;

/// Compiles the shim into `dir`.
fn build_shim(dir: &Path) -> PathBuf {
    let source = dir.join("accept_shim.c");
    let library = dir.join("accept_shim.so");
    std::fs::write(&source, SHIM).expect("write shim source");
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc (the system C compiler)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    library
}

/// `casegate dev` on an ephemeral loopback port with the shim preloaded and `env` set.
async fn start_dev(data: &Path, shim: &Path, env: &[(&str, &str)]) -> DevGateway {
    let mut all = vec![("LD_PRELOAD", shim.to_str().expect("shim path"))];
    all.extend_from_slice(env);
    support::start_dev(data, &all).await
}

/// Opens a TCP connection and closes it: enough to make the gateway call `accept`.
async fn knock(addr: &str) {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect");
    drop(stream);
}

async fn health(data: &Path, addr: &str) -> Result<ServingStatus, String> {
    support::health(data, "nav", addr).await
}

#[tokio::test]
async fn failed_accepts_of_connections_and_resources_are_retried_and_the_gateway_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = build_shim(dir.path());
    let data = dir.path().join("dev");
    // EPROTO, ENFILE, ENOBUFS, EHOSTUNREACH, EMFILE: one accept each.
    let errnos = ["71", "23", "105", "113", "24"];
    let DevGateway {
        mut child,
        addr,
        log,
        ..
    } = start_dev(&data, &shim, &[("SHIM_ACCEPT_ERRNOS", &errnos.join(","))]).await;
    for _ in errnos {
        knock(&addr).await;
    }
    let status = health(&data, &addr).await;
    assert_eq!(
        status,
        Ok(ServingStatus::Serving),
        "the gateway must keep serving after failed accepts"
    );
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops after SIGTERM")
        .expect("wait");
    let log = log.await.expect("log");
    assert!(exit.success(), "{exit:?}; log:\n{}", log.join("\n"));
    let retried = log
        .iter()
        .filter(|l| l.contains("accept failed; retrying"))
        .count();
    assert_eq!(retried, errnos.len(), "log:\n{}", log.join("\n"));
    assert!(
        !log.iter().any(|l| l.contains("listener failed")),
        "log:\n{}",
        log.join("\n")
    );
}

#[tokio::test]
async fn an_unusable_listener_stops_the_gateway_with_a_non_zero_exit_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = build_shim(dir.path());
    let data = dir.path().join("dev");
    // EINVAL: the socket is not listening.
    let DevGateway {
        mut child,
        addr,
        log,
        ..
    } = start_dev(&data, &shim, &[("SHIM_ACCEPT_ERRNO_ALWAYS", "22")]).await;
    knock(&addr).await;
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the gateway stops by itself")
        .expect("wait");
    let log = log.await.expect("log");
    let text = log.join("\n");
    assert_eq!(exit.code(), Some(1), "log:\n{text}");
    let last = log
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a last log line");
    assert!(
        last.contains("gateway failed") && last.contains("listener failed"),
        "last line: {last}\nlog:\n{text}"
    );
    assert!(!text.contains("stopped drained"), "log:\n{text}");
}
