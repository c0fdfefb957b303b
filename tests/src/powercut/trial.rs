//! A power-cut run: the gateway in a child process keeps its data folder on a power-cut
//! filesystem; each round puts it under load, SIGKILLs it at a random moment, cuts the
//! power, restarts it on what survived and checks it against everything any client was
//! acknowledged so far ([`super::check`]), then stops it and verifies its audit log offline.

use std::{
    fmt,
    fs::File,
    ops::Range,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Counters,
    check::{self, Carry, Check, Checks, Failure},
    ledger::{Ledger, Ops},
    load,
};
use crate::{TestGateway, child::ServerProcess};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub cuts: usize,
    pub seed: u64,
    /// The `gateway_child` test binary.
    pub gateway_child: PathBuf,
    /// The `casegate` binary, for `casegate audit verify`. When it is missing the log is
    /// verified in this process by the same library call, and the report says so.
    pub casegate: PathBuf,
    /// The load runs this many milliseconds (drawn per round) before the kill.
    pub load_ms: Range<u64>,
    /// Make everything durable once the gateway has first started (see
    /// [`super::Mounted::settle`]), so that the folders it creates at its first start are
    /// kept even if it never syncs them: for measuring what else is lost.
    pub settle_first_start: bool,
}

impl Options {
    /// `cuts` rounds from `seed`, with `casegate` beside `gateway_child` (both in the
    /// target folder) and 100–900 ms of load per round.
    pub fn new(cuts: usize, seed: u64, gateway_child: impl Into<PathBuf>) -> Self {
        let gateway_child = gateway_child.into();
        let casegate = gateway_child.with_file_name("casegate");
        Self {
            cuts,
            seed,
            gateway_child,
            casegate,
            load_ms: 100..900,
            settle_first_start: false,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    /// Rounds completed (a cut, a restart and the checks).
    pub cuts: usize,
    pub elapsed: Duration,
    pub ops: Ops,
    pub checks: Checks,
    /// Offline verifications done in this process for want of the `casegate` binary.
    pub verified_in_process: u64,
    pub fs: Counters,
    /// Bytes the cuts took back, in all.
    pub bytes_reverted: u64,
    pub failures: Vec<Failure>,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
}

/// Runs `options.cuts` rounds. `Err` says why FUSE cannot be used here (nothing ran).
pub async fn run(options: &Options) -> Result<Report, String> {
    super::fuse_available()?;
    let started = Instant::now();
    // Rate limits are not under test here; the checks make many calls at once.
    let mut gw = TestGateway::prepare(
        "[limits]\nrate_per_second = 1000000\nrate_burst = 1000000\n",
        &[],
    );
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).map_err(|e| format!("mount point: {e}"))?;
    let mut fs = super::mount(&mnt).map_err(|e| format!("mount on {}: {e}", mnt.display()))?;
    // The data folder exists, durably, before the gateway first starts, as an installed
    // gateway's does; what the gateway makes inside it is its own to make durable.
    let data = mnt.join("data");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .and_then(|()| File::open(&mnt)?.sync_all())
        .map_err(|e| format!("data folder: {e}"))?;
    let ledger = Mutex::new(Ledger::default());
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut carry = Carry::default();
    let mut report = Report {
        seed: options.seed,
        cuts: 0,
        elapsed: Duration::ZERO,
        ops: Ops::default(),
        checks: Checks::default(),
        verified_in_process: 0,
        fs: Counters::default(),
        bytes_reverted: 0,
        failures: Vec::new(),
        aborted: None,
    };
    let vkey = gw.audit_verifier.to_vkey();
    let start = |gw: &mut TestGateway, name: &str| {
        start_child(gw, &options.gateway_child, &data, &dir.path().join(name))
    };

    for round in 0..options.cuts {
        let child = match start(&mut gw, &format!("round-{round}.log")) {
            Ok(child) => child,
            Err(e) => {
                report.aborted = Some(format!("round {round}: the gateway did not start: {e}"));
                break;
            }
        };
        if round == 0 && options.settle_first_start {
            fs.settle();
        }
        let stop = AtomicBool::new(false);
        let load_for = Duration::from_millis(rng.u64(options.load_ms.clone()));
        let stop_ref = &stop;
        let killer = async move {
            tokio::time::sleep(load_for).await;
            child.kill();
            stop_ref.store(true, Ordering::Relaxed);
        };
        let round_seed = options.seed ^ (round as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        tokio::join!(load::run(&gw, &ledger, round, round_seed, &stop), killer);

        match fs.cut_power() {
            Ok(cut) => report.bytes_reverted += cut.bytes_reverted,
            Err(e) => {
                report.aborted = Some(format!("round {round}: cutting the power failed: {e}"));
                break;
            }
        }
        let child = match start(&mut gw, &format!("round-{round}-check.log")) {
            Ok(child) => child,
            Err(e) => {
                report.failures.push(Failure {
                    round,
                    check: Check::GatewayStart,
                    item: "start".into(),
                    detail: e.clone(),
                });
                report.aborted = Some(format!(
                    "round {round}: the gateway did not start after the cut"
                ));
                break;
            }
        };
        let failures =
            check::after_restart(&gw, &ledger, round, &mut carry, &mut report.checks).await;
        report.failures.extend(failures);
        child.stop();

        let audit = data.join("audit");
        let trusted = carry.largest_handed.as_ref().map(|(_, note)| note.as_str());
        let verified = if options.casegate.is_file() {
            verify_with_cli(&options.casegate, &audit, &vkey, trusted, dir.path())
        } else {
            report.verified_in_process += 1;
            verify_in_process(&audit, &gw, trusted)
        };
        report.checks.verifications += 1;
        if let Err(e) = verified {
            report.failures.push(Failure {
                round,
                check: Check::OfflineVerify,
                item: e.clone(),
                detail: e,
            });
        }
        report.cuts = round + 1;
    }
    report.ops = ledger.lock().unwrap_or_else(|p| p.into_inner()).ops;
    report.fs = fs.counters();
    report.elapsed = started.elapsed();
    drop(fs);
    Ok(report)
}

/// Starts the gateway child (the `gateway_child` binary at `child`) on the data folder
/// `data`, its standard error going to `log`, and points `gw`'s clients at it.
pub fn start_child(
    gw: &mut TestGateway,
    child: &Path,
    data: &Path,
    log: &Path,
) -> Result<ServerProcess, String> {
    let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut command = Command::new(child);
    command
        .arg(gw.config_path())
        .env("CASEGATE_STORAGE__DATA_DIR", data)
        .stderr(stderr);
    match ServerProcess::try_spawn(command) {
        Ok(process) => {
            gw.attach(process.addr);
            Ok(process)
        }
        Err(e) => {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{e}; its standard error ends: {}",
                tail.join(" | ")
            ))
        }
    }
}

