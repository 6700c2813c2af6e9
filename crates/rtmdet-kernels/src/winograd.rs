//! 3×3 stride-1 convolution by Winograd's F(2×2, 3×3): each 2×2 output tile costs 16
//! multiply-adds per channel pair instead of 36. Per row of tiles: the input tiles are
//! transformed (`Bᵀ d B`), 16 small GEMMs multiply them with the transformed weights
//! (`G g Gᵀ`, computed once in f64), and the output transform (`Aᵀ m A`) adds the bias,
//! applies SiLU and the residual while storing. Scratch stays in L2 (a few tiles at a time).

#![allow(clippy::needless_range_loop)] // index loops keep register tiles in registers

use std::cell::RefCell;

use rayon::prelude::*;

use crate::activation::Activation;
use crate::conv::{TileSrc, accumulate, tile_shape};
use crate::simd::{Isa, Simd, dispatch};
use crate::tensor::{CHANNEL_BLOCK, FeatureMap, Geom, SyncPtr, round_up};

const B: usize = CHANNEL_BLOCK;

#[derive(Clone, Debug)]
pub struct PackedWinograd {
    pub cin: usize,
    pub cout: usize,
    pub cout_pad: usize,
    /// Input channel runs `(offset, count)` in a pixel, as for [`crate::conv::PackedConv`].
    pub segments: Vec<(usize, usize)>,
    /// The same runs inside a transformed tile, each padded to 16 channels.
    v_segments: Vec<(usize, usize)>,
    /// Floats per transformed input pixel (`Σ round_up(count, 16)`).
    v_channels: usize,
    /// 16 matrices `[cout_pad / 16][cin][16]`, one per transformed position.
    pub u: Vec<f32>,
    pub bias: Vec<f32>,
    pub act: Activation,
}

impl PackedWinograd {
    /// `weight` is OIHW `[cout, cin, 3, 3]`.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        cout: usize,
        cin: usize,
        act: Activation,
        segments: Vec<(usize, usize)>,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin * 9, "winograd weight size");
        assert_eq!(segments.iter().map(|s| s.1).sum::<usize>(), cin, "segments cover cin");
        let cout_pad = round_up(cout, B);
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let mut u = vec![0.0f32; 16 * cout_pad * cin];
        for o in 0..cout {
            for i in 0..cin {
                let g = &weight[(o * cin + i) * 9..][..9];
                for a in 0..4 {
                    for b in 0..4 {
                        let mut v = 0.0f64;
                        for p in 0..3 {
                            for q in 0..3 {
                                v += G[a][p] * g[p * 3 + q] as f64 * G[b][q];
                            }
                        }
                        let (blk, lane) = (o / B, o % B);
                        u[(a * 4 + b) * cout_pad * cin + (blk * cin + i) * B + lane] = v as f32;
                    }
                }
            }
        }
        let mut v_segments = Vec::new();
        let mut v_channels = 0;
        for &(_, cnt) in &segments {
            v_segments.push((v_channels, cnt));
            v_channels += round_up(cnt, B);
        }
        let mut b = vec![0.0; cout_pad];
        b[..cout].copy_from_slice(&bias[..cout]);
        PackedWinograd { cin, cout, cout_pad, segments, v_segments, v_channels, u, bias: b, act }
    }

    /// Worth it when the channel counts amortise the transforms (3×3, stride 1).
    pub fn suits(cin: usize, cout: usize, k: usize, stride: usize) -> bool {
        k == 3 && stride == 1 && cin >= 24 && cout >= 16
    }

    /// The multiply-adds ×2 of the direct convolution it replaces.
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        2.0 * (h * w * self.cout * self.cin * 9) as f64
    }
}

struct Job<'a> {
    wg: &'a PackedWinograd,
    inp: *const f32,
    in_geom: Geom,
    out: SyncPtr,
    out_geom: Geom,
    out_off: usize,
    res: Option<(*const f32, Geom, usize)>,
    tile_rows: usize,
    tile_cols: usize,
    /// Tiles per task: the scratch (`V` and `M`) stays small beside the transformed weights
    /// in L2.
    chunk: usize,
}

