//! RTMDet-Ins' dynamic mask head (spec §10.2): per instance, three 1×1 convolutions whose
//! weights the network predicted (`inputs → HIDDEN → ReLU → HIDDEN → ReLU → 1`), over every
//! pixel of the stride-8 map. Pixels are independent, so a vector of pixels runs the whole
//! chain in registers, with no intermediate planes.
//!
//! Each output is `Σ_i w[o][i]·x[i]` summed in input order from zero, then its bias added (a
//! multiply and an add, no fused multiply-add), the arithmetic of the scalar definition, so
//! every instruction set gives the same bits.

use crate::simd::{Scalar, Simd, dispatch};

/// The width of the two hidden layers (mmdet's `dyconv_channels`).
pub const HIDDEN: usize = 8;

/// One instance's predicted weights, row-major `[out][in]`.
#[derive(Clone, Copy, Debug)]
pub struct DynamicConvs<'a> {
    /// `[HIDDEN][inputs]`
    pub w0: &'a [f32],
    pub b0: &'a [f32],
    /// `[HIDDEN][HIDDEN]`
    pub w1: &'a [f32],
    pub b1: &'a [f32],
    /// `[1][HIDDEN]`
    pub w2: &'a [f32],
    pub b2: f32,
}

/// The logits of every pixel: `inputs` are planes of `out.len()` pixels each (relative
/// coordinates, then prototypes). Panics on weights of other sizes.
pub fn dynamic_mask_logits(isa: crate::Isa, inputs: &[&[f32]], convs: &DynamicConvs, out: &mut [f32]) {
    let n_in = inputs.len();
    assert!(n_in <= MAX_INPUTS, "dynamic convs take at most {MAX_INPUTS} input planes");
    assert_eq!(convs.w0.len(), HIDDEN * n_in, "w0 size");
    assert_eq!((convs.w1.len(), convs.w2.len()), (HIDDEN * HIDDEN, HIDDEN), "w1/w2 size");
    assert_eq!((convs.b0.len(), convs.b1.len()), (HIDDEN, HIDDEN), "bias size");
    assert!(inputs.iter().all(|p| p.len() >= out.len()), "input planes shorter than the output");
    let hw = out.len();
    let lanes = isa.min(crate::Isa::best_supported()).lanes();
    let whole = hw - hw % lanes;
    pixels(isa, inputs, convs, 0, whole, out);
    for p in whole..hw {
        // SAFETY: `Scalar` reads and writes the one float at `p < hw`, which every plane and
        // `out` hold (asserted above), with plain Rust valid on any CPU.
        unsafe { chain::<Scalar>(inputs, convs, p, out) };
    }
}

/// Input planes a call may pass (2 coordinates + 8 prototypes in RTMDet-Ins).
const MAX_INPUTS: usize = 16;

dispatch!(fn pixels => pixels_generic(inputs: &[&[f32]], convs: &DynamicConvs, from: usize, to: usize, out: &mut [f32]));

#[inline(always)]
fn pixels_generic<S: Simd>(inputs: &[&[f32]], convs: &DynamicConvs, from: usize, to: usize, out: &mut [f32]) {
    assert!((to - from).is_multiple_of(S::LANES), "whole vectors only");
    assert!(to <= out.len() && inputs.iter().all(|p| to <= p.len()), "pixels outside the planes");
    for p in (from..to).step_by(S::LANES) {
        // SAFETY: `p + S::LANES <= to`, within `out` and every plane (asserted above), and
        // `dispatch!` runs this only on a CPU with `S`'s instruction set.
        unsafe { chain::<S>(inputs, convs, p, out) };
    }
}

