//! Local sensitivity at every distance of the data-dependent RDP of the
//! noisy arg-max with integer noise (the GNMax step as the aggregator runs
//! it: discrete Gaussian, ties to the lowest class), for the
//! smooth-sensitivity release of [`crate::release`].
//!
//! # What is bounded
//!
//! For one query with integer counts `n`, the released RDP is
//! `f(n) = R(ln q(n))`, where `q(n) = min(1 - 1/m, S(n) (1 + 1e-9))`,
//! `S(n) = sum_j T(k_j)` is the union bound of [`crate::discrete`] (`T(k) =
//! Pr[Z_1 - Z_2 >= k]`, `k_j` the integer thresholds of
//! [`effective_gaps`]) and `R` is Theorem 6 with the data-independent bound
//! (`rdp_gaussian_at`), non-decreasing in `ln q`. A changed teacher is one
//! move (one count down by one, another up by one); `B(n, d)` is the set of
//! histograms at most `d` moves away. [`GnmaxLs::query_ls`] returns, for
//! every `d`, an `A(d) >= max |f(n'') - f(n')|` over `n'` in `B(n, d)` and
//! `n''` one move from `n'`: like the paper's Algorithm 3, the worst
//! one-step change over the ball, here computed on the histogram's own
//! extreme paths instead of on `q` alone.
//!
//! # Proof sketch
//!
//! 1. *Winner.* Let `i*` be the first arg-max of `n` and `k_(1)` its
//!    smallest threshold. `d` moves change `n_j - n_i*` by at most `2d`, so
//!    every histogram of `B(n, d)` has the winner `i*` while
//!    `k_(1) >= 2d + 1` (checked for both tie directions).
//! 2. *Range of `S` on the ball.* For `n'` in `B(n, d)` with winner `i*`,
//!    `k'_j >= k_j - d - b_j` with `sum b_j <= d` (the winner loses at most
//!    `d` votes, the others gain at most `d` in all), and
//!    `k'_j <= k_j + d + c_j` with `sum c_j <= d`. `p(x) = Pr[Z_1 - Z_2 =
//!    x]` is symmetric and log-concave (a convolution of log-concave
//!    sequences), so it decreases on `x >= 0` and `T` is convex on `k >= 1`.
//!    The largest `sum_j T(k_j - d - b_j)` over the simplex is then at a
//!    vertex, all `d` moves onto the smallest threshold:
//!    `hi(d) = T(k_(1) - 2d) + sum_{j >= 2} T(k_(j) - d)` (the paper's
//!    path, top class to runner-up). The smallest `sum_j T(k_j + d + c_j)`
//!    (separable, convex) is found by water-filling: raise the smallest
//!    thresholds first ([`QueryBalls`]). Once the winner may change, `hi`
//!    is `m - 1` and a histogram whose winner `i'` is not `i*` has
//!    `k'_i* <= 2d + 1`, so `S >= T(2d + 1)`.
//! 3. *One step.* With the winner unchanged, one move changes every `k_j`
//!    by at most 2 (thresholds stay `>= 1`), so
//!    `S'' <= sum_j T(max(1, k'_j - 2))` and `S'' >= sum_j T(k'_j + 2)`.
//!    For every line with `T(max(1, k - 2)) <= c + s T(k)` on all feasible
//!    `k` (`1 <= k <= N + 1`), summing gives `S'' <= (m - 1) c + s S'`;
//!    [`StepBounds`] builds one such line per `K` (slope of the chord at
//!    `K`, intercept the exact maximum over `k`, raised by a relative
//!    `1e-9`) and takes the best: the discrete analogue of the paper's
//!    `bu(q) = (m-1)/2 erfc(erfcinv(2q/(m-1)) - 1/sigma)` (Jensen on the
//!    concave map `T(k) -> T(k - 2)`), sound whether or not that map is
//!    concave. Likewise `S'' >= s' S' - (m - 1) c'`.
//! 4. *The ball.* With `R~(y) = R(min(ln cap, y + 1e-9))` non-decreasing,
//!    a step from `S'` in the grid cell `[y_i, y_i+1]` of `ln S` (width
//!    1/512) rises by at most `R~(ln BU(y_i+1)) - R~(y_i)` and drops by at
//!    most `R~(y_i+1) - R~(ln BL(y_i))`; `A(d)` is the largest of these over
//!    the cells meeting `[lo(d), hi(d)]`, and at most
//!    `R~(hi(d + 1)) - R~(lo(d + 1))` (both ends lie in `B(n, d + 1)`) and
//!    the data-independent `order / sigma^2`. A step that changes the winner
//!    needs a threshold `<= 2` on both sides, so it moves `f` by at most
//!    `R(ln cap) - R~(ln T(2))`.
//!
//! `privacy/tests/release_brute_force.rs` checks `A(d)` against the exact
//! worst one-step change over every histogram of small balls.

