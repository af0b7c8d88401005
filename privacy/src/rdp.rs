//! Conversion of an RDP curve (one value per Rényi order) to an
//! `(epsilon, delta)` guarantee.
//!
//! * [`Conversion::Classic`] is the reference's `compute_eps_from_delta`
//!   (Mironov 2017, Proposition 3): `eps = min_a rdp(a) - ln(delta)/(a-1)`.
//! * [`Conversion::Balle2020`] is the tighter bound of Balle et al. 2020
//!   (arXiv 2004.00010, Theorem 21):
//!   `eps = min_a rdp(a) + ln((a-1)/a) - (ln(delta) + ln(a))/(a-1)`,
//!   floored at 0.
//!
//! Both take the first order that attains the minimum, like NumPy's
//! `argmin`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the RDP conversion.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RdpError {
    /// `rdp` and `orders` differ in length.
    #[error("rdp has {rdp} values but there are {orders} orders")]
    LengthMismatch {
        /// Length of the RDP curve.
        rdp: usize,
        /// Number of orders.
        orders: usize,
    },
    /// No orders were given.
    #[error("the list of orders is empty")]
    Empty,
    /// `delta` is not in `(0, 1)`.
    #[error("delta must be in (0, 1), got {0}")]
    BadDelta(f64),
    /// An order is not greater than 1 (or not finite).
    #[error("every order must be a finite number > 1, got {0}")]
    BadOrder(f64),
    /// Unknown conversion name.
    #[error("unknown conversion {0:?} (expected classic or balle2020)")]
    UnknownConversion(String),
}

/// Which RDP to `(epsilon, delta)` conversion to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// `rdp - ln(delta)/(order-1)` (the reference's conversion).
    #[default]
    Classic,
    /// Balle et al. 2020, tighter by about `ln(order)/(order-1)`.
    Balle2020,
}

impl std::str::FromStr for Conversion {
    type Err = RdpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Conversion::Classic),
            "balle2020" | "balle-2020" | "balle" => Ok(Conversion::Balle2020),
            _ => Err(RdpError::UnknownConversion(s.to_string())),
        }
    }
}

/// An epsilon and the order that attains it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonAt {
    /// The epsilon at the given delta.
    pub epsilon: f64,
    /// The Rényi order at which the minimum is attained.
    pub order: f64,
}

/// Epsilon at one order, for the given conversion.
pub fn eps_at_order(rdp: f64, order: f64, delta: f64, conversion: Conversion) -> f64 {
    match conversion {
        Conversion::Classic => rdp - delta.ln() / (order - 1.0),
        Conversion::Balle2020 => {
            let e = rdp + ((order - 1.0) / order).ln() - (delta.ln() + order.ln()) / (order - 1.0);
            e.max(0.0)
        }
    }
}

/// Converts an RDP curve to `(epsilon, delta)`-DP, minimising over orders.
///
/// Inputs are assumed valid (same lengths, orders > 1, delta in (0,1));
/// with empty or mismatched inputs it returns `epsilon = +inf` and
/// `order = NaN` instead of panicking. Use [`try_eps_from_rdp`] to get an
/// error instead.
pub fn eps_from_rdp(rdp: &[f64], orders: &[f64], delta: f64, conversion: Conversion) -> EpsilonAt {
    if rdp.len() != orders.len() {
        return EpsilonAt {
            epsilon: f64::INFINITY,
            order: f64::NAN,
        };
    }
    let mut best = EpsilonAt {
        epsilon: f64::INFINITY,
        order: f64::NAN,
    };
    let mut found = false;
    for (&r, &a) in rdp.iter().zip(orders) {
        let e = eps_at_order(r, a, delta, conversion);
        if !found || e < best.epsilon {
            if e.is_nan() {
                continue;
            }
            best = EpsilonAt { epsilon: e, order: a };
            found = true;
        }
    }
    best
}

/// [`eps_from_rdp`] with its inputs checked.
pub fn try_eps_from_rdp(
    rdp: &[f64],
    orders: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<EpsilonAt, RdpError> {
    if rdp.len() != orders.len() {
        return Err(RdpError::LengthMismatch {
            rdp: rdp.len(),
            orders: orders.len(),
        });
    }
    check_orders(orders)?;
    check_delta(delta)?;
    Ok(eps_from_rdp(rdp, orders, delta, conversion))
}

/// Checks that `delta` is in `(0, 1)`.
pub fn check_delta(delta: f64) -> Result<(), RdpError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(RdpError::BadDelta(delta))
    }
}

/// Checks that the list is non-empty and every order is finite and > 1.
pub fn check_orders(orders: &[f64]) -> Result<(), RdpError> {
    if orders.is_empty() {
        return Err(RdpError::Empty);
    }
    match orders.iter().find(|&&a| !(a > 1.0 && a.is_finite())) {
        Some(&a) => Err(RdpError::BadOrder(a)),
        None => Ok(()),
    }
}

/// Adds `rdp` into `total` element-wise (sequential composition).
pub fn accumulate(total: &mut [f64], rdp: &[f64]) {
    for (t, r) in total.iter_mut().zip(rdp) {
        *t += r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_by_hand() {
        // rdp = a/100 at orders 2, 11, 33, 101, delta = e^-10:
        // eps(2) = 0.02 + 10, eps(11) = 0.11 + 1, eps(33) = 0.33 + 10/32,
        // eps(101) = 1.01 + 0.1.
        let orders = [2.0, 11.0, 33.0, 101.0];
        let rdp: Vec<f64> = orders.iter().map(|a| a / 100.0).collect();
        let e = eps_from_rdp(&rdp, &orders, (-10f64).exp(), Conversion::Classic);
        assert_eq!(e.order, 33.0);
        assert!((e.epsilon - 0.6425).abs() < 1e-12);
    }

    #[test]
    fn balle_is_tighter() {
        let orders = crate::orders::default_orders();
        let rdp: Vec<f64> = orders.iter().map(|a| a / 1600.0 * 100.0).collect();
        let c = eps_from_rdp(&rdp, &orders, 1e-5, Conversion::Classic);
        let b = eps_from_rdp(&rdp, &orders, 1e-5, Conversion::Balle2020);
        assert!(b.epsilon < c.epsilon);
        // At a fixed order the gap is ln(a)/(a-1) - ln((a-1)/a).
        let a: f64 = 10.0;
        let gap = eps_at_order(0.3, a, 1e-5, Conversion::Classic) - eps_at_order(0.3, a, 1e-5, Conversion::Balle2020);
        assert!((gap - (a.ln() / (a - 1.0) - ((a - 1.0) / a).ln())).abs() < 1e-12);
    }

    #[test]
    fn checked_errors() {
        assert!(matches!(
            try_eps_from_rdp(&[1.0], &[2.0, 3.0], 1e-5, Conversion::Classic),
            Err(RdpError::LengthMismatch { .. })
        ));
        assert!(matches!(
            try_eps_from_rdp(&[1.0], &[1.0], 1e-5, Conversion::Classic),
            Err(RdpError::BadOrder(_))
        ));
        assert!(matches!(
            try_eps_from_rdp(&[1.0], &[2.0], 0.0, Conversion::Classic),
            Err(RdpError::BadDelta(_))
        ));
        assert!(matches!(
            try_eps_from_rdp(&[], &[], 0.1, Conversion::Classic),
            Err(RdpError::Empty)
        ));
        let e = eps_from_rdp(&[1.0], &[2.0, 3.0], 1e-5, Conversion::Classic);
        assert!(e.epsilon.is_infinite());
    }
}
