//! Exit codes, so that scripts can tell a clean run from a partial or interrupted one:
//! 0 success, 1 error, 2 usage (clap), 3 some inputs skipped, 130 interrupted (after saving).
//! A command reports the last two by returning one of the errors below.

use std::fmt;

pub const ERROR: i32 = 1;
pub const SKIPPED: i32 = 3;
pub const INTERRUPTED: i32 = 130;

/// The command finished, but some inputs could not be used (they were reported and skipped).
#[derive(Debug)]
pub struct Skipped(pub String);

/// The user stopped the command (Ctrl-C); what had to be saved was saved.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}
impl std::error::Error for Interrupted {}

/// The exit code of a failed command and the line to print for it.
pub fn code_and_message(e: &anyhow::Error) -> (i32, String) {
    if let Some(s) = e.downcast_ref::<Skipped>() {
        (SKIPPED, format!("warning: {s} (exit code {SKIPPED}: some inputs skipped)"))
    } else if let Some(i) = e.downcast_ref::<Interrupted>() {
        (INTERRUPTED, format!("interrupted: {i}"))
    } else {
        (ERROR, format!("error: {e:#}"))
    }
}
