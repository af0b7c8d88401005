//! `pate experiment run FILE.toml`: runs every cell of a grid (teachers
//! come from a shared cache, so cells with the same teacher configuration
//! train them once), shows progress (a bar of cells on a terminal), and
//! writes `results.csv`, `report.md` and the plots. A cell whose
//! `report.json` is already there for the same configuration is not run
//! again, so an interrupted grid resumes.

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
use crate::progress::{say, Bar};

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
    match grid::kind_of(&args.file)?.as_deref() {
        Some("robustness") => return super::robustness::grid::run(args).await,
        Some("lab") => return super::lab_grid::run(args).await,
        _ => {}
    }
    let grid = grid::load(&args.file)?;
    let out = args.out.clone().or(grid.out.clone()).unwrap_or_else(|| PathBuf::from("experiment-out"));
    let data = args.data.clone().or(grid.data.clone());
    let cache = args.cache.clone().unwrap_or_else(|| out.join("cache"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let total = grid.cells.len();
    say!("pate experiment run {}: {total} cells, output {}", args.file.display(), out.display());
    let started = Instant::now();
    let mut rows = Vec::with_capacity(total);
    let bar = Bar::cells(total);
    for (i, cell) in grid.cells.iter().enumerate() {
        bar.message(cell.slug());
        let dir = out.join("cells").join(format!("{i:03}-{}", cell.slug()));
        let heading = format!("[{:>3}/{total}] {} ({:.0}s elapsed)", i + 1, cell.slug(), started.elapsed().as_secs_f64());
        let report: BackdoorReport = run_cell(&dir, cell, &heading, || {
            let a = cell.to_args(data.clone(), args.bin_dir.clone(), args.jobs, &cache, dir.clone());
            async move { backdoor::run(a).await.with_context(|| format!("cell {} ({})", i + 1, cell.slug())) }
        })
        .await?;
        rows.push(Row { cell: cell.clone(), report });
        std::fs::write(out.join("results.csv"), csv(&rows)?)?;
        std::fs::write(out.join("report.md"), markdown(&rows, &args.file))?;
        bar.inc(1);
    }
    drop(bar);
    let written = plots::draw_all(&rows, &out)?;
    say!("\n{total} cells in {:.0}s; wrote {}, {} and {} plots", started.elapsed().as_secs_f64(),
        out.join("results.csv").display(), out.join("report.md").display(), written.len());
    for p in written {
        say!("  {}", p.display());
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
    say!("\n{heading}");
    if let Some(r) = cached {
        say!("  done before; reusing {}", dir.join("report.json").display());
        return Ok(r);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("cell.json"), serde_json::to_vec_pretty(cell)?)?;
    run().await
}

/// A number written with `D` decimals, or an empty field when absent.
struct Fixed<const D: usize>(Option<f64>);

impl<const D: usize> Serialize for Fixed<D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(x) => s.collect_str(&format_args!("{x:.*}", D)),
            None => s.serialize_str(""),
        }
    }
}

/// A number written as Rust displays it (`1`, `0.25`: shortest, no
/// trailing `.0`, unlike serde's floats), or an empty field when absent.
struct Shown(Option<f64>);

impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(x) => s.collect_str(&x),
            None => s.serialize_str(""),
        }
    }
}

/// One line of `results.csv`; the field names are the header. Options
/// that do not apply to the cell's mode are empty.
#[derive(Serialize)]
struct Record {
    mode: Mode,
    teachers: usize,
    poisoned_teachers: usize,
    /// Indices joined with `;`.
    poisoned_ids: String,
    poison_rate: Shown,
    noise_scale: Shown,
    temperature: Shown,
    hard_weight: Shown,
    max_shift: Option<usize>,
    queries: usize,
    public_trigger_rate: Shown,
    seed: u64,
    teacher_asr_poisoned: Fixed<4>,
    teacher_asr_clean: Fixed<4>,
    teacher_accuracy: Fixed<4>,
    ensemble_asr: Fixed<4>,
    ensemble_accuracy: Fixed<4>,
    noisy_aggregate_asr: Fixed<4>,
    noisy_aggregate_accuracy: Fixed<4>,
    student_asr: Fixed<4>,
    student_accuracy: Fixed<4>,
    reference_student_asr: Fixed<4>,
    reference_student_accuracy: Fixed<4>,
    label_accuracy: Fixed<4>,
    queries_answered: usize,
    epsilon: Fixed<2>,
    certified_share: Fixed<4>,
    median_radius_clean: Shown,
    median_radius_triggered: Shown,
    seconds: Fixed<1>,
}

