//! The vector instruction sets the kernels are compiled for, chosen at run time.
//!
//! Every kernel is written once, generic over [`Simd`], and instantiated three times: for
//! AVX-512, for AVX2+FMA, and for portable Rust ([`Scalar`], no intrinsics), which is also
//! what non-x86 machines run. [`Isa::detect`] picks the best the CPU supports;
//! `RTMDET_ISA=scalar|avx2|avx512` narrows it (CI forces `scalar` in a test).

// SAFETY (this file): every `unsafe fn` below is an intrinsic, a raw-pointer access or
// arithmetic on vectors whose preconditions are exactly the `Simd` trait's contract: the CPU
// runs the instruction set (callers reach the x86 code only through `dispatch!` with a level
// `Isa::best_supported` confirmed) and pointers are valid for `LANES` floats. Their bodies
// are that one operation, so they are written without inner `unsafe` blocks.
#![allow(unsafe_op_in_unsafe_fn)]

use std::fmt;

/// An instruction-set level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best level this CPU supports, capped by `RTMDET_ISA` when set.
    pub fn detect() -> Isa {
        let best = Self::best_supported();
        match std::env::var("RTMDET_ISA").ok().and_then(|v| Isa::parse(&v)) {
            Some(cap) => cap.min(best),
            None => best,
        }
    }

    /// The best level this CPU supports (detected once).
    pub fn best_supported() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(Self::probe)
    }

    fn probe() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every level this CPU can run, lowest first (kernel tests run them all).
    pub fn available() -> Vec<Isa> {
        let best = Self::best_supported();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| *i <= best).collect()
    }

    /// f32 lanes of a vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    pub fn parse(text: &str) -> Option<Isa> {
        match text.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx-512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        })
    }
}

/// A vector of `LANES` f32.
///
/// # Safety
/// All methods are `unsafe`: the x86 ones may only run on a CPU with the feature (callers go
/// through [`dispatch!`] with a level from [`Isa::detect`]), and pointers must be valid for
/// `LANES` floats.
#[allow(clippy::missing_safety_doc)]
pub trait Simd: Copy + 'static {
    const LANES: usize;
    type V: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `1 / a` to about 1 ulp (hardware estimate refined by Newton's method).
    unsafe fn recip(a: Self::V) -> Self::V;
    /// Round to nearest integer (ties to even).
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2^n` for integer-valued `n` in [-126, 127].
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// `p · 2^n` for integer-valued `n` in [-126, 127].
    #[inline(always)]
    unsafe fn scale2(p: Self::V, n: Self::V) -> Self::V {
        Self::mul(p, Self::pow2i(n))
    }

    /// `exp(x)`, Cephes' single-precision polynomial (≈1 ulp on the clamped range).
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        let x = Self::min(Self::max(x, Self::splat(-87.33)), Self::splat(88.37));
        let n = Self::round(Self::mul(x, Self::splat(std::f32::consts::LOG2_E)));
        let r = Self::fma(n, Self::splat(-0.693_359_4), x);
        let r = Self::fma(n, Self::splat(2.121_944_4e-4), r);
        let mut p = Self::splat(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = Self::fma(p, r, Self::splat(c));
        }
        let p = Self::fma(p, Self::mul(r, r), Self::add(r, Self::splat(1.0)));
        Self::scale2(p, n)
    }

    /// `x * sigmoid(x)`
    #[inline(always)]
    unsafe fn silu(x: Self::V) -> Self::V {
        // exp(−x) stays below 2^116 so its reciprocal is a normal float (denormals are
        // slow); the result for x < −80 is still 0 to within 1e−33.
        let e = Self::exp(Self::min(Self::mul(x, Self::splat(-1.0)), Self::splat(80.0)));
        Self::mul(x, Self::recip(Self::add(e, Self::splat(1.0))))
    }
}

/// Portable code, one lane (the compiler may still vectorise loops over it).
#[derive(Clone, Copy)]
pub struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        // A separate multiply and add: a software fma call would be slower than the error it saves.
        a * b + c
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        if a < b { a } else { b }
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn recip(a: f32) -> f32 {
        1.0 / a
    }
    #[inline(always)]
    unsafe fn round(a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Simd;

    /// Two Newton steps `r·(2 − a·r)`: AVX2's 12 correct bits become about 23.
    #[inline(always)]
    unsafe fn newton_recip<S: Simd>(a: S::V, r: S::V) -> S::V {
        let neg = S::mul(a, S::splat(-1.0));
        let r = S::mul(r, S::fma(neg, r, S::splat(2.0)));
        S::mul(r, S::fma(neg, r, S::splat(2.0)))
    }

    #[derive(Clone, Copy)]
    pub struct Avx2;

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            _mm256_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn recip(a: __m256) -> __m256 {
            newton_recip::<Self>(a, _mm256_rcp_ps(a))
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx512;

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            _mm512_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn recip(a: __m512) -> __m512 {
            // 14 correct bits; one Newton step gives full precision.
            let r = _mm512_rcp14_ps(a);
            _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0)))
        }
        #[inline(always)]
        unsafe fn scale2(p: __m512, n: __m512) -> __m512 {
            _mm512_scalef_ps(p, n)
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
        }
    }
}

/// Defines `$name(isa, args...)` that runs `$generic::<S>(args...)` compiled for the chosen
/// level, so one generic body becomes three specialised functions.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $generic:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        $(#[$m])*
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) {
            // A level the CPU lacks (a caller's choice) falls back to the best it has.
            let isa = isa.min($crate::simd::Isa::best_supported());
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $generic::<$crate::simd::Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic::<$crate::simd::Avx2>($($arg),*)
                }
                match isa {
                    // SAFETY: `isa` was capped to what the CPU reports above.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Scalar => {}
                }
            }
            let _ = isa;
            $generic::<$crate::simd::Scalar>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_with<S: Simd>(x: f32) -> f32 {
        let mut out = vec![0.0f32; S::LANES];
        // SAFETY: `out` holds LANES floats; the test runs only levels this CPU has.
        unsafe { S::store(out.as_mut_ptr(), S::exp(S::splat(x))) };
        out[0]
    }

    #[test]
    fn polynomial_exp_is_accurate() {
        for i in -870..=880 {
            let x = i as f32 * 0.1;
            let got = exp_with::<Scalar>(x);
            let want = x.exp();
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
        }
    }
}
