//! Data movement between maps: nearest 2× upsampling and channel-slice copies (the parts of
//! a concatenation that could not be written in place by their producer).

use rayon::prelude::*;

use crate::tensor::{FeatureMap, HALO};

/// `dst[.., dst_off..dst_off+c](2y+i, 2x+j) = src[.., src_off..src_off+c](y, x)`.
pub fn upsample2x(src: &FeatureMap, src_off: usize, dst: &mut FeatureMap, dst_off: usize, c: usize) {
    assert_eq!((dst.n, dst.h, dst.w), (src.n, 2 * src.h, 2 * src.w), "upsample shape");
    assert!(src_off + c <= src.cs && dst_off + c <= dst.cs);
    for_each_row(dst, |b, y, row, cs| {
        for x in 0..2 * src.w {
            let s = src.at(b, y / 2, x / 2) + src_off;
            let d = (x + HALO) * cs + dst_off;
            row[d..d + c].copy_from_slice(&src.data[s..s + c]);
        }
    });
}

/// PyTorch's linear-resize taps along one axis (`align_corners=False`, no antialias): for
/// each output index the two input indices and their weights.
pub fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, if i0 < input - 1 { i0 + 1 } else { i0 }, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of `c` channels to `dst`'s size, as PyTorch's
/// `interpolate(mode='bilinear', align_corners=False)` computes it:
/// `λy0·(λx0·a + λx1·b) + λy1·(λx0·c + λx1·d)`.
pub fn resize_bilinear(src: &FeatureMap, src_off: usize, dst: &mut FeatureMap, dst_off: usize, c: usize) {
    assert_eq!(dst.n, src.n, "resize batch");
    assert!(src_off + c <= src.cs && dst_off + c <= dst.cs);
    let (ys, xs) = (linear_taps(src.h, dst.h), linear_taps(src.w, dst.w));
    for_each_row(dst, |b, y, row, cs| {
        let (y0, y1, ly0, ly1) = ys[y];
        for (x, &(x0, x1, lx0, lx1)) in xs.iter().enumerate() {
            let at = |yy: usize, xx: usize| &src.data[src.at(b, yy, xx) + src_off..src.at(b, yy, xx) + src_off + c];
            let (a, bb, cc, dd) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            let d = (x + HALO) * cs + dst_off;
            for (k, out) in row[d..d + c].iter_mut().enumerate() {
                *out = ly0 * (lx0 * a[k] + lx1 * bb[k]) + ly1 * (lx0 * cc[k] + lx1 * dd[k]);
            }
        }
    });
}

/// `dst[.., dst_off..dst_off+c] = src[.., src_off..src_off+c]` for maps of one size.
pub fn copy_channels(src: &FeatureMap, src_off: usize, dst: &mut FeatureMap, dst_off: usize, c: usize) {
    assert_eq!((dst.n, dst.h, dst.w), (src.n, src.h, src.w), "copy shape");
    assert!(src_off + c <= src.cs && dst_off + c <= dst.cs);
    for_each_row(dst, |b, y, row, cs| {
        for x in 0..src.w {
            let s = src.at(b, y, x) + src_off;
            let d = (x + HALO) * cs + dst_off;
            row[d..d + c].copy_from_slice(&src.data[s..s + c]);
        }
    });
}

/// Runs `f(image, y, row, cs)` on every interior row of `map` in parallel.
pub(crate) fn for_each_row(map: &mut FeatureMap, f: impl Fn(usize, usize, &mut [f32], usize) + Sync) {
    let (h, cs) = (map.h, map.cs);
    let rows_per_image = h + 2 * HALO;
    let row_stride = map.row_stride();
    map.data.par_chunks_mut(row_stride).enumerate().for_each(|(r, row)| {
        let (b, py) = (r / rows_per_image, r % rows_per_image);
        if (HALO..h + HALO).contains(&py) {
            f(b, py - HALO, row, cs);
        }
    });
}