impl Record {
    fn of(row: &Row) -> Record {
        let (c, r) = (&row.cell, &row.report);
        let single = (c.mode == Mode::Single).then_some(c);
        Record {
            mode: c.mode,
            teachers: r.num_teachers,
            poisoned_teachers: r.poisoned_teachers,
            poisoned_ids: r.poisoned_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(";"),
            poison_rate: Shown(Some(c.poison_rate)),
            noise_scale: Shown((c.mode == Mode::Pate).then_some(c.noise_scale)),
            temperature: Shown(single.map(|c| c.temperature)),
            hard_weight: Shown(single.map(|c| c.hard_weight)),
            max_shift: single.map(|c| c.max_shift),
            queries: c.queries,
            public_trigger_rate: Shown(Some(c.public_trigger_rate)),
            seed: c.seed,
            teacher_asr_poisoned: Fixed(r.teacher_asr_poisoned),
            teacher_asr_clean: Fixed(r.teacher_asr_clean),
            teacher_accuracy: Fixed(Some(row.teacher_accuracy())),
            ensemble_asr: Fixed(Some(r.ensemble_asr)),
            ensemble_accuracy: Fixed(Some(r.ensemble_accuracy)),
            noisy_aggregate_asr: Fixed(r.noisy_aggregate_asr),
            noisy_aggregate_accuracy: Fixed(r.noisy_aggregate_accuracy),
            student_asr: Fixed(Some(r.student_asr)),
            student_accuracy: Fixed(Some(r.student_accuracy)),
            reference_student_asr: Fixed(Some(r.reference_student_asr)),
            reference_student_accuracy: Fixed(Some(r.reference_student_accuracy)),
            label_accuracy: Fixed(Some(r.label_accuracy)),
            queries_answered: r.queries_answered,
            epsilon: Fixed(r.epsilon),
            certified_share: Fixed(r.certified_share),
            median_radius_clean: Shown(r.certified_clean.as_ref().map(|x| x.median_radius)),
            median_radius_triggered: Shown(r.certified_triggered.as_ref().map(|x| x.median_radius)),
            seconds: Fixed(Some(r.total_seconds)),
        }
    }
}

/// `results.csv` of `rows`: a header, then one line per row.
pub fn csv(rows: &[Row]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(Record::of(row))?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
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

    /// A PATE row with every measurement and a single-mode row with the
    /// optional ones absent.
    fn rows() -> anyhow::Result<Vec<Row>> {
        let report = |mode: &str, extra: serde_json::Value| -> anyhow::Result<BackdoorReport> {
            let mut v = serde_json::json!({
                "mode": mode, "num_teachers": 4, "poisoned_teachers": 2, "poisoned_ids": [1, 3], "poison_rate": 0.25,
                "target": 0, "trigger": pate_ml::trigger::Trigger::default(), "queries": 200, "queries_answered": 199,
                "public_trigger_rate": 0.0, "seed": 7, "teachers": [{"accuracy": 0.8, "asr": 0.9}, {"accuracy": 0.7, "asr": 0.1}],
                "ensemble_asr": 0.123456, "ensemble_accuracy": 0.8, "student_asr": 0.05, "student_accuracy": 0.81234,
                "label_accuracy": 0.9, "reference_ensemble_asr": 0.01, "reference_ensemble_accuracy": 0.88,
                "reference_student_asr": 0.02, "reference_student_accuracy": 1.0, "public_triggered": 0,
                "teachers_trained": 0, "total_seconds": 12.345
            });
            if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            Ok(serde_json::from_value(v)?)
        };
        let cert = |r: f64| serde_json::json!({"items": 10, "median_radius": r, "certified_accuracy": [1.0]});
        let pate = report("pate", serde_json::json!({
            "noise_scale": 2.5, "teacher_asr_poisoned": 0.9, "teacher_asr_clean": 0.1, "noisy_aggregate_asr": 0.2,
            "noisy_aggregate_accuracy": 0.75, "epsilon": 400.0, "delta": 1e-5, "certified_share": 0.5,
            "certified_clean": cert(1.5), "certified_triggered": cert(2.0)
        }))?;
        let single = report("single", serde_json::json!({}))?;
        Ok(vec![
            Row { cell: Cell { mode: Mode::Pate, poison_rate: 0.25, noise_scale: 2.5, queries: 200, seed: 7, ..Cell::default() }, report: pate },
            Row {
                cell: Cell { mode: Mode::Single, temperature: 20.0, hard_weight: 0.5, max_shift: 2, public_trigger_rate: 0.1, ..Cell::default() },
                report: single,
            },
        ])
    }

    #[test]
    fn results_csv_columns_and_values() -> anyhow::Result<()> {
        let got = csv(&rows()?)?;
        // The header and format of the hand-written CSV this replaced, to the character.
        let want = "mode,teachers,poisoned_teachers,poisoned_ids,poison_rate,noise_scale,temperature,hard_weight,\
max_shift,queries,public_trigger_rate,seed,teacher_asr_poisoned,teacher_asr_clean,teacher_accuracy,ensemble_asr,\
ensemble_accuracy,noisy_aggregate_asr,noisy_aggregate_accuracy,student_asr,student_accuracy,reference_student_asr,\
reference_student_accuracy,label_accuracy,queries_answered,epsilon,certified_share,median_radius_clean,\
median_radius_triggered,seconds
pate,4,2,1;3,0.25,2.5,,,,200,0,7,0.9000,0.1000,0.7500,0.1235,0.8000,0.2000,0.7500,0.0500,0.8123,0.0200,1.0000,0.9000,199,400.00,0.5000,1.5,2,12.3
single,4,2,1;3,0.1,,20,0.5,2,1000,0.1,0,,,0.7500,0.1235,0.8000,,,0.0500,0.8123,0.0200,1.0000,0.9000,199,,,,,12.3
";
        assert_eq!(got, want);
        Ok(())
    }
}
