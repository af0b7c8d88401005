//! Minibatch input tensors built straight from the `u8` pixels (scaled to
//! `[0, 1]`), and the label-preserving shift augmentation of distillation
//! and semi-supervised training.

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::data::Images;

/// Converts images to `f32 [n, 1, rows, cols]` scaled to `[0, 1]`.
pub fn images_to_tensor(images: &Images, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = images.data.iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::from_vec(data, (images.len(), 1, images.rows, images.cols), device)
}

/// Builds the input tensor of the items `idx` of `images`.
pub(crate) fn batch_tensor(images: &Images, idx: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let n = images.item_len();
    let mut data = Vec::with_capacity(idx.len() * n);
    for &i in idx {
        data.extend(images.item(i).iter().map(|&v| f32::from(v) / 255.0));
    }
    Tensor::from_vec(data, (idx.len(), 1, images.rows, images.cols), device)
}

/// Label-preserving augmentations of a minibatch, applied per item in this
/// order: shift, horizontal flip, contrast, pixel noise, cutout.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Largest shift (pixels, each axis; zero fill).
    pub shift: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Scale the pixels by a factor drawn uniformly from `1 ± contrast`
    /// (clipped to `[0, 1]`); 0 = off.
    pub contrast: f32,
    /// Standard deviation of Gaussian pixel noise (on the `[0, 1]` scale,
    /// clipped); 0 = off.
    pub noise: f32,
    /// Side of a square zeroed at a random place (clipped at the borders);
    /// 0 = off.
    pub cutout: usize,
}

impl Augment {
    /// Only a shift of up to `shift` pixels.
    pub fn shift(shift: usize) -> Self {
        Augment { shift, ..Augment::default() }
    }
}

/// Builds the input tensor of the items `idx` of `images`, each shifted by a
/// random offset in `-max_shift..=max_shift` along both axes (zero fill).
pub(crate) fn shifted_batch_tensor(
    images: &Images,
    idx: &[usize],
    max_shift: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    augmented_batch_tensor(images, idx, &Augment::shift(max_shift), rng, device)
}

