//! Lab grids for `pate experiment run`: a TOML file with
//! `experiment = "lab"`, whose `[defaults]` and `[[grid]]` keys are
//! `pate lab` flags (`target_epsilon = [1.5, 2.0]` is `--target-epsilon`;
//! `seeds` for `seed`), expanded as every grid is ([`crate::experiment::grid`]).
//! Each cell is a real `pate lab` run, as its own process, into
//! `OUT/cells/NNN-...`; a cell already done with the same flags is reused.
//! Cells whose teachers would be trained alike (same data, teacher count,
//! model, epochs, augmentation, batch, seed and preset) share them: the
//! first trains them, the others start from hard links of its
//! checkpoints (`--reuse-teachers`). Cells that differ only in their seed
//! form a group, averaged (mean and sample standard deviation) into
//! `report.md`, `summary.json` and the accuracy-against-epsilon plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use toml::{Table, Value};

use super::grid::{group_indices, parse_cells};
use super::plots::{self, Chart};
use super::runner::{run_cell, RunArgs};
use super::summary::mean_sd;
use crate::lab::{LabArgs, LabReport};
use crate::progress::{say, Bar};

/// Flags that decide how the teachers are trained: cells equal on these
/// share their teachers. (`seed` cuts the partitions and seeds training.)
const TEACHER_KEYS: &[&str] = &[
    "data",
    "preset",
    "teachers",
    "model",
    "teacher_epochs",
    "teacher_shift",
    "teacher_batch",
    "teacher_lr",
    "teacher_feature_l2",
    "seed",
    "eval_size",
];

/// Flags a grid may not set: the runner owns them.
const RUNNER_KEYS: &[&str] = &["reuse_teachers", "bin_dir", "jobs"];

/// One cell: `pate lab` flags by their snake_case names.
pub type Cell = Table;

/// A parsed lab grid.
pub type Grid = super::grid::Grid<Cell>;

#[derive(Parser)]
struct LabCli {
    #[command(flatten)]
    args: LabArgs,
}

/// Parses lab grid TOML (`experiment = "lab"` required) and checks every
/// cell's flags as `pate lab` would read them, before anything runs.
pub fn parse(text: &str) -> anyhow::Result<Grid> {
    let grid: Grid = parse_cells(text, "lab", true, &[])?;
    for (i, cell) in grid.cells.iter().enumerate() {
        check(cell).with_context(|| format!("cell {}", i + 1))?;
    }
    Ok(grid)
}

