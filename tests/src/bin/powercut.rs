//! Power cuts under load, for longer than the test suite runs them: the gateway in a child
//! process with its data folder on a power-cut filesystem, killed and cut N times, checked
//! after each restart against everything any client was acknowledged. Prints its figures and
//! every failure; exits non-zero if anything was lost.
//!
//! Usage: powercut [--cuts N] [--seed S] [--settle-first-start]
//! (`gateway_child` and `casegate` are taken from this binary's folder: build them first,
//! e.g. `cargo build -p casegate -p casegate-tests --bins`.)

#![forbid(unsafe_code)]

use std::process::ExitCode;

use casegate_tests::powercut;

const USAGE: &str = "usage: powercut [--cuts N] [--seed S] [--settle-first-start]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (mut cuts, mut seed, mut settle) = (100usize, 1u64, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--settle-first-start" {
            settle = true;
            continue;
        }
        let value = args.next();
        let parsed = match (flag.as_str(), value.as_deref()) {
            ("--cuts", Some(v)) => v.parse().map(|v| cuts = v).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|v| seed = v).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    }
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("powercut: cannot find this binary's folder");
        return ExitCode::FAILURE;
    };
    let mut options = powercut::Options::new(cuts, seed, exe.with_file_name("gateway_child"));
    options.settle_first_start = settle;
    match powercut::run(&options).await {
        Ok(report) => {
            println!("{report}");
            if report.failures.is_empty() && report.aborted.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(reason) => {
            eprintln!("powercut: FUSE cannot be used here: {reason}");
            ExitCode::FAILURE
        }
    }
}
