//! A throwaway PostgreSQL cluster from the machine's own binaries (`initdb`, `pg_ctl`,
//! `createdb`), for `casegate dev --cluster` and the tests: its data in a folder of the
//! caller's, listening on 127.0.0.1 at a free port and on a Unix socket in that folder,
//! trusting local connections as user `casegate`, stopped (immediately) when dropped.
//!
//! PostgreSQL refuses to run as root; when run as root, the cluster runs as the `postgres`
//! user (`runuser -u postgres --`), which then owns the folder.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The database user a throwaway cluster trusts.
pub const USER: &str = "casegate";

/// Where the PostgreSQL server programs are: the folder of `initdb` on `PATH` (symbolic links
/// followed), else the newest `/usr/lib/postgresql/<major>/bin` (Debian's layout). `None`
/// when the machine has none.
pub fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|p| p.is_file())
    });
    if let Some(initdb) = on_path
        && let Some(dir) = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        && dir.join("pg_ctl").is_file()
    {
        return Some(dir);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    options: String,
    /// The user the server runs as, when not the caller (the caller is root).
    run_as: Option<&'static str>,
    running: bool,
}

impl Cluster {
    /// Creates a cluster under `folder` (which must exist; it gets `pgdata/`) and starts it.
    /// `settings` are extra server settings (`name`, `value`), e.g. TLS files.
    ///
    /// # Errors
    /// No PostgreSQL binaries; root without a `postgres` user; `initdb` or `pg_ctl` failing
    /// (their output in the message).
    pub fn start(folder: &Path, settings: &[(&str, &str)]) -> Result<Self, String> {
        let bin = binaries().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql",
        )?;
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            chown_to(folder, user)?;
        }
        let data = folder.join("pgdata");
        let mut cluster = Self {
            bin,
            data,
            port: 0,
            options: String::new(),
            run_as,
            running: false,
        };
        let data = cluster.data.to_string_lossy().into_owned();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        cluster.port = free_port()?;
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {data} -c max_connections=200",
            cluster.port
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        cluster.options = options;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder (the server's files; TLS files given in `settings` may live here).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A libpq URL for `database` over TCP on loopback, as user [`USER`].
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name`.
    ///
    /// # Errors
    /// `createdb` failing (an existing name, a stopped server).
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", USER, name],
        )
        .map(drop)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: as a crash would; the next start
    /// recovers from its write-ahead log).
    ///
    /// # Errors
    /// `pg_ctl` failing.
    pub fn kill(&mut self) -> Result<(), String> {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again after [`Cluster::kill`], on the same port.
    ///
    /// # Errors
    /// `pg_ctl` failing.
    pub fn restart(&mut self) -> Result<(), String> {
        self.start_server()
    }

    fn start_server(&mut self) -> Result<(), String> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.data.join("server.log").to_string_lossy().into_owned();
        let options = self.options.clone();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        self.running = true;
        Ok(())
    }

    /// Runs one of the server programs (as the server's user), its output in the error.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // Its locale settings are not ours to pass on (initdb refuses some).
        command
            .args(args)
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA");
        let output = command
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.kill();
        }
    }
}

fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The process's effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Gives `folder` to `user` (`chown -R`), so a server running as that user can use it.
fn chown_to(folder: &Path, user: &str) -> Result<(), String> {
    let output = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(folder)
        .output()
        .map_err(|e| format!("chown: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot give {} to user {user} (PostgreSQL does not run as root): {}",
            folder.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A loopback port free at the time of asking.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}