/// The tiles `first..first + count` of tile row `row` (all images' rows numbered together).
#[derive(Clone, Copy)]
struct Span {
    row: usize,
    first: usize,
    count: usize,
}

/// Scratch floats per task (512 KiB: with the transformed weights it stays in L2).
const SCRATCH_FLOATS: usize = 128 * 1024;

/// The row's tiles, halved while their scratch exceeds [`SCRATCH_FLOATS`] (down to 10, a
/// register tile's width).
fn chunk_tiles(tiles: usize, floats_per_tile: usize) -> usize {
    let mut chunk = tiles.max(1);
    while chunk * floats_per_tile > SCRATCH_FLOATS && chunk.is_multiple_of(2) && chunk / 2 >= 10 {
        chunk /= 2;
    }
    chunk
}

// SAFETY: inputs are only read; each task writes its own two output rows.
unsafe impl Sync for Job<'_> {}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Same contract as [`crate::conv::conv2d`] for a 3×3 stride-1 convolution. Odd sizes are
/// covered by tiles that hang over the edge: they read the zero frame and store only inside.
pub fn winograd_conv(
    isa: Isa,
    wg: &PackedWinograd,
    input: &FeatureMap,
    output: &mut FeatureMap,
    out_off: usize,
    residual: Option<(&FeatureMap, usize)>,
) {
    assert_eq!((output.n, output.h, output.w), (input.n, input.h, input.w), "winograd output shape");
    assert!(out_off + wg.cout_pad <= output.cs, "winograd output channels");
    assert!(wg.segments.iter().all(|&(o, c)| o + round_up(c, B) <= input.cs), "winograd input channels");
    if let Some((r, off)) = residual {
        assert_eq!((r.n, r.h, r.w), (output.n, output.h, output.w), "residual shape");
        assert!(off + wg.cout_pad <= r.cs);
    }
    let job = Job {
        wg,
        inp: input.data.as_ptr(),
        in_geom: input.geom(),
        out: SyncPtr(output.data.as_mut_ptr()),
        out_geom: output.geom(),
        out_off,
        res: residual.map(|(r, off)| (r.data.as_ptr(), r.geom(), off)),
        tile_rows: input.h.div_ceil(2),
        tile_cols: input.w.div_ceil(2),
        chunk: chunk_tiles(input.w.div_ceil(2), 16 * (wg.v_channels + wg.cout_pad)),
    };
    let chunks = job.tile_cols.div_ceil(job.chunk);
    (0..input.n * job.tile_rows * chunks).into_par_iter().for_each(|t| {
        let first = (t % chunks) * job.chunk;
        let span = Span { row: t / chunks, first, count: job.chunk.min(job.tile_cols - first) };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let need = 16 * span.count * (wg.v_channels + wg.cout_pad);
            if s.len() < need {
                s.resize(need, 0.0);
            }
            tiles(isa, &job, span, &mut s);
        })
    });
}

dispatch!(fn tiles => tiles_generic(job: &Job, span: Span, scratch: &mut [f32]));

#[inline(always)]
fn tiles_generic<S: Simd>(job: &Job, span: Span, scratch: &mut [f32]) {
    let wg = job.wg;
    let tw = span.count;
    let (v, m) = scratch.split_at_mut(16 * tw * wg.v_channels);
    // SAFETY: every access below stays inside the maps (halo ≥ 1) and the scratch.
    unsafe {
        input_transform::<S>(job, span, v);
        for xi in 0..16 {
            let a = v.as_ptr().add(xi * tw * wg.v_channels);
            let u = wg.u.as_ptr().add(xi * wg.cout_pad * wg.cin);
            let mx = m.as_mut_ptr().add(xi * tw * wg.cout_pad);
            gemm::<S>(job, tw, a, u, mx);
        }
        output_transform::<S>(job, span, m);
    }
}

