//! Experiment grids from TOML. A file has optional `out` and `data`, a
//! `[defaults]` table, and any number of `[[grid]]` tables; each grid is
//! merged over the defaults and expanded as the Cartesian product of its
//! list values (a scalar is a list of one). Keys are [`Cell`]'s fields
//! (`seeds` is accepted for `seed`); an unknown key is an error.
//!
//! ```toml
//! out = "docs/experiments/backdoor"
//! [defaults]
//! teachers = 10
//! [[grid]]
//! mode = "pate"
//! poisoned_teachers = [0, 1, 2]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use pate_ml::model::ModelKind;
use pate_ml::trigger::TriggerArgs;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::backdoor::{BackdoorArgs, Mode};

/// One configuration of a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cell {
    /// pate or single.
    pub mode: Mode,
    /// Teachers.
    pub teachers: usize,
    /// Poisoned teachers (the first M, unless `poisoned_ids` is given).
    pub poisoned_teachers: usize,
    /// Poisoned teachers by index (a list is one value; a list of lists is an axis).
    pub poisoned_ids: Vec<usize>,
    /// Poison rate.
    pub poison_rate: f64,
    /// LNMax Laplace scale.
    pub noise_scale: f64,
    /// Student queries.
    pub queries: usize,
    /// Seed.
    pub seed: u64,
    /// Control: share of public items carrying the trigger.
    pub public_trigger_rate: f64,
    /// Teacher epochs.
    pub teacher_epochs: usize,
    /// Student epochs.
    pub student_epochs: usize,
    /// Distillation temperature (single mode).
    pub temperature: f64,
    /// Weight of the hard term of the distillation loss (single mode).
    pub hard_weight: f64,
    /// Shift augmentation of distillation, in pixels (single mode).
    pub max_shift: usize,
    /// Target class.
    pub target: u8,
    /// Model.
    pub model: ModelKind,
    /// The trigger (keys `trigger`, `trigger_size`, `trigger_corner`).
    #[serde(flatten)]
    pub trigger: TriggerArgs,
    /// Evaluation items.
    pub eval_size: usize,
    /// Delta of the reported epsilon.
    pub delta: f64,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            mode: Mode::Pate,
            teachers: 10,
            poisoned_teachers: 1,
            poisoned_ids: Vec::new(),
            poison_rate: 0.1,
            noise_scale: 2.0,
            queries: 1000,
            seed: 0,
            public_trigger_rate: 0.0,
            teacher_epochs: 5,
            student_epochs: 30,
            temperature: 1.0,
            hard_weight: 0.0,
            max_shift: 0,
            target: 0,
            model: ModelKind::Mlp,
            trigger: TriggerArgs::default(),
            eval_size: 1000,
            delta: 1e-5,
        }
    }
}

impl Cell {
    /// A short name for directories and progress lines.
    pub fn slug(&self) -> String {
        match self.mode {
            Mode::Pate => format!(
                "pate-n{}-m{}-p{}-b{}-q{}-pt{}-s{}",
                self.teachers, self.poisoned(), self.poison_rate, self.noise_scale, self.queries, self.public_trigger_rate, self.seed
            ),
            Mode::Single => {
                // Only a non-zero shift is named, so that older cell directories keep their names.
                let shift = if self.max_shift > 0 { format!("-a{}", self.max_shift) } else { String::new() };
                format!(
                    "single-p{}-q{}-T{}-w{}{shift}-pt{}-s{}",
                    self.poison_rate, self.queries, self.temperature, self.hard_weight, self.public_trigger_rate, self.seed
                )
            }
        }
    }

    /// The noise (PATE) or the distillation settings (single) of this cell,
    /// as the `b / (T, w, shift, epochs)` column of the report tables.
    pub fn knobs(&self) -> String {
        match self.mode {
            Mode::Pate => self.noise_scale.to_string(),
            Mode::Single => format!("T = {}, w = {}, shift {}, {} epochs", self.temperature, self.hard_weight, self.max_shift, self.student_epochs),
        }
    }

    /// `poisoned_teachers`, or the listed indices joined by `_` (`0_5`).
    fn poisoned(&self) -> String {
        if self.poisoned_ids.is_empty() {
            return self.poisoned_teachers.to_string();
        }
        self.poisoned_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join("_")
    }

    /// The `pate experiment backdoor` arguments of this cell.
    pub fn to_args(&self, data: Option<PathBuf>, bin_dir: Option<PathBuf>, jobs: Option<usize>, cache: &Path, out: PathBuf) -> BackdoorArgs {
        BackdoorArgs {
            data,
            teachers: self.teachers,
            poisoned_teachers: self.poisoned_teachers,
            poisoned_ids: self.poisoned_ids.clone(),
            poison_rate: self.poison_rate,
            queries: self.queries,
            mode: self.mode,
            target: self.target,
            trigger: self.trigger,
            noise_scale: self.noise_scale,
            seed: self.seed,
            teacher_epochs: self.teacher_epochs,
            student_epochs: self.student_epochs,
            temperature: self.temperature,
            hard_weight: self.hard_weight,
            max_shift: self.max_shift,
            public_trigger_rate: self.public_trigger_rate,
            eval_size: self.eval_size,
            model: self.model,
            epsilon_limit: 1e9,
            delta: self.delta,
            jobs,
            bin_dir,
            cache: Some(cache.to_path_buf()),
            out,
        }
    }
}

