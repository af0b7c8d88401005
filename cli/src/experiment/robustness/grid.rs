//! Robustness grids for `pate experiment run`: a TOML file with
//! `experiment = "robustness"`, optional `out` and `data`, a `[defaults]`
//! table and `[[grid]]` tables whose keys are [`RobustnessArgs`]' fields
//! (`seeds` for `seed`), expanded as in the backdoor grids
//! ([`crate::experiment::grid`]). Each cell runs into `OUT/cells/NNN-...`
//! (a cell already done with the same configuration is reused); cells that
//! differ only in their seed form a group, whose every number is averaged
//! (mean and standard deviation) into `OUT/report.md`, `OUT/summary.json`
//! and the group's mean plots `OUT/<group>-*.png`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use super::{RobustnessArgs, RobustnessReport};
use crate::experiment::grid::{group_indices, parse_cells};
use crate::experiment::runner::{run_cell, RunArgs};
use crate::progress::{say, Bar};

/// A parsed robustness grid.
pub type Grid = crate::experiment::grid::Grid<RobustnessArgs>;

/// Parses robustness grid TOML (`experiment = "robustness"` required; a
/// flat list of `epsilons` or `temperatures` is one value) and validates
/// every cell.
pub fn parse(text: &str) -> anyhow::Result<Grid> {
    let grid: Grid = parse_cells(text, "robustness", true, &["epsilons", "temperatures"])?;
    for (i, cell) in grid.cells.iter().enumerate() {
        cell.validate().with_context(|| format!("cell {}", i + 1))?;
    }
    Ok(grid)
}

/// The cell's configuration without its seed and output (its group).
fn group_key(cell: &RobustnessArgs) -> String {
    let mut c = cell.clone();
    c.seed = 0;
    c.out = PathBuf::new();
    serde_json::to_string(&c).unwrap_or_default()
}

/// Mean (or, with `sd`, standard deviation) of every number in `values`,
/// recursively through objects and arrays; other values from the first.
fn aggregate(values: &[&Value], sd: bool) -> Value {
    let Some(first) = values.first() else { return Value::Null };
    match first {
        Value::Number(_) => {
            let v: Vec<f64> = values.iter().filter_map(|x| x.as_f64()).collect();
            let n = v.len().max(1) as f64;
            let m = v.iter().sum::<f64>() / n;
            if sd {
                let out = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
                serde_json::Number::from_f64(out).map_or(Value::Null, Value::Number)
            } else if first.is_u64() {
                // Counts and seeds stay integers, so the mean reads back as a report.
                Value::from(m.round() as u64)
            } else {
                serde_json::Number::from_f64(m).map_or(Value::Null, Value::Number)
            }
        }
        Value::Object(o) => Value::Object(
            o.keys().map(|k| (k.clone(), aggregate(&values.iter().filter_map(|x| x.get(k)).collect::<Vec<_>>(), sd))).collect(),
        ),
        Value::Array(a) => Value::Array(
            (0..a.len()).map(|i| aggregate(&values.iter().filter_map(|x| x.get(i)).collect::<Vec<_>>(), sd)).collect(),
        ),
        other => (*other).clone(),
    }
}

fn at(v: &Value, path: &[&str]) -> f64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The headline figures of a group: mean ± sd over its seeds.
fn group_table(mean: &Value, sd: &Value, seeds: &[u64]) -> String {
    let mut s = String::new();
    let mut line = |name: &str, path: &[&str]| {
        let _ = writeln!(s, "| {name} | {:.3} ± {:.3} |", at(mean, path), at(sd, path));
    };
    line("clean accuracy", &["clean_accuracy"]);
    for k in mean["fgsm_accuracy"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        line(&format!("FGSM eps {k}: standard"), &["fgsm_accuracy", &k]);
        line(&format!("FGSM eps {k}: FGSM-trained"), &["adv_trained_fgsm_accuracy", &k]);
        line(&format!("FGSM eps {k}: R+FGSM-trained"), &["rfgsm_trained_fgsm_accuracy", &k]);
    }
    for (t, m) in mean["distilled_fgsm_accuracy"].as_object().cloned().unwrap_or_default() {
        line(&format!("distilled T={t}: clean"), &["distilled_clean_accuracy", &t]);
        line(&format!("distilled T={t}: median logit gap at T = 1"), &["distilled_saturation", &t, "median_logit_gap"]);
        line(&format!("distilled T={t}: items with all-zero input gradient"), &["distilled_saturation", &t, "zero_gradient_items"]);
        for k in m.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            line(&format!("distilled T={t}: white-box FGSM eps {k}"), &["distilled_fgsm_accuracy", &t, &k]);
            line(&format!("distilled T={t}: FGSM through logits / T eps {k}"), &["distilled_fgsm_at_t_accuracy", &t, &k]);
            line(&format!("distilled T={t}: substitute transfer eps {k}"), &["distilled_transfer_accuracy", &t, &k]);
        }
    }
    for key in ["ece_before", "ece_after", "nll_before", "nll_after", "temperature", "dknn_auc_fgsm", "dknn_auc_trigger", "dknn_auc_ood", "poisoned_asr", "finetune_asr", "distill_asr", "clean_asr", "finetune_accuracy", "distill_accuracy"] {
        line(key, &[key]);
    }
    format!("Seeds {seeds:?}.\n\n| figure | mean ± sd |\n|---|---|\n{s}")
}

