//! Every CPU-engine kernel against a plain reference implementation, on odd shapes (1×1
//! maps, widths that are not a multiple of the register tile, channel counts that are not a
//! multiple of the vector width, strides, concatenation gaps), for every instruction set
//! this machine has (the portable scalar code always).

use rtmdet_kernels::Activation;
use rtmdet_kernels::Isa;
use rtmdet_kernels::attention::{ChannelGate, channel_attention};
use rtmdet_kernels::conv::{PackedConv, conv2d};
use rtmdet_kernels::depthwise::{PackedDepthwise, depthwise2d};
use rtmdet_kernels::layout::{copy_channels, upsample2x};
use rtmdet_kernels::pool::max_pool;
use rtmdet_kernels::tensor::{FeatureMap, round_up};
use rtmdet_kernels::winograd::{PackedWinograd, winograd_conv};

/// Deterministic values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// NCHW tensor.
struct Nchw {
    data: Vec<f32>,
    dims: [usize; 4],
}

impl Nchw {
    fn at(&self, b: usize, c: usize, y: isize, x: isize) -> Option<f32> {
        let [_, cc, h, w] = self.dims;
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            return None;
        }
        Some(self.data[((b * cc + c) * h + y as usize) * w + x as usize])
    }
}

/// A map whose real channels sit at `segments` (the other slots zero), and its NCHW view.
fn random_map(rng: &mut Lcg, [n, h, w]: [usize; 3], cs: usize, segments: &[(usize, usize)]) -> (FeatureMap, Nchw) {
    let c: usize = segments.iter().map(|s| s.1).sum();
    let dense = Nchw { data: rng.vec(n * c * h * w), dims: [n, c, h, w] };
    let mut map = FeatureMap::zeros(n, h, w, cs);
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                let slots = segments.iter().flat_map(|&(off, cnt)| off..off + cnt);
                for (ch, slot) in slots.enumerate() {
                    let i = map.at(b, y, x) + slot;
                    map.data[i] = dense.at(b, ch, y as isize, x as isize).unwrap();
                }
            }
        }
    }
    (map, dense)
}

/// Plain convolution with padding k/2; `depthwise` = one group per channel.
fn reference_conv(
    x: &Nchw,
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> Nchw {
    let [n, cin, h, w] = x.dims;
    let p = (k / 2) as isize;
    let (ho, wo) = ((h + 2 * (k / 2) - k) / stride + 1, (w + 2 * (k / 2) - k) / stride + 1);
    let mut out = vec![0.0f32; n * cout * ho * wo];
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias[o] as f64;
                    let inputs = if depthwise { o..o + 1 } else { 0..cin };
                    for (ii, i) in inputs.enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * stride + ky) as isize - p;
                                let xx = (ox * stride + kx) as isize - p;
                                if let Some(v) = x.at(b, i, y, xx) {
                                    let per_out = if depthwise { 1 } else { cin };
                                    acc += weight[((o * per_out + ii) * k + ky) * k + kx] as f64 * v as f64;
                                }
                            }
                        }
                    }
                    out[((b * cout + o) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
    Nchw { data: out, dims: [n, cout, ho, wo] }
}

/// Largest |a − b| / (1 + |b|) between a map's channels `[off, off + c)` and an NCHW tensor.
fn worst(map: &FeatureMap, off: usize, want: &Nchw) -> f32 {
    let got = map.to_nchw(off, want.dims[1]);
    assert_eq!((map.n, map.h, map.w), (want.dims[0], want.dims[2], want.dims[3]));
    got.iter().zip(&want.data).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f32::max)
}

/// The frame around every image must stay zero: later convolutions read it as padding.
fn frame_is_zero(map: &FeatureMap) -> bool {
    let mut interior = vec![false; map.data.len()];
    for b in 0..map.n {
        for y in 0..map.h {
            let start = map.at(b, y, 0);
            interior[start..start + map.w * map.cs].iter_mut().for_each(|v| *v = true);
        }
    }
    map.data.iter().zip(&interior).all(|(v, inside)| *inside || *v == 0.0)
}

/// Checks the padding channels of `[off + c, off + c_pad)` are still zero.
fn padding_is_zero(map: &FeatureMap, off: usize, c: usize, c_pad: usize) -> bool {
    (0..map.n)
        .all(|b| (0..map.h).all(|y| (0..map.w).all(|x| (c..c_pad).all(|j| map.data[map.at(b, y, x) + off + j] == 0.0))))
}

