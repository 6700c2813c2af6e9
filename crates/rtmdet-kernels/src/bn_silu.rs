//! Training's `SiLU(BatchNorm(x))` with batch statistics (every ConvModule of RTMDet), NCHW
//! f32, forward and backward in a few passes over each plane instead of burn's chain of
//! elementwise operations and their autodiff nodes.
//!
//! Forward: per channel over `M = N·H·W` values, `μ`, the biased `σ²`, `x̂ = (x − μ)/√(σ² + ε)`,
//! `z = γ·x̂ + β`, `y = z·sigmoid(z)`. Backward from `dy`: `dz = dy·s·(1 + z·(1 − s))` with
//! `s = sigmoid(z)`, `dβ = Σ dz`, `dγ = Σ dz·x̂`, `dx = γ/√(σ² + ε) · (dz − dβ/M − x̂·dγ/M)`.
//! Sums run in f32 vector lanes within a plane and in f64 across planes.

use rayon::prelude::*;

use crate::Isa;
use crate::simd::{Scalar, Simd, dispatch};

/// `[N, C, H·W]` of a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
}

impl Planes {
    fn len(&self) -> usize {
        self.batch * self.channels * self.pixels
    }

    /// The length of one plane as a chunk size (at least 1, which `chunks` requires).
    fn chunk(&self) -> usize {
        self.pixels.max(1)
    }
}