/// `casegate audit verify --log AUDIT --vkey VKEY [--trusted FILE]`.
fn verify_with_cli(
    casegate: &Path,
    audit: &Path,
    vkey: &str,
    trusted: Option<&str>,
    scratch: &Path,
) -> Result<(), String> {
    let mut command = Command::new(casegate);
    command
        .args(["audit", "verify", "--vkey", vkey, "--log"])
        .arg(audit);
    if let Some(note) = trusted {
        let path = scratch.join("trusted-checkpoint");
        std::fs::write(&path, note).map_err(|e| format!("{}: {e}", path.display()))?;
        command.arg("--trusted").arg(path);
    }
    let output = command
        .output()
        .map_err(|e| format!("running {}: {e}", casegate.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// What `casegate audit verify` runs, in this process.
fn verify_in_process(audit: &Path, gw: &TestGateway, trusted: Option<&str>) -> Result<(), String> {
    casegate_audit::verify::verify_with(audit, std::slice::from_ref(&gw.audit_verifier), trusted)
        .map(drop)
        .map_err(|e| e.to_string())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ops {
            grants,
            withdrawals,
            disclosures,
            refused,
            deliveries,
            acknowledgements,
            checkpoints,
            errors,
        } = self.ops;
        writeln!(
            f,
            "power-cut run, seed {}: {} cuts in {:.1} s",
            self.seed,
            self.cuts,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "acknowledged: {grants} grants, {withdrawals} withdrawals, {disclosures} disclosures, \
             {acknowledgements} note acknowledgements, {checkpoints} checkpoints handed out; \
             {deliveries} notes delivered, {refused} disclosures refused, {errors} calls failed"
        )?;
        let c = self.checks;
        writeln!(
            f,
            "checked: {} grants, {} withdrawals (dry run and disclose), {} receipts, {} checkpoint \
             consistencies, {} delivered notes, {} offline verifications{}",
            c.grants,
            c.withdrawals,
            c.receipts,
            c.checkpoints,
            c.notes,
            c.verifications,
            if self.verified_in_process > 0 {
                format!(
                    " ({} in process: no casegate binary)",
                    self.verified_in_process
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "filesystem: {} fsyncs ({} fdatasync), {} directory fsyncs, {:.1} MB written, \
             {:.1} MB taken back by the cuts",
            self.fs.fsyncs,
            self.fs.fdatasyncs,
            self.fs.fsyncdirs,
            self.fs.bytes_written as f64 / 1e6,
            self.bytes_reverted as f64 / 1e6
        )?;
        if let Some(why) = &self.aborted {
            writeln!(f, "stopped early: {why}")?;
        }
        writeln!(f, "failures: {}", self.failures.len())?;
        let mut kinds: Vec<Check> = self.failures.iter().map(|x| x.check).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let of_kind: Vec<&Failure> = self.failures.iter().filter(|x| x.check == kind).collect();
            // A thing lost stays lost: each later check finds it again. Show each once, with
            // the round it was first found in.
            let mut seen = std::collections::HashSet::new();
            let first: Vec<&Failure> = of_kind
                .iter()
                .copied()
                .filter(|x| seen.insert(x.item.as_str()))
                .collect();
            let rounds: std::collections::BTreeSet<usize> =
                of_kind.iter().map(|x| x.round).collect();
            writeln!(
                f,
                "  {kind}: {} failures about {} distinct things, in {} rounds (first in round {})",
                of_kind.len(),
                first.len(),
                rounds.len(),
                rounds.first().copied().unwrap_or(0)
            )?;
            for x in first.iter().take(10) {
                writeln!(f, "    round {}: {}", x.round, x.detail)?;
            }
        }
        Ok(())
    }
}