/// The cell's flags as `pate lab` parses them.
fn check(cell: &Cell) -> anyhow::Result<LabArgs> {
    if let Some(k) = cell.keys().find(|k| RUNNER_KEYS.contains(&k.as_str())) {
        anyhow::bail!("`{k}` is the runner's to set, not a grid key");
    }
    let argv = flags(cell)?;
    let cli = LabCli::try_parse_from(std::iter::once("lab".to_string()).chain(argv.iter().cloned())).map_err(|e| {
        anyhow::anyhow!(
            "not a `pate lab` flag set ({}): {}",
            argv.join(" "),
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    Ok(cli.args)
}

/// `--flag=value` for each key (`true` is the bare flag, `false` is
/// `--flag=false`, which only optional switches such as
/// `--semi-supervised` accept).
pub fn flags(cell: &Cell) -> anyhow::Result<Vec<String>> {
    cell.iter()
        .map(|(k, v)| {
            let flag = format!("--{}", k.replace('_', "-"));
            Ok(match v {
                Value::Boolean(true) => flag,
                Value::String(s) => format!("{flag}={s}"),
                Value::Integer(_) | Value::Float(_) | Value::Boolean(false) => format!("{flag}={v}"),
                other => anyhow::bail!("`{k}`: a flag takes a string, number or boolean, got {other}"),
            })
        })
        .collect()
}

/// The cell's directory name: its index and its flags, shortened.
fn slug(i: usize, cell: &Cell) -> String {
    let body: String = cell
        .iter()
        .map(|(k, v)| {
            let short: String = k.split('_').filter_map(|w| w.chars().next()).collect();
            format!("{short}{}", v.to_string().trim_matches('"'))
        })
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("{i:03}-{body}")
}

/// Cells equal on the teacher flags train the same teachers.
fn teacher_key(cell: &Cell) -> String {
    TEACHER_KEYS
        .iter()
        .map(|k| format!("{k}={}", cell.get(*k).map_or("-".into(), ToString::to_string)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cell without its seed: its group.
fn group_key(cell: &Cell) -> String {
    let mut c = cell.clone();
    c.remove("seed");
    c.to_string()
}

/// Hard-links every file under `from` into `to` (same tree), which must not exist.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            std::fs::hard_link(&src, &dst)
                .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
                .with_context(|| format!("linking {}", src.display()))?;
        }
    }
    Ok(())
}

/// Runs `pate lab` for one cell into `dir`, its teachers from `cache` when
/// an earlier cell trained them (and into it when this one trains them).
async fn run_lab(
    cell: &Cell,
    dir: &Path,
    cache: &Path,
    args: &RunArgs,
    data: Option<&Path>,
) -> anyhow::Result<LabReport> {
    let mut argv = vec!["lab".to_string()];
    argv.extend(flags(cell)?);
    if let (Some(d), false) = (data, cell.contains_key("data")) {
        argv.push(format!("--data={}", d.display()));
    }
    if let Some(b) = &args.bin_dir {
        argv.push(format!("--bin-dir={}", b.display()));
    }
    if let Some(j) = args.jobs {
        argv.push(format!("--jobs={j}"));
    }
    let shared = cache.join("done").is_file();
    if shared {
        link_tree(&cache.join("teachers"), &dir.join("teachers"))?;
        argv.push("--reuse-teachers".into());
        say!("  teachers shared from {}", cache.display());
    }
    argv.push(format!("--out={}", dir.display()));
    let log = std::fs::File::create(dir.join("lab.log"))
        .with_context(|| format!("creating {}", dir.join("lab.log").display()))?;
    let exe = std::env::current_exe().context("locating the pate binary")?;
    let status = tokio::process::Command::new(&exe)
        .args(&argv)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("starting {}", exe.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(dir.join("lab.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        anyhow::bail!(
            "pate lab failed ({status}); the end of {}:\n{}",
            dir.join("lab.log").display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    if !shared {
        let _ = std::fs::remove_dir_all(cache);
        link_tree(&dir.join("teachers"), &cache.join("teachers"))?;
        std::fs::write(cache.join("done"), teacher_key(cell))?;
    }
    let bytes = std::fs::read(dir.join("report.json"))
        .with_context(|| format!("reading {}", dir.join("report.json").display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Runs a lab grid (the `pate experiment run` entry for such files).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let grid = parse(&text).with_context(|| format!("in {}", args.file.display()))?;
    let out = args
        .out
        .clone()
        .or(grid.out.clone())
        .unwrap_or_else(|| PathBuf::from("experiment-out"));
    let data = args.data.clone().or(grid.data.clone());
    let cache_root = args.cache.clone().unwrap_or_else(|| out.join("teachers"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let total = grid.cells.len();
    say!(
        "pate experiment run {} (lab): {total} cells, output {}",
        args.file.display(),
        out.display()
    );
    let bar = Bar::cells(total);
    let mut done: Vec<(Cell, LabReport)> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (i, cell) in grid.cells.iter().enumerate() {
        let name = slug(i, cell);
        bar.message(name.clone());
        let dir = out.join("cells").join(&name);
        let key = teacher_key(cell);
        let slot = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key.clone());
            keys.len() - 1
        });
        let cache = cache_root.join(format!("set-{slot:03}"));
        if std::fs::read_to_string(cache.join("done")).is_ok_and(|k| k != key) {
            // A set left by another grid under the same name: not these teachers.
            let _ = std::fs::remove_dir_all(&cache);
        }
        let heading = format!("[{:>3}/{total}] {}", i + 1, dir.display());
        let report: LabReport = run_cell(&dir, cell, &heading, || {
            run_lab(cell, &dir, &cache, &args, data.as_deref())
        })
        .await
        .with_context(|| format!("cell {} ({name})", i + 1))?;
        say!(
            "  student {:.4}, epsilon {:.2}, {} answered",
            report.student_accuracy,
            report.epsilon,
            report.queries_answered
        );
        done.push((cell.clone(), report));
        write_outputs(&done, &out, &args.file)?;
        bar.inc(1);
    }
    drop(bar);
    say!(
        "\n{total} cells; wrote {}, {} and {}",
        out.join("results.csv").display(),
        out.join("report.md").display(),
        out.join("summary.json").display()
    );
    Ok(())
}

/// The figures of a report that a group averages, by column name.
fn figures(r: &LabReport) -> Vec<(&'static str, f64)> {
    let mean_teacher = r.teacher_accuracies.iter().sum::<f64>() / r.teacher_accuracies.len().max(1) as f64;
    vec![
        ("student_accuracy", r.student_accuracy),
        ("epsilon", r.epsilon),
        ("epsilon_released", r.epsilon_released.unwrap_or(f64::NAN)),
        // The release's own distribution (its mean and sd over the noise),
        // which says how far the one draw could have landed.
        ("release_mean", r.release.as_ref().map_or(f64::NAN, |p| p.mean)),
        ("release_sd", r.release.as_ref().map_or(f64::NAN, |p| p.noise_std)),
        ("epsilon_data_dependent", r.epsilon_data_dependent.unwrap_or(f64::NAN)),
        ("epsilon_data_independent", r.epsilon_data_independent),
        ("queries_answered", r.queries_answered as f64),
        ("label_accuracy", r.label_accuracy),
        ("ensemble_accuracy", r.ensemble_accuracy),
        ("mean_teacher_accuracy", mean_teacher),
        ("train_teachers_seconds", r.train_teachers_seconds),
        ("total_seconds", r.total_seconds),
    ]
}

/// `results.csv` (one line per cell), `report.md` and `summary.json` (one
/// entry per group: mean ± sd over its seeds) and the plot.
fn write_outputs(done: &[(Cell, LabReport)], out: &Path, file: &Path) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let names: Vec<&str> = done
        .first()
        .map(|(_, r)| figures(r).iter().map(|f| f.0).collect())
        .unwrap_or_default();
    w.write_record(["cell", "flags"].iter().copied().chain(names.iter().copied()))?;
    for (i, (cell, r)) in done.iter().enumerate() {
        let row = [slug(i, cell), flags(cell)?.join(" ")]
            .into_iter()
            .chain(figures(r).into_iter().map(|(_, v)| format!("{v:.4}")));
        w.write_record(row)?;
    }
    std::fs::write(out.join("results.csv"), w.into_inner()?)?;

    let mut md = format!(
        "# Results of `pate experiment run {}`\n\nEach row is a group of cells that differ only in their seed: mean ± sample standard deviation. \
`epsilon` is the guarantee each run stands behind (the smaller of the released and the data-independent epsilon, at the run's delta); \
the data-dependent epsilon is not a guarantee. Every cell's `pate lab` output is under cells/.\n\n\
| flags | seeds | student accuracy | epsilon | released | release mean | release sd | data-dep. | data-indep. | answered | label acc. | ensemble | teacher | teachers s | total s |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        file.display()
    );
    let mut summary = Vec::new();
    let mut series = Vec::new();
    for members in group_indices(done, |(cell, _)| group_key(cell)) {
        let first = &done[members[0]].0;
        let mut label = first.clone();
        label.remove("seed");
        let label = flags(&label)?.join(" ");
        let seeds: Vec<String> = members
            .iter()
            .map(|&i| done[i].0.get("seed").map_or("0".into(), ToString::to_string))
            .collect();
        let mut stats = serde_json::Map::new();
        let _ = write!(md, "| `{label}` | {} |", seeds.join(", "));
        for (k, name) in names.iter().enumerate() {
            let v: Vec<f64> = members.iter().map(|&i| figures(&done[i].1)[k].1).collect();
            let (m, sd) = mean_sd(&v);
            let _ = write!(md, " {m:.3} ± {sd:.3} |");
            stats.insert((*name).into(), serde_json::json!({ "mean": m, "sd": sd, "values": v }));
        }
        md.push('\n');
        summary.push(serde_json::json!({ "flags": label, "seeds": seeds, "figures": stats }));
        let mut points: Vec<(f64, f64)> = members
            .iter()
            .map(|&i| (done[i].1.epsilon, done[i].1.student_accuracy))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push((if label.is_empty() { "defaults".into() } else { label }, points));
    }
    let chart = Chart::new(
        "Student accuracy against the guaranteed epsilon (each seed a point)",
        "epsilon (guarantee)",
        "student accuracy",
        series,
    );
    let written = plots::save(&chart, &out.join("accuracy-epsilon"))?;
    let _ = writeln!(
        md,
        "\nPlot: {}.",
        written
            .iter()
            .filter_map(|p| p.strip_prefix(out).ok())
            .map(|p| format!("[{0}]({0})", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_lab_flags() {
        let g = parse(
            "experiment = \"lab\"\nout = \"o\"\n[defaults]\nteachers = 20\nsemi_supervised = false\n[[grid]]\ntarget_epsilon = [1.5, 2.0]\nseeds = [0, 1]\nmodel = \"cnn\"\n",
        )
        .expect("parse");
        assert_eq!(g.cells.len(), 4);
        // Axes vary in key order, the last fastest: seed 0 at 1.5 and 2.0, then seed 1.
        let f = flags(&g.cells[2]).expect("flags");
        assert!(
            f.contains(&"--target-epsilon=1.5".to_string()) && f.contains(&"--seed=1".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"--semi-supervised=false".to_string()) && f.contains(&"--model=cnn".to_string()),
            "{f:?}"
        );
        let a = check(&g.cells[2]).expect("pate lab reads it");
        assert_eq!(
            (a.teachers, a.target_epsilon, a.seed, a.semi_supervised),
            (Some(20), Some(1.5), 1, Some(false))
        );
        // Seeds of one configuration are one group; teachers are shared across targets, not seeds.
        assert_eq!(group_key(&g.cells[0]), group_key(&g.cells[2]));
        assert_ne!(group_key(&g.cells[0]), group_key(&g.cells[1]));
        assert_eq!(teacher_key(&g.cells[0]), teacher_key(&g.cells[1]));
        assert_ne!(teacher_key(&g.cells[0]), teacher_key(&g.cells[2]));
        assert!(slug(3, &g.cells[3]).starts_with("003-"));
    }

    #[test]
    fn bad_grids_are_refused_before_anything_runs() {
        let bad = |body: &str| {
            parse(&format!("experiment = \"lab\"\n{body}"))
                .expect_err(body)
                .to_string()
        };
        let why = |body: &str| format!("{:#}", parse(&format!("experiment = \"lab\"\n{body}")).expect_err(body));
        assert!(why("[[grid]]\nteachers = \"many\"\n").contains("not a `pate lab` flag set"));
        assert!(why("[[grid]]\nno_such_flag = 1\n").contains("not a `pate lab` flag set"));
        assert!(why("[[grid]]\njobs = 4\n").contains("runner's"));
        assert!(why("[[grid]]\nteachers = [[1]]\n").contains("flag takes"));
        assert!(bad("[[grid]]\nout = \"x\"\n").contains("runner"));
        assert!(parse("[[grid]]\nteachers = 3\n").is_err(), "the kind must be named");
    }

    #[test]
    fn shared_teachers_are_hard_links() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let from = dir.path().join("a");
        std::fs::create_dir_all(from.join("teachers/0"))?;
        std::fs::write(from.join("teachers/0/meta.json"), "{}")?;
        link_tree(&from, &dir.path().join("b"))?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b/teachers/0/meta.json"))?,
            "{}"
        );
        Ok(())
    }
}