/// The forward pass's output and the batch statistics (per channel; the variance biased).
#[derive(Clone, Debug)]
pub struct BnSiluForward {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// The gradients of the input, of `γ` and of `β`.
#[derive(Clone, Debug)]
pub struct BnSiluBackward {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Per-channel sums of per-plane values (planes in NCHW order), in f64.
fn channel_sums(p: Planes, per_plane: &[f64]) -> Vec<f64> {
    let mut out = vec![0f64; p.channels];
    for (k, v) in per_plane.iter().enumerate() {
        out[k % p.channels] += v;
    }
    out
}

pub fn bn_silu_forward(isa: Isa, x: &[f32], p: Planes, gamma: &[f32], beta: &[f32], eps: f32) -> BnSiluForward {
    assert_eq!(x.len(), p.len(), "input size");
    assert!(gamma.len() == p.channels && beta.len() == p.channels, "affine size");
    let m = (p.batch * p.pixels).max(1) as f64;
    let sums: Vec<f64> = x.par_chunks(p.chunk()).map(|plane| plane_sum(isa, plane, 0.0, false)).collect();
    let mean: Vec<f32> = channel_sums(p, &sums).iter().map(|s| (s / m) as f32).collect();
    let sq: Vec<f64> = x
        .par_chunks(p.chunk())
        .enumerate()
        .map(|(k, plane)| plane_sum(isa, plane, mean[k % p.channels], true))
        .collect();
    let var: Vec<f32> = channel_sums(p, &sq).iter().map(|s| (s / m) as f32).collect();
    let affine = Affine::per_channel(&mean, &var, eps, gamma, beta);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(p.chunk()).zip(x.par_chunks(p.chunk())).enumerate().for_each(|(k, (out, plane))| {
        plane_forward(isa, plane, out, affine[k % p.channels]);
    });
    BnSiluForward { y, mean, var }
}

#[allow(clippy::too_many_arguments)]
pub fn bn_silu_backward(
    isa: Isa,
    x: &[f32],
    p: Planes,
    gamma: &[f32],
    beta: &[f32],
    (mean, var): (&[f32], &[f32]),
    eps: f32,
    dy: &[f32],
) -> BnSiluBackward {
    assert!(x.len() == p.len() && dy.len() == p.len(), "input and gradient size");
    assert!([gamma, beta, mean, var].iter().all(|v| v.len() == p.channels), "per-channel size");
    let m = (p.batch * p.pixels).max(1) as f64;
    let affine = Affine::per_channel(mean, var, eps, gamma, beta);
    // Pass 1: dz into `dx`, with each plane's Σ dz and Σ dz·x̂.
    let mut dx = vec![0f32; x.len()];
    let plane_sums: Vec<[f64; 2]> = dx
        .par_chunks_mut(p.chunk())
        .zip(x.par_chunks(p.chunk()).zip(dy.par_chunks(p.chunk())))
        .enumerate()
        .map(|(k, (dz, (plane, g)))| {
            let mut sums = [0f64; 2];
            plane_dz(isa, plane, g, dz, affine[k % p.channels], &mut sums);
            sums
        })
        .collect();
    let dbeta = channel_sums(p, &plane_sums.iter().map(|s| s[0]).collect::<Vec<_>>());
    let dgamma = channel_sums(p, &plane_sums.iter().map(|s| s[1]).collect::<Vec<_>>());
    // Pass 2: dx from dz in place.
    dx.par_chunks_mut(p.chunk()).zip(x.par_chunks(p.chunk())).enumerate().for_each(|(k, (d, plane))| {
        let c = k % p.channels;
        let (mean_dz, mean_dzx) = ((dbeta[c] / m) as f32, (dgamma[c] / m) as f32);
        plane_dx(isa, plane, d, affine[c], mean_dz, mean_dzx);
    });
    BnSiluBackward {
        dx,
        dgamma: dgamma.iter().map(|&v| v as f32).collect(),
        dbeta: dbeta.iter().map(|&v| v as f32).collect(),
    }
}

/// One channel's normalisation and affine parameters.
#[derive(Clone, Copy, Debug)]
struct Affine {
    mean: f32,
    /// `1/√(σ² + ε)`
    inv_std: f32,
    gamma: f32,
    beta: f32,
}

impl Affine {
    /// Every channel's, from the batch statistics and the affine parameters.
    fn per_channel(mean: &[f32], var: &[f32], eps: f32, gamma: &[f32], beta: &[f32]) -> Vec<Affine> {
        (0..mean.len())
            .map(|c| Affine { mean: mean[c], inv_std: 1.0 / (var[c] + eps).sqrt(), gamma: gamma[c], beta: beta[c] })
            .collect()
    }
}

/// `Σ (v − center)²` with `squares`, else `Σ (v − center)`, over one plane.
fn plane_sum(isa: Isa, plane: &[f32], center: f32, squares: bool) -> f64 {
    let mut out = 0f64;
    sum_impl(isa, plane, center, squares, &mut out);
    out
}

dispatch!(fn sum_impl => sum_generic(plane: &[f32], center: f32, squares: bool, out: &mut f64));

/// Vectors summed in f32 lanes before their total joins the f64 sum: sequential f32 sums
/// drift by up to `n·ε` relative, which over a 320×320 plane (6,400 per lane) put the
/// variance off by 5e-5; blocks of 64 keep the f32 part within 64·ε.
const BLOCK: usize = 64;

#[inline(always)]
fn sum_generic<S: Simd>(plane: &[f32], center: f32, squares: bool, out: &mut f64) {
    let whole = plane.len() - plane.len() % S::LANES;
    *out = 0.0;
    for block in (0..whole).step_by(BLOCK * S::LANES) {
        // SAFETY: each load reads `plane[k..k + S::LANES]` with `k` a step of `S::LANES` below
        // `whole`, so `k + S::LANES <= whole <= plane.len()`; `dispatch!` runs this only on a
        // CPU with `S`'s instruction set.
        unsafe {
            let mut acc = S::splat(0.0);
            for k in (block..whole.min(block + BLOCK * S::LANES)).step_by(S::LANES) {
                let v = S::add(S::load(plane.as_ptr().add(k)), S::splat(-center));
                acc = if squares { S::fma(v, v, acc) } else { S::add(acc, v) };
            }
            *out += lanes_sum::<S>(acc);
        }
    }
    for &v in &plane[whole..] {
        let d = (v - center) as f64;
        *out += if squares { d * d } else { d };
    }
}

/// The f64 sum of a vector's lanes.
#[inline(always)]
fn lanes_sum<S: Simd>(v: S::V) -> f64 {
    const { assert!(S::LANES <= 16, "a vector wider than 16 floats") };
    let mut buf = [0f32; 16];
    // SAFETY: the store writes `S::LANES` floats, at most 16 (AVX-512's width), into `buf`;
    // the caller runs on `S`'s instruction set.
    unsafe { S::store(buf.as_mut_ptr(), v) };
    buf[..S::LANES].iter().map(|&x| x as f64).sum()
}

dispatch!(fn plane_forward => forward_generic(plane: &[f32], out: &mut [f32], a: Affine));

#[inline(always)]
fn forward_generic<S: Simd>(plane: &[f32], out: &mut [f32], a: Affine) {
    assert_eq!(plane.len(), out.len(), "plane sizes");
    let whole = plane.len() - plane.len() % S::LANES;
    for k in (0..whole).step_by(S::LANES) {
        // SAFETY: `k + S::LANES <= whole <= len` of both slices (equal, asserted above); the
        // code runs on `S`'s instruction set (`dispatch!`).
        unsafe { S::store(out.as_mut_ptr().add(k), forward_lane::<S>(S::load(plane.as_ptr().add(k)), a)) };
    }
    for k in whole..plane.len() {
        // SAFETY: `Scalar`'s operations are plain Rust on values, valid on any CPU.
        out[k] = unsafe { forward_lane::<Scalar>(plane[k], a) };
    }
}

/// `y = z·sigmoid(z)` of `z = γ·x̂ + β`.
///
/// # Safety
/// Only on a CPU with `S`'s instruction set (register arithmetic, no memory access).
#[inline(always)]
unsafe fn forward_lane<S: Simd>(x: S::V, a: Affine) -> S::V {
    // SAFETY: arithmetic on registers, no memory; the caller runs on `S`'s instruction set.
    unsafe { S::silu(normalised::<S>(x, a).1) }
}

/// `(x̂, z)` of a vector: `x̂ = (x − μ)·inv_std`, `z = γ·x̂ + β`.
///
/// # Safety
/// Only on a CPU with `S`'s instruction set (register arithmetic, no memory access).
#[inline(always)]
unsafe fn normalised<S: Simd>(x: S::V, a: Affine) -> (S::V, S::V) {
    // SAFETY: arithmetic on registers, no memory; the caller runs on `S`'s instruction set.
    unsafe {
        let xhat = S::mul(S::add(x, S::splat(-a.mean)), S::splat(a.inv_std));
        (xhat, S::add(S::mul(xhat, S::splat(a.gamma)), S::splat(a.beta)))
    }
}

/// `dy · s · (1 + z·(1 − s))` with `s = sigmoid(z)`, and `x̂`.
///
/// # Safety
/// Only on a CPU with `S`'s instruction set (register arithmetic, no memory access).
#[inline(always)]
unsafe fn dz_lane<S: Simd>(x: S::V, dy: S::V, a: Affine) -> (S::V, S::V) {
    // SAFETY: arithmetic on registers, no memory; the caller runs on `S`'s instruction set.
    unsafe {
        let (xhat, z) = normalised::<S>(x, a);
        let e = S::exp(S::min(S::mul(z, S::splat(-1.0)), S::splat(80.0)));
        let s = S::div(S::splat(1.0), S::add(e, S::splat(1.0)));
        let slope = S::mul(s, S::add(S::splat(1.0), S::mul(z, S::add(S::splat(1.0), S::mul(s, S::splat(-1.0))))));
        (S::mul(dy, slope), xhat)
    }
}

dispatch!(fn plane_dz => dz_generic(plane: &[f32], dy: &[f32], dz: &mut [f32], a: Affine, sums: &mut [f64; 2]));

#[inline(always)]
fn dz_generic<S: Simd>(plane: &[f32], dy: &[f32], dz: &mut [f32], a: Affine, sums: &mut [f64; 2]) {
    assert!(dy.len() == plane.len() && dz.len() == plane.len(), "plane sizes");
    let whole = plane.len() - plane.len() % S::LANES;
    // SAFETY: vector loads and stores cover `k..k + S::LANES` with `k + S::LANES <= whole`,
    // inside the three slices (equal lengths, asserted above); the code runs on `S`'s
    // instruction set (`dispatch!`), and `Scalar`'s lanes on any CPU.
    unsafe {
        *sums = [0.0; 2];
        for block in (0..whole).step_by(BLOCK * S::LANES) {
            let (mut sum_dz, mut sum_dzx) = (S::splat(0.0), S::splat(0.0));
            for k in (block..whole.min(block + BLOCK * S::LANES)).step_by(S::LANES) {
                let (d, xhat) = dz_lane::<S>(S::load(plane.as_ptr().add(k)), S::load(dy.as_ptr().add(k)), a);
                S::store(dz.as_mut_ptr().add(k), d);
                sum_dz = S::add(sum_dz, d);
                sum_dzx = S::fma(d, xhat, sum_dzx);
            }
            sums[0] += lanes_sum::<S>(sum_dz);
            sums[1] += lanes_sum::<S>(sum_dzx);
        }
        for k in whole..plane.len() {
            let (d, xhat) = dz_lane::<Scalar>(plane[k], dy[k], a);
            dz[k] = d;
            sums[0] += d as f64;
            sums[1] += (d * xhat) as f64;
        }
    }
}

dispatch!(fn plane_dx => dx_generic(plane: &[f32], d: &mut [f32], a: Affine, mean_dz: f32, mean_dzx: f32));

/// `γ·inv_std · (dz − mean(dz) − x̂·mean(dz·x̂))`.
///
/// # Safety
/// Only on a CPU with `S`'s instruction set (register arithmetic, no memory access).
#[inline(always)]
unsafe fn dx_lane<S: Simd>(x: S::V, dz: S::V, a: Affine, mean_dz: f32, mean_dzx: f32) -> S::V {
    // SAFETY: arithmetic on registers, no memory; the caller runs on `S`'s instruction set.
    unsafe {
        let xhat = normalised::<S>(x, a).0;
        let centred = S::add(dz, S::splat(-mean_dz));
        S::mul(S::splat(a.gamma * a.inv_std), S::add(centred, S::mul(xhat, S::splat(-mean_dzx))))
    }
}

#[inline(always)]
fn dx_generic<S: Simd>(plane: &[f32], d: &mut [f32], a: Affine, mean_dz: f32, mean_dzx: f32) {
    assert_eq!(plane.len(), d.len(), "plane sizes");
    let whole = plane.len() - plane.len() % S::LANES;
    // SAFETY: vector loads and stores cover `k..k + S::LANES` with `k + S::LANES <= whole`,
    // inside both slices (equal lengths, asserted above); the code runs on `S`'s instruction
    // set (`dispatch!`), and `Scalar`'s lanes on any CPU.
    unsafe {
        for k in (0..whole).step_by(S::LANES) {
            let p = d.as_mut_ptr().add(k);
            S::store(p, dx_lane::<S>(S::load(plane.as_ptr().add(k)), S::load(p), a, mean_dz, mean_dzx));
        }
        for k in whole..plane.len() {
            d[k] = dx_lane::<Scalar>(plane[k], d[k], a, mean_dz, mean_dzx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                offset + scale * ((state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    /// The definition in f64: statistics, output, and gradients by the chain rule.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &[f32],
        p: Planes,
        g: &[f32],
        b: &[f32],
        eps: f64,
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = (p.batch * p.pixels) as f64;
        let at = |n: usize, c: usize, i: usize| (n * p.channels + c) * p.pixels + i;
        let (mut y, mut dx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
        let (mut var, mut dg, mut db) = (vec![0f64; p.channels], vec![0f64; p.channels], vec![0f64; p.channels]);
        for c in 0..p.channels {
            let idx: Vec<usize> = (0..p.batch).flat_map(|n| (0..p.pixels).map(move |i| at(n, c, i))).collect();
            let mean = idx.iter().map(|&k| x[k] as f64).sum::<f64>() / m;
            var[c] = idx.iter().map(|&k| (x[k] as f64 - mean).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var[c] + eps).sqrt();
            let mut dz = vec![0f64; idx.len()];
            for (j, &k) in idx.iter().enumerate() {
                let xhat = (x[k] as f64 - mean) * inv;
                let z = g[c] as f64 * xhat + b[c] as f64;
                let s = 1.0 / (1.0 + (-z).exp());
                y[k] = z * s;
                dz[j] = dy[k] as f64 * s * (1.0 + z * (1.0 - s));
                db[c] += dz[j];
                dg[c] += dz[j] * xhat;
            }
            for (j, &k) in idx.iter().enumerate() {
                let xhat = (x[k] as f64 - mean) * inv;
                dx[k] = g[c] as f64 * inv * (dz[j] - db[c] / m - xhat * dg[c] / m);
            }
        }
        (y, var, dx, dg, db)
    }

    #[test]
    fn forward_and_backward_match_the_definition_on_every_isa() {
        // 37 pixels: whole vectors and tails for every lane count; an offset mean.
        let p = Planes { batch: 3, channels: 4, pixels: 37 };
        let x = values(p.len(), 5, 2.0, 0.7);
        let dy = values(p.len(), 6, 1.0, 0.0);
        let (g, b) = (values(4, 7, 1.0, 0.5), values(4, 8, 0.5, 0.0));
        let eps = 1e-3;
        let (y, var, dx, dg, db) = reference(&x, p, &g, &b, eps as f64, &dy);
        let worst = |a: &[f32], b: &[f64]| a.iter().zip(b).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
        for isa in Isa::available() {
            let f = bn_silu_forward(isa, &x, p, &g, &b, eps);
            let back = bn_silu_backward(isa, &x, p, &g, &b, (&f.mean, &f.var), eps, &dy);
            // f32 arithmetic on values of order 1: a few 1e-6 (the SIMD exp is within 2 ulp).
            for (what, err) in [
                ("y", worst(&f.y, &y)),
                ("var", worst(&f.var, &var)),
                ("dx", worst(&back.dx, &dx)),
                ("dgamma", worst(&back.dgamma, &dg)),
                ("dbeta", worst(&back.dbeta, &db)),
            ] {
                assert!(err <= 2e-5, "{isa}: {what} differs by {err}");
            }
        }
    }

    /// Large planes of skewed values (as a stem convolution gives): the statistics within
    /// 1e-6 relative of f64 on every instruction set (sequential f32 lane sums were 5e-5 off).
    #[test]
    fn statistics_of_large_planes_stay_accurate() {
        let p = Planes { batch: 2, channels: 2, pixels: 320 * 320 };
        let x: Vec<f32> = values(p.len(), 11, 1.0, 0.0).iter().map(|v| 0.3 + 4.0 * v.powi(3)).collect();
        let m = (p.batch * p.pixels) as f64;
        for isa in Isa::available() {
            let f = bn_silu_forward(isa, &x, p, &[1.0; 2], &[0.0; 2], 1e-3);
            for c in 0..p.channels {
                let vals: Vec<f64> = (0..p.batch)
                    .flat_map(|n| x[(n * 2 + c) * p.pixels..][..p.pixels].iter().map(|&v| v as f64))
                    .collect();
                let mean = vals.iter().sum::<f64>() / m;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
                let rel = (f.var[c] as f64 - var).abs() / var;
                assert!(
                    rel <= 1e-6 && (f.mean[c] as f64 - mean).abs() <= 1e-6,
                    "{isa} channel {c}: variance off by {rel:.1e}"
                );
            }
        }
    }
}
