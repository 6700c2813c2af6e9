//! ByteTrack's Kalman filter: a constant-velocity model of a box `(cx, cy, a, h)` (centre,
//! aspect ratio w/h, height) and its velocities, 8 states observed through the first 4, with
//! noise proportional to the box height (`std_weight_position = 1/20`,
//! `std_weight_velocity = 1/160`), in float64 as the original's numpy code.

/// State mean `[cx, cy, a, h, vcx, vcy, va, vh]`.
pub type Mean = [f64; 8];
/// State covariance, row-major.
pub type Cov = [[f64; 8]; 8];
/// A measurement `[cx, cy, a, h]`.
pub type Xyah = [f64; 4];

const STD_POSITION: f64 = 1.0 / 20.0;
const STD_VELOCITY: f64 = 1.0 / 160.0;

fn diag8(v: [f64; 8]) -> Cov {
    let mut m = [[0.0; 8]; 8];
    for i in 0..8 {
        m[i][i] = v[i] * v[i];
    }
    m
}

/// A new track's state from its first measurement: zero velocity, uncertainty scaled by the
/// height (`initiate`).
pub fn initiate(z: Xyah) -> (Mean, Cov) {
    let h = z[3];
    let mean = [z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 0.0];
    let (p, v) = (2.0 * STD_POSITION * h, 10.0 * STD_VELOCITY * h);
    (mean, diag8([p, p, 1e-2, p, v, v, 1e-5, v]))
}

/// One frame ahead (`predict`): `x ← F x`, `P ← F P Fᵀ + Q` with `F = [[I, I], [0, I]]`.
pub fn predict(mean: &Mean, cov: &Cov) -> (Mean, Cov) {
    let h = mean[3];
    let (p, v) = (STD_POSITION * h, STD_VELOCITY * h);
    let q = diag8([p, p, 1e-2, p, v, v, 1e-5, v]);
    let mut m = *mean;
    for i in 0..4 {
        m[i] += mean[i + 4];
    }
    // F P: rows i < 4 add row i + 4.
    let mut fp = *cov;
    for i in 0..4 {
        for j in 0..8 {
            fp[i][j] += cov[i + 4][j];
        }
    }
    // (F P) Fᵀ: columns j < 4 add column j + 4.
    let mut out = fp;
    for row in out.iter_mut() {
        for j in 0..4 {
            row[j] += row[j + 4];
        }
    }
    for i in 0..8 {
        for j in 0..8 {
            out[i][j] += q[i][j];
        }
    }
    (m, out)
}

/// The measurement space (`project`): `H x` and `H P Hᵀ + R`.
fn project(mean: &Mean, cov: &Cov) -> (Xyah, [[f64; 4]; 4]) {
    let p = STD_POSITION * mean[3];
    let r = [p, p, 1e-1, p];
    let mut s = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            s[i][j] = cov[i][j];
        }
        s[i][i] += r[i] * r[i];
    }
    ([mean[0], mean[1], mean[2], mean[3]], s)
}

/// Lower Cholesky factor of a 4×4 symmetric positive-definite matrix.
fn cholesky(a: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut l = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            l[i][j] = if i == j { (a[i][i] - s).max(0.0).sqrt() } else { (a[i][j] - s) / l[j][j] };
        }
    }
    l
}

/// `x` with `L Lᵀ x = b` (forward then back substitution).
fn cho_solve(l: &[[f64; 4]; 4], b: [f64; 4]) -> [f64; 4] {
    let mut y = [0.0; 4];
    for i in 0..4 {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = [0.0; 4];
    for i in (0..4).rev() {
        x[i] = (y[i] - (i + 1..4).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

/// The correction by measurement `z` (`update`): gain `K = P Hᵀ S⁻¹` (by Cholesky), `x + K (z
/// − H x)`, `P − K S Kᵀ`.
pub fn update(mean: &Mean, cov: &Cov, z: Xyah) -> (Mean, Cov) {
    let (projected, s) = project(mean, cov);
    let l = cholesky(&s);
    // Row r of K solves S k = (P Hᵀ)ᵀ's column r, i.e. row r of P Hᵀ (S is symmetric).
    let mut k = [[0.0; 4]; 8];
    for (r, row) in k.iter_mut().enumerate() {
        *row = cho_solve(&l, [cov[r][0], cov[r][1], cov[r][2], cov[r][3]]);
    }
    let innovation: [f64; 4] = std::array::from_fn(|i| z[i] - projected[i]);
    let mut m = *mean;
    for (r, v) in m.iter_mut().enumerate() {
        *v += (0..4).map(|c| k[r][c] * innovation[c]).sum::<f64>();
    }
    // K S Kᵀ.
    let mut ks = [[0.0; 4]; 8];
    for r in 0..8 {
        for c in 0..4 {
            ks[r][c] = (0..4).map(|t| k[r][t] * s[t][c]).sum();
        }
    }
    let mut p = *cov;
    for i in 0..8 {
        for j in 0..8 {
            p[i][j] -= (0..4).map(|t| ks[i][t] * k[j][t]).sum::<f64>();
        }
    }
    (m, p)
}
