//! The engine's activation layout: NHWC with a zero border.
//!
//! Channels are innermost so a SIMD vector holds 8 or 16 channels of one pixel; the channel
//! stride is a multiple of [`CHANNEL_BLOCK`] (padding channels stay zero), and every image
//! has a [`HALO`]-pixel frame of zeros so 3×3 and 5×5 convolutions read their padding from
//! memory instead of testing bounds.

use rayon::prelude::*;

/// Channel padding unit: one AVX-512 vector.
pub const CHANNEL_BLOCK: usize = 16;
/// Zero frame around each image: enough for a 5×5 kernel with padding 2.
pub const HALO: usize = 2;

pub fn round_up(c: usize, to: usize) -> usize {
    c.div_ceil(to) * to
}

/// `[N, H + 2·HALO, W + 2·HALO, cs]` floats, the interior holding the feature map.
#[derive(Clone, Debug, Default)]
pub struct FeatureMap {
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Floats per pixel.
    pub cs: usize,
}

impl FeatureMap {
    pub fn zeros(n: usize, h: usize, w: usize, cs: usize) -> Self {
        let mut f = FeatureMap { data: Vec::new(), n, h, w, cs };
        f.data = vec![0.0; n * f.image_stride()];
        f
    }

    /// Reshapes in place, keeping the allocation when the size is unchanged (the frame must
    /// stay zero, so a changed shape is re-zeroed).
    pub fn ensure(&mut self, n: usize, h: usize, w: usize, cs: usize) {
        if (self.n, self.h, self.w, self.cs) != (n, h, w, cs) {
            *self = FeatureMap::zeros(n, h, w, cs);
        }
    }

    pub fn row_stride(&self) -> usize {
        self.geom().row_stride()
    }

    pub fn image_stride(&self) -> usize {
        self.geom().image_stride()
    }

    /// Index of channel 0 of interior pixel `(y, x)` of image `n`.
    pub fn at(&self, n: usize, y: usize, x: usize) -> usize {
        self.geom().at(n, y, x)
    }

    pub fn geom(&self) -> Geom {
        Geom { h: self.h, w: self.w, cs: self.cs }
    }

    /// Copies an NCHW tensor of `c` channels into the interior.
    pub fn fill_from_nchw(&mut self, src: &[f32], [n, c, h, w]: [usize; 4]) {
        assert!(c <= self.cs && (n, h, w) == (self.n, self.h, self.w) && src.len() == n * c * h * w);
        let (cs, rows_per_image, row_stride) = (self.cs, self.h + 2 * HALO, self.row_stride());
        self.data.par_chunks_mut(row_stride).enumerate().for_each(|(r, row)| {
            let (b, py) = (r / rows_per_image, r % rows_per_image);
            if py < HALO || py >= h + HALO {
                return;
            }
            let y = py - HALO;
            for ch in 0..c {
                let plane = &src[((b * c + ch) * h + y) * w..][..w];
                for (x, &v) in plane.iter().enumerate() {
                    row[(x + HALO) * cs + ch] = v;
                }
            }
        });
    }

    /// Channels `[offset, offset + c)` as NCHW.
    pub fn to_nchw(&self, offset: usize, c: usize) -> Vec<f32> {
        let (h, w) = (self.h, self.w);
        let mut out = vec![0.0; self.n * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(plane, dst)| {
            let (b, ch) = (plane / c, plane % c);
            for y in 0..h {
                let base = self.at(b, y, 0) + offset + ch;
                for x in 0..w {
                    dst[y * w + x] = self.data[base + x * self.cs];
                }
            }
        });
        out
    }
}

/// The addressing of a [`FeatureMap`] without its data (for raw-pointer writers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub h: usize,
    pub w: usize,
    pub cs: usize,
}

impl Geom {
    pub fn row_stride(&self) -> usize {
        (self.w + 2 * HALO) * self.cs
    }

    pub fn image_stride(&self) -> usize {
        (self.h + 2 * HALO) * self.row_stride()
    }

    pub fn at(&self, n: usize, y: usize, x: usize) -> usize {
        n * self.image_stride() + (y + HALO) * self.row_stride() + (x + HALO) * self.cs
    }
}

/// Offsets from a pixel to the taps of a centred k×k window, row-major.
pub(crate) fn tap_offsets(g: Geom, k: usize) -> Vec<isize> {
    let p = (k / 2) as isize;
    let (row, px) = (g.row_stride() as isize, g.cs as isize);
    (0..k * k).map(|t| ((t / k) as isize - p) * row + ((t % k) as isize - p) * px).collect()
}

/// A shared view that row tasks on different threads write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: every parallel writer through a SyncPtr owns a disjoint set of output rows.
unsafe impl Send for SyncPtr {}
// SAFETY: as for `Send`: shared only among writers of disjoint rows, never read concurrently.
unsafe impl Sync for SyncPtr {}
