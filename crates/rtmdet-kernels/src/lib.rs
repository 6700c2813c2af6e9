//! # rtmdet-kernels
//!
//! The SIMD kernels of rtmdet's CPU inference engine, with no dependency on the rest of the
//! project: direct NHWC convolutions, Winograd F(2×2, 3×3), depthwise convolutions, max-pools,
//! channel attention and layout copies, on [`tensor::FeatureMap`]s.
//!
//! Each kernel is written once over [`simd::Simd`] and compiled for AVX-512, AVX2+FMA and
//! portable Rust, chosen at run time ([`simd::Isa`]). All of the project's `unsafe` code lives
//! in this crate, each block with a `SAFETY:` comment stating its invariant.

pub mod activation;
pub mod attention;
pub mod bn_silu;
pub mod conv;
pub mod conv_grad;
pub mod depthwise;
pub mod dynamic;
pub mod layout;
pub mod peak;
pub mod pool;
pub mod simd;
pub mod tensor;
pub mod winograd;

pub use activation::Activation;
pub use simd::Isa;
