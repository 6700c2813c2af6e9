//! Point priors (MlvlPointGenerator, offset 0): level by level, row-major, `(x, y, s, s)` with
//! `(x, y) = (j·s, i·s)`.

/// Priors of levels with feature sizes `(h, w)` and `strides`.
pub fn grid_priors(sizes: &[(usize, usize)], strides: &[usize]) -> Vec<[f32; 4]> {
    sizes
        .iter()
        .zip(strides)
        .flat_map(|(&(h, w), &s)| {
            let s = s as f32;
            (0..h * w).map(move |p| [(p % w) as f32 * s, (p / w) as f32 * s, s, s])
        })
        .collect()
}

/// RTMDet-Ins's relative coordinates of an instance over a mask-feature map of `h`×`w` at
/// `map_stride`: two planes (x, then y) of `(prior − location) / (8·stride)` for the prior
/// `(x, y, stride)` (spec §10.2; the sign and the normalisation are mmdet's).
pub fn mask_relative_coords(prior: [f32; 3], (h, w): (usize, usize), map_stride: usize) -> Vec<f32> {
    let norm = prior[2] * 8.0;
    let mut rel = vec![0f32; 2 * h * w];
    let (xs, ys) = rel.split_at_mut(h * w);
    for i in 0..h {
        for j in 0..w {
            xs[i * w + j] = (prior[0] - (j * map_stride) as f32) / norm;
            ys[i * w + j] = (prior[1] - (i * map_stride) as f32) / norm;
        }
    }
    rel
}

#[cfg(test)]
mod tests {
    #[test]
    fn offset_zero_row_major() {
        let p = super::grid_priors(&[(2, 3), (1, 2)], &[8, 16]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], [0.0, 0.0, 8.0, 8.0]);
        assert_eq!(p[4], [8.0, 8.0, 8.0, 8.0]);
        assert_eq!(p[7], [16.0, 0.0, 16.0, 16.0]);
    }
}
