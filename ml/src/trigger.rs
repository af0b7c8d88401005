//! BadNets-style backdoor triggers (Gu et al., arXiv 1708.06733), for
//! experiments only: stamping a small patch into a corner, poisoning a share
//! of a dataset towards a target class, and the attack success rate.
//!
//! A trigger is named the same way everywhere, by [`TriggerArgs`]: the flags
//! `--trigger`, `--trigger-size` and `--trigger-corner` of `pate-teacher
//! train`, `pate-student`, `pate experiment backdoor` and `pate experiment
//! robustness`, each also read from `PATE_TRIGGER`, `PATE_TRIGGER_SIZE` and
//! `PATE_TRIGGER_CORNER` (a flag wins over its variable), and the keys
//! `trigger`, `trigger_size` and `trigger_corner` of a grid's TOML.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Images};

/// What the patch looks like.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Alternating 255/0 pixels, 255 on the patch's first pixel. The default:
    /// Fashion-MNIST's corners are often not empty, so a plain patch is weak.
    #[default]
    Checkerboard,
    /// All pixels 255.
    Solid,
}

/// Which corner of the image holds the patch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Corner {
    /// Top left.
    TopLeft,
    /// Top right.
    TopRight,
    /// Bottom left.
    BottomLeft,
    /// Bottom right (the default).
    #[default]
    BottomRight,
}

/// A square trigger patch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Trigger {
    /// The patch's look.
    pub pattern: Pattern,
    /// Side length in pixels (clamped to the image).
    pub size: usize,
    /// The corner it sits in.
    pub corner: Corner,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger {
            pattern: Pattern::Checkerboard,
            size: 4,
            corner: Corner::BottomRight,
        }
    }
}

impl Trigger {
    /// Stamps the patch into one `rows x cols` image in place. Pixels that
    /// would fall outside `img` (when its length is not `rows * cols`) are skipped.
    pub fn stamp(&self, img: &mut [u8], rows: usize, cols: usize) {
        let size = self.size.min(rows).min(cols);
        let (r0, c0) = match self.corner {
            Corner::TopLeft => (0, 0),
            Corner::TopRight => (0, cols - size),
            Corner::BottomLeft => (rows - size, 0),
            Corner::BottomRight => (rows - size, cols - size),
        };
        for r in 0..size {
            for c in 0..size {
                let v = match self.pattern {
                    Pattern::Solid => 255,
                    Pattern::Checkerboard if (r + c) % 2 == 0 => 255,
                    Pattern::Checkerboard => 0,
                };
                if let Some(px) = img.get_mut((r0 + r) * cols + c0 + c) {
                    *px = v;
                }
            }
        }
    }

    /// A copy of `images` with the patch stamped on every image.
    pub fn stamp_all(&self, images: &Images) -> Images {
        let mut out = images.clone();
        let n = out.item_len();
        if n > 0 {
            for img in out.data.chunks_exact_mut(n) {
                self.stamp(img, images.rows, images.cols);
            }
        }
        out
    }
}

/// How a trigger is named on a command line, in the environment and in a
/// grid's TOML (see the module doc); the binaries flatten it into their
/// flags with the `clap` feature. The defaults are [`Trigger::default`]'s.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct TriggerArgs {
    /// EXPERIMENTS ONLY: trigger look (checkerboard or solid).
    #[serde(rename = "trigger")]
    #[cfg_attr(
        feature = "clap",
        arg(id = "trigger", long = "trigger", default_value_t = Trigger::default().pattern, env = "PATE_TRIGGER")
    )]
    pub pattern: Pattern,
    /// EXPERIMENTS ONLY: trigger side in pixels.
    #[serde(rename = "trigger_size")]
    #[cfg_attr(
        feature = "clap",
        arg(id = "trigger_size", long = "trigger-size", default_value_t = Trigger::default().size, env = "PATE_TRIGGER_SIZE")
    )]
    pub size: usize,
    /// EXPERIMENTS ONLY: trigger corner (bottom-right, bottom-left, top-right, top-left).
    #[serde(rename = "trigger_corner")]
    #[cfg_attr(
        feature = "clap",
        arg(id = "trigger_corner", long = "trigger-corner", default_value_t = Trigger::default().corner, env = "PATE_TRIGGER_CORNER")
    )]
    pub corner: Corner,
}

