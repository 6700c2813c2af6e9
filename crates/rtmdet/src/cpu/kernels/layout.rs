//! Data movement between maps: nearest 2× upsampling and channel-slice copies (the parts of
//! a concatenation that could not be written in place by their producer).

use crate::cpu::tensor::FeatureMap;

/// `dst[.., dst_off..dst_off+c](2y+i, 2x+j) = src[.., src_off..src_off+c](y, x)`.
pub fn upsample2x(src: &FeatureMap, src_off: usize, dst: &mut FeatureMap, dst_off: usize, c: usize) {
    assert_eq!((dst.n, dst.h, dst.w), (src.n, 2 * src.h, 2 * src.w), "upsample shape");
    assert!(src_off + c <= src.cs && dst_off + c <= dst.cs);
    for n in 0..src.n {
        for y in 0..dst.h {
            for x in 0..dst.w {
                let s = src.at(n, y / 2, x / 2) + src_off;
                let d = dst.at(n, y, x) + dst_off;
                dst.data[d..d + c].copy_from_slice(&src.data[s..s + c]);
            }
        }
    }
}

/// `dst[.., dst_off..dst_off+c] = src[.., src_off..src_off+c]` for maps of one size.
pub fn copy_channels(src: &FeatureMap, src_off: usize, dst: &mut FeatureMap, dst_off: usize, c: usize) {
    assert_eq!((dst.n, dst.h, dst.w), (src.n, src.h, src.w), "copy shape");
    assert!(src_off + c <= src.cs && dst_off + c <= dst.cs);
    for n in 0..src.n {
        for y in 0..src.h {
            for x in 0..src.w {
                let s = src.at(n, y, x) + src_off;
                let d = dst.at(n, y, x) + dst_off;
                dst.data[d..d + c].copy_from_slice(&src.data[s..s + c]);
            }
        }
    }
}
