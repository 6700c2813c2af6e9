//! Ctrl-C: the first press asks the command to stop where it can save cleanly (after this
//! training iteration, after this video frame); a second press exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag set by Ctrl-C; `message` is printed when it is. One handler per process: a command
/// installs it once, at its start.
pub fn stop_flag(message: &'static str) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(crate::exit::INTERRUPTED);
        }
        eprintln!("\n{message} (Ctrl-C again to quit at once)");
    });
    stop
}
