//! k×k depthwise convolution (padding k/2, stride 1 or 2) on NHWC maps: one vector of
//! channels × `MR` pixels per register tile, bias and SiLU fused.

use rayon::prelude::*;

use crate::activation::Activation;
use crate::simd::{Isa, Simd, dispatch};
use crate::tensor::{CHANNEL_BLOCK, FeatureMap, Geom, HALO, SyncPtr, round_up, tap_offsets};

#[derive(Clone, Debug)]
pub struct PackedDepthwise {
    pub k: usize,
    pub stride: usize,
    pub channels: usize,
    /// `channels` rounded up to [`CHANNEL_BLOCK`].
    pub c_pad: usize,
    /// `[k·k][c_pad]`
    pub weights: Vec<f32>,
    /// `[c_pad]`
    pub bias: Vec<f32>,
    pub act: Activation,
}

impl PackedDepthwise {
    /// `weight` is PyTorch's `[c, 1, k, k]`.
    pub fn new(weight: &[f32], bias: &[f32], channels: usize, k: usize, stride: usize, act: Activation) -> Self {
        assert_eq!(weight.len(), channels * k * k, "depthwise weight size");
        assert!(k / 2 <= HALO && k % 2 == 1, "kernel {k} needs a larger halo");
        let c_pad = round_up(channels, CHANNEL_BLOCK);
        let mut w = vec![0.0; k * k * c_pad];
        for c in 0..channels {
            for t in 0..k * k {
                w[t * c_pad + c] = weight[c * k * k + t];
            }
        }
        let mut b = vec![0.0; c_pad];
        b[..channels].copy_from_slice(&bias[..channels]);
        PackedDepthwise { k, stride, channels, c_pad, weights: w, bias: b, act }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        ((h + 2 * p - self.k) / self.stride + 1, (w + 2 * p - self.k) / self.stride + 1)
    }

    pub fn flops(&self, h: usize, w: usize) -> f64 {
        2.0 * (h * w * self.channels * self.k * self.k) as f64
    }
}

struct Job<'a> {
    dw: &'a PackedDepthwise,
    taps: Vec<isize>,
    inp: *const f32,
    in_geom: Geom,
    out: SyncPtr,
    out_geom: Geom,
    hout: usize,
    wout: usize,
}

// SAFETY: the input is only read; each task writes its own output row.
unsafe impl Sync for Job<'_> {}

/// `output[.., 0..c_pad] = act(depthwise(input[.., 0..c_pad]) + bias)`.
pub fn depthwise2d(isa: Isa, dw: &PackedDepthwise, input: &FeatureMap, output: &mut FeatureMap) {
    let (hout, wout) = dw.out_size(input.h, input.w);
    assert_eq!((output.n, output.h, output.w), (input.n, hout, wout), "depthwise output shape");
    assert!(dw.c_pad <= input.cs && dw.c_pad <= output.cs, "depthwise channels");
    let g = input.geom();
    let taps = tap_offsets(g, dw.k);
    let job = Job {
        dw,
        taps,
        inp: input.data.as_ptr(),
        in_geom: g,
        out: SyncPtr(output.data.as_mut_ptr()),
        out_geom: output.geom(),
        hout,
        wout,
    };
    (0..input.n * hout).into_par_iter().for_each(|row| dw_row(isa, &job, row));
}

dispatch!(fn dw_row => dw_row_generic(job: &Job, row: usize));

#[inline(always)]
fn dw_row_generic<S: Simd>(job: &Job, row: usize) {
    const MR: usize = 8;
    let (n, oy) = (row / job.hout, row % job.hout);
    let mut c = 0;
    while c < job.dw.c_pad {
        let mut x0 = 0;
        while x0 < job.wout {
            // SAFETY: offsets stay inside the maps (halo ≥ k/2, shapes asserted).
            unsafe {
                if job.wout < MR {
                    tile::<S, 1>(job, n, oy, x0, c);
                    x0 += 1;
                } else {
                    tile::<S, MR>(job, n, oy, x0.min(job.wout - MR), c);
                    x0 += MR;
                }
            }
        }
        c += S::LANES;
    }
}

#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize>(job: &Job, n: usize, oy: usize, ox: usize, c: usize) {
    let dw = job.dw;
    let in_step = dw.stride * job.in_geom.cs;
    // SAFETY: (caller) the MR pixels at `(n, oy, ox)` and channels `c..c + LANES` are inside
    // the output map; their k×k windows lie inside the input map and its zero frame.
    unsafe {
        let inp = job.inp.add(job.in_geom.at(n, oy * dw.stride, ox * dw.stride) + c);
        let b = S::load(dw.bias.as_ptr().add(c));
        let mut acc = [b; MR];
        for (t, &tap) in job.taps.iter().enumerate() {
            let w = S::load(dw.weights.as_ptr().add(t * dw.c_pad + c));
            let ip = inp.offset(tap);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = S::fma(S::load(ip.add(i * in_step)), w, *a);
            }
        }
        let out = job.out.0.add(job.out_geom.at(n, oy, ox) + c);
        for (i, &a) in acc.iter().enumerate() {
            S::store(out.add(i * job.out_geom.cs), dw.act.apply::<S>(a));
        }
    }
}
