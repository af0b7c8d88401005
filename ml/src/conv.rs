//! Fast CPU convolution blocks for the CNN: convolution + bias + ReLU + 2x2
//! max-pool as one candle custom op with its own backward pass.
//!
//! candle's own CPU `conv2d` backward (through `conv_transpose2d`) and its
//! max-pool backward (seven tensor ops) made the CNN train at ~140
//! samples/s on two cores; a first rewrite (im2col of the whole batch, a
//! candle matmul, a fused ReLU + pool) reached about half PyTorch's speed.
//! This one works image by image, so the patch matrix of one image stays in
//! cache: `im2col`, one `gemm` with the bias folded into its destination,
//! ReLU and pooling in the same pass with each window's argmax saved for the
//! backward pass. The backward pass rebuilds each image's patches, adds its
//! weight gradient into a per-thread sum (reduced once), and computes the
//! input gradient only when the input needs one (never for the first layer,
//! whose input is data). Images are spread over rayon's threads.
//!
//! The block computes exactly what `Conv2d` (stride 1, square kernel, zero
//! padding) followed by ReLU and `max_pool2d(2)` computes, with the same
//! weight names and shapes (`weight [c_out, c_in, k, k]`, `bias [c_out]`).

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use crate::gemm::{matmul, Mat};

/// The contiguous `f32` data of a custom op's argument.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, name: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{name}: input must be contiguous"),
    }
}

/// The shape of one block: input `[b, c_in, h, w]`, kernel `k x k`, zero
/// padding `pad`, `c_out` output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    pad: usize,
}

impl Dims {
    fn new(x: &Layout, weight: &Layout, bias: &Layout, pad: usize) -> Result<Self> {
        let (b, c_in, h, w) = x.shape().dims4()?;
        let (c_out, wc, k, k2) = weight.shape().dims4()?;
        if wc != c_in || k != k2 || bias.shape().dims1()? != c_out {
            candle_core::bail!(
                "conv block: input {:?}, weight {:?}, bias {:?} do not fit",
                x.dims(),
                weight.dims(),
                bias.dims()
            );
        }
        if c_in == 0 || h == 0 || w == 0 || c_out == 0 || k == 0 {
            candle_core::bail!(
                "conv block: empty dimension in input {:?} or weight {:?}",
                x.dims(),
                weight.dims()
            );
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!("conv block: {h}x{w} input smaller than the {k}x{k} kernel");
        }
        Ok(Dims {
            b,
            c_in,
            h,
            w,
            c_out,
            k,
            pad,
        })
    }

    /// Output side before pooling.
    fn out_hw(&self) -> (usize, usize) {
        (self.h + 2 * self.pad + 1 - self.k, self.w + 2 * self.pad + 1 - self.k)
    }

