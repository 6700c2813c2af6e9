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