use crate::discrete::{capped_logq, effective_gaps, DiscreteNoise};
use crate::gnmax::rdp_gaussian_at;
use crate::special::{log1mexp, logaddexp, logsumexp};

/// Relative slack on the step lines, for floating-point rounding.
const LINE_SLACK: f64 = 1e-9;
/// Absolute slack on `ln S` ranges per unit of `|ln S|`: the accounting sums
/// the same terms in class order, which can round differently.
const RANGE_SLACK: f64 = 1e-12;
/// Absolute slack on every difference of `R`, per unit of `order / sigma^2`.
const R_ROUNDING: f64 = 1e-12;
/// Lowest `ln S` on the grid; below it a single cell bounds every step.
const GRID_BOTTOM: f64 = -256.0;
/// Width of a grid cell in `ln S`.
const GRID_STEP: f64 = 1.0 / 512.0;

/// `ln(e^a - e^b)`, `-inf` unless `a > b`.
fn ln_diff(a: f64, b: f64) -> f64 {
    if b < a {
        a + log1mexp(b - a)
    } else {
        f64::NEG_INFINITY
    }
}

/// One line `s x + c` in log form.
#[derive(Debug, Clone, Copy)]
struct Line {
    ln_s: f64,
    ln_c: f64,
}

/// Order-independent tables for one noise, class count and teacher count:
/// `ln T(k)` and the one-step lines of the module docs.
#[derive(Debug, Clone)]
pub struct StepBounds {
    /// `ln T(k)` for `k = 0..` (index 0 unused).
    ln_t: Vec<f64>,
    /// `ln(m - 1)`.
    ln_m1: f64,
    /// Lines with `T(max(1, k - 2)) <= c + s T(k)` for feasible `k`.
    up: Vec<Line>,
    /// Lines with `T(k + 2) >= s T(k) - c` for feasible `k`.
    down: Vec<Line>,
}

