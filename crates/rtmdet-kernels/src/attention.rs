//! CSPNeXt channel attention in place: `x · hardsigmoid(fc(mean_hw(x)))`.

use rayon::prelude::*;

use crate::layout::for_each_row;
use crate::simd::{Isa, Simd, dispatch};
use crate::tensor::{FeatureMap, HALO};

/// The attention's 1×1 `fc` (`[c, c]` + bias) and where its channels sit in a pixel.
#[derive(Clone, Debug)]
pub struct ChannelGate {
    pub channels: usize,
    /// Position of each real channel in a pixel (concatenated parts may leave gaps).
    pub positions: Vec<usize>,
    /// `[out][in]`
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub fn channel_attention(isa: Isa, gate: &ChannelGate, map: &mut FeatureMap) {
    let cs = map.cs;
    for n in 0..map.n {
        let mean = channel_mean(map, n);
        let mut scale = vec![0.0f32; cs];
        for (o, &po) in gate.positions.iter().enumerate() {
            let row = &gate.weight[o * gate.channels..(o + 1) * gate.channels];
            let z = gate.bias[o] + row.iter().zip(&gate.positions).map(|(w, &pi)| w * mean[pi]).sum::<f32>();
            scale[po] = (z / 6.0 + 0.5).clamp(0.0, 1.0);
        }
        scale_impl(isa, map, n, &scale);
    }
}

/// Mean over the image's pixels of every channel slot: row sums in parallel, added in row
/// order (the same result for any thread count).
fn channel_mean(map: &FeatureMap, n: usize) -> Vec<f32> {
    let cs = map.cs;
    let rows: Vec<Vec<f32>> = (0..map.h)
        .into_par_iter()
        .map(|y| {
            let mut row_sum = vec![0.0f32; cs];
            let base = map.at(n, y, 0);
            for px in map.data[base..base + map.w * cs].chunks_exact(cs) {
                row_sum.iter_mut().zip(px).for_each(|(s, v)| *s += v);
            }
            row_sum
        })
        .collect();
    let mut total = vec![0.0f32; cs];
    for r in &rows {
        total.iter_mut().zip(r).for_each(|(t, v)| *t += v);
    }
    let inv = 1.0 / (map.h * map.w) as f32;
    total.iter_mut().for_each(|t| *t *= inv);
    total
}

fn scale_impl(isa: Isa, map: &mut FeatureMap, n: usize, scale: &[f32]) {
    let w = map.w;
    for_each_row(map, |b, _, row, cs| {
        if b == n {
            scale_row(isa, &mut row[HALO * cs..(HALO + w) * cs], cs, scale);
        }
    });
}

dispatch!(fn scale_row => scale_row_generic(row: &mut [f32], cs: usize, scale: &[f32]));

#[inline(always)]
fn scale_row_generic<S: Simd>(row: &mut [f32], cs: usize, scale: &[f32]) {
    for px in row.chunks_exact_mut(cs) {
        for c in (0..cs).step_by(S::LANES) {
            // SAFETY: `cs` is a multiple of the lane count; in bounds.
            unsafe {
                let p = px.as_mut_ptr().add(c);
                S::store(p, S::mul(S::load(p), S::load(scale.as_ptr().add(c))));
            }
        }
    }
}
