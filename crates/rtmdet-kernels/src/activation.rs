//! The activation fused into a kernel's epilogue.

use crate::simd::Simd;

/// The activation fused into a kernel's epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Silu,
}

impl Activation {
    #[inline(always)]
    pub(crate) fn apply<S: Simd>(self, x: S::V) -> S::V {
        match self {
            Activation::Identity => x,
            // SAFETY: called from code compiled for `S`'s instruction set.
            Activation::Silu => unsafe { S::silu(x) },
        }
    }

    /// The scalar definition kernels are tested against.
    pub fn reference(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}