    /// Rows of the patch matrix (`c_in * k * k`, the weight's row length).
    fn patch(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels of one image before pooling (columns of the patch matrix).
    fn pixels(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }

    /// Pooled outputs of one image.
    fn pooled(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.c_out * (oh / 2) * (ow / 2)
    }

    fn image(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Images per patch matrix (one `gemm`): as many as keep the patches
    /// near [`TILE_FLOATS`], at most 16, and few enough that every thread
    /// gets a tile.
    fn tile(&self) -> usize {
        let per_image = (self.patch() * self.pixels()).max(1);
        let fit = (TILE_FLOATS / per_image).clamp(1, 16);
        fit.min(self.b.div_ceil(rayon::current_num_threads()).max(1))
    }

    /// Calls `f(patch_offset, image_offset, len)` for every contiguous run
    /// shared by one image `[c_in, h, w]` and its columns of a patch matrix
    /// `[c_in * k * k, stride]`: row `(ci, ky, kx)` holds, for every output
    /// pixel, the input pixel under that kernel tap. Runs that fall in the
    /// padding are skipped (those patch entries stay zero).
    fn runs(&self, stride: usize, mut f: impl FnMut(usize, usize, usize)) {
        let (k, pad, h, w) = (self.k, self.pad, self.h, self.w);
        let (oh, ow) = self.out_hw();
        for ci in 0..self.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    let row = ((ci * k + ky) * k + kx) * stride;
                    // Output columns whose input column lies inside the image.
                    let lo = pad.saturating_sub(kx);
                    let hi = (w + pad).saturating_sub(kx).min(ow).max(lo);
                    if hi == lo {
                        continue;
                    }
                    let x0 = lo + kx - pad;
                    for oy in 0..oh {
                        let y = oy + ky;
                        if y < pad || y - pad >= h {
                            continue;
                        }
                        f(row + oy * ow + lo, (ci * h + y - pad) * w + x0, hi - lo);
                    }
                }
            }
        }
    }

    /// Fills the patch matrix `cols [c_in * k * k, n * oh * ow]` of the `n`
    /// images in `images`, image `j` in columns `j * oh * ow ..`. Entries
    /// under padding are not written: `cols` must hold zeros there (it does
    /// when it was zeroed and last filled for the same `n`).
    fn im2col(&self, images: &[f32], cols: &mut [f32]) {
        let n = images.len() / self.image();
        let np = self.pixels();
        for (j, image) in images.chunks_exact(self.image()).enumerate() {
            let cols = &mut cols[j * np..];
            self.runs(n * np, |o, i, len| cols[o..o + len].copy_from_slice(&image[i..i + len]));
        }
    }

    /// Adds patch-matrix gradients (laid out as [`Dims::im2col`] fills
    /// them) back into the `n` images' gradients.
    fn col2im(&self, cols: &[f32], images: &mut [f32]) {
        let n = images.len() / self.image();
        let np = self.pixels();
        for (j, image) in images.chunks_exact_mut(self.image()).enumerate() {
            let cols = &cols[j * np..];
            self.runs(n * np, |o, i, len| {
                for (d, v) in image[i..i + len].iter_mut().zip(&cols[o..o + len]) {
                    *d += v;
                }
            });
        }
    }

    /// Routes one plane's pooled-output gradient `g [oh/2, ow/2]` to the
    /// saved window slots (`arg`), into the zeroed pre-activation gradient
    /// `gpre [oh, ow]`; returns the plane's sum (its bias gradient).
    fn unpool(&self, g: &[f32], arg: &[u8], gpre: &mut [f32]) -> f32 {
        let (_, ow) = self.out_hw();
        let pw = ow / 2;
        let mut sum = 0f32;
        if pw == 0 {
            return sum;
        }
        for (py, (g_row, a_row)) in g.chunks_exact(pw).zip(arg.chunks_exact(pw)).enumerate() {
            let base = 2 * py * ow;
            for (px, (&gv, &slot)) in g_row.iter().zip(a_row).enumerate() {
                // Branch-free (half the windows are dead): a dead window
                // writes a zero into its (zeroed) bottom-right pixel.
                let gv = if slot == DEAD { 0.0 } else { gv };
                let (dy, dx) = (usize::from((slot >> 1) & 1), usize::from(slot & 1));
                gpre[base + dy * ow + 2 * px + dx] = gv;
                sum += gv;
            }
        }
        sum
    }
}

/// Target size, in floats, of one tile's patch matrix: well inside a core's
/// L2 cache (2 MB here), large enough that a `gemm` amortises its packing.
const TILE_FLOATS: usize = 1 << 17;

/// A tile's patch matrix, with the image count its zero padding was laid
/// out for (a tile of another size must start from zeros again).
struct Patches {
    cols: Vec<f32>,
    images: usize,
}

impl Patches {
    fn new(len: usize) -> Self {
        Patches {
            cols: vec![0f32; len],
            images: 0,
        }
    }

