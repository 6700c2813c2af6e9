//! The weight and input gradients of a 2-D convolution (training's backward pass), NCHW f32:
//! `dW[o][c][i][j] = Σ_n Σ_(y,x) dY[n][o][y][x] · X[n][c][y·s + i·d − p][x·s + j·d − p]` and
//! `dX[n][c][y·s + i·d − p][x·s + j·d − p] += Σ_o W[o][c][i][j] · dY[n][o][y][x]`.
//!
//! burn's CPU backend derives it as a convolution whose kernel is the whole output gradient,
//! which takes its generic path (the single most expensive part of a training step). Here a
//! dense or grouped convolution is one matrix product per image and group, `dY [O, Ho·Wo] ×
//! cols(X)ᵀ [Ho·Wo, C·k·k]` (the `gemm` crate, threaded), with the column matrix built by
//! rows in parallel, or taken as `X` itself for a 1×1 stride-1 convolution; a depthwise
//! convolution is a dot product per channel and tap. The input gradient is the transposed
//! product, `Wᵀ [C·k·k, O] × dY [O, Ho·Wo]`, scattered back onto the image (col2im, channels
//! in parallel), or written directly for a 1×1 stride-1 convolution; depthwise convolutions
//! scatter each tap's row of gradients.

use rayon::prelude::*;

/// A convolution's shapes and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    /// Input `[h, w]`.
    pub input: [usize; 2],
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvShape {
    /// Output `[h, w]`.
    pub fn output(&self) -> [usize; 2] {
        let along = |a: usize| {
            let span = self.dilation[a] * (self.kernel[a] - 1) + 1;
            (self.input[a] + 2 * self.padding[a]).saturating_sub(span) / self.stride[a] + 1
        };
        [along(0), along(1)]
    }

    /// Per group: input channels, output channels, and kernel taps.
    fn per_group(&self) -> (usize, usize, usize) {
        (self.in_channels / self.groups, self.out_channels / self.groups, self.kernel[0] * self.kernel[1])
    }

    /// One input and one output channel per group.
    fn is_depthwise(&self) -> bool {
        self.in_channels == self.groups && self.out_channels == self.groups
    }

    /// A 1×1 stride-1 unpadded convolution: its column matrix is the input itself.
    fn reads_input_as_is(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The number of weights, `O · C/groups · kh · kw`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// The output columns `x_lo..x_hi` whose kernel column `j` lands inside the image
    /// (`xo·s + j·d − p ∈ [0, w)`), and the input column the first of them reads.
    fn tap_columns(&self, j: usize) -> (usize, usize, usize) {
        let (w, wo) = (self.input[1] as isize, self.output()[1] as isize);
        let shift = (j * self.dilation[1]) as isize - self.padding[1] as isize;
        let s = self.stride[1] as isize;
        let x_lo = (((-shift).max(0) + s - 1) / s).min(wo);
        let x_hi = ((w - shift + s - 1) / s).clamp(0, wo).max(x_lo);
        // (No column inside: nothing is read, and 0 keeps the caller's slices in range.)
        (x_lo as usize, x_hi as usize, if x_hi > x_lo { (x_lo * s + shift) as usize } else { 0 })
    }

    /// The input row that kernel row `i` reads for output row `y`, if inside the image.
    fn tap_row(&self, i: usize, y: usize) -> Option<usize> {
        let yy = (y * self.stride[0] + i * self.dilation[0]).checked_sub(self.padding[0])?;
        (yy < self.input[0]).then_some(yy)
    }

    fn is_valid(&self) -> bool {
        let positive = [self.kernel, self.stride, self.dilation].iter().all(|p| p[0] > 0 && p[1] > 0);
        positive
            && self.groups > 0
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups)
            && (0..2).all(|a| self.input[a] + 2 * self.padding[a] > self.dilation[a] * (self.kernel[a] - 1))
    }
}

/// `dW` `[O, C/groups, kh, kw]` from the input `x` `[N, C, H, W]` and the output gradient
/// `grad` `[N, O, Ho, Wo]`. Panics when the slices do not have the shape's sizes.
pub fn conv2d_weight_grad(shape: &ConvShape, x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert!(shape.is_valid(), "convolution shape {shape:?}");
    let [ho, wo] = shape.output();
    assert_eq!(x.len(), shape.batch * shape.in_channels * shape.input[0] * shape.input[1], "input size");
    assert_eq!(grad.len(), shape.batch * shape.out_channels * ho * wo, "output gradient size");
    if shape.is_depthwise() { depthwise(shape, x, grad) } else { by_matrix_products(shape, x, grad) }
}

