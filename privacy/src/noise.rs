//! Noisy arg-max aggregation of integer vote counts, sampled with OpenDP.
//!
//! Counts are integers, so noise is drawn from OpenDP's discrete Laplace and
//! discrete Gaussian samplers (Canonne, Kamath, Steinke 2020) on the integer
//! histogram. Floating-point noise formulas leak through the low bits of the
//! result (Mironov 2012); exact integer sampling does not.
//!
//! The samplers' random bits come from OpenSSL's `RAND_priv_bytes` (a
//! CSPRNG seeded from the OS), through OpenDP's `use-openssl` feature that
//! this crate's default `secure-noise` feature turns on. Without it OpenDP
//! falls back to `rand::thread_rng`, which it documents as non-secure.

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L1Distance, L2Distance};

/// The lowest-index arg-max, the aggregator's tie rule (one home: `special`).
pub use crate::special::argmax;

/// Whether the noise is drawn from OpenSSL's CSPRNG (OpenDP `use-openssl`).
pub const SECURE_NOISE: bool = cfg!(feature = "secure-noise");

/// Where the noise's random bits come from, for logs and reports.
pub const NOISE_SOURCE: &str = if SECURE_NOISE {
    "openssl RAND_priv_bytes (opendp use-openssl)"
} else {
    "rand::thread_rng (opendp without use-openssl: not secure)"
};

/// Why noise could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// A noise parameter is not a finite positive number.
    #[error("invalid noise parameter {name} = {value}: must be finite and > 0")]
    BadParameter {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: f64,
    },
    /// The vote histogram was empty.
    #[error("empty vote histogram")]
    EmptyHistogram,
    /// OpenDP refused to build or run a measurement.
    #[error("opendp: {0}")]
    OpenDp(String),
}

fn opendp_err(e: opendp::error::Error) -> NoiseError {
    NoiseError::OpenDp(e.to_string())
}

type Vector = VectorDomain<AtomDomain<i64>>;
type LaplaceVec = Measurement<Vector, L1Distance<i64>, MaxDivergence, Vec<i64>>;
type GaussianVec = Measurement<Vector, L2Distance<i64>, ZeroConcentratedDivergence, Vec<i64>>;
type GaussianScalar = Measurement<AtomDomain<i64>, AbsoluteDistance<i64>, ZeroConcentratedDivergence, i64>;

enum Kind {
    Laplace(LaplaceVec),
    Gaussian(GaussianVec),
    Confident { threshold: f64, screen: GaussianScalar, answer: GaussianVec },
}

/// A noisy arg-max aggregator: LNMax, GNMax or Confident-GNMax.
///
/// OpenDP measurements are neither `Send` nor `Sync`, so build one where the
/// noise is drawn (it is cheap) rather than sharing it between threads.
pub struct NoisyMax {
    kind: Kind,
}

fn positive(name: &'static str, value: f64) -> Result<f64, NoiseError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(NoiseError::BadParameter { name, value })
    }
}

fn gaussian_vec(sigma: f64) -> Result<GaussianVec, NoiseError> {
    make_gaussian(VectorDomain::new(AtomDomain::default()), L2Distance::default(), sigma, None).map_err(opendp_err)
}

impl NoisyMax {
    /// The sampler for `mechanism`.
    pub fn new(mechanism: &crate::Mechanism) -> Result<Self, NoiseError> {
        use crate::Mechanism::*;
        match *mechanism {
            LnMax { scale } => Self::lnmax(scale),
            GnMax { sigma } => Self::gnmax(sigma),
            ConfidentGnMax { threshold, sigma1, sigma2 } => Self::confident_gnmax(threshold, sigma1, sigma2),
        }
    }

    /// LNMax: discrete Laplace noise of scale `b` on every count.
    pub fn lnmax(scale: f64) -> Result<Self, NoiseError> {
        let scale = positive("scale", scale)?;
        let m = make_laplace(VectorDomain::new(AtomDomain::default()), L1Distance::default(), scale, None)
            .map_err(opendp_err)?;
        Ok(NoisyMax { kind: Kind::Laplace(m) })
    }

    /// GNMax: discrete Gaussian noise of standard deviation `sigma` on every count.
    pub fn gnmax(sigma: f64) -> Result<Self, NoiseError> {
        Ok(NoisyMax { kind: Kind::Gaussian(gaussian_vec(positive("sigma", sigma)?)?) })
    }

