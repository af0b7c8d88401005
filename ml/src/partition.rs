//! Disjoint teacher partitions from a seeded permutation.
//!
//! The item indices `0..n_items` are shuffled with a `ChaCha8Rng` seeded from
//! `seed` and cut into `n_parts` contiguous pieces whose sizes differ by at
//! most one (the first `n_items % n_parts` parts get one extra item). The
//! result depends only on `(n_items, n_parts, seed)`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Errors for impossible partitions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartitionError {
    /// Zero parts were asked for.
    #[error("the number of partitions must be at least 1")]
    ZeroParts,
    /// More parts than items: some would be empty.
    #[error("cannot cut {n_items} items into {n_parts} non-empty partitions")]
    TooManyParts {
        /// Items available.
        n_items: usize,
        /// Parts asked for.
        n_parts: usize,
    },
    /// A partition index outside `0..n_parts`.
    #[error("partition index {index} out of range for {n_parts} partitions")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of partitions.
        n_parts: usize,
    },
}

/// Cuts `0..n_items` into `n_parts` disjoint, nearly equal parts covering
/// every index, from a permutation seeded by `seed`.
pub fn partition(n_items: usize, n_parts: usize, seed: u64) -> Result<Vec<Vec<usize>>, PartitionError> {
    if n_parts == 0 {
        return Err(PartitionError::ZeroParts);
    }
    if n_parts > n_items {
        return Err(PartitionError::TooManyParts { n_items, n_parts });
    }
    let mut perm: Vec<usize> = (0..n_items).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (base, extra) = (n_items / n_parts, n_items % n_parts);
    let mut parts = Vec::with_capacity(n_parts);
    let mut start = 0;
    for i in 0..n_parts {
        let len = base + usize::from(i < extra);
        parts.push(perm[start..start + len].to_vec());
        start += len;
    }
    Ok(parts)
}

/// Part `index` of [`partition`]`(n_items, n_parts, seed)`.
pub fn partition_part(n_items: usize, n_parts: usize, seed: u64, index: usize) -> Result<Vec<usize>, PartitionError> {
    if index >= n_parts {
        return Err(PartitionError::IndexOutOfRange { index, n_parts });
    }
    let mut parts = partition(n_items, n_parts, seed)?;
    Ok(parts.swap_remove(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_and_covering() {
        for (n, k) in [(10, 3), (60_000, 250), (7, 7), (1, 1), (100, 1)] {
            let parts = partition(n, k, 42).expect("valid");
            assert_eq!(parts.len(), k);
            let mut seen = vec![false; n];
            for p in &parts {
                assert!(p.len() == n / k || p.len() == n / k + 1, "size {}", p.len());
                for &i in p {
                    assert!(!seen[i], "index {i} in two parts");
                    seen[i] = true;
                }
            }
            assert!(seen.iter().all(|&s| s), "not covering");
        }
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(partition(1000, 10, 7), partition(1000, 10, 7));
        assert_ne!(partition(1000, 10, 7), partition(1000, 10, 8));
        let all = partition(1000, 10, 7).expect("valid");
        assert_eq!(partition_part(1000, 10, 7, 3).expect("valid"), all[3]);
    }

    #[test]
    fn errors() {
        assert_eq!(partition(10, 0, 1), Err(PartitionError::ZeroParts));
        assert_eq!(
            partition(3, 4, 1),
            Err(PartitionError::TooManyParts { n_items: 3, n_parts: 4 })
        );
        assert!(partition_part(10, 2, 1, 2).is_err());
    }
}