/// Dense and grouped convolutions: per image and group, `dW_g += dY_g · cols(X_g)ᵀ`.
fn by_matrix_products(shape: &ConvShape, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output();
    let (cg, og, taps) = shape.per_group();
    let (spatial, depth) = (ho * wo, cg * taps);
    let mut dw = vec![0f32; shape.weight_len()];
    let direct = shape.reads_input_as_is();
    let mut cols = if direct { Vec::new() } else { vec![0f32; depth * spatial] };
    for n in 0..shape.batch {
        for g in 0..shape.groups {
            let x_g = &x[(n * shape.in_channels + g * cg) * h * w..][..cg * h * w];
            let rhs: &[f32] = if direct {
                x_g
            } else {
                columns(shape, x_g, &mut cols);
                &cols
            };
            let lhs = &grad[(n * shape.out_channels + g * og) * spatial..][..og * spatial];
            let dst = &mut dw[g * og * depth..][..og * depth];
            // dW_g [og, depth] += dY_g [og, spatial] · cols [depth, spatial]ᵀ
            product(View::rows(lhs, og, spatial), View::rows(rhs, depth, spatial).t(), dst, n > 0);
        }
    }
    dw
}

/// `cols[(c, i, j)][(y, x)] = x_g[c][y·s + i·d − p][x·s + j·d − p]`, 0 outside the image; rows
/// in parallel.
fn columns(shape: &ConvShape, x_g: &[f32], cols: &mut [f32]) {
    let ([h, w], [ho, wo]) = (shape.input, shape.output());
    let [kh, kw] = shape.kernel;
    cols.par_chunks_mut(ho * wo).enumerate().for_each(|(row, out)| {
        let (c, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
        let plane = &x_g[c * h * w..(c + 1) * h * w];
        let (x_lo, x_hi, start) = shape.tap_columns(j);
        for (y, out_row) in out.chunks_exact_mut(wo).enumerate() {
            let Some(yy) = shape.tap_row(i, y) else {
                out_row.fill(0.0);
                continue;
            };
            let src = &plane[yy * w..(yy + 1) * w];
            out_row[..x_lo].fill(0.0);
            out_row[x_hi..].fill(0.0);
            let inside = &mut out_row[x_lo..x_hi];
            if shape.stride[1] == 1 {
                inside.copy_from_slice(&src[start..start + inside.len()]);
            } else {
                inside.iter_mut().enumerate().for_each(|(k, v)| *v = src[start + k * shape.stride[1]]);
            }
        }
    });
}

/// A matrix read in place: element `(r, c)` at `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// `data` as a row-major `[rows, cols]` matrix.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, still in place.
    fn t(self) -> Self {
        View { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst (+)= lhs · rhs`, `dst` row-major `[lhs.rows, rhs.cols]`; threaded when large.
fn product(lhs: View, rhs: View, dst: &mut [f32], add: bool) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert!(rhs.rows == k && lhs.in_bounds() && rhs.in_bounds() && dst.len() >= m * n, "product sizes");
    let threads = if m * n * k >= 1 << 21 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: gemm reads `lhs` at `r·row_stride + c·col_stride` for `r < m, c < k`, `rhs` likewise
    // for `k × n`, all inside their slices (`in_bounds`, asserted above), and reads (when
    // `add`) and writes `dst[r·n + c]` for `r < m, c < n`, inside `dst` (asserted); `dst` is a
    // `&mut` borrow, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            add,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
}

/// `dX` `[N, C, H, W]` from the weights `weight` `[O, C/groups, kh, kw]` and the output
/// gradient `grad` `[N, O, Ho, Wo]`. Panics when the slices do not have the shape's sizes.
pub fn conv2d_input_grad(shape: &ConvShape, weight: &[f32], grad: &[f32]) -> Vec<f32> {
    assert!(shape.is_valid(), "convolution shape {shape:?}");
    let ([h, w], [ho, wo]) = (shape.input, shape.output());
    assert_eq!(weight.len(), shape.weight_len(), "weight size");
    assert_eq!(grad.len(), shape.batch * shape.out_channels * ho * wo, "output gradient size");
    let (cg, og, taps) = shape.per_group();
    let mut dx = vec![0f32; shape.batch * shape.in_channels * h * w];
    if shape.is_depthwise() {
        dx.par_chunks_mut(h * w).enumerate().for_each(|(plane, out)| {
            let c = plane % shape.in_channels;
            scatter_taps(shape, &weight[c * taps..(c + 1) * taps], &grad[plane * ho * wo..][..ho * wo], out);
        });
        return dx;
    }
    let (spatial, depth) = (ho * wo, cg * taps);
    let direct = shape.reads_input_as_is();
    let mut cols = if direct { Vec::new() } else { vec![0f32; depth * spatial] };
    for n in 0..shape.batch {
        for g in 0..shape.groups {
            let w_g = &weight[g * og * depth..][..og * depth];
            let g_g = &grad[(n * shape.out_channels + g * og) * spatial..][..og * spatial];
            let dx_g = &mut dx[(n * shape.in_channels + g * cg) * h * w..][..cg * h * w];
            // cols [depth, spatial] = W_g [og, depth]ᵀ · dY_g [og, spatial]
            let (w_t, g_v) = (View::rows(w_g, og, depth).t(), View::rows(g_g, og, spatial));
            if direct {
                product(w_t, g_v, dx_g, false);
                continue;
            }
            product(w_t, g_v, &mut cols, false);
            dx_g.par_chunks_mut(h * w).enumerate().for_each(|(c, plane)| {
                for (t, row) in cols[c * taps * spatial..(c + 1) * taps * spatial].chunks_exact(spatial).enumerate() {
                    scatter_tap(shape, (t / shape.kernel[1], t % shape.kernel[1]), row, 1.0, plane);
                }
            });
        }
    }
    dx
}

/// Every tap of one channel's `weights` times its output gradient `grad` `[Ho, Wo]`, added
/// onto the input plane `out` `[H, W]` (depthwise).
fn scatter_taps(shape: &ConvShape, weights: &[f32], grad: &[f32], out: &mut [f32]) {
    for (t, &wt) in weights.iter().enumerate() {
        scatter_tap(shape, (t / shape.kernel[1], t % shape.kernel[1]), grad, wt, out);
    }
}

/// `out[y·s + i·d − p][x·s + j·d − p] += scale · values[y][x]` over the output pixels whose
/// tap `(i, j)` lands inside the plane.
fn scatter_tap(shape: &ConvShape, (i, j): (usize, usize), values: &[f32], scale: f32, out: &mut [f32]) {
    let (w, wo) = (shape.input[1], shape.output()[1]);
    let (x_lo, x_hi, start) = shape.tap_columns(j);
    for y in 0..shape.output()[0] {
        let Some(yy) = shape.tap_row(i, y) else { continue };
        let src = &values[y * wo + x_lo..y * wo + x_hi];
        let row = &mut out[yy * w..(yy + 1) * w];
        if shape.stride[1] == 1 {
            row[start..start + src.len()].iter_mut().zip(src).for_each(|(o, v)| *o += scale * v);
        } else {
            src.iter().enumerate().for_each(|(k, v)| row[start + k * shape.stride[1]] += scale * v);
        }
    }
}

/// Depthwise convolutions: per channel and tap, a dot product over images and output pixels;
/// channels in parallel.
fn depthwise(shape: &ConvShape, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let ([h, w], [ho, wo]) = (shape.input, shape.output());
    let [kh, kw] = shape.kernel;
    let c_all = shape.in_channels;
    let mut dw = vec![0f32; c_all * kh * kw];
    dw.par_chunks_mut(kh * kw).enumerate().for_each(|(c, taps)| {
        for (t, out) in taps.iter_mut().enumerate() {
            let (i, (x_lo, x_hi, start)) = (t / kw, shape.tap_columns(t % kw));
            let mut acc = 0f64;
            for n in 0..shape.batch {
                let plane = &x[(n * c_all + c) * h * w..][..h * w];
                let g_plane = &grad[(n * c_all + c) * ho * wo..][..ho * wo];
                for y in 0..ho {
                    let Some(yy) = shape.tap_row(i, y) else { continue };
                    let g_row = &g_plane[y * wo + x_lo..y * wo + x_hi];
                    acc += strided_dot(g_row, &plane[yy * w + start..(yy + 1) * w], shape.stride[1]) as f64;
                }
            }
            *out = acc as f32;
        }
    });
    dw
}

/// `Σ_k a[k] · b[k·stride]` with eight partial sums (vectorisable for stride 1).
fn strided_dot(a: &[f32], b: &[f32], stride: usize) -> f32 {
    let mut part = [0f32; 8];
    if stride == 1 {
        let (ac, bc) = (a.chunks_exact(8), b[..a.len()].chunks_exact(8));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for k in 0..8 {
                part[k] += x[k] * y[k];
            }
        }
        return part.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>();
    }
    for (k, v) in a.iter().enumerate() {
        part[k % 8] += v * b[k * stride];
    }
    part.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every product of the convolution's definition: `f(x index, weight index, output index)`
    /// for each output pixel and tap that lands inside the image.
    fn each_term(shape: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
        let ([h, w], [ho, wo]) = (shape.input, shape.output());
        let [kh, kw] = shape.kernel;
        let (cg, og) = (shape.in_channels / shape.groups, shape.out_channels / shape.groups);
        for (n, o, c, i, j, y, xo) in (0..shape.batch).flat_map(|n| {
            (0..shape.out_channels).flat_map(move |o| {
                (0..cg).flat_map(move |c| {
                    (0..kh).flat_map(move |i| {
                        (0..kw)
                            .flat_map(move |j| (0..ho).flat_map(move |y| (0..wo).map(move |xo| (n, o, c, i, j, y, xo))))
                    })
                })
            })
        }) {
            let yy = (y * shape.stride[0] + i * shape.dilation[0]) as isize - shape.padding[0] as isize;
            let xx = (xo * shape.stride[1] + j * shape.dilation[1]) as isize - shape.padding[1] as isize;
            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                continue;
            }
            let x_at = ((n * shape.in_channels + o / og * cg + c) * h + yy as usize) * w + xx as usize;
            f(x_at, ((o * cg + c) * kh + i) * kw + j, ((n * shape.out_channels + o) * ho + y) * wo + xo);
        }
    }

    /// The weight gradient by definition, summed in f64.
    fn reference(shape: &ConvShape, x: &[f32], grad: &[f32]) -> Vec<f32> {
        let mut dw = vec![0f64; shape.weight_len()];
        each_term(shape, |xi, wi, gi| dw[wi] += x[xi] as f64 * grad[gi] as f64);
        dw.into_iter().map(|v| v as f32).collect()
    }

    /// The input gradient by definition, summed in f64.
    fn input_reference(shape: &ConvShape, weight: &[f32], grad: &[f32]) -> Vec<f32> {
        let mut dx = vec![0f64; shape.batch * shape.in_channels * shape.input[0] * shape.input[1]];
        each_term(shape, |xi, wi, gi| dx[xi] += weight[wi] as f64 * grad[gi] as f64);
        dx.into_iter().map(|v| v as f32).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn gradients_match_the_definition() {
        let conv = |c, o, k, s, p, groups| ConvShape {
            batch: 2,
            in_channels: c,
            input: [11, 13],
            out_channels: o,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            groups,
        };
        // RTMDet's kinds: 3×3 (stride 1 and 2), 1×1, depthwise 5×5 and 3×3 stride 2, grouped,
        // a dilated one, and a stem-like 3-channel input.
        let shapes = [
            conv(5, 7, 3, 1, 1, 1),
            conv(5, 7, 3, 2, 1, 1),
            conv(6, 4, 1, 1, 0, 1),
            conv(6, 6, 5, 1, 2, 6),
            conv(6, 6, 3, 2, 1, 6),
            conv(6, 4, 3, 1, 1, 2),
            ConvShape { dilation: [2, 2], padding: [2, 2], ..conv(3, 4, 3, 1, 1, 1) },
            conv(3, 8, 3, 2, 1, 1),
            // Maps smaller than the kernel (a stride-32 map at a small --imgsz): taps that
            // land nowhere.
            ConvShape { input: [2, 1], ..conv(4, 4, 5, 1, 2, 4) },
            ConvShape { input: [1, 1], ..conv(3, 5, 5, 1, 2, 1) },
            ConvShape { input: [2, 1], ..conv(3, 5, 3, 2, 1, 1) },
        ];
        for (k, shape) in shapes.iter().enumerate() {
            let [ho, wo] = shape.output();
            let x = values(shape.batch * shape.in_channels * shape.input[0] * shape.input[1], 7 + k as u32);
            let grad = values(shape.batch * shape.out_channels * ho * wo, 99 + k as u32);
            let (got, want) = (conv2d_weight_grad(shape, &x, &grad), reference(shape, &x, &grad));
            // f32 sums of at most 2·143 products of values in [-1, 1]: a few 1e-5 at most.
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4, "shape {k} {shape:?}: weight gradient differs by {worst}");
            let weight = values(shape.weight_len(), 3 + k as u32);
            let (got, want) = (conv2d_input_grad(shape, &weight, &grad), input_reference(shape, &weight, &grad));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4, "shape {k} {shape:?}: input gradient differs by {worst}");
        }
    }
}
