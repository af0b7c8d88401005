//! Ledger throughput with full sync: answered queries committed per second,
//! one transaction per request, for several request sizes; then refused
//! requests per second (written without an fsync each).
//!
//! Run: `cargo bench -p pate-ledger --bench ledger`

use std::time::Instant;

use pate_ledger::{Ledger, QueryRecord};
use pate_privacy::{data_independent_rdp, default_orders, Mechanism};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let orders = default_orders();
    let m = Mechanism::GnMax { sigma: 40.0 };
    let rdp = data_independent_rdp(&m, &orders);
    let record = QueryRecord { histogram: vec![230, 5, 3, 2, 1, 4, 0, 2, 3, 0], answer: Some(0), rdp };
    println!("{:>14} {:>10} {:>12} {:>16}", "queries/request", "requests", "seconds", "queries/second");
    for (per_request, requests) in [(1usize, 300usize), (10, 300), (250, 40)] {
        let path = dir.path().join(format!("ledger-{per_request}.db"));
        let mut ledger = Ledger::open(&path, &m, &orders)?;
        let batch = vec![record.clone(); per_request];
        let start = Instant::now();
        for r in 0..requests {
            ledger.record(&format!("r{r}"), "digest", &batch, "pate://student/0")?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{per_request:>14} {requests:>10} {secs:>12.3} {:>16.0}", (per_request * requests) as f64 / secs);
    }
    let mut ledger = Ledger::open(&dir.path().join("refusals.db"), &m, &orders)?;
    let refusals = 3000;
    let start = Instant::now();
    for r in 0..refusals {
        ledger.record_refusal(&format!("r{r}"), 10)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("refusals: {refusals} in {secs:.3} s, {:.0} per second", refusals as f64 / secs);
    Ok(())
}
