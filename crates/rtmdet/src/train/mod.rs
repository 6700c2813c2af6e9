//! Training: the optimiser with mmdet's parameter groups ([`optim`]), the learning-rate
//! schedule ([`schedule`]) and the EMA of weights and buffers ([`ema`]).

pub mod ema;
pub mod optim;
pub mod schedule;
pub mod trainer;
