//! `pate experiment run FILE.toml`: runs every cell of a grid (teachers
//! come from a shared cache, so cells with the same teacher configuration
//! train them once), shows progress, and writes `results.csv`, `report.md`
//! and the plots. A cell whose `report.json` is already there for the same
//! configuration is not run again, so an interrupted grid resumes.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::backdoor::{self, BackdoorReport, Mode};
use super::grid::{self, Cell};
use super::plots;

/// Arguments of `pate experiment run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The grid file (TOML).
    pub file: PathBuf,
    /// Output directory [default: the file's `out`, else experiment-out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Data directory [default: the file's `data`, else as `pate lab`].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Teacher cache shared by the cells [default: OUT/cache].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Teachers trained at once [default: the number of CPU cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where the framework binaries are [default: beside `pate`].
    #[arg(long, env = "PATE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// One row of `results.csv`: a cell and what it measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// The configuration.
    pub cell: Cell,
    /// Its report.
    pub report: BackdoorReport,
}

impl Row {
    /// Mean clean accuracy over all teachers.
    pub fn teacher_accuracy(&self) -> f64 {
        let t = &self.report.teachers;
        t.iter().map(|s| s.accuracy).sum::<f64>() / t.len().max(1) as f64
    }
}

/// Runs the grid.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if super::robustness::grid::is_robustness(&args.file)? {
        return super::robustness::grid::run(args).await;
    }
    let grid = grid::load(&args.file)?;
    let out = args.out.clone().or(grid.out.clone()).unwrap_or_else(|| PathBuf::from("experiment-out"));
    let data = args.data.clone().or(grid.data.clone());
    let cache = args.cache.clone().unwrap_or_else(|| out.join("cache"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let total = grid.cells.len();
    println!("pate experiment run {}: {total} cells, output {}", args.file.display(), out.display());
    let started = Instant::now();
    let mut rows = Vec::with_capacity(total);
    for (i, cell) in grid.cells.iter().enumerate() {
        let dir = out.join("cells").join(format!("{i:03}-{}", cell.slug()));
        let heading = format!("[{:>3}/{total}] {} ({:.0}s elapsed)", i + 1, cell.slug(), started.elapsed().as_secs_f64());
        let report: BackdoorReport = run_cell(&dir, cell, &heading, || {
            let a = cell.to_args(data.clone(), args.bin_dir.clone(), args.jobs, &cache, dir.clone());
            async move { backdoor::run(a).await.with_context(|| format!("cell {} ({})", i + 1, cell.slug())) }
        })
        .await?;
        rows.push(Row { cell: cell.clone(), report });
        std::fs::write(out.join("results.csv"), csv(&rows))?;
        std::fs::write(out.join("report.md"), markdown(&rows, &args.file))?;
    }
    let written = plots::draw_all(&rows, &out)?;
    println!("\n{total} cells in {:.0}s; wrote {}, {} and {} plots", started.elapsed().as_secs_f64(),
        out.join("results.csv").display(), out.join("report.md").display(), written.len());
    for p in written {
        println!("  {}", p.display());
    }
    Ok(())
}

/// Runs one grid cell into `dir` (its configuration written to
/// `cell.json` first), or reuses the `report.json` an earlier run left
/// there for the same configuration. Configurations are compared as
/// values, so a cell written before a new option existed (absent = its
/// default) still counts as the same.
pub(crate) async fn run_cell<C, R, F, Fut>(dir: &Path, cell: &C, heading: &str, run: F) -> anyhow::Result<R>
where
    C: Serialize + DeserializeOwned + PartialEq,
    R: DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let previous: Option<C> = std::fs::read(dir.join("cell.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let cached: Option<R> = (previous.as_ref() == Some(cell))
        .then(|| std::fs::read(dir.join("report.json")).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    println!("\n{heading}");
    if let Some(r) = cached {
        println!("  done before; reusing {}", dir.join("report.json").display());
        return Ok(r);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("cell.json"), serde_json::to_vec_pretty(cell)?)?;
    run().await
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x:.4}"))
}

/// The columns of `results.csv`.
pub const COLUMNS: &str = "mode,teachers,poisoned_teachers,poisoned_ids,poison_rate,noise_scale,temperature,hard_weight,max_shift,queries,public_trigger_rate,seed,\
teacher_asr_poisoned,teacher_asr_clean,teacher_accuracy,ensemble_asr,ensemble_accuracy,noisy_aggregate_asr,\
noisy_aggregate_accuracy,student_asr,student_accuracy,reference_student_asr,reference_student_accuracy,label_accuracy,\
queries_answered,epsilon,certified_share,median_radius_clean,median_radius_triggered,seconds";

/// `results.csv` of `rows`.
pub fn csv(rows: &[Row]) -> String {
    let mut s = format!("{COLUMNS}\n");
    for row in rows {
        let (c, r) = (&row.cell, &row.report);
        let (noise, temperature, hard_weight, max_shift) = match c.mode {
            Mode::Pate => (c.noise_scale.to_string(), String::new(), String::new(), String::new()),
            Mode::Single => (String::new(), c.temperature.to_string(), c.hard_weight.to_string(), c.max_shift.to_string()),
        };
        let ids = r.poisoned_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(";");
        let _ = writeln!(
            s,
            "{},{},{},{ids},{},{noise},{temperature},{hard_weight},{max_shift},{},{},{},{},{},{:.4},{:.4},{:.4},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{},{},{},{},{},{:.1}",
            c.mode, r.num_teachers, r.poisoned_teachers, c.poison_rate, c.queries, c.public_trigger_rate, c.seed,
            opt(r.teacher_asr_poisoned), opt(r.teacher_asr_clean), row.teacher_accuracy(), r.ensemble_asr, r.ensemble_accuracy,
            opt(r.noisy_aggregate_asr), opt(r.noisy_aggregate_accuracy), r.student_asr, r.student_accuracy,
            r.reference_student_asr, r.reference_student_accuracy, r.label_accuracy, r.queries_answered,
            r.epsilon.map_or_else(String::new, |e| format!("{e:.2}")), opt(r.certified_share),
            r.certified_clean.as_ref().map_or_else(String::new, |x| x.median_radius.to_string()),
            r.certified_triggered.as_ref().map_or_else(String::new, |x| x.median_radius.to_string()),
            r.total_seconds,
        );
    }
    s
}

/// `report.md`: one table row per cell.
pub fn markdown(rows: &[Row], file: &std::path::Path) -> String {
    let mut s = format!("# Results of `pate experiment run {}`\n\n", file.display());
    s.push_str("ASR = share of triggered evaluation items (true class not the target) classified as the target. ");
    s.push_str("Noisy aggregate: LNMax drawn locally on the operator's histograms (the aggregator's mechanism, no budget spent). ");
    s.push_str("Single mode runs in process (no gRPC) and claims no privacy.\n\n");
    s.push_str("| mode | n | m | poison | b / (T, w, shift, epochs) | queries | public trig. | seed | teacher ASR (poisoned / clean) | teacher acc | ensemble ASR / acc | noisy agg. ASR | student ASR / acc | reference student ASR / acc | epsilon | certified share | median radius (clean / trig.) |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.3}"));
    for row in rows {
        let (c, r) = (&row.cell, &row.report);
        let b = c.knobs();
        let radius = match (&r.certified_clean, &r.certified_triggered) {
            (Some(a), Some(b)) => format!("{} / {}", a.median_radius, b.median_radius),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {b} | {} | {} | {} | {} / {} | {:.3} | {:.3} / {:.3} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {} | {} | {radius} |",
            c.mode, r.num_teachers, r.poisoned_teachers, c.poison_rate, r.queries_answered, c.public_trigger_rate, c.seed,
            f(r.teacher_asr_poisoned), f(r.teacher_asr_clean), row.teacher_accuracy(), r.ensemble_asr, r.ensemble_accuracy,
            f(r.noisy_aggregate_asr), r.student_asr, r.student_accuracy, r.reference_student_asr, r.reference_student_accuracy,
            r.epsilon.map_or_else(|| "- (no privacy)".into(), |e| format!("{e:.1}")), f(r.certified_share),
        );
    }
    if let Some(table) = super::summary::seed_table(rows) {
        s.push('\n');
        s.push_str(&table);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cell_runs_once_per_configuration() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cell_dir = dir.path().join("cells").join("000-x");
        let runs = std::cell::Cell::new(0);
        let run = |value: u32| {
            runs.set(runs.get() + 1);
            let d = cell_dir.clone();
            async move {
                // What an experiment leaves: its report in the cell's directory.
                std::fs::write(d.join("report.json"), serde_json::to_vec(&value)?)?;
                Ok(value)
            }
        };
        assert_eq!(run_cell(&cell_dir, &1u64, "cell", || run(7)).await?, 7);
        assert!(cell_dir.join("cell.json").is_file());
        // The same configuration: the report is read back, nothing runs.
        assert_eq!(run_cell(&cell_dir, &1u64, "cell", || run(8)).await?, 7);
        assert_eq!(runs.get(), 1);
        // Another configuration runs again, into a fresh directory.
        assert_eq!(run_cell(&cell_dir, &2u64, "cell", || run(9)).await?, 9);
        assert_eq!(runs.get(), 2);
        Ok(())
    }
}