impl StepBounds {
    /// Tables for `num_classes >= 2` classes and thresholds up to
    /// `kcap = total votes + 1`.
    pub fn new(noise: &DiscreteNoise, num_classes: usize, total_votes: usize) -> Self {
        let kcap = total_votes + 1;
        let len = 3 * kcap + 6;
        let ln_t: Vec<f64> = (0..len as i64).map(|k| noise.log_diff_sf(k.max(1))).collect();
        let lh = |k: usize| ln_t[k.saturating_sub(2).max(1)];
        let mut up = Vec::with_capacity(kcap);
        let mut down = Vec::with_capacity(kcap);
        for big_k in 1..=kcap {
            let den = ln_diff(ln_t[big_k], ln_t[big_k + 1]);
            if den == f64::NEG_INFINITY {
                continue;
            }
            let ln_s = ln_diff(lh(big_k), lh(big_k + 1)) - den;
            // c = max_k h(k) (1 + slack) - s T(k), in log form.
            let ln_c = (1..=kcap)
                .map(|k| {
                    let y = 1.0 + LINE_SLACK - (ln_s + ln_t[k] - lh(k)).exp();
                    if y > 0.0 {
                        lh(k) + y.ln()
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .fold(f64::NEG_INFINITY, f64::max);
            up.push(Line { ln_s, ln_c });
            let ln_a = ln_diff(ln_t[big_k + 2], ln_t[big_k + 3]) - den;
            // c' = max_k a T(k) - T(k + 2) (1 - slack).
            let ln_e = (1..=kcap)
                .map(|k| {
                    let y = (ln_a + ln_t[k] - ln_t[k + 2]).exp() - (1.0 - LINE_SLACK);
                    if y > 0.0 {
                        ln_t[k + 2] + y.ln()
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .fold(f64::NEG_INFINITY, f64::max);
            down.push(Line { ln_s: ln_a, ln_c: ln_e });
        }
        StepBounds {
            ln_t,
            ln_m1: ((num_classes.max(2) - 1) as f64).ln(),
            up,
            down,
        }
    }

    /// `ln T(k)` for `k >= 1` (`k < 1`: probability 1, i.e. `ln T(1)` is
    /// not used there; callers never ask).
    pub fn ln_tail(&self, k: i64) -> f64 {
        let last = self.ln_t.len() as i64 - 1;
        assert!(k <= last, "threshold {k} beyond the table ({last})");
        self.ln_t[k.max(1) as usize]
    }

    /// The line index whose tangent point `T(K)` is nearest `x / (m - 1)`.
    fn start(&self, log_x: f64) -> usize {
        let target = log_x - self.ln_m1;
        // ln_t is non-increasing in k: first K with ln T(K) <= target.
        let k = self.ln_t[1..].partition_point(|&v| v > target) + 1;
        k.saturating_sub(1).min(self.up.len().saturating_sub(1))
    }

    /// Best of the lines near the tangent point, then walking while it improves
    /// (any line is a valid bound, so this is sound whatever is found).
    fn search(&self, lines: &[Line], log_x: f64, value: impl Fn(&Line) -> f64, better: fn(f64, f64) -> bool) -> f64 {
        if lines.is_empty() {
            return f64::NAN;
        }
        let k0 = self.start(log_x).min(lines.len() - 1);
        let (lo0, hi0) = (k0.saturating_sub(4), (k0 + 4).min(lines.len() - 1));
        let mut best = value(&lines[lo0]);
        for l in &lines[lo0 + 1..=hi0] {
            let v = value(l);
            if better(v, best) {
                best = v;
            }
        }
        let mut i = lo0;
        while i > 0 {
            i -= 1;
            let v = value(&lines[i]);
            if !better(v, best) {
                break;
            }
            best = v;
        }
        let mut i = hi0;
        while i + 1 < lines.len() {
            i += 1;
            let v = value(&lines[i]);
            if !better(v, best) {
                break;
            }
            best = v;
        }
        best
    }

    /// `ln` of an upper bound on `S''` for every one-move neighbour (winner
    /// unchanged) of a histogram with `ln S' = log_x`.
    pub fn ln_step_up(&self, log_x: f64) -> f64 {
        let v = self.search(
            &self.up,
            log_x,
            |l| logaddexp(self.ln_m1 + l.ln_c, l.ln_s + log_x),
            |a, b| a < b,
        );
        // No line at all (a degenerate table): every term is at most T(1).
        if v.is_nan() {
            self.ln_m1 + self.ln_t[1]
        } else {
            v
        }
    }

    /// `ln` of a lower bound on `S''` (`-inf` when none is positive).
    pub fn ln_step_down(&self, log_x: f64) -> f64 {
        let v = self.search(
            &self.down,
            log_x,
            |l| {
                let gap = self.ln_m1 + l.ln_c - l.ln_s - log_x;
                if gap < 0.0 {
                    l.ln_s + log_x + log1mexp(gap)
                } else {
                    f64::NEG_INFINITY
                }
            },
            |a, b| a > b,
        );
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            v
        }
    }
}

/// `ln S` bounds on the balls around one histogram (order-independent).
#[derive(Debug, Clone)]
pub struct QueryBalls {
    /// Lower bound on `ln S` over the histograms of `B(n, d)` with the
    /// original winner, `d = 0..=max_d`.
    lo: Vec<f64>,
    /// Upper bound on `ln S` over `B(n, d)` for `d <= d_fixed`.
    hi: Vec<f64>,
    /// The largest `d` for which every histogram of `B(n, d)` has the
    /// original winner.
    d_fixed: usize,
}

impl QueryBalls {
    /// Bounds for `votes` (integer counts) at distances `0..=max_d`.
    pub fn new(sb: &StepBounds, votes: &[f64], max_d: usize) -> Self {
        let (_, mut k) = effective_gaps(votes);
        k.sort_unstable();
        let kmin = k[0];
        let d_fixed = ((kmin - 1) / 2).max(0) as usize;
        let mut lo = Vec::with_capacity(max_d + 1);
        let mut hi = Vec::with_capacity(d_fixed.min(max_d) + 1);
        let mut terms = Vec::with_capacity(k.len());
        for d in 0..=max_d {
            let di = d as i64;
            if d <= d_fixed {
                terms.clear();
                terms.push(sb.ln_tail(kmin - 2 * di));
                terms.extend(k[1..].iter().map(|&x| sb.ln_tail(x - di)));
                hi.push(logsumexp(&terms));
            }
            lo.push(water_fill(sb, &k, di));
        }
        QueryBalls { lo, hi, d_fixed }
    }
}

/// `ln min sum_j T(k_j + d + c_j)` over `c >= 0`, `sum c_j <= d` (`k`
/// sorted ascending): raise the smallest thresholds to a common level.
fn water_fill(sb: &StepBounds, k: &[i64], d: i64) -> f64 {
    let mut t = 1;
    let mut sum = k[0] + d;
    while t < k.len() && (k[t] + d) * t as i64 - sum <= d {
        sum += k[t] + d;
        t += 1;
    }
    let total = sum + d;
    let level = total / t as i64;
    let extra = total - level * t as i64;
    let mut terms: Vec<f64> = k[t..].iter().map(|&x| sb.ln_tail(x + d)).collect();
    if extra > 0 {
        terms.push((extra as f64).ln() + sb.ln_tail(level + 1));
    }
    if (t as i64) > extra {
        terms.push(((t as i64 - extra) as f64).ln() + sb.ln_tail(level));
    }
    logsumexp(&terms)
}

/// The GNMax-step local sensitivities of many queries sharing one noise,
/// class count and teacher count: the order-independent tables, and the
/// grid of module-doc step 4 for the current order (computed lazily).
pub struct GnmaxLs {
    sb: StepBounds,
    sigma: f64,
    num_classes: usize,
    /// Top of the grid: `ln(m - 1)`, the largest possible `ln S`.
    top: f64,
    n_cells: usize,
    /// `ln BU` at grid point `i + 1` and `ln BL` at grid point `i`, per cell.
    ln_up: Vec<f64>,
    ln_down: Vec<f64>,
    order: f64,
    /// `R~` at grid points, cell bounds `w` and prune bounds `p` (NaN: not yet).
    r: Vec<f64>,
    w: Vec<f64>,
    p: Vec<f64>,
}

impl GnmaxLs {
    /// Tables for GNMax noise `sigma` (discrete Gaussian), `num_classes`
    /// classes and `total_votes` votes per query.
    pub fn new(sigma: f64, num_classes: usize, total_votes: usize) -> Self {
        let sb = StepBounds::new(&DiscreteNoise::Gaussian { sigma }, num_classes, total_votes);
        let top = sb.ln_m1;
        let n_cells = ((top - GRID_BOTTOM) / GRID_STEP).ceil() as usize + 1;
        GnmaxLs {
            sb,
            sigma,
            num_classes,
            top,
            n_cells,
            ln_up: vec![f64::NAN; n_cells + 1],
            ln_down: vec![f64::NAN; n_cells + 1],
            order: f64::NAN,
            r: Vec::new(),
            w: Vec::new(),
            p: Vec::new(),
        }
    }

    /// The number of classes the tables are for.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The order-independent tables.
    pub fn step_bounds(&self) -> &StepBounds {
        &self.sb
    }

    /// Switches the grid to `order` (clearing the order's caches).
    pub fn set_order(&mut self, order: f64) {
        if order.to_bits() != self.order.to_bits() {
            self.order = order;
            self.r = vec![f64::NAN; self.n_cells + 1];
            self.w = vec![f64::NAN; self.n_cells];
            self.p = vec![f64::NAN; self.n_cells];
        }
    }

    /// `R~(y)`: the RDP at a union-bound sum `ln S = y`.
    fn rdp(&self, y: f64) -> f64 {
        rdp_gaussian_at(capped_logq(y, self.num_classes), self.sigma, self.order)
    }

    /// An upper bound on `R(b) - R(a)` from computed values `hi = R(b)`
    /// and `lo = R(a)` with `a <= b`: the computed `R` is monotone only up
    /// to its rounding, so a slack is added unless both are the same
    /// constant branch (0, or the data-independent `order / sigma^2`).
    fn rise(&self, hi: f64, lo: f64) -> f64 {
        let ind = self.order / (self.sigma * self.sigma);
        if hi == lo && (hi == 0.0 || hi == ind) {
            0.0
        } else {
            (hi - lo).max(0.0) + R_ROUNDING * ind
        }
    }

    fn point(i: usize) -> f64 {
        GRID_BOTTOM + i as f64 * GRID_STEP
    }

    fn r_at(&mut self, i: usize) -> f64 {
        if self.r[i].is_nan() {
            self.r[i] = self.rdp(Self::point(i));
        }
        self.r[i]
    }

    /// `(w, p)` of cell `c` (`-1`: everything below the grid).
    fn cell(&mut self, c: i64) -> (f64, f64) {
        if c < 0 {
            let w = self.rdp(self.sb.ln_step_up(GRID_BOTTOM));
            return (w, w);
        }
        let i = c as usize;
        if self.w[i].is_nan() {
            if self.ln_up[i].is_nan() {
                self.ln_up[i] = self.sb.ln_step_up(Self::point(i + 1));
                self.ln_down[i] = self.sb.ln_step_down(Self::point(i));
            }
            let (r0, r1) = (self.r_at(i), self.r_at(i + 1));
            let up = self.rdp(self.ln_up[i]);
            let down = self.rdp(self.ln_down[i]);
            self.w[i] = self.rise(up, r0).max(self.rise(r1, down));
            // w of every cell up to this one is below p (R is monotone up
            // to rounding, covered twice over).
            self.p[i] = up.max(r1) + 2.0 * R_ROUNDING * self.order / (self.sigma * self.sigma);
        }
        (self.w[i], self.p[i])
    }

    fn cell_of(&self, y: f64) -> i64 {
        if y < GRID_BOTTOM {
            -1
        } else {
            (((y - GRID_BOTTOM) / GRID_STEP).floor() as i64).min(self.n_cells as i64 - 1)
        }
    }

    /// `(lo, hi)` of `ln S` over the pairs' first histogram at distance `d`,
    /// widened for the rounding of sums taken in another order.
    fn range(&self, b: &QueryBalls, d: usize) -> (f64, f64) {
        let (lo, hi) = if d <= b.d_fixed {
            (b.lo[d], b.hi[d])
        } else {
            (b.lo[d].min(self.sb.ln_tail(2 * d as i64 + 1)), self.top)
        };
        let widen = |y: f64| RANGE_SLACK * (1.0 + y.abs());
        (lo - widen(lo), hi + widen(hi))
    }

    /// Adds `A(d)` for `d = 0..out.len()` to `out` (module docs); `balls`
    /// must reach distance `out.len()`. Call [`GnmaxLs::set_order`] first.
    pub fn query_ls(&mut self, balls: &QueryBalls, out: &mut [f64]) {
        let ind = self.order / (self.sigma * self.sigma);
        let r_top = self.rdp(self.top);
        let switch = self.rise(r_top, self.rdp(self.sb.ln_tail(2)));
        let mut wmax = 0.0f64;
        // Scanned cells: [slo, shi]; empty at first.
        let (mut slo, mut shi) = (i64::MAX, i64::MIN);
        for (d, slot) in out.iter_mut().enumerate() {
            let (lo, hi) = self.range(balls, d);
            let (clo, chi) = (self.cell_of(lo), self.cell_of(hi));
            if shi == i64::MIN {
                // The downward scan below takes cell chi first.
                slo = chi + 1;
                shi = chi;
            }
            while shi < chi {
                shi += 1;
                wmax = wmax.max(self.cell(shi).0);
            }
            while slo > clo {
                slo -= 1;
                let (w, p) = self.cell(slo);
                if p <= wmax {
                    // Every cell below has w <= p (p is non-decreasing).
                    slo = -1;
                    break;
                }
                wmax = wmax.max(w);
            }
            let (lo1, hi1) = self.range(balls, d + 1);
            let boxed = self.rise(self.rdp(hi1), self.rdp(lo1));
            let a = if d < balls.d_fixed { wmax } else { wmax.max(switch) };
            *slot += a.min(boxed).min(ind);
        }
    }
}
