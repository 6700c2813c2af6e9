//! Dense prediction heads. [`tower`] holds the per-level conv towers every head variant is
//! built from; [`detect`] the box head (Ins kernels/mask features and R angles build on the
//! same towers).

pub mod detect;
pub mod tower;