/// A parsed grid file (cells of a backdoor grid unless said otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid<C = Cell> {
    /// Output directory named in the file.
    pub out: Option<PathBuf>,
    /// Data directory named in the file.
    pub data: Option<PathBuf>,
    /// Every cell, in file order then product order.
    pub cells: Vec<C>,
}

/// The `experiment` a grid file names (`robustness`, `lab`), if any: it
/// decides which runner reads the file.
pub fn kind_of(path: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let top: Table = text.parse().with_context(|| format!("{}: not valid TOML", path.display()))?;
    Ok(top.get("experiment").and_then(Value::as_str).map(str::to_string))
}

/// Reads and parses a grid file.
pub fn load(path: &Path) -> anyhow::Result<Grid> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses grid TOML.
pub fn parse(text: &str) -> anyhow::Result<Grid> {
    // `experiment = "backdoor"` may name the kind (robustness grids must).
    parse_cells(text, "backdoor", false, &["poisoned_ids"])
}

/// Parses grid TOML whose cells are `C`s, for every kind of experiment:
/// `experiment` must be `kind` (or may be absent, unless `required`);
/// a key in `list_keys` takes a list as one value, so a flat list (or an
/// empty one) is one value and a list of lists an axis; `out` is the
/// runner's, per cell, never a grid key.
pub(crate) fn parse_cells<C: DeserializeOwned>(text: &str, kind: &str, required: bool, list_keys: &[&str]) -> anyhow::Result<Grid<C>> {
    let mut top: Table = text.parse().context("not valid TOML")?;
    let string = |v: Value, key: &str| -> anyhow::Result<PathBuf> {
        v.as_str().map(PathBuf::from).with_context(|| format!("`{key}` must be a string"))
    };
    match top.remove("experiment") {
        None if !required => {}
        Some(Value::String(s)) if s == kind => {}
        other => bail!("`experiment` must be \"{kind}\" here (each kind of grid is read by its own experiment), got {other:?}"),
    }
    let out = top.remove("out").map(|v| string(v, "out")).transpose()?;
    let data = top.remove("data").map(|v| string(v, "data")).transpose()?;
    let defaults = match top.remove("defaults") {
        Some(Value::Table(t)) => t,
        Some(_) => bail!("`defaults` must be a table"),
        None => Table::new(),
    };
    let grids = match top.remove("grid") {
        Some(Value::Array(a)) => a,
        Some(_) => bail!("`grid` must be an array of tables ([[grid]])"),
        None => vec![Value::Table(Table::new())],
    };
    if let Some(k) = top.keys().next() {
        bail!("unknown top-level key `{k}` (expected experiment, out, data, defaults, grid)");
    }
    let mut cells = Vec::new();
    for (g, grid) in grids.into_iter().enumerate() {
        let Value::Table(grid) = grid else { bail!("grid {g} is not a table") };
        let mut merged = normalise(defaults.clone());
        merged.extend(normalise(grid));
        if merged.contains_key("out") {
            bail!("grid {g}: `out` is set by the runner, per cell");
        }
        let axes: Vec<(String, Vec<Value>)> = merged
            .into_iter()
            .map(|(k, v)| match v {
                Value::Array(a) if list_keys.contains(&k.as_str()) && (a.is_empty() || !a.iter().all(Value::is_array)) => Ok((k, vec![Value::Array(a)])),
                Value::Array(a) if a.is_empty() => bail!("grid {g}: `{k}` is an empty list"),
                Value::Array(a) => Ok((k, a)),
                v => Ok((k, vec![v])),
            })
            .collect::<anyhow::Result<_>>()?;
        for combo in product(&axes) {
            let cell: C = Value::Table(combo).try_into().with_context(|| format!("grid {g}"))?;
            cells.push(cell);
        }
    }
    Ok(Grid { out, data, cells })
}

/// Indices of `items` grouped by `key` (a group per distinct key, in order
/// of first appearance): the seeds of one configuration, in every grid.
pub(crate) fn group_indices<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<Vec<usize>> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.1.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// `seeds` read as `seed`.
pub(crate) fn normalise(t: Table) -> Table {
    t.into_iter().map(|(k, v)| (if k == "seeds" { "seed".to_string() } else { k }, v)).collect()
}