    /// `cols` filled from `images` (`n` of them).
    fn fill(&mut self, d: &Dims, images: &[f32]) -> &[f32] {
        let n = images.len() / d.image();
        let len = d.patch() * n * d.pixels();
        if n != self.images {
            self.cols[..len].fill(0.0);
            self.images = n;
        }
        d.im2col(images, &mut self.cols[..len]);
        &self.cols[..len]
    }
}

/// Marks a pooled output whose maximum was not positive: ReLU passes no
/// gradient back through it.
const DEAD: u8 = u8::MAX;

/// Forward: `(x, weight, bias)` → `relu(maxpool2(conv(x)))`, saving each
/// pooled output's window slot for [`ConvBlock::bwd`].
#[derive(Debug)]
struct ConvBlock {
    pad: usize,
    argmax: OnceLock<Arc<Vec<u8>>>,
}

impl CustomOp3 for ConvBlock {
    fn name(&self) -> &'static str {
        "conv-relu-maxpool2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1, l2, l3, self.pad)?;
        let x = f32_slice(s1, l1, self.name())?;
        let wm = f32_slice(s2, l2, self.name())?;
        let bias = f32_slice(s3, l3, self.name())?;
        let (oh, ow) = d.out_hw();
        let (kp, np, pooled) = (d.patch(), d.pixels(), d.pooled());
        let mut out = vec![0f32; d.b * pooled];
        let mut argmax = vec![DEAD; d.b * pooled];
        let t = d.tile();
        if pooled > 0 {
            let pp = (oh / 2) * (ow / 2);
            out.par_chunks_mut(t * pooled)
                .zip(argmax.par_chunks_mut(t * pooled))
                .zip(x.par_chunks(t * d.image()))
                .for_each_init(
                    || (Patches::new(kp * t * np), vec![0f32; d.c_out * t * np]),
                    |(patches, pre), ((out, arg), images)| {
                        let n = images.len() / d.image();
                        let cols = patches.fill(&d, images);
                        let pre = &mut pre[..d.c_out * n * np];
                        for (row, &b) in pre.chunks_mut(n * np).zip(bias) {
                            row.fill(b);
                        }
                        let cols = Mat::rows(cols, kp, n * np);
                        matmul(pre, Mat::rows(wm, d.c_out, kp), cols, true);
                        // pre is [c_out, n, oh * ow]; out and arg are [n, c_out, pp].
                        for (c, planes) in pre.chunks_exact(n * np).enumerate() {
                            for (j, plane) in planes.chunks_exact(np).enumerate() {
                                let at = (j * d.c_out + c) * pp;
                                relu_pool(plane, oh, ow, &mut out[at..at + pp], &mut arg[at..at + pp]);
                            }
                        }
                    },
                );
        }
        // A second forward through the same op (not done by candle) would keep the first argmax.
        let _ = self.argmax.set(Arc::new(argmax));
        Ok((CpuStorage::F32(out), Shape::from((d.b, d.c_out, oh / 2, ow / 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(argmax) = self.argmax.get() else {
            candle_core::bail!("conv block: backward before forward");
        };
        // Data needs no gradient: skipping it saves a third of the first layer's work.
        let need_dx = x.track_op();
        let op = ConvBlockBwd {
            pad: self.pad,
            need_dx,
            argmax: Arc::clone(argmax),
        };
        let flat = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        let (nx, nw) = (if need_dx { x.elem_count() } else { 0 }, weight.elem_count());
        let dx = need_dx.then(|| flat.narrow(0, 0, nx)?.reshape(x.shape())).transpose()?;
        let dw = flat.narrow(0, nx, nw)?.reshape(weight.shape())?;
        let db = flat.narrow(0, nx + nw, bias.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `relu(maxpool2x2(pre))` of one `[oh, ow]` plane of pre-activations into
/// `out [oh / 2, ow / 2]` (odd trailing rows and columns dropped), with
/// each window's first maximal slot in `arg` ([`DEAD`] when not positive).
fn relu_pool(pre: &[f32], oh: usize, ow: usize, out: &mut [f32], arg: &mut [u8]) {
    let (ph, pw) = (oh / 2, ow / 2);
    if pw == 0 || ph == 0 {
        return;
    }
    let mut outs = out.chunks_exact_mut(pw).zip(arg.chunks_exact_mut(pw));
    for plane in pre.chunks_exact(oh * ow) {
        for (py, (out_row, arg_row)) in (0..ph).zip(outs.by_ref()) {
            let r0 = plane[2 * py * ow..][..2 * pw].chunks_exact(2);
            let r1 = plane[(2 * py + 1) * ow..][..2 * pw].chunks_exact(2);
            for (((top, bottom), o), a) in r0.zip(r1).zip(out_row.iter_mut()).zip(arg_row.iter_mut()) {
                // A tournament of selects, not a loop of branches: on
                // random-looking activations branches mispredict, and this
                // pass then costs as much as a convolution's gemm. It keeps
                // the first maximal slot (0, 1 before 2, 3).
                let (t, b) = (top[0].max(top[1]), bottom[0].max(bottom[1]));
                let ts = u8::from(top[1] > top[0]);
                let bs = 2 + u8::from(bottom[1] > bottom[0]);
                let slot = ts + u8::from(b > t) * (bs - ts);
                let v = t.max(b);
                *o = v.max(0.0);
                // DEAD (all ones) when not positive, else the slot.
                *a = slot | u8::from(v > 0.0).wrapping_sub(1);
            }
        }
    }
}

/// Backward of [`ConvBlock`]: `(x, weight, grad_out)` → the flat
/// concatenation `[grad_x (when needed), grad_weight, grad_bias]`.
#[derive(Debug)]
struct ConvBlockBwd {
    pad: usize,
    need_dx: bool,
    argmax: Arc<Vec<u8>>,
}

/// One thread's running sums and scratch buffers in [`ConvBlockBwd`].
struct BwdAcc {
    dw: Vec<f32>,
    db: Vec<f32>,
    patches: Patches,
    gpre: Vec<f32>,
    dcols: Vec<f32>,
}

impl CustomOp3 for ConvBlockBwd {
    fn name(&self) -> &'static str {
        "conv-relu-maxpool2-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c_out, _, _, _) = l2.shape().dims4()?;
        let d = Dims::new(l1, l2, &Layout::contiguous(c_out), self.pad)?;
        let x = f32_slice(s1, l1, self.name())?;
        let wm = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let (kp, np, pooled) = (d.patch(), d.pixels(), d.pooled());
        if g.len() != d.b * pooled || self.argmax.len() != g.len() {
            candle_core::bail!("{}: gradient of {} for {} outputs", self.name(), g.len(), d.b * pooled);
        }
        let nx = if self.need_dx { x.len() } else { 0 };
        let mut dx = vec![0f32; nx];
        let t = d.tile();
        let tiles = d.b.div_ceil(t);
        let pp = pooled / d.c_out;
        let sums = {
            // One item per tile: its inputs, output gradients, argmaxes and
            // (when needed) input gradients.
            let mut dx_tiles: Vec<Option<&mut [f32]>> = if self.need_dx {
                dx.chunks_mut(t * d.image()).map(Some).collect()
            } else {
                (0..tiles).map(|_| None).collect()
            };
            let items: Vec<_> = x
                .chunks(t * d.image())
                .zip(g.chunks((t * pooled).max(1)))
                .zip(self.argmax.chunks((t * pooled).max(1)))
                .zip(dx_tiles.drain(..))
                .collect();
            items
                .into_par_iter()
                .fold(
                    || BwdAcc {
                        dw: vec![0f32; d.c_out * kp],
                        db: vec![0f32; d.c_out],
                        patches: Patches::new(kp * t * np),
                        gpre: vec![0f32; d.c_out * t * np],
                        dcols: if self.need_dx {
                            vec![0f32; kp * t * np]
                        } else {
                            Vec::new()
                        },
                    },
                    |mut acc, (((images, g), arg), dx)| {
                        let n = images.len() / d.image();
                        let gpre = &mut acc.gpre[..d.c_out * n * np];
                        gpre.fill(0.0);
                        // gpre is [c_out, n, oh * ow]; g and arg are [n, c_out, pp].
                        for (c, planes) in gpre.chunks_exact_mut(n * np).enumerate() {
                            for (j, plane) in planes.chunks_exact_mut(np).enumerate() {
                                let at = (j * d.c_out + c) * pp;
                                acc.db[c] += d.unpool(&g[at..at + pp], &arg[at..at + pp], plane);
                            }
                        }
                        let cols = acc.patches.fill(&d, images);
                        let gm = Mat::rows(gpre, d.c_out, n * np);
                        matmul(&mut acc.dw, gm, Mat::rows(cols, kp, n * np).t(), true);
                        if let Some(dx) = dx {
                            let dcols = &mut acc.dcols[..kp * n * np];
                            matmul(dcols, Mat::rows(wm, d.c_out, kp).t(), gm, false);
                            d.col2im(dcols, dx);
                        }
                        acc
                    },
                )
                .map(|acc| (acc.dw, acc.db))
                .reduce(
                    || (vec![0f32; d.c_out * kp], vec![0f32; d.c_out]),
                    |(mut dw, mut db), (dw2, db2)| {
                        dw.iter_mut().zip(&dw2).for_each(|(a, b)| *a += b);
                        db.iter_mut().zip(&db2).for_each(|(a, b)| *a += b);
                        (dw, db)
                    },
                )
        };
        let (dw, db) = sums;
        let mut flat = dx;
        flat.extend_from_slice(&dw);
        flat.extend_from_slice(&db);
        let n = flat.len();
        Ok((CpuStorage::F32(flat), Shape::from(n)))
    }
}

/// A convolution (stride 1, square `k x k` kernel, zero padding `pad`)
/// followed by ReLU and a 2x2 max-pool, on `[b, c_in, h, w]` inputs.
#[derive(Clone, Debug)]
pub(crate) struct ConvReluPool {
    weight: Tensor,
    bias: Tensor,
    pad: usize,
}

impl ConvReluPool {
    /// Creates (or loads) `weight [c_out, c_in, k, k]` and `bias [c_out]` from `vb`.
    pub(crate) fn new(c_in: usize, c_out: usize, k: usize, pad: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", init)?;
        let bias = vb.get_with_hints(c_out, "bias", init)?;
        Ok(ConvReluPool { weight, bias, pad })
    }

    /// `[b, c_in, h, w]` → `[b, c_out, oh / 2, ow / 2]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = ConvBlock {
            pad: self.pad,
            argmax: OnceLock::new(),
        };
        x.contiguous()?
            .apply_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Conv2d, Conv2dConfig, Module};
    use crate::test_util::{max_abs_diff, seeded, values};
    use rand::SeedableRng;

    /// `col2im` is the adjoint of `im2col`: <im2col(x), g> = <x, col2im(g)>.
    #[test]
    fn col2im_is_adjoint() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (b, c_in, h, w, k, pad) in [(1, 3, 5, 4, 3, 1), (3, 2, 6, 7, 5, 2), (2, 1, 4, 4, 3, 0)] {
            let d = Dims {
                b,
                c_in,
                h,
                w,
                c_out: 1,
                k,
                pad,
            };
            // b images side by side in one patch matrix, as a tile holds them.
            let x = values(b * d.image(), 1.0, &mut rng);
            let mut cols = vec![0f32; d.patch() * b * d.pixels()];
            d.im2col(&x, &mut cols);
            let g = values(cols.len(), 1.0, &mut rng);
            let mut back = vec![0f32; x.len()];
            d.col2im(&g, &mut back);
            let lhs: f32 = cols.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f32 = back.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs} for {d:?}");
        }
    }

    /// Reference 2x2 max-pool from reshapes and `max` (whose backward routes
    /// the whole gradient to the maximum). candle 0.11's `max_pool2d`
    /// backward multiplies it by the window's share of maxima (1/4), which
    /// is why it is not the reference for gradients.
    fn ref_pool(y: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = y.dims4()?;
        let y = y.narrow(2, 0, h / 2 * 2)?.narrow(3, 0, w / 2 * 2)?;
        y.reshape((b, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
    }

    /// Forward and gradients agree with candle's conv2d + relu + a reference
    /// max-pool, on even and odd sizes, batches larger than the thread
    /// count, and with data (not a variable) as input, as the first layer has.
    #[test]
    fn matches_candle_reference() -> Result<()> {
        check_against_candle((2, 3, 4), (8, 6), (3, 1), true)?;
        check_against_candle((2, 3, 4), (8, 6), (5, 2), true)?;
        check_against_candle((3, 1, 2), (7, 9), (5, 2), true)?;
        check_against_candle((1, 2, 3), (6, 6), (3, 0), true)?;
        check_against_candle((9, 2, 5), (10, 12), (3, 1), true)?;
        // Tiles of 16 images and a short last one, reusing one patch buffer.
        check_against_candle((37, 1, 2), (6, 5), (3, 1), true)?;
        check_against_candle((5, 1, 4), (9, 8), (3, 1), false)
    }

    fn check_against_candle(
        (b, c_in, c_out): (usize, usize, usize),
        (h, w): (usize, usize),
        (k, pad): (usize, usize),
        input_is_variable: bool,
    ) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((b * 100 + h * 10 + k) as u64);
        let xv = seeded(&[b, c_in, h, w], 1.0, &mut rng)?;
        let x = if input_is_variable {
            xv.as_tensor().clone()
        } else {
            xv.as_tensor().detach()
        };
        let wv = seeded(&[c_out, c_in, k, k], 0.5, &mut rng)?;
        let bv = seeded(&[c_out], 0.5, &mut rng)?;
        let ours = ConvReluPool {
            weight: wv.as_tensor().clone(),
            bias: bv.as_tensor().clone(),
            pad,
        };
        let reference = Conv2d::new(
            wv.as_tensor().clone(),
            Some(bv.as_tensor().clone()),
            Conv2dConfig {
                padding: pad,
                ..Default::default()
            },
        );
        let y1 = ours.forward(&x)?;
        let y2 = ref_pool(&reference.forward(&x)?.relu()?)?;
        assert_eq!(y1.dims(), y2.dims());
        assert!(max_abs_diff(&y1, &y2)? < 1e-4);
        let proj = seeded(y1.dims(), 1.0, &mut rng)?.as_tensor().clone();
        let g1 = (&y1 * &proj)?.sum_all()?.backward()?;
        let g2 = (&y2 * &proj)?.sum_all()?.backward()?;
        for (name, v) in [("weight", wv.as_tensor()), ("bias", bv.as_tensor()), ("x", &x)] {
            if name == "x" && !input_is_variable {
                assert!(g1.get(v).is_none(), "no gradient is computed for data");
                continue;
            }
            match (g1.get(v), g2.get(v)) {
                (Some(a), Some(b)) => {
                    let d = max_abs_diff(a, b)?;
                    assert!(d < 1e-3, "gradient mismatch for {name}: {d}\n{a}\n{b}");
                }
                (a, b) => panic!("{name}: gradient present {} vs {}", a.is_some(), b.is_some()),
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let block = ConvReluPool {
            weight: Tensor::zeros((4, 2, 3, 3), DType::F32, &dev)?,
            bias: Tensor::zeros(4, DType::F32, &dev)?,
            pad: 1,
        };
        assert!(
            block.forward(&Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?).is_err(),
            "channels"
        );
        let tiny = ConvReluPool { pad: 0, ..block };
        assert!(
            tiny.forward(&Tensor::zeros((2, 2, 2, 2), DType::F32, &dev)?).is_err(),
            "smaller than kernel"
        );
        Ok(())
    }
}