/// `V[ξ][tile][c] = (Bᵀ d B)[ξ]` for the 4×4 input patch `d` of every tile of the row.
#[inline(always)]
unsafe fn input_transform<S: Simd>(job: &Job, span: Span, v: &mut [f32]) {
    let wg = job.wg;
    let (n, ty) = (span.row / job.tile_rows, span.row % job.tile_rows);
    let g = job.in_geom;
    let (tw, vc) = (span.count, wg.v_channels);
    // SAFETY: (caller: a span of tile rows inside the output, `v` of 16·tw·v_channels floats)
    // a patch origin is at most one pixel into the 2-pixel zero frame and its 4×4 window ends
    // inside the frame, so every load is inside the input map; stores index `v` below its size.
    unsafe {
        for tx in 0..tw {
            // Patch origin (2ty − 1, 2tx − 1) lies in the zero frame for the first tiles.
            let origin = job.inp.add(g.at(n, 2 * ty, 2 * (span.first + tx))).sub(g.row_stride() + g.cs);
            for (&(off, cnt), &(voff, _)) in wg.segments.iter().zip(&wg.v_segments) {
                for c in (0..round_up(cnt, B)).step_by(S::LANES) {
                    let mut d = [[S::splat(0.0); 4]; 4];
                    for i in 0..4 {
                        for j in 0..4 {
                            d[i][j] = S::load(origin.add(i * g.row_stride() + j * g.cs + off + c));
                        }
                    }
                    // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3), then the same on columns.
                    let mut t = [[S::splat(0.0); 4]; 4];
                    for j in 0..4 {
                        let [r0, r1, r2, r3] = bt::<S>([d[0][j], d[1][j], d[2][j], d[3][j]]);
                        t[0][j] = r0;
                        t[1][j] = r1;
                        t[2][j] = r2;
                        t[3][j] = r3;
                    }
                    for i in 0..4 {
                        let r = bt::<S>(t[i]);
                        for j in 0..4 {
                            S::store(v.as_mut_ptr().add(((i * 4 + j) * tw + tx) * vc + voff + c), r[j]);
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn bt<S: Simd>([d0, d1, d2, d3]: [S::V; 4]) -> [S::V; 4] {
    // SAFETY: register arithmetic only, in code compiled for `S` (the caller's contract).
    unsafe {
        let neg = S::splat(-1.0);
        [S::fma(d2, neg, d0), S::add(d1, d2), S::fma(d1, neg, d2), S::fma(d3, neg, d1)]
    }
}

/// `M[tile][co] = Σ_c V[tile][c] · U[c][co]` for one transformed position.
#[inline(always)]
unsafe fn gemm<S: Simd>(job: &Job, tw: usize, a: *const f32, u: *const f32, m: *mut f32) {
    let wg = job.wg;
    let blocks = wg.cout_pad / B;
    let taps = [0isize];
    let mut cb = 0;
    while cb < blocks {
        let (tb, mr) = tile_shape(S::LANES, blocks - cb, tw);
        let mut x0 = 0;
        while x0 < tw {
            let wide = tw >= mr;
            let start = if wide { x0.min(tw - mr) } else { x0 };
            // SAFETY: `start + mr ≤ tw` rows of the scratch, weight block `cb < blocks` of `u`,
            // and the matching rows/blocks of `m`: all three offsets stay in their buffers.
            let (rows, weights, out) =
                unsafe { (a.add(start * wg.v_channels), u.add(cb * wg.cin * B), m.add(start * wg.cout_pad + cb * B)) };
            let src = TileSrc {
                a: rows,
                a_step: wg.v_channels,
                taps: &taps,
                segments: &wg.v_segments,
                w: weights,
                cin: wg.cin,
                block_stride: wg.cin * B,
            };
            // SAFETY: the tile shape `(mr, tb)` chosen by `tile_shape` fits the rows and blocks
            // left, which is what each `gemm_tile` instance reads and writes.
            unsafe {
                match (S::LANES, tb, wide) {
                    (16, 3, true) => gemm_tile::<S, 8, 3>(&src, out, wg.cout_pad),
                    (16, 2, true) => gemm_tile::<S, 10, 2>(&src, out, wg.cout_pad),
                    (16, 1, true) => gemm_tile::<S, 10, 1>(&src, out, wg.cout_pad),
                    (16, 3, false) => gemm_tile::<S, 1, 3>(&src, out, wg.cout_pad),
                    (16, 2, false) => gemm_tile::<S, 1, 2>(&src, out, wg.cout_pad),
                    (16, _, false) => gemm_tile::<S, 1, 1>(&src, out, wg.cout_pad),
                    (8, _, true) => gemm_tile::<S, 6, 2>(&src, out, wg.cout_pad),
                    (8, _, false) => gemm_tile::<S, 1, 2>(&src, out, wg.cout_pad),
                    (_, _, true) => gemm_tile::<S, 4, 16>(&src, out, wg.cout_pad),
                    (_, _, false) => gemm_tile::<S, 1, 16>(&src, out, wg.cout_pad),
                }
            }
            x0 += if wide { mr } else { 1 };
        }
        cb += tb;
    }
}

#[inline(always)]
unsafe fn gemm_tile<S: Simd, const MR: usize, const NV: usize>(src: &TileSrc, out: *mut f32, out_step: usize) {
    // SAFETY: (caller) `out` has MR rows `out_step` floats apart with NV vectors each, and `src`
    // describes MR rows of the scratch and NV weight vectors.
    let mut acc = [[unsafe { S::splat(0.0) }; NV]; MR];
    unsafe {
        accumulate::<S, MR, NV>(&mut acc, src, 0..1);
        for i in 0..MR {
            for v in 0..NV {
                S::store(out.add(i * out_step + v * S::LANES), acc[i][v]);
            }
        }
    }
}

/// `Y = Aᵀ M A` (2×2 outputs per tile) + bias, activation, residual, stored into the map.
#[inline(always)]
unsafe fn output_transform<S: Simd>(job: &Job, span: Span, m: &[f32]) {
    let wg = job.wg;
    let (n, ty) = (span.row / job.tile_rows, span.row % job.tile_rows);
    let (tw, cp) = (span.count, wg.cout_pad);
    let og = job.out_geom;
    // SAFETY: `m` holds 16·tw·cout_pad floats; outputs outside the map (odd sizes) are skipped
    // before the store, and a residual is read at the same in-map position.
    unsafe {
        for tx in 0..tw {
            for c in (0..cp).step_by(S::LANES) {
                let mut t = [[S::splat(0.0); 4]; 2];
                for j in 0..4 {
                    let mv = |i: usize| S::load(m.as_ptr().add(((i * 4 + j) * tw + tx) * cp + c));
                    let (m0, m1, m2, m3) = (mv(0), mv(1), mv(2), mv(3));
                    t[0][j] = S::add(S::add(m0, m1), m2);
                    t[1][j] = S::fma(m3, S::splat(-1.0), S::fma(m2, S::splat(-1.0), m1));
                }
                let bias = S::load(wg.bias.as_ptr().add(c));
                for a in 0..2 {
                    let y0 = S::add(S::add(S::add(t[a][0], t[a][1]), t[a][2]), bias);
                    let y1 = S::add(S::fma(t[a][3], S::splat(-1.0), S::fma(t[a][2], S::splat(-1.0), t[a][1])), bias);
                    for (b, y) in [y0, y1].into_iter().enumerate() {
                        let (oy, ox) = (2 * ty + a, 2 * (span.first + tx) + b);
                        if oy >= og.h || ox >= og.w {
                            continue;
                        }
                        let mut y = wg.act.apply::<S>(y);
                        if let Some((r, rg, roff)) = job.res {
                            y = S::add(y, S::load(r.add(rg.at(n, oy, ox) + roff + c)));
                        }
                        S::store(job.out.0.add(og.at(n, oy, ox) + job.out_off + c), y);
                    }
                }
            }
        }
    }
}
