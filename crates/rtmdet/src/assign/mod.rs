//! Label assignment: which prior learns which object ([`dynamic_soft`]).

pub mod dynamic_soft;

pub use dynamic_soft::{AssignResult, DynamicSoftLabelAssigner};
