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

/// Builds the input tensor of the items `idx` of `images`, each shifted by a
/// random offset in `-max_shift..=max_shift` along both axes (zero fill).
pub(crate) fn shifted_batch_tensor(
    images: &Images,
    idx: &[usize],
    max_shift: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use rand::Rng;
    let (rows, cols) = (images.rows, images.cols);
    let s = i32::try_from(max_shift).unwrap_or(i32::MAX);
    let mut data = vec![0f32; idx.len() * rows * cols];
    for (k, &i) in idx.iter().enumerate() {
        let (dy, dx) = (rng.random_range(-s..=s) as isize, rng.random_range(-s..=s) as isize);
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
                    dst[(r as usize) * cols + c as usize] = f32::from(src[(sr as usize) * cols + sc as usize]) / 255.0;
                }
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

}
