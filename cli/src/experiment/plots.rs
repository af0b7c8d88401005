//! Plots of a grid's results, as PNG and SVG (plotters): ASR and clean
//! accuracy against the number of poisoned teachers for teachers, ensemble,
//! noisy aggregate and student; student ASR against the share of triggered
//! public items (the control); student accuracy against epsilon; in single
//! mode, student ASR against the distillation temperature. PNG text
//! uses DejaVu Sans, shipped in `cli/assets/fonts` (free licence beside it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::backdoor::Mode;
use super::runner::Row;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// A line chart: named series of (x, y) points.
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Series, each drawn as a line with markers.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Whether x holds log10 values (tick labels show 10^x).
    pub log_x: bool,
    /// Fixed y range, if any.
    pub y_range: Option<(f64, f64)>,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

impl Chart {
    /// A chart of `series` with a linear x axis, a y range fitted to the
    /// points and the legend in the upper right corner.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>, series: Vec<(String, Vec<(f64, f64)>)>) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series,
            log_x: false,
            y_range: None,
            legend: SeriesLabelPosition::UpperRight,
        }
    }

    /// The same with a fixed y range.
    pub fn y_range(self, lo: f64, hi: f64) -> Self {
        Chart { y_range: Some((lo, hi)), ..self }
    }

    /// The same with the legend at `at`.
    pub fn legend(self, at: SeriesLabelPosition) -> Self {
        Chart { legend: at, ..self }
    }

    /// The same with x read as log10 values.
    pub fn log_x(self) -> Self {
        Chart { log_x: true, ..self }
    }
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("could not load the bundled font; PNG text may be missing");
        }
    });
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> anyhow::Result<()> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plotting {}: {e:?}", c.title);
    root.fill(&WHITE).map_err(e)?;
    let pts = c.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1) = pts.clone().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if x0 >= x1 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = (x1 - x0) * 0.05;
    let (y0, y1) = c.y_range.unwrap_or_else(|| {
        let (a, b) = pts.fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        (a - 0.05 * (b - a).max(0.1), b + 0.05 * (b - a).max(0.1))
    });
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), y0..y1)
        .map_err(e)?;
    let log_x = c.log_x;
    let fmt_x = move |v: &f64| {
        let v = if log_x { 10f64.powf(*v) } else { *v };
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    chart.configure_mesh().x_desc(&c.x_label).y_desc(&c.y_label).x_label_formatter(&fmt_x).draw().map_err(e)?;
    for (i, (name, points)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(c.legend.clone())
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `base.png` and `base.svg`; returns their paths.
pub fn save(chart: &Chart, base: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    let (png, svg) = (base.with_extension("png"), base.with_extension("svg"));
    draw(BitMapBackend::new(&png, (960, 640)).into_drawing_area(), chart)?;
    draw(SVGBackend::new(&svg, (960, 640)).into_drawing_area(), chart)?;
    Ok(vec![png, svg])
}

/// Means of `y` grouped by `x` (sorted by x), skipping `None`.
fn grouped(rows: &[&Row], x: impl Fn(&Row) -> f64, y: impl Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut groups: BTreeMap<i64, (f64, f64, usize)> = BTreeMap::new();
    for r in rows {
        if let Some(v) = y(r) {
            let k = x(r);
            let g = groups.entry((k * 1e6).round() as i64).or_insert((k, 0.0, 0));
            g.1 += v;
            g.2 += 1;
        }
    }
    groups.into_values().map(|(k, s, n)| (k, s / n as f64)).collect()
}

fn distinct(rows: &[&Row], f: impl Fn(&Row) -> f64) -> usize {
    let mut v: Vec<i64> = rows.iter().map(|r| (f(r) * 1e6).round() as i64).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Certified accuracy against radius, on clean and triggered evaluation
/// items, for the first seed of each number of poisoned teachers.
fn certified_chart(rows: &[&Row]) -> Option<Chart> {
    let mut firsts: BTreeMap<usize, &Row> = BTreeMap::new();
    rows.iter().for_each(|r| {
        firsts.entry(r.report.poisoned_teachers).or_insert(r);
    });
    let curve = |v: &[f64]| v.iter().enumerate().map(|(r, &a)| (r as f64, a)).collect::<Vec<_>>();
    let mut series = Vec::new();
    for (m, r) in firsts {
        let (Some(c), Some(t)) = (&r.report.certified_clean, &r.report.certified_triggered) else { continue };
        series.push((format!("clean items, {m} poisoned"), curve(&c.certified_accuracy)));
        series.push((format!("triggered items, {m} poisoned"), curve(&t.certified_accuracy)));
    }
    let (x, y) = ("radius: teachers an attacker may control", "share correct and certified");
    (!series.is_empty()).then(|| Chart::new("Certified accuracy (DPA) vs radius", x, y, series).y_range(0.0, 1.0))
}

/// Draws every plot the rows support into `out`; returns the files written.
pub fn draw_all(rows: &[Row], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let pate: Vec<&Row> = rows.iter().filter(|r| r.cell.mode == Mode::Pate).collect();
    let base: Vec<&Row> = pate.iter().copied().filter(|r| r.cell.public_trigger_rate == 0.0).collect();
    let m = |r: &Row| r.report.poisoned_teachers as f64;
    if distinct(&base, m) >= 2 {
        let n = base.first().map_or(0, |r| r.report.num_teachers);
        let series = vec![
            ("poisoned teachers (mean)".into(), grouped(&base, m, |r| r.report.teacher_asr_poisoned)),
            ("clean teachers (mean)".into(), grouped(&base, m, |r| r.report.teacher_asr_clean)),
            ("ensemble (noise-free)".into(), grouped(&base, m, |r| Some(r.report.ensemble_asr))),
            ("noisy aggregate (LNMax)".into(), grouped(&base, m, |r| r.report.noisy_aggregate_asr)),
            ("student".into(), grouped(&base, m, |r| Some(r.report.student_asr))),
            ("reference student (no poison)".into(), grouped(&base, m, |r| Some(r.report.reference_student_asr))),
        ];
        let asr = Chart::new(format!("Attack success rate vs poisoned teachers (of {n})"), "poisoned teachers", "attack success rate", series);
        written.extend(save(&asr.y_range(0.0, 1.05).legend(SeriesLabelPosition::MiddleLeft), &out.join("backdoor_asr"))?);
        let series = vec![
            ("teachers (mean)".into(), grouped(&base, m, |r| Some(r.teacher_accuracy()))),
            ("ensemble (noise-free)".into(), grouped(&base, m, |r| Some(r.report.ensemble_accuracy))),
            ("noisy aggregate (LNMax)".into(), grouped(&base, m, |r| r.report.noisy_aggregate_accuracy)),
            ("student".into(), grouped(&base, m, |r| Some(r.report.student_accuracy))),
            ("reference student (no poison)".into(), grouped(&base, m, |r| Some(r.report.reference_student_accuracy))),
        ];
        let acc = Chart::new(format!("Clean accuracy vs poisoned teachers (of {n})"), "poisoned teachers", "clean accuracy (evaluation set)", series);
        written.extend(save(&acc.legend(SeriesLabelPosition::LowerRight), &out.join("backdoor_accuracy"))?);
    }
    if let Some(chart) = certified_chart(&base) {
        written.extend(save(&chart, &out.join("certified_accuracy"))?);
    }
    let pt = |r: &Row| r.cell.public_trigger_rate;
    if distinct(&pate, pt) >= 2 {
        let mut by_m: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
        pate.iter().for_each(|r| by_m.entry(r.report.poisoned_teachers).or_default().push(r));
        let series = by_m
            .into_iter()
            .map(|(k, rs)| (format!("student, {k} poisoned teachers"), grouped(&rs, pt, |r| Some(r.report.student_asr))))
            .filter(|(_, points)| points.len() >= 2)
            .collect();
        let title = "Control: student ASR vs share of triggered public items";
        let chart = Chart::new(title, "share of the student's public items carrying the trigger", "student attack success rate", series);
        written.extend(save(&chart.y_range(0.0, 1.05).legend(SeriesLabelPosition::UpperLeft), &out.join("control_asr"))?);
    }
    let eps = |r: &Row| r.report.epsilon.filter(|e| *e > 0.0).map_or(0.0, f64::log10);
    if distinct(&pate, eps) >= 2 {
        let mut by_n: BTreeMap<(usize, usize, usize), Vec<&Row>> = BTreeMap::new();
        pate.iter().for_each(|r| by_n.entry((r.report.num_teachers, r.report.poisoned_teachers, r.cell.queries)).or_default().push(r));
        let series = by_n
            .into_iter()
            .map(|((n, m, q), rs)| (format!("{n} teachers, {m} poisoned, {q} queries"), grouped(&rs, eps, |r| Some(r.report.student_accuracy))))
            .collect();
        let title = "Privacy / utility: student accuracy vs epsilon";
        let chart = Chart::new(title, "epsilon (data-independent, log scale)", "student accuracy (evaluation set)", series).log_x();
        written.extend(save(&chart.legend(SeriesLabelPosition::LowerRight), &out.join("privacy_utility"))?);
    }
    if let Some(chart) = temperature_chart(rows) {
        written.extend(save(&chart, &out.join("single_temperature"))?);
    }
    Ok(written)
}

/// Single mode: the students' ASR against the distillation temperature
/// (no hard term, no triggered public items), means over seeds, one pair
/// of series per shift augmentation.
fn temperature_chart(rows: &[Row]) -> Option<Chart> {
    let single: Vec<&Row> = rows
        .iter()
        .filter(|r| r.cell.mode == Mode::Single && r.cell.public_trigger_rate == 0.0 && r.cell.hard_weight == 0.0)
        .collect();
    let t = |r: &Row| r.cell.temperature;
    if distinct(&single, t) < 2 {
        return None;
    }
    let mut by_shift: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
    single.iter().for_each(|r| by_shift.entry(r.cell.max_shift).or_default().push(r));
    let mut series = Vec::new();
    for (shift, rs) in by_shift {
        let aug = if shift == 0 { String::new() } else { format!(", shift {shift}") };
        series.push((format!("student of the poisoned teacher{aug}"), grouped(&rs, t, |r| Some(r.report.student_asr))));
        series.push((format!("reference student (clean teacher){aug}"), grouped(&rs, t, |r| Some(r.report.reference_student_asr))));
    }
    let title = "Single mode: student ASR vs distillation temperature";
    Some(Chart::new(title, "temperature T", "attack success rate (mean over seeds)", series).legend(SeriesLabelPosition::UpperLeft))
}
