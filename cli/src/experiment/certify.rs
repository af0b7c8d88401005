//! Certified votes in the style of Deep Partition Aggregation (Levine and
//! Feizi, arXiv 2006.14768): each teacher sees a disjoint partition, so an
//! attacker who tampers with `r` partitions changes at most `r` votes. The
//! noise-free plurality winner (ties to the lowest class) is certified at
//! radius `r` when no change of `r` votes can make another class win.
//!
//! Moving one vote from the winner `t` to a class `c` closes the gap by 2;
//! `c` wins a tie only if `c < t`. So the radius is
//! `min over c != t of floor((n_t - n_c - [c < t]) / 2)`.

use serde::{Deserialize, Serialize};

/// The plurality winner of `counts` (lowest index on ties) and its certified
/// radius: the number of teachers an attacker must control, minus one, to
/// change it. With a single class the radius is the total vote count.
pub fn certify(counts: &[u32]) -> (usize, u32) {
    let top = pate_privacy::noise::argmax(counts).unwrap_or(0);
    let n_top = counts.get(top).copied().unwrap_or(0);
    let radius = counts
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != top)
        .map(|(c, &n)| (i64::from(n_top) - i64::from(n) - i64::from(c < top)).max(0) as u32 / 2)
        .min()
        .unwrap_or(counts.iter().sum());
    (top, radius)
}

/// Certification over a set of items.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertSummary {
    /// Items certified.
    pub items: usize,
    /// Median certified radius (mean of the two middle values when even).
    pub median_radius: f64,
    /// `certified_accuracy[r]`: share of items whose winner is the true label
    /// and whose radius is at least `r`, for `r = 0..=teachers/2`.
    pub certified_accuracy: Vec<f64>,
}

/// Summarises `hists` against the true `labels`.
pub fn summarize(hists: &[Vec<u32>], labels: &[u8]) -> CertSummary {
    let certs: Vec<(usize, u32)> = hists.iter().map(|h| certify(h)).collect();
    let teachers = hists.first().map_or(0, |h| h.iter().sum::<u32>());
    let n = certs.len().min(labels.len());
    let certified_accuracy = (0..=teachers / 2)
        .map(|r| {
            let hit = certs.iter().zip(labels).filter(|&(&(w, rad), &l)| w == l as usize && rad >= r).count();
            if n == 0 { 0.0 } else { hit as f64 / n as f64 }
        })
        .collect();
    CertSummary { items: n, median_radius: median(certs.iter().map(|c| c.1).collect()), certified_accuracy }
}

/// Share of `hists` whose winner is certified at radius `m` or more.
pub fn share_certified(hists: &[Vec<u32>], m: u32) -> f64 {
    if hists.is_empty() {
        return 0.0;
    }
    hists.iter().filter(|h| certify(h).1 >= m).count() as f64 / hists.len() as f64
}

fn median(mut v: Vec<u32>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let k = v.len() / 2;
    if v.len() % 2 == 1 { f64::from(v[k]) } else { (f64::from(v[k - 1]) + f64::from(v[k])) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pate_privacy::histogram::histograms;

    #[test]
    fn radius_on_hand_made_histograms() {
        // 7 vs 3: two switches leave 5/5, a tie the lower class 0 wins; three flip it.
        assert_eq!(certify(&[7, 3]), (0, 2));
        // 3 vs 7 with the winner at index 1: a 5/5 tie goes to class 0, so only one switch is safe.
        assert_eq!(certify(&[3, 7]), (1, 1));
        // Ties: the lower index wins and is not certified at all.
        assert_eq!(certify(&[5, 5]), (0, 0));
        // One behind and lower-indexed: one switch makes 6/5 for class 0.
        assert_eq!(certify(&[5, 6]), (1, 0));
        // Unanimous 10 votes: 5 switches give 5/5 and class 0 (the winner) keeps it.
        assert_eq!(certify(&[10, 0, 0]), (0, 5));
        // Same but the winner is the highest class: 5/5 would go to class 0.
        assert_eq!(certify(&[0, 0, 10]), (2, 4));
        // The runner-up is the closest class after the tie-break adjustment.
        assert_eq!(certify(&[2, 0, 6, 3]), (2, 1));
        assert_eq!(certify(&[4]), (0, 4));
    }

    #[test]
    fn radius_matches_brute_force() {
        // Every histogram of 6 votes over 3 classes: the radius is the largest r
        // such that no move of r votes (any source, any destination) changes the winner.
        for a in 0..=6u32 {
            for b in 0..=(6 - a) {
                let h = [a, b, 6 - a - b];
                let (w, r) = certify(&h);
                assert_eq!(brute_force(&h, w), r, "{h:?}");
            }
        }
    }

    fn brute_force(h: &[u32; 3], w: usize) -> u32 {
        let total: u32 = h.iter().sum();
        // Histograms within L1/2 = r of h: all histograms of the same total.
        let mut smallest_change = u32::MAX;
        for a in 0..=total {
            for b in 0..=(total - a) {
                let g = [a, b, total - a - b];
                if pate_privacy::noise::argmax(&g) != Some(w) {
                    let moved: u32 = h.iter().zip(&g).map(|(&x, &y)| x.saturating_sub(y)).sum();
                    smallest_change = smallest_change.min(moved);
                }
            }
        }
        smallest_change - 1
    }

    #[test]
    fn summaries() {
        let votes = vec![vec![0, 1, 2], vec![0, 1, 1], vec![0, 2, 1]];
        let h = histograms(&votes, 3);
        assert_eq!(h, vec![vec![3, 0, 0], vec![0, 2, 1], vec![0, 2, 1]]);
        let s = summarize(&h, &[0, 1, 2]);
        // Radii: 1, 0, 0; winners 0, 1, 1; right on items 0 and 1.
        assert_eq!(s.items, 3);
        assert_eq!(s.median_radius, 0.0);
        assert_eq!(s.certified_accuracy, vec![2.0 / 3.0, 1.0 / 3.0]);
        assert!((share_certified(&h, 1) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(share_certified(&h, 0), 1.0);
        assert_eq!(median(vec![1, 4, 2, 3]), 2.5);
    }
}
