//! Dense k×k convolution (padding k/2, any stride) on NHWC feature maps, computed directly
//! (no im2col): a register tile of `MR` output pixels × 16–32 output channels accumulates
//! `broadcast(input) · weight-vector` over taps and input channels, then the epilogue adds the
//! (BatchNorm-folded) bias, applies SiLU and an optional residual, and stores once.

// Index loops over the register tile are deliberate: iterator loops made LLVM keep the
// accumulators in memory (3× slower).
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::activation::Activation;
use crate::simd::{Isa, Simd, dispatch};
use crate::tensor::{CHANNEL_BLOCK, FeatureMap, Geom, HALO, SyncPtr, round_up, tap_offsets};

const B: usize = CHANNEL_BLOCK;

/// Convolution weights packed for the kernel.
#[derive(Clone, Debug)]
pub struct PackedConv {
    pub k: usize,
    pub stride: usize,
    pub cin: usize,
    pub cout: usize,
    /// `cout` rounded up to [`CHANNEL_BLOCK`]; the extra outputs are zero.
    pub cout_pad: usize,
    /// Where the weight's input channels live in an input pixel: `(offset, count)` runs, in
    /// order (a concatenation of blocks padded to 16 leaves gaps between its parts).
    pub segments: Vec<(usize, usize)>,
    /// `[cout_pad / 16][k·k][cin][16]`
    pub weights: Vec<f32>,
    /// `[cout_pad]`
    pub bias: Vec<f32>,
    pub act: Activation,
}

impl PackedConv {
    /// `weight` is PyTorch's OIHW `[cout, cin, k, k]`, `bias` `[cout]`; the input channels are
    /// read contiguously from offset 0 unless `segments` says otherwise.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        [cout, cin, k]: [usize; 3],
        stride: usize,
        act: Activation,
        segments: Option<Vec<(usize, usize)>>,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin * k * k, "conv weight size");
        assert!(k / 2 <= HALO && k % 2 == 1, "kernel {k} needs a larger halo");
        let segments = segments.unwrap_or_else(|| vec![(0, cin)]);
        assert_eq!(segments.iter().map(|s| s.1).sum::<usize>(), cin, "segments cover cin");
        let cout_pad = round_up(cout, B);
        let kk = k * k;
        let mut packed = vec![0.0; cout_pad * kk * cin];
        for o in 0..cout {
            let (blk, lane) = (o / B, o % B);
            for i in 0..cin {
                for t in 0..kk {
                    packed[((blk * kk + t) * cin + i) * B + lane] = weight[(o * cin + i) * kk + t];
                }
            }
        }
        let mut b = vec![0.0; cout_pad];
        b[..cout].copy_from_slice(&bias[..cout]);
        PackedConv { k, stride, cin, cout, cout_pad, segments, weights: packed, bias: b, act }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        ((h + 2 * p - self.k) / self.stride + 1, (w + 2 * p - self.k) / self.stride + 1)
    }

    /// Multiply-adds ×2 for an output of `h`×`w` pixels (real channels only).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        2.0 * (h * w * self.cout * self.cin * self.k * self.k) as f64
    }
}

/// One row-task's view of the operands.
struct Job<'a> {
    conv: &'a PackedConv,
    taps: Vec<isize>,
    inp: *const f32,
    in_geom: Geom,
    out: SyncPtr,
    out_geom: Geom,
    out_off: usize,
    res: Option<(*const f32, Geom, usize)>,
    hout: usize,
    wout: usize,
}

// SAFETY: the input and residual are only read; each task writes its own output row.
unsafe impl Sync for Job<'_> {}

/// `output[.., out_off .. out_off + cout_pad] = act(conv(input) + bias) (+ residual)`.
/// `output` must have the conv's output size; `residual` = (map, channel offset) of the same
/// spatial size.
pub fn conv2d(
    isa: Isa,
    conv: &PackedConv,
    input: &FeatureMap,
    output: &mut FeatureMap,
    out_off: usize,
    residual: Option<(&FeatureMap, usize)>,
) {
    let (hout, wout) = conv.out_size(input.h, input.w);
    assert_eq!((output.n, output.h, output.w), (input.n, hout, wout), "conv output shape");
    assert!(out_off + conv.cout_pad <= output.cs, "conv output channels");
    assert!(conv.segments.iter().all(|&(o, c)| o + c <= input.cs), "conv input channels");
    let g = input.geom();
    let taps = tap_offsets(g, conv.k);
    if let Some((r, off)) = residual {
        assert_eq!((r.n, r.h, r.w), (output.n, hout, wout), "residual shape");
        assert!(off + conv.cout_pad <= r.cs);
    }
    let job = Job {
        conv,
        taps,
        inp: input.data.as_ptr(),
        in_geom: g,
        out: SyncPtr(output.data.as_mut_ptr()),
        out_geom: output.geom(),
        out_off,
        res: residual.map(|(r, off)| (r.data.as_ptr(), r.geom(), off)),
        hout,
        wout,
    };
    // One task = one channel tile of one output row. Weights larger than the input go
    // tile-major (a tile's weights stay in L2 across rows), others row-major.
    let tiles = channel_tiles(isa.lanes(), conv.cout_pad / B, wout);
    let rows = input.n * hout;
    let tile_major = conv.weights.len() > input.data.len() / input.n.max(1);
    (0..rows * tiles.len()).into_par_iter().for_each(|t| {
        let (tile, row) = if tile_major { (t / rows, t % rows) } else { (t % tiles.len(), t / tiles.len()) };
        conv_task(isa, &job, tiles[tile], row)
    });
}

