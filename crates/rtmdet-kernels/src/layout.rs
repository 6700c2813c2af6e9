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