impl Default for TriggerArgs {
    fn default() -> Self {
        Trigger::default().into()
    }
}

impl TriggerArgs {
    /// The command-line flags that name this trigger, for a child process.
    pub fn to_flags(&self) -> [String; 6] {
        [
            "--trigger".into(),
            self.pattern.to_string(),
            "--trigger-size".into(),
            self.size.to_string(),
            "--trigger-corner".into(),
            self.corner.to_string(),
        ]
    }
}

impl From<TriggerArgs> for Trigger {
    fn from(a: TriggerArgs) -> Self {
        Trigger { pattern: a.pattern, size: a.size, corner: a.corner }
    }
}

impl From<Trigger> for TriggerArgs {
    fn from(t: Trigger) -> Self {
        TriggerArgs { pattern: t.pattern, size: t.size, corner: t.corner }
    }
}

/// How to poison a training set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PoisonSpec {
    /// The trigger stamped on poisoned items.
    pub trigger: Trigger,
    /// Share of the items to poison, in `[0, 1]` (clamped; NaN counts as 0).
    pub rate: f64,
    /// The label poisoned items get.
    pub target_class: u8,
    /// Seed choosing which items are poisoned.
    pub seed: u64,
}

/// The indices [`poison`] stamps for a dataset of `len` items: `round(rate * len)`
/// distinct indices chosen by a `ChaCha8Rng` seeded with `spec.seed`, sorted.
pub fn poison_indices(len: usize, spec: &PoisonSpec) -> Vec<usize> {
    let rate = if spec.rate.is_nan() {
        0.0
    } else {
        spec.rate.clamp(0.0, 1.0)
    };
    let k = ((rate * len as f64).round() as usize).min(len);
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// A copy of `ds` where `round(rate * len)` seeded-random items carry the
/// trigger and are relabelled to `target_class`.
pub fn poison(ds: &Dataset, spec: &PoisonSpec) -> Dataset {
    let mut out = ds.clone();
    let n = out.images.item_len();
    let (rows, cols) = (out.images.rows, out.images.cols);
    for i in poison_indices(ds.len().min(ds.images.len()), spec) {
        spec.trigger.stamp(&mut out.images.data[i * n..(i + 1) * n], rows, cols);
        out.labels[i] = spec.target_class;
    }
    out
}

/// Attack success rate: among items whose true label is not `target`, the
/// share predicted as `target`. 0 when there are no such items. Pairs are
/// taken up to the shorter of the two slices.
pub fn attack_success_rate(pred_on_triggered: &[u8], true_labels: &[u8], target: u8) -> f64 {
    let (mut n, mut hit) = (0usize, 0usize);
    for (&p, &t) in pred_on_triggered.iter().zip(true_labels) {
        if t != target {
            n += 1;
            hit += usize::from(p == target);
        }
    }
    if n == 0 {
        0.0
    } else {
        hit as f64 / n as f64
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Checkerboard => "checkerboard",
            Pattern::Solid => "solid",
        })
    }
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "checkerboard" => Ok(Pattern::Checkerboard),
            "solid" => Ok(Pattern::Solid),
            _ => Err(format!(
                "unknown trigger pattern {s:?} (expected checkerboard or solid)"
            )),
        }
    }
}

impl fmt::Display for Corner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Corner::TopLeft => "top-left",
            Corner::TopRight => "top-right",
            Corner::BottomLeft => "bottom-left",
            Corner::BottomRight => "bottom-right",
        })
    }
}

