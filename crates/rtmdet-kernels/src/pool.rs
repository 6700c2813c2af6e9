//! Stride-1 max-pooling with implicit −∞ padding, for SPP. Pools of 9 and 13 are exactly
//! pools of 5 applied two and three times (the clipped windows compose), so SPP(5, 9, 13)
//! is three chained 5×5 pools.

use crate::simd::{Isa, Simd, dispatch};
use crate::tensor::FeatureMap;

/// `map[.., dst..dst+c] = maxpool_k(map[.., src..src+c])`, `c` a multiple of 16.
pub fn max_pool(isa: Isa, map: &mut FeatureMap, src: usize, dst: usize, c: usize, k: usize) {
    assert!(src + c <= dst || dst + c <= src, "pool source and destination overlap");
    assert!(src.max(dst) + c <= map.cs && c.is_multiple_of(16));
    pool_impl(isa, map, src, dst, c, k);
}

dispatch!(fn pool_impl => pool_generic(map: &mut FeatureMap, src: usize, dst: usize, c: usize, k: usize));

#[inline(always)]
fn pool_generic<S: Simd>(map: &mut FeatureMap, src: usize, dst: usize, c: usize, k: usize) {
    let r = k / 2;
    let (h, w) = (map.h, map.w);
    // Separable: rows first into a scratch map, then columns.
    let mut tmp = vec![0.0f32; h * w * c];
    for n in 0..map.n {
        for y in 0..h {
            for x in 0..w {
                let (x0, x1) = (x.saturating_sub(r), (x + r).min(w - 1));
                for ch in (0..c).step_by(S::LANES) {
                    // SAFETY: in bounds of `map.data` / `tmp`.
                    unsafe {
                        let mut m = S::load(map.data.as_ptr().add(map.at(n, y, x0) + src + ch));
                        for xx in x0 + 1..=x1 {
                            m = S::max(m, S::load(map.data.as_ptr().add(map.at(n, y, xx) + src + ch)));
                        }
                        S::store(tmp.as_mut_ptr().add((y * w + x) * c + ch), m);
                    }
                }
            }
        }
        for y in 0..h {
            let (y0, y1) = (y.saturating_sub(r), (y + r).min(h - 1));
            for x in 0..w {
                let o = map.at(n, y, x) + dst;
                for ch in (0..c).step_by(S::LANES) {
                    // SAFETY: as above.
                    unsafe {
                        let mut m = S::load(tmp.as_ptr().add((y0 * w + x) * c + ch));
                        for yy in y0 + 1..=y1 {
                            m = S::max(m, S::load(tmp.as_ptr().add((yy * w + x) * c + ch)));
                        }
                        S::store(map.data.as_mut_ptr().add(o + ch), m);
                    }
                }
            }
        }
    }
}
