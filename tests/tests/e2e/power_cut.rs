//! Nothing acknowledged is lost to a power cut: the gateway, in a child process with its data
//! folder on a power-cut filesystem, is killed under load (grants, withdrawals, disclosures,
//! deliveries and acknowledgements) and the power cut thirty times; after each restart every
//! acknowledged change is checked (see `casegate_tests::powercut`). A longer run:
//! `cargo run -p casegate-tests --bin powercut -- --cuts 200`.

use casegate_tests::powercut;

const CUTS: usize = 30;
const SEED: u64 = 0x5eed_c0de;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_under_load_lose_nothing_acknowledged() {
    let options = powercut::Options::new(CUTS, SEED, env!("CARGO_BIN_EXE_gateway_child"));
    let report = match powercut::run(&options).await {
        Ok(report) => report,
        Err(reason) => return powercut::unavailable(&reason),
    };
    eprintln!("{report}");
    assert_eq!(report.cuts, CUTS, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    // The load did what it is for: every kind of change was acknowledged, and the cuts took
    // unsynced bytes back.
    let ops = report.ops;
    assert!(
        ops.grants >= CUTS as u64
            && ops.withdrawals >= 5
            && ops.disclosures >= 100
            && ops.acknowledgements >= 50,
        "too little load: {report}"
    );
    assert!(
        report.bytes_reverted > 0,
        "no cut took anything back: {report}"
    );
}