#[test]
fn dense_conv_matches_the_reference() {
    let mut rng = Lcg(1);
    // (cin, cout, k, stride, n, h, w)
    let cases = [
        (3, 12, 3, 2, 1, 1, 1),
        (3, 5, 3, 1, 1, 7, 5),
        (17, 33, 3, 2, 2, 9, 23),
        (16, 48, 1, 1, 1, 3, 31),
        (24, 50, 3, 1, 1, 6, 21),
        (8, 80, 1, 1, 1, 5, 10),
        (5, 4, 5, 1, 1, 4, 13),
        (40, 64, 3, 1, 1, 2, 12),
        (96, 96, 3, 1, 1, 4, 20),
    ];
    for isa in Isa::available() {
        for (cin, cout, k, stride, n, h, w) in cases {
            for act in [Activation::Identity, Activation::Silu] {
                // Input channels split in two parts with a gap, as a concatenation leaves them.
                let split = cin / 2;
                let segments = vec![(0, split), (round_up(split.max(1), 16), cin - split)];
                let segments: Vec<_> = segments.into_iter().filter(|s| s.1 > 0).collect();
                let cs = segments.last().map(|s| round_up(s.0 + s.1, 16)).unwrap();
                let (x, dense) = random_map(&mut rng, [n, h, w], cs, &segments);
                let weight = rng.vec(cout * cin * k * k);
                let bias = rng.vec(cout);
                let conv = PackedConv::new(&weight, &bias, [cout, cin, k], stride, act, Some(segments.clone()));
                let (ho, wo) = conv.out_size(h, w);
                // Write at an offset inside a wider map, with a residual.
                let out_off = 16;
                let mut out = FeatureMap::zeros(n, ho, wo, out_off + conv.cout_pad + 16);
                let (res, res_dense) = random_map(&mut rng, [n, ho, wo], round_up(cout, 16), &[(0, cout)]);
                conv2d(isa, &conv, &x, &mut out, out_off, Some((&res, 0)));
                let mut want = reference_conv(&dense, &weight, &bias, cout, k, stride, false);
                for (v, r) in want.data.iter_mut().zip(&res_dense.data) {
                    *v = act.reference(*v) + r;
                }
                let d = worst(&out, out_off, &want);
                assert!(d < 2e-5, "{isa} conv cin {cin} cout {cout} k{k} s{stride} {h}x{w} {act:?}: {d}");
                assert!(padding_is_zero(&out, out_off, cout, conv.cout_pad + 16), "{isa}: padding written");
                assert!(padding_is_zero(&out, 0, 0, out_off), "{isa}: wrote before the offset");
                assert!(frame_is_zero(&out), "{isa}: the zero frame was written");
            }
        }
    }
}

/// Winograd F(2×2, 3×3) against the direct reference, on odd sizes (tiles over the edge),
/// a concatenation gap and a residual.
#[test]
fn winograd_conv_matches_the_reference() {
    let mut rng = Lcg(6);
    for isa in Isa::available() {
        for (cin, cout, n, h, w) in
            [(16, 16, 1, 1, 1), (24, 40, 2, 5, 7), (33, 50, 1, 8, 22), (96, 96, 1, 6, 20), (40, 24, 1, 3, 13)]
        {
            for act in [Activation::Identity, Activation::Silu] {
                let split = cin / 2;
                let segments = vec![(0, split), (round_up(split, 16), cin - split)];
                let cs = round_up(segments[1].0 + segments[1].1, 16);
                let (x, dense) = random_map(&mut rng, [n, h, w], cs, &segments);
                let weight = rng.vec(cout * cin * 9);
                let bias = rng.vec(cout);
                let wg = PackedWinograd::new(&weight, &bias, cout, cin, act, segments.clone());
                let mut out = FeatureMap::zeros(n, h, w, 16 + round_up(cout, 16));
                let (res, res_dense) = random_map(&mut rng, [n, h, w], round_up(cout, 16), &[(0, cout)]);
                winograd_conv(isa, &wg, &x, &mut out, 16, Some((&res, 0)));
                let mut want = reference_conv(&dense, &weight, &bias, cout, 3, 1, false);
                for (v, r) in want.data.iter_mut().zip(&res_dense.data) {
                    *v = act.reference(*v) + r;
                }
                let d = worst(&out, 16, &want);
                assert!(d < 2e-5, "{isa} winograd cin {cin} cout {cout} {h}x{w} {act:?}: {d}");
                assert!(padding_is_zero(&out, 16, cout, round_up(cout, 16)), "{isa}: padding written");
                assert!(padding_is_zero(&out, 0, 0, 16), "{isa}: wrote before the offset");
                assert!(frame_is_zero(&out), "{isa}: the zero frame was written");
            }
        }
    }
}

#[test]
fn depthwise_conv_matches_the_reference() {
    let mut rng = Lcg(2);
    for isa in Isa::available() {
        for (c, k, stride, h, w) in
            [(5, 5, 1, 1, 1), (17, 3, 2, 7, 9), (24, 5, 1, 6, 19), (33, 3, 1, 3, 8), (48, 5, 1, 9, 9)]
        {
            let cs = round_up(c, 16);
            let (x, dense) = random_map(&mut rng, [2, h, w], cs, &[(0, c)]);
            let weight = rng.vec(c * k * k);
            let bias = rng.vec(c);
            let dw = PackedDepthwise::new(&weight, &bias, c, k, stride, Activation::Silu);
            let (ho, wo) = dw.out_size(h, w);
            let mut out = FeatureMap::zeros(2, ho, wo, cs);
            depthwise2d(isa, &dw, &x, &mut out);
            let mut want = reference_conv(&dense, &weight, &bias, c, k, stride, true);
            want.data.iter_mut().for_each(|v| *v = Activation::Silu.reference(*v));
            let d = worst(&out, 0, &want);
            assert!(d < 2e-5, "{isa} depthwise c {c} k{k} s{stride} {h}x{w}: {d}");
            assert!(padding_is_zero(&out, 0, c, cs));
        }
    }
}