/// `(first block, blocks, pixels)` of the register tiles covering `blocks` 16-channel blocks.
pub(crate) fn channel_tiles(lanes: usize, blocks: usize, width: usize) -> Vec<(usize, usize, usize)> {
    let mut tiles = Vec::new();
    let mut cb = 0;
    while cb < blocks {
        let (tb, mr) = tile_shape(lanes, blocks - cb, width);
        tiles.push((cb, tb, mr));
        cb += tb;
    }
    tiles
}

dispatch!(fn conv_task => conv_task_generic(job: &Job, tile: (usize, usize, usize), row: usize));

/// One channel tile of one output row, in pixel tiles along the row.
#[inline(always)]
fn conv_task_generic<S: Simd>(job: &Job, (cb, tb, mr): (usize, usize, usize), row: usize) {
    let (n, oy) = (row / job.hout, row % job.hout);
    let c = job.conv;
    let kk = c.k * c.k;
    {
        // The taps are split into chunks whose weights stay in L1 while the row's pixel tiles
        // stream past them, each chunk adding into the output row.
        let taps_per_chunk = (L1_WEIGHT_BYTES / (c.cin * tb * B * 4).max(1)).clamp(1, kk);
        let single_chunk = taps_per_chunk == kk;
        for t0 in (0..kk).step_by(taps_per_chunk) {
            let taps = t0..(t0 + taps_per_chunk).min(kk);
            let mut x0 = 0;
            while x0 < job.wout {
                // A row narrower than a tile goes pixel by pixel. With a single chunk the
                // last tile is shifted left to end at the row's end (recomputing a few
                // pixels); with several, leftover pixels go one by one (sums must not be redone).
                let wide = x0 + mr <= job.wout || (single_chunk && job.wout >= mr);
                let start = if wide { x0.min(job.wout - mr) } else { x0 };
                // SAFETY: all offsets stay inside the maps (halo ≥ k/2, shapes asserted above).
                unsafe { run_tile::<S>(job, [n, oy, start, cb], taps.clone(), tb, wide) };
                x0 += if wide { mr } else { 1 };
            }
        }
    }
}

/// Weights of one channel tile kept in L1 while a row's pixel tiles stream past them.
const L1_WEIGHT_BYTES: usize = 24 * 1024;

/// `(16-channel blocks, pixels)` of the next register tile given the blocks left. AVX-512
/// tiles are 8 px × 48 ch, 10 × 32 or 10 × 16 (24, 20, 10 accumulators); AVX2 6 × 16 (12).
/// Rows of `width` pixels prefer a tile width that divides them (leftover pixels would go
/// one at a time when the taps are chunked).
pub(crate) fn tile_shape(lanes: usize, left: usize, width: usize) -> (usize, usize) {
    match lanes {
        16 if left >= 3 && left != 4 && (width.is_multiple_of(8) || !width.is_multiple_of(10)) => (3, 8),
        16 if left >= 2 => (2, 10),
        16 => (1, 10),
        8 => (1, 6),
        _ => (1, 4),
    }
}

#[inline(always)]
unsafe fn run_tile<S: Simd>(job: &Job, at: [usize; 4], taps: std::ops::Range<usize>, blocks: usize, wide: bool) {
    // SAFETY: (caller) `at` and the tile width fit the output row and channel blocks.
    unsafe {
        match (S::LANES, blocks, wide) {
            (16, 3, true) => tile::<S, 8, 3>(job, at, taps),
            (16, 3, false) => tile::<S, 1, 3>(job, at, taps),
            (16, 2, true) => tile::<S, 10, 2>(job, at, taps),
            (16, 2, false) => tile::<S, 1, 2>(job, at, taps),
            (16, _, true) => tile::<S, 10, 1>(job, at, taps),
            (16, _, false) => tile::<S, 1, 1>(job, at, taps),
            (8, _, true) => tile::<S, 6, 2>(job, at, taps),
            (8, _, false) => tile::<S, 1, 2>(job, at, taps),
            (_, _, true) => tile::<S, 4, 16>(job, at, taps),
            (_, _, false) => tile::<S, 1, 16>(job, at, taps),
        }
    }
}

