//! CSPNeXt channel attention in place: `x · hardsigmoid(fc(mean_hw(x)))`.

use crate::cpu::simd::{Isa, Simd, dispatch};
use crate::cpu::tensor::FeatureMap;

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

/// Mean over the image's pixels of every channel slot, summed row by row.
fn channel_mean(map: &FeatureMap, n: usize) -> Vec<f32> {
    let cs = map.cs;
    let mut total = vec![0.0f32; cs];
    let mut row_sum = vec![0.0f32; cs];
    for y in 0..map.h {
        row_sum.iter_mut().for_each(|v| *v = 0.0);
        let base = map.at(n, y, 0);
        for px in map.data[base..base + map.w * cs].chunks_exact(cs) {
            row_sum.iter_mut().zip(px).for_each(|(s, v)| *s += v);
        }
        total.iter_mut().zip(&row_sum).for_each(|(t, r)| *t += r);
    }
    let inv = 1.0 / (map.h * map.w) as f32;
    total.iter_mut().for_each(|t| *t *= inv);
    total
}

dispatch!(fn scale_impl => scale_generic(map: &mut FeatureMap, n: usize, scale: &[f32]));

#[inline(always)]
fn scale_generic<S: Simd>(map: &mut FeatureMap, n: usize, scale: &[f32]) {
    let cs = map.cs;
    for y in 0..map.h {
        let base = map.at(n, y, 0);
        for x in 0..map.w {
            for c in (0..cs).step_by(S::LANES) {
                // SAFETY: `cs` is a multiple of the lane count; in bounds.
                unsafe {
                    let p = map.data.as_mut_ptr().add(base + x * cs + c);
                    S::store(p, S::mul(S::load(p), S::load(scale.as_ptr().add(c))));
                }
            }
        }
    }
}