/// Runs a robustness grid (the `pate experiment run` entry for such files).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let grid = parse(&text).with_context(|| format!("in {}", args.file.display()))?;
    let out = args.out.clone().or(grid.out.clone()).unwrap_or_else(|| PathBuf::from("experiment-out"));
    let data = args.data.clone().or(grid.data.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let total = grid.cells.len();
    say!("pate experiment run {} (robustness): {total} cells, output {}", args.file.display(), out.display());
    let mut done: Vec<(RobustnessArgs, RobustnessReport)> = Vec::new();
    let bar = Bar::cells(total);
    for (i, cell) in grid.cells.iter().enumerate() {
        let dir = out.join("cells").join(format!("{i:03}-{}-s{}", cell.model, cell.seed));
        bar.message(format!("{}-s{}", cell.model, cell.seed));
        let mut cell = cell.clone();
        cell.out = dir.clone();
        if cell.data.is_none() {
            cell.data = data.clone();
        }
        let heading = format!("[{:>3}/{total}] {}", i + 1, dir.display());
        let report: RobustnessReport = run_cell(&dir, &cell, &heading, || super::run(cell.clone())).await.with_context(|| format!("cell {}", i + 1))?;
        done.push((cell, report));
        bar.inc(1);
    }
    drop(bar);
    let groups = group_indices(&done, |(cell, _)| group_key(cell));
    let mut md = format!("# Results of `pate experiment run {}`\n\nEach figure is the mean ± standard deviation over the seeds of its group; every cell's own report.md is under cells/.\n", args.file.display());
    let mut summary = Vec::new();
    for (g, members) in groups.iter().enumerate() {
        let values: Vec<Value> = members.iter().map(|&i| serde_json::to_value(&done[i].1)).collect::<Result<_, _>>()?;
        let refs: Vec<&Value> = values.iter().collect();
        let (mean, sd) = (aggregate(&refs, false), aggregate(&refs, true));
        let seeds: Vec<u64> = members.iter().map(|&i| done[i].0.seed).collect();
        let first = &done[members[0]].0;
        let name = format!("group{g}-{}", first.model);
        let _ = writeln!(md, "\n## {name}: {} model, {} training items, {} epochs\n", first.model, done[members[0]].1.train_items, first.epochs);
        md.push_str(&group_table(&mean, &sd, &seeds));
        let mut mean_report: RobustnessReport = serde_json::from_value(mean.clone()).context("averaging the reports")?;
        mean_report.args.out = out.clone();
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir)?;
        let plots = super::report::draw(&mean_report, &dir)?;
        let _ = writeln!(md, "\nMean plots: {}.", plots.iter().filter(|p| p.extension().is_some_and(|e| e == "png")).filter_map(|p| p.strip_prefix(&out).ok()).map(|p| format!("[{0}]({0})", p.display())).collect::<Vec<_>>().join(", "));
        summary.push(serde_json::json!({ "group": name, "seeds": seeds, "mean": mean, "sd": sd }));
    }
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    say!("\n{total} cells; wrote {} and {}", out.join("report.md").display(), out.join("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_axes_and_list_options() {
        let g = parse(
            "experiment = \"robustness\"\nout = \"o\"\n[defaults]\ntrain_size = 500\nepsilons = [0.1, 0.3]\n[[grid]]\nseeds = [1, 2]\n[[grid]]\nmodel = \"cnn\"\ntemperatures = [[20.0], [50.0, 100.0]]\n",
        )
        .expect("parse");
        assert_eq!(g.out, Some(PathBuf::from("o")));
        assert_eq!(g.cells.len(), 4);
        assert!(g.cells.iter().all(|c| c.train_size == 500 && c.epsilons == vec![0.1, 0.3]));
        assert_eq!(g.cells[1].seed, 2);
        assert_eq!(g.cells[3].temperatures, vec![50.0, 100.0]);
        assert_eq!(group_key(&g.cells[0]), group_key(&g.cells[1]));
        assert_ne!(group_key(&g.cells[0]), group_key(&g.cells[2]));
    }

    #[test]
    fn rejects_bad_grids() {
        assert!(parse("[[grid]]\nseed = 1\n").is_err(), "no experiment key");
        assert!(parse("experiment = \"robustness\"\n[[grid]]\nbogus = 1\n").is_err(), "unknown key");
        assert!(parse("experiment = \"robustness\"\n[[grid]]\nepsilons = [2.0]\n").is_err(), "epsilon out of range");
        assert!(parse("experiment = \"robustness\"\n[[grid]]\nout = \"x\"\n").is_err());
    }

    #[test]
    fn aggregates_means_and_spreads() {
        let a = serde_json::json!({"x": 1.0, "m": {"0.1": 2.0}, "v": [1.0, 3.0], "s": "a"});
        let b = serde_json::json!({"x": 3.0, "m": {"0.1": 4.0}, "v": [3.0, 5.0], "s": "b"});
        let mean = aggregate(&[&a, &b], false);
        assert_eq!(mean, serde_json::json!({"x": 2.0, "m": {"0.1": 3.0}, "v": [2.0, 4.0], "s": "a"}));
        let sd = aggregate(&[&a, &b], true);
        assert!((sd["x"].as_f64().expect("sd") - 2f64.sqrt()).abs() < 1e-12);
    }
}