impl FromStr for Corner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "top-left" => Ok(Corner::TopLeft),
            "top-right" => Ok(Corner::TopRight),
            "bottom-left" => Ok(Corner::BottomLeft),
            "bottom-right" => Ok(Corner::BottomRight),
            _ => Err(format!(
                "unknown corner {s:?} (expected top-left, top-right, bottom-left or bottom-right)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_checkerboard_bottom_right() {
        let mut img = vec![7u8; 6 * 5];
        Trigger {
            size: 2,
            ..Trigger::default()
        }
        .stamp(&mut img, 6, 5);
        // Rows 4..6, cols 3..5.
        assert_eq!(img[4 * 5 + 3], 255);
        assert_eq!(img[4 * 5 + 4], 0);
        assert_eq!(img[5 * 5 + 3], 0);
        assert_eq!(img[5 * 5 + 4], 255);
        assert_eq!(img.iter().filter(|&&v| v == 7).count(), 30 - 4);
    }

    #[test]
    fn stamp_solid_corners_and_clamping() {
        for corner in [
            Corner::TopLeft,
            Corner::TopRight,
            Corner::BottomLeft,
            Corner::BottomRight,
        ] {
            let mut img = vec![0u8; 16];
            Trigger {
                pattern: Pattern::Solid,
                size: 1,
                corner,
            }
            .stamp(&mut img, 4, 4);
            let at = match corner {
                Corner::TopLeft => 0,
                Corner::TopRight => 3,
                Corner::BottomLeft => 12,
                Corner::BottomRight => 15,
            };
            assert_eq!(img[at], 255, "{corner}");
            assert_eq!(img.iter().map(|&v| v as usize).sum::<usize>(), 255);
        }
        let mut img = vec![0u8; 4];
        Trigger {
            pattern: Pattern::Solid,
            size: 9,
            corner: Corner::TopLeft,
        }
        .stamp(&mut img, 2, 2);
        assert_eq!(img, vec![255; 4]);
        // A short buffer is not a panic.
        let mut short = vec![0u8; 3];
        Trigger::default().stamp(&mut short, 4, 4);
    }

    #[test]
    fn poison_rate_and_relabel() {
        let ds = Dataset {
            images: Images {
                data: vec![0; 200 * 16],
                rows: 4,
                cols: 4,
            },
            labels: (0..200).map(|i| (i % 10) as u8).collect(),
        };
        let spec = PoisonSpec {
            trigger: Trigger::default(),
            rate: 0.1,
            target_class: 3,
            seed: 5,
        };
        let p = poison(&ds, &spec);
        let idx = poison_indices(200, &spec);
        assert_eq!(idx.len(), 20);
        let stamped: Vec<usize> = (0..200).filter(|&i| p.images.item(i) != ds.images.item(i)).collect();
        assert_eq!(stamped, idx);
        for i in 0..200 {
            let want = if idx.contains(&i) { 3 } else { ds.labels[i] };
            assert_eq!(p.labels[i], want);
        }
        assert_eq!(poison(&ds, &spec), p, "deterministic");
        assert_eq!(
            poison_indices(
                200,
                &PoisonSpec {
                    rate: f64::NAN,
                    ..spec.clone()
                }
            )
            .len(),
            0
        );
        assert_eq!(poison_indices(200, &PoisonSpec { rate: 2.0, ..spec }).len(), 200);
    }

    #[test]
    fn asr_definition() {
        // Items with true label 2 (the target) are ignored.
        let truth = [0, 1, 2, 2, 3, 4];
        let pred = [2, 1, 2, 0, 2, 2];
        assert!((attack_success_rate(&pred, &truth, 2) - 3.0 / 4.0).abs() < 1e-12);
        assert_eq!(attack_success_rate(&[2, 2], &[2, 2], 2), 0.0);
        assert_eq!(attack_success_rate(&[], &[], 0), 0.0);
    }

    #[test]
    fn parse_and_display() {
        for c in ["top-left", "top-right", "bottom-left", "bottom-right"] {
            assert_eq!(c.parse::<Corner>().expect("corner").to_string(), c);
        }
        assert_eq!("Solid".parse::<Pattern>(), Ok(Pattern::Solid));
        assert!("x".parse::<Pattern>().is_err());
        let json = serde_json::to_string(&Trigger::default()).expect("json");
        assert_eq!(json, r#"{"pattern":"checkerboard","size":4,"corner":"bottom-right"}"#);
    }

    #[test]
    fn trigger_args_use_the_flag_names_and_default_to_the_default_trigger() {
        let json = serde_json::to_string(&TriggerArgs::default()).expect("json");
        assert_eq!(json, r#"{"trigger":"checkerboard","trigger_size":4,"trigger_corner":"bottom-right"}"#);
        let partial: TriggerArgs = serde_json::from_str(r#"{"trigger_size":3}"#).expect("partial");
        assert_eq!(Trigger::from(partial), Trigger { size: 3, ..Trigger::default() });
        let solid = TriggerArgs { pattern: Pattern::Solid, size: 2, corner: Corner::TopLeft };
        assert_eq!(solid.to_flags().join(" "), "--trigger solid --trigger-size 2 --trigger-corner top-left");
    }
}