/// The whole chain for the `S::LANES` pixels from `p`.
///
/// # Safety
/// `p + S::LANES` must not exceed `out.len()` nor any input plane's length, and the code must
/// run on a CPU with `S`'s instruction set.
#[inline(always)]
unsafe fn chain<S: Simd>(inputs: &[&[f32]], convs: &DynamicConvs, p: usize, out: &mut [f32]) {
    // SAFETY (whole body): loads and the store read `S::LANES` floats from `p`, in bounds by
    // the contract above; weight indices are within the sizes `dynamic_mask_logits` checked.
    unsafe {
        let mut x = [S::splat(0.0); MAX_INPUTS];
        for (v, plane) in x.iter_mut().zip(inputs) {
            *v = S::load(plane.as_ptr().add(p));
        }
        let h1 = layer::<S>(&x[..inputs.len()], convs.w0, convs.b0);
        let h2 = layer::<S>(&h1, convs.w1, convs.b1);
        let mut acc = S::splat(0.0);
        for (v, &w) in h2.iter().zip(convs.w2) {
            acc = S::add(acc, S::mul(S::splat(w), *v));
        }
        S::store(out.as_mut_ptr().add(p), S::add(acc, S::splat(convs.b2)));
    }
}

/// `relu(W·x + b)` for `HIDDEN` outputs.
///
/// # Safety
/// Only on a CPU with `S`'s instruction set (register arithmetic, no memory access).
#[inline(always)]
unsafe fn layer<S: Simd>(x: &[S::V], w: &[f32], b: &[f32]) -> [S::V; HIDDEN] {
    // SAFETY: arithmetic on registers, no memory; weight indices `o·x.len() + i` stay below
    // `HIDDEN·x.len()`, the sizes `dynamic_mask_logits` checked; the caller runs on `S`'s
    // instruction set.
    unsafe {
        let mut h = [S::splat(0.0); HIDDEN];
        for (o, out) in h.iter_mut().enumerate() {
            let mut acc = S::splat(0.0);
            for (i, v) in x.iter().enumerate() {
                acc = S::add(acc, S::mul(S::splat(w[o * x.len() + i]), *v));
            }
            *out = S::max(S::add(acc, S::splat(b[o])), S::splat(0.0));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// The scalar definition: each layer over all pixels, sums in input order.
    fn reference(inputs: &[Vec<f32>], c: &DynamicConvs, hw: usize) -> Vec<f32> {
        let layer = |x: &[Vec<f32>], w: &[f32], b: &[f32], n_out: usize, relu: bool| -> Vec<Vec<f32>> {
            (0..n_out)
                .map(|o| {
                    (0..hw)
                        .map(|p| {
                            let s = x.iter().enumerate().fold(0f32, |a, (i, plane)| a + w[o * x.len() + i] * plane[p])
                                + b[o];
                            if relu { s.max(0.0) } else { s }
                        })
                        .collect()
                })
                .collect()
        };
        let h1 = layer(inputs, c.w0, c.b0, HIDDEN, true);
        let h2 = layer(&h1, c.w1, c.b1, HIDDEN, true);
        layer(&h2, c.w2, &[c.b2], 1, false).remove(0)
    }

    #[test]
    fn every_isa_gives_the_reference_bits() {
        // 37 pixels: whole vectors and a tail for every lane count.
        let (hw, n_in) = (37, 10);
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        let inputs: Vec<Vec<f32>> = (0..n_in).map(|_| (0..hw).map(|_| next()).collect()).collect();
        let weights: Vec<f32> =
            (0..HIDDEN * n_in + HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + 1).map(|_| next()).collect();
        let (w0, rest) = weights.split_at(HIDDEN * n_in);
        let (w1, rest) = rest.split_at(HIDDEN * HIDDEN);
        let (w2, rest) = rest.split_at(HIDDEN);
        let (b0, rest) = rest.split_at(HIDDEN);
        let (b1, b2) = rest.split_at(HIDDEN);
        let convs = DynamicConvs { w0, b0, w1, b1, w2, b2: b2[0] };
        let want = reference(&inputs, &convs, hw);
        let planes: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        for isa in Isa::available() {
            let mut got = vec![0f32; hw];
            dynamic_mask_logits(isa, &planes, &convs, &mut got);
            assert_eq!(got, want, "{isa}");
        }
    }
}
