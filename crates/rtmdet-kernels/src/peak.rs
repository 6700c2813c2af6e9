//! The machine's measured FMA throughput, the yardstick `rtmdet bench` reports against.

use std::time::Instant;

use crate::simd::{Isa, Simd, dispatch};

const ACCUMULATORS: usize = 12;

/// FMA GFLOP/s of `threads` threads running independent FMA chains for about `millis` ms.
pub fn fma_peak_gflops(isa: Isa, threads: usize, millis: u64) -> f64 {
    let lanes = isa.lanes() as u64;
    // Calibrate the iteration count on one thread, then run all threads together.
    let mut iters = 1 << 16;
    loop {
        let t = Instant::now();
        spin(isa, iters);
        let dt = t.elapsed().as_secs_f64();
        if dt * 1e3 > millis as f64 / 4.0 || iters > 1 << 34 {
            iters = ((iters as f64) * (millis as f64 / 1e3) / dt.max(1e-9)) as u64;
            break;
        }
        iters *= 4;
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| spin(isa, iters));
        }
    });
    let flops = (threads.max(1) as u64 * iters * ACCUMULATORS as u64 * lanes * 2) as f64;
    flops / t.elapsed().as_secs_f64() / 1e9
}

dispatch!(fn spin => spin_generic(iters: u64));

#[inline(always)]
fn spin_generic<S: Simd>(iters: u64) {
    // SAFETY: register-only arithmetic for the dispatched level.
    unsafe {
        let a = S::splat(0.999_999);
        let b = S::splat(1e-7);
        let mut acc = [S::splat(1.0); ACCUMULATORS];
        for _ in 0..iters {
            #[allow(clippy::needless_range_loop)] // index loops keep `acc` in registers
            for i in 0..ACCUMULATORS {
                acc[i] = S::fma(acc[i], a, b);
            }
        }
        let mut out = vec![0.0f32; S::LANES];
        let mut sum = acc[0];
        for v in &acc[1..] {
            sum = S::add(sum, *v);
        }
        S::store(out.as_mut_ptr(), sum);
        std::hint::black_box(out);
    }
}