fn reference_max_pool(x: &Nchw, k: usize) -> Nchw {
    let [n, c, h, w] = x.dims;
    let r = (k / 2) as isize;
    let mut out = Vec::with_capacity(x.data.len());
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h as isize {
                for xx in 0..w as isize {
                    let mut m = f32::NEG_INFINITY;
                    for dy in -r..=r {
                        for dx in -r..=r {
                            if let Some(v) = x.at(b, ch, y + dy, xx + dx) {
                                m = m.max(v);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
    }
    Nchw { data: out, dims: x.dims }
}

/// SPP's pools of 5, 9 and 13 as three chained pools of 5, against direct pools.
#[test]
fn chained_pools_equal_spp_pools() {
    let mut rng = Lcg(3);
    for isa in Isa::available() {
        for (h, w) in [(1, 1), (3, 7), (20, 20), (11, 5)] {
            let c = 20;
            let cp = round_up(c, 16);
            let (mut map, dense) = random_map(&mut rng, [1, h, w], 4 * cp, &[(0, c)]);
            for i in 0..3 {
                max_pool(isa, &mut map, i * cp, (i + 1) * cp, cp, 5);
            }
            for (i, k) in [5, 9, 13].into_iter().enumerate() {
                let d = worst(&map, (i + 1) * cp, &reference_max_pool(&dense, k));
                assert_eq!(d, 0.0, "{isa} pool {k} at {h}x{w}");
            }
        }
    }
}

#[test]
fn channel_attention_matches_the_reference() {
    let mut rng = Lcg(4);
    for isa in Isa::available() {
        // Two parts of 12 channels, the second starting at 16 (a concatenation gap).
        let segments = [(0, 12), (16, 12)];
        let (h, w) = (5, 7);
        let (mut map, dense) = random_map(&mut rng, [2, h, w], 32, &segments);
        let c = 24;
        let weight = rng.vec(c * c);
        let bias = rng.vec(c);
        let positions = segments.iter().flat_map(|&(o, n)| o..o + n).collect();
        let gate = ChannelGate { channels: c, positions, weight: weight.clone(), bias: bias.clone() };
        channel_attention(isa, &gate, &mut map);
        let mut want = Vec::new();
        for b in 0..2 {
            let mean: Vec<f64> = (0..c)
                .map(|ch| {
                    dense.data[(b * c + ch) * h * w..(b * c + ch + 1) * h * w].iter().map(|&v| v as f64).sum::<f64>()
                        / (h * w) as f64
                })
                .collect();
            for o in 0..c {
                let z = bias[o] as f64 + (0..c).map(|i| weight[o * c + i] as f64 * mean[i]).sum::<f64>();
                let g = ((z + 3.0).clamp(0.0, 6.0) / 6.0) as f32;
                want.extend(dense.data[(b * c + o) * h * w..(b * c + o + 1) * h * w].iter().map(|v| v * g));
            }
        }
        let got: Vec<f32> = (0..2)
            .flat_map(|b| {
                let mut one = FeatureMap::zeros(1, h, w, 32);
                let len = one.data.len();
                one.data.copy_from_slice(&map.data[b * len..(b + 1) * len]);
                let mut v = one.to_nchw(0, 12);
                v.extend(one.to_nchw(16, 12));
                v
            })
            .collect();
        // `got` is [b][part][12][h][w]; `want` is [b][24][h][w] with the same channel order.
        let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "{isa} attention: {d}");
    }
}

#[test]
fn upsample_and_copy_move_channel_slices() {
    let mut rng = Lcg(5);
    let (src, dense) = random_map(&mut rng, [2, 3, 5], 16, &[(0, 16)]);
    let mut dst = FeatureMap::zeros(2, 6, 10, 48);
    upsample2x(&src, 0, &mut dst, 16, 16);
    for b in 0..2 {
        for y in 0..6 {
            for x in 0..10 {
                for c in 0..16 {
                    let v = dst.data[dst.at(b, y, x) + 16 + c];
                    assert_eq!(Some(v), dense.at(b, c, (y / 2) as isize, (x / 2) as isize));
                }
            }
        }
    }
    let mut same = FeatureMap::zeros(2, 3, 5, 32);
    copy_channels(&src, 0, &mut same, 16, 16);
    assert_eq!(same.to_nchw(16, 16), src.to_nchw(0, 16));
    assert!(padding_is_zero(&same, 0, 0, 16));
}
