//! Whether `--device cuda:N` can work here, asked before burn's CUDA backend is touched: the
//! backend panics on a machine without the NVIDIA driver or with fewer devices, and a user
//! deserves a sentence instead.

/// The driver library's names (what cudarc, under burn, loads).
#[cfg(unix)]
const DRIVER: [&str; 2] = ["libcuda.so.1", "libcuda.so"];
#[cfg(windows)]
const DRIVER: [&str; 1] = ["nvcuda.dll"];

/// Ok when the NVIDIA driver loads and has a device `index`; otherwise why not.
// The crate's one exception to `deny(unsafe_code)` outside the kernels: loading a library is
// unsafe in Rust, and asking cudarc without loading it first panics.
#[allow(unsafe_code)]
pub fn check(index: usize) -> Result<(), String> {
    let loads = DRIVER.iter().any(|&name| {
        // SAFETY: loading the NVIDIA driver library runs its initialisers, as burn's CUDA
        // backend would the moment it is used; nothing from it is called here.
        unsafe { libloading::Library::new(name) }.is_ok()
    });
    if !loads {
        return Err(format!(
            "no NVIDIA driver here ({} not found); install the driver, or use --device cpu",
            DRIVER.join(" / ")
        ));
    }
    let count = cudarc::driver::result::init()
        .and_then(|_| cudarc::driver::result::device::get_count())
        .map_err(|e| format!("the NVIDIA driver cannot start ({e:?}); use --device cpu"))?;
    let count = count.max(0) as usize;
    if index >= count {
        return Err(match count {
            0 => "the NVIDIA driver sees no GPU; use --device cpu".to_string(),
            n => format!("this machine has {n} CUDA device(s), cuda:0 to cuda:{}", n - 1),
        });
    }
    Ok(())
}