/// Every combination of one value per axis, the last axis varying fastest.
pub(crate) fn product(axes: &[(String, Vec<Value>)]) -> Vec<Table> {
    let mut out = vec![Table::new()];
    for (key, values) in axes {
        out = out
            .into_iter()
            .flat_map(|t| {
                values.iter().map(move |v| {
                    let mut t = t.clone();
                    t.insert(key.clone(), v.clone());
                    t
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pate_ml::trigger::{Corner, Pattern};

    #[test]
    fn expands_products_over_defaults() {
        let g = parse(
            r#"
            out = "o"
            [defaults]
            teachers = 10
            seeds = [1, 2]
            [[grid]]
            poisoned_teachers = [0, 1, 3]
            [[grid]]
            mode = "single"
            queries = 9000
            teachers = [20]
            "#,
        )
        .expect("parse");
        assert_eq!(g.out, Some(PathBuf::from("o")));
        assert_eq!(g.cells.len(), 3 * 2 + 2);
        assert!(g.cells[..6].iter().all(|c| c.teachers == 10 && c.mode == Mode::Pate));
        let pairs: Vec<(usize, u64)> = g.cells[..6].iter().map(|c| (c.poisoned_teachers, c.seed)).collect();
        assert_eq!(pairs, vec![(0, 1), (0, 2), (1, 1), (1, 2), (3, 1), (3, 2)]);
        assert!(g.cells[6..].iter().all(|c| c.mode == Mode::Single && c.queries == 9000 && c.teachers == 20));
        // Untouched fields keep the defaults.
        assert_eq!(g.cells[0].noise_scale, Cell::default().noise_scale);
    }

    #[test]
    fn poisoned_ids_is_one_list_or_an_axis_of_lists() {
        let g = parse("[[grid]]\npoisoned_ids = [2, 7]\n[[grid]]\npoisoned_ids = [[0], [4, 9]]\n").expect("parse");
        let ids: Vec<Vec<usize>> = g.cells.iter().map(|c| c.poisoned_ids.clone()).collect();
        assert_eq!(ids, vec![vec![2, 7], vec![0], vec![4, 9]]);
        assert_eq!(g.cells[2].slug(), "pate-n10-m4_9-p0.1-b2-q1000-pt0-s0");
        assert!(parse("[[grid]]\npoisoned_ids = [\"a\"]\n").is_err(), "not indices");
    }

    #[test]
    fn a_cell_written_before_an_option_existed_reads_as_its_default() {
        let mut old = serde_json::to_value(Cell { seed: 3, ..Cell::default() }).expect("json");
        old.as_object_mut().expect("object").remove("max_shift");
        let read: Cell = serde_json::from_value(old).expect("older cell.json");
        assert_eq!(read, Cell { seed: 3, ..Cell::default() });
        assert_eq!(read.slug(), "pate-n10-m1-p0.1-b2-q1000-pt0-s3");
        let single = Cell { mode: Mode::Single, max_shift: 1, ..Cell::default() };
        assert_eq!(single.slug(), "single-p0.1-q1000-T1-w0-a1-pt0-s0");
        assert_eq!(Cell { max_shift: 0, ..single }.slug(), "single-p0.1-q1000-T1-w0-pt0-s0");
    }

    #[test]
    fn trigger_keys_are_the_trigger_flags() {
        let g = parse("[defaults]\ntrigger = \"solid\"\n[[grid]]\ntrigger_size = [2, 3]\ntrigger_corner = \"top-left\"\n").expect("parse");
        let want = |size| TriggerArgs { pattern: Pattern::Solid, size, corner: Corner::TopLeft };
        assert_eq!(g.cells.iter().map(|c| c.trigger).collect::<Vec<_>>(), vec![want(2), want(3)]);
        // cell.json keeps the flat keys, and reads back.
        let json = serde_json::to_value(&g.cells[0]).expect("json");
        assert_eq!(json["trigger_size"], 2);
        assert_eq!(serde_json::from_value::<Cell>(json).expect("cell.json"), g.cells[0]);
        assert!(parse("[[grid]]\ntrigger_colour = \"red\"\n").is_err(), "unknown key next to the trigger's");
    }

    #[test]
    fn no_grid_is_one_cell_of_defaults() {
        let g = parse("[defaults]\nnoise_scale = 5.0\n").expect("parse");
        assert_eq!(g.cells, vec![Cell { noise_scale: 5.0, ..Cell::default() }]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("[[grid]]\npoisoned = [1]\n").is_err(), "unknown key");
        assert!(parse("bogus = 1\n").is_err(), "unknown top-level key");
        assert!(parse("[[grid]]\nteachers = []\n").is_err(), "empty list");
        assert!(parse("[[grid]]\nmode = \"federated\"\n").is_err(), "bad mode");
        assert!(parse("[[grid]]\nteachers = \"ten\"\n").is_err(), "bad type");
        assert!(parse("[[grid\n").is_err(), "bad TOML");
    }
}