/// Builds the input tensor of the items `idx` of `images`, each augmented
/// by `aug` with its own draws.
pub(crate) fn augmented_batch_tensor(
    images: &Images,
    idx: &[usize],
    aug: &Augment,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use rand::Rng;
    use rand_distr::{Distribution, Normal};
    let (rows, cols) = (images.rows, images.cols);
    let s = i32::try_from(aug.shift).unwrap_or(i32::MAX);
    let noise = if aug.noise > 0.0 { Normal::new(0.0f32, aug.noise).ok() } else { None };
    let mut data = vec![0f32; idx.len() * rows * cols];
    for (k, &i) in idx.iter().enumerate() {
        let (dy, dx) = (rng.random_range(-s..=s) as isize, rng.random_range(-s..=s) as isize);
        let flip = aug.flip && rng.random_bool(0.5);
        let src = images.item(i);
        let dst = &mut data[k * rows * cols..(k + 1) * rows * cols];
        for r in 0..rows as isize {
            let sr = r - dy;
            if sr < 0 || sr >= rows as isize {
                continue;
            }
            for c in 0..cols as isize {
                let sc = c - dx;
                if sc >= 0 && sc < cols as isize {
                    let sc = if flip { cols as isize - 1 - sc } else { sc };
                    dst[(r as usize) * cols + c as usize] = f32::from(src[(sr as usize) * cols + sc as usize]) / 255.0;
                }
            }
        }
        if aug.contrast > 0.0 {
            let f = rng.random_range(1.0 - aug.contrast..=1.0 + aug.contrast);
            dst.iter_mut().for_each(|v| *v = (*v * f).min(1.0));
        }
        if let Some(n) = &noise {
            dst.iter_mut().for_each(|v| *v = (*v + n.sample(rng)).clamp(0.0, 1.0));
        }
        if aug.cutout > 0 {
            let (r0, c0) = (rng.random_range(0..rows), rng.random_range(0..cols));
            for r in r0.saturating_sub(aug.cutout / 2)..(r0 + aug.cutout.div_ceil(2)).min(rows) {
                dst[r * cols + c0.saturating_sub(aug.cutout / 2)..r * cols + (c0 + aug.cutout.div_ceil(2)).min(cols)]
                    .fill(0.0);
            }
        }
    }
    Tensor::from_vec(data, (idx.len(), 1, rows, cols), device)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn shifted_batches_move_items_within_the_bound() -> candle_core::Result<()> {
        // One bright pixel in the middle of a 7x7 image.
        let mut data = vec![0u8; 49];
        data[3 * 7 + 3] = 255;
        let images = Images { data, rows: 7, cols: 7 };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let x = shifted_batch_tensor(&images, &[0], 2, &mut rng, &Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let lit: Vec<usize> = (0..49).filter(|&i| x[i] > 0.0).collect();
            assert_eq!(lit.len(), 1, "the pixel moves, nothing else appears");
            let (r, c) = ((lit[0] / 7) as isize, (lit[0] % 7) as isize);
            assert!((r - 3).abs() <= 2 && (c - 3).abs() <= 2, "shift within 2: ({r}, {c})");
            assert_eq!(x[lit[0]], 1.0);
            seen.insert((r, c));
        }
        assert!(seen.len() > 10, "offsets vary: {seen:?}");
        // Shifted off the edge, the pixel is gone (zero fill, no wrap-around).
        let corner = Images {
            data: {
                let mut d = vec![0u8; 49];
                d[0] = 255;
                d
            },
            rows: 7,
            cols: 7,
        };
        let sums: Vec<f32> = (0..50)
            .map(|_| {
                shifted_batch_tensor(&corner, &[0], 1, &mut rng, &Device::Cpu)?
                    .sum_all()?
                    .to_scalar::<f32>()
            })
            .collect::<candle_core::Result<_>>()?;
        assert!(
            sums.contains(&0.0) && sums.contains(&1.0),
            "both kept and shifted off: {sums:?}"
        );
        Ok(())
    }

    /// A flip mirrors the row (both ways seen over draws, pixel values
    /// kept); cutout zeroes a square of the given side inside the image;
    /// contrast and noise stay in [0, 1] and change the pixels.
    #[test]
    fn flips_cutouts_contrast_and_noise() -> candle_core::Result<()> {
        // Pixel (1, 0) lit in a 4x4 image: a flip moves it to (1, 3).
        let mut data = vec![0u8; 16];
        data[4] = 200;
        let one = Images { data, rows: 4, cols: 4 };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let flip = Augment { flip: true, ..Augment::default() };
        let mut at = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let x = augmented_batch_tensor(&one, &[0], &flip, &mut rng, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let lit: Vec<usize> = (0..16).filter(|&i| x[i] > 0.0).collect();
            assert_eq!(lit.len(), 1);
            assert!((x[lit[0]] - 200.0 / 255.0).abs() < 1e-6);
            at.insert(lit[0]);
        }
        assert_eq!(at, [4usize, 7].into_iter().collect(), "kept or mirrored, both seen");

        let full = Images { data: vec![255u8; 64], rows: 8, cols: 8 };
        let cut = Augment { cutout: 2, ..Augment::default() };
        for _ in 0..20 {
            let x = augmented_batch_tensor(&full, &[0], &cut, &mut rng, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let zeros = x.iter().filter(|&&v| v == 0.0).count();
            assert!((1..=4).contains(&zeros), "a clipped 2x2 square: {zeros} zeros");
        }

        let grey = Images { data: vec![128u8; 64], rows: 8, cols: 8 };
        let jitter = Augment { contrast: 0.5, noise: 0.3, ..Augment::default() };
        let x = augmented_batch_tensor(&grey, &[0, 0, 0], &jitter, &mut rng, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "clipped to [0, 1]");
        let distinct: std::collections::BTreeSet<u32> = x.iter().map(|v| v.to_bits()).collect();
        assert!(distinct.len() > 100, "noise varies the pixels: {} values", distinct.len());
        Ok(())
    }
}
