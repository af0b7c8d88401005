//! Rényi orders: the default list of the reference analysis scripts, the
//! short list used for per-query vectors, and the 2017 moments.
//!
//! The default (long) list is NumPy's
//! `concatenate(arange(2, 101, .5), logspace(log10(100), log10(500), 100))`:
//! 198 half-integer orders from 2 to 100.5, then 100 log-spaced orders from
//! 100 to 500, 298 values in all, with 100 appearing twice (the reference
//! README says 297; the list it ships has 298 and so does ours). The values
//! are computed the way NumPy computes them (`10^(start + i*step)`, last
//! point set to the end). 293 of the 298 equal the shipped list bit for bit;
//! five log-spaced ones differ by one ulp, from the `pow` of the machine that
//! made the vectors (NumPy on this machine gives the same five as we do).
//! `pow` is `libm::pow` (pure Rust), so the list is the same on every
//! platform whatever its C library.

/// Number of orders in [`default_orders`].
pub const DEFAULT_ORDERS_LEN: usize = 298;

/// The reference's long list of orders (see the module docs).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (0..198).map(|i| 2.0 + 0.5 * i as f64).collect();
    orders.extend(logspace(100f64.log10(), 500f64.log10(), 100));
    orders
}

/// The short list of 21 orders used by the per-query reference vectors.
pub fn short_orders() -> Vec<f64> {
    vec![
        1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0, 100.0, 128.0,
        256.0, 500.0,
    ]
}

/// The moments `l = 1..=n` of the 2017 moments accountant (as `f64`).
pub fn moments_2017(n: u32) -> Vec<f64> {
    (1..=n).map(f64::from).collect()
}

/// NumPy's `logspace(start, stop, num)` with base 10 and the end point.
pub fn logspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    linspace(start, stop, num)
        .into_iter()
        .map(|y| libm::pow(10.0, y))
        .collect()
}

/// NumPy's `linspace(start, stop, num)` with the end point: `start + i*step`
/// and the last value set to `stop` exactly.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// NumPy's floating-point `arange(start, stop, step)`: `ceil((stop-start)/step)`
/// values `start + i*d` where `d = (start + step) - start`.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 || !len.is_finite() {
        return Vec::new();
    }
    let len = len as usize;
    let mut v = Vec::with_capacity(len);
    v.push(start);
    if len > 1 {
        let second = start + step;
        let d = second - start;
        v.push(second);
        for i in 2..len {
            v.push(start + i as f64 * d);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_shape() {
        let o = default_orders();
        assert_eq!(o.len(), DEFAULT_ORDERS_LEN);
        assert_eq!(o[0], 2.0);
        assert_eq!(o[197], 100.5);
        assert_eq!(o[198], 100.0);
        assert!((o[297] - 500.0).abs() < 1e-12);
        assert_eq!(short_orders().len(), 21);
        assert_eq!(moments_2017(8), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    fn arange_like_numpy() {
        assert_eq!(arange(2.0, 101.0, 0.5).len(), 198);
        assert_eq!(arange(0.0, 1.0, 0.25), vec![0.0, 0.25, 0.5, 0.75]);
        assert!(arange(1.0, 0.0, 0.5).is_empty());
    }
}