    /// Confident-GNMax: answer only when the top count plus N(0, sigma1^2)
    /// reaches `threshold`, then release the GNMax winner with `sigma2`.
    pub fn confident_gnmax(threshold: f64, sigma1: f64, sigma2: f64) -> Result<Self, NoiseError> {
        let screen = make_gaussian(AtomDomain::default(), AbsoluteDistance::default(), positive("sigma1", sigma1)?, None)
            .map_err(opendp_err)?;
        let answer = gaussian_vec(positive("sigma2", sigma2)?)?;
        if !threshold.is_finite() {
            return Err(NoiseError::BadParameter { name: "threshold", value: threshold });
        }
        Ok(NoisyMax { kind: Kind::Confident { threshold, screen, answer } })
    }

    /// The noisy winner of one vote histogram, or `None` for an abstention.
    ///
    /// Ties after noise go to the lowest class index, as in the reference.
    pub fn answer(&self, counts: &[u32]) -> Result<Option<usize>, NoiseError> {
        let counts: Vec<i64> = counts.iter().map(|&c| i64::from(c)).collect();
        let top = counts.iter().copied().max().ok_or(NoiseError::EmptyHistogram)?;
        let noisy = match &self.kind {
            Kind::Laplace(m) => m.invoke(&counts).map_err(opendp_err)?,
            Kind::Gaussian(m) => m.invoke(&counts).map_err(opendp_err)?,
            Kind::Confident { threshold, screen, answer } => {
                let screened = screen.invoke(&top).map_err(opendp_err)?;
                if (screened as f64) < *threshold {
                    return Ok(None);
                }
                answer.invoke(&counts).map_err(opendp_err)?
            }
        };
        Ok(argmax(&noisy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default build draws from OpenSSL: OpenDP's `fill_bytes` (the one
    /// source of every sampler's bits) is the `use-openssl` one. The
    /// end-to-end test `secure_noise` checks the served binary links it.
    #[test]
    // The constant is what is under test: it fails in a build without the
    // feature, which is the point (clippy's assertions_on_constants).
    #[allow(clippy::assertions_on_constants)]
    fn the_default_build_uses_the_secure_source() {
        assert!(SECURE_NOISE, "pate-privacy built without its secure-noise feature");
        assert!(NOISE_SOURCE.starts_with("openssl"));
        let mut bits = [0u8; 64];
        opendp::traits::samplers::fill_bytes(&mut bits).expect("OpenSSL RAND_priv_bytes");
        assert_ne!(bits, [0u8; 64]);
    }

    #[test]
    fn argmax_prefers_lowest_index_on_ties() {
        assert_eq!(argmax(&[1, 3, 3, 0]), Some(1));
        assert_eq!(argmax::<i64>(&[]), None);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(NoisyMax::lnmax(0.0).is_err());
        assert!(NoisyMax::gnmax(f64::NAN).is_err());
        assert!(NoisyMax::confident_gnmax(f64::INFINITY, 1.0, 1.0).is_err());
        assert!(matches!(NoisyMax::lnmax(1.0).expect("valid").answer(&[]), Err(NoiseError::EmptyHistogram)));
    }

    /// With a huge lead, small noise never flips the winner.
    #[test]
    fn clear_winner_survives_noise() {
        let votes = [0, 0, 250, 0, 0];
        for m in [NoisyMax::lnmax(2.0), NoisyMax::gnmax(5.0), NoisyMax::confident_gnmax(100.0, 10.0, 5.0)] {
            let m = m.expect("valid");
            for _ in 0..200 {
                assert_eq!(m.answer(&votes).expect("sampled"), Some(2));
            }
        }
    }

    /// A confident aggregator abstains when no class comes near the threshold.
    #[test]
    fn confident_gnmax_abstains_on_weak_consensus() {
        let m = NoisyMax::confident_gnmax(200.0, 5.0, 5.0).expect("valid");
        for _ in 0..200 {
            assert_eq!(m.answer(&[30, 25, 20, 25]).expect("sampled"), None);
        }
    }

    /// The noise is really there: with a one-vote lead and scale 10 the
    /// runner-up wins a good share of the time (about 45% in theory).
    #[test]
    fn laplace_noise_flips_close_calls() {
        let m = NoisyMax::lnmax(10.0).expect("valid");
        let flips = (0..2000).filter(|_| m.answer(&[10, 11]).expect("sampled") == Some(0)).count();
        assert!((600..1200).contains(&flips), "flips = {flips}");
    }
}