#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize>(
    job: &Job,
    [n, oy, ox, cb]: [usize; 4],
    taps: std::ops::Range<usize>,
) {
    let c = job.conv;
    let (first, last) = (taps.start == 0, taps.end == c.k * c.k);
    let s = c.stride;
    let kk = c.k * c.k;
    let block_stride = kk * c.cin * B;
    let in_step = s * job.in_geom.cs;
    // SAFETY: (caller) the MR×NV tile at `[n, oy, ox, cb]` lies inside the output map; its
    // input window, with taps of at most k/2 pixels, lies inside the input map and its zero
    // frame (halo ≥ k/2); bias and weights are read for blocks `cb..cb + NV·LANES/16`.
    unsafe {
        let inp = job.inp.add(job.in_geom.at(n, oy * s, ox * s));
        let w0 = c.weights.as_ptr().add(cb * block_stride);
        let out = job.out.0.add(job.out_geom.at(n, oy, ox) + job.out_off + cb * B);
        let ocs = job.out_geom.cs;
        let mut acc = [[S::splat(0.0); NV]; MR];
        if first {
            let bias = c.bias.as_ptr().add(cb * B);
            for (v, a) in acc[0].iter_mut().enumerate() {
                *a = S::load(bias.add(v * S::LANES));
            }
            for i in 1..MR {
                acc[i] = acc[0];
            }
        } else {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = S::load(out.add(i * ocs + v * S::LANES));
                }
            }
        }
        let src = TileSrc {
            a: inp,
            a_step: in_step,
            taps: &job.taps,
            segments: &c.segments,
            w: w0,
            cin: c.cin,
            block_stride,
        };
        accumulate::<S, MR, NV>(&mut acc, &src, taps);
        // Plain stores first: an epilogue indexing `acc` in a loop it does not unroll would
        // make LLVM keep the accumulators in memory during the hot loop.
        for i in 0..MR {
            for v in 0..NV {
                S::store(out.add(i * ocs + v * S::LANES), acc[i][v]);
            }
        }
        if !last {
            return;
        }
        let res = job.res.map(|(p, g, off)| (p.add(g.at(n, oy, ox) + off + cb * B), g.cs));
        for i in 0..MR {
            for v in 0..NV {
                let o = out.add(i * ocs + v * S::LANES);
                let mut y = c.act.apply::<S>(S::load(o));
                if let Some((r, rcs)) = res {
                    y = S::add(y, S::load(r.add(i * rcs + v * S::LANES)));
                }
                S::store(o, y);
            }
        }
    }
}

/// The operands of a register tile: `MR` rows of A starting `a_step` floats apart, read at
/// each tap offset and channel run; weights `[tap][cin][16]` per 16-channel block, the blocks
/// `block_stride` floats apart.
pub(crate) struct TileSrc<'a> {
    pub a: *const f32,
    pub a_step: usize,
    pub taps: &'a [isize],
    pub segments: &'a [(usize, usize)],
    pub w: *const f32,
    pub cin: usize,
    pub block_stride: usize,
}

/// `acc[i][v] += Σ_taps Σ_c A[i](tap, c) · W(tap, c)[v]`: the hot loop of every dense kernel.
#[inline(always)]
pub(crate) unsafe fn accumulate<S: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    src: &TileSrc,
    taps: std::ops::Range<usize>,
) {
    // Index loops (not iterators) so LLVM keeps all accumulators in registers.
    let vec_off = |v: usize| (v * S::LANES / B) * src.block_stride + (v * S::LANES) % B;
    // SAFETY: (caller) `src` describes MR rows valid at every tap offset and channel run, and
    // weights for every tap of `taps`, every input channel and NV vectors.
    unsafe {
        for t in taps {
            let ip = src.a.offset(*src.taps.get_unchecked(t));
            let mut wp = src.w.add(t * src.cin * B);
            for &(off, cnt) in src.segments {
                let mut a = ip.add(off);
                for _ in 0..cnt {
                    let mut wv = [S::splat(0.0); NV];
                    for v in 0..NV {
                        wv[v] = S::load(wp.add(vec_off(v)));
                    }
                    for i in 0..MR {
                        let x = S::splat(*a.add(i * src.a_step));
                        for v in 0..NV {
                            acc[i][v] = S::fma(x, wv[v], acc[i][v]);
                        }
                    }
                    a = a.add(1);
                    wp = wp.add(B);
                }
            }
        }
    }
}
