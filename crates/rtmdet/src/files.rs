//! Writing files so that a crash or a full disk never leaves a half-written file behind, and
//! (for [`write_new_atomically`]) never replaces a file that is already there.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a synced temporary file and a rename (replacing `path`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    publish(&write_temporary(path, bytes)?, path, true)
}

/// Like [`write_atomically`], but fails when `path` exists (also when another process creates
/// it meanwhile: the file appears by a hard link, which never replaces an existing name).
pub fn write_new_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    publish(&write_temporary(path, bytes)?, path, false)
}

/// Gives a complete, synced temporary file (from [`temporary_path`]) its name: renamed over
/// `path` with `replace`, otherwise linked as a new name (failing when `path` exists). The
/// temporary is gone afterwards either way.
pub fn publish(tmp: &Path, path: &Path, replace: bool) -> Result<()> {
    if replace {
        return std::fs::rename(tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            write_error(path, e)
        });
    }
    let result = match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Other(format!(
            "{} already exists; it is not replaced (give another path, or --exist-ok)",
            path.display()
        ))),
        // Filesystems without hard links: check, then rename (a race is then possible).
        Err(_) if !path.exists() => return std::fs::rename(tmp, path).map_err(|e| write_error(path, e)),
        Err(e) => Err(write_error(path, e)),
    };
    let _ = std::fs::remove_file(tmp);
    result
}

/// `.name.tmp<pid>` beside `path`, its folder created: where a file is written before
/// [`publish`] names it.
pub fn temporary_path(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    Ok(dir.join(format!(".{name}.tmp{}", std::process::id())))
}

/// The error of a failed write, naming the file (a full disk says which file did not fit).
pub fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::Write { path: path.to_path_buf(), source: e }
}

/// Writes and syncs `.name.tmp<pid>` beside `path`; on any failure (a full disk) the partial
/// temporary file is removed before the error is returned.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temporary_path(path)?;
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(write_error(path, e))
        }
    }
}

/// Why `path` is not a readable regular file, in words (a folder, a FIFO, a symlink loop, a
/// broken link, missing); `None` for a regular file. Readers check this first: a FIFO would
/// block them, and "no such file" would be wrong for the others.
pub fn not_a_regular_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("is a folder".into()),
        Ok(_) => Some("is not a regular file (a FIFO, socket or device)".into()),
        // ELOOP: std has no stable ErrorKind for it yet.
        Err(e) if e.raw_os_error() == Some(40) => Some("is a symbolic link loop".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_ok() => {
            Some("is a broken symbolic link (its target does not exist)".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist (no such file)".into()),
        Err(e) => Some(format!("cannot be read ({e})")),
    }
}

/// Reads a text file, naming it in errors; a UTF-8 byte-order mark (Windows editors write one)
/// is dropped, since it would otherwise be an invisible first character of the first line.
pub fn read_text(path: &Path) -> Result<String> {
    if let Some(why) = not_a_regular_file(path) {
        return Err(Error::Other(format!("{} {why}; give a text file", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Other(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(strip_bom(&text).to_string())
}

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// A folder held by one process: `.lock` (holding the pid) is created with `create_new`, so a
/// second process fails to take it, and removed on drop. A lock left by a process that no
/// longer runs (killed with SIGKILL) is taken over.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(std::process::id().to_string().as_bytes()).map_err(|e| write_error(&path, e))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                    if owner.is_some_and(process_alive) {
                        return Err(Error::Other(format!(
                            "{} is in use by process {} (another training writes it); wait for it to finish \
                             (if no such process runs, delete {})",
                            dir.display(),
                            owner.unwrap_or_default(),
                            path.display()
                        )));
                    }
                    // Stale: its process is gone.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(write_error(&path, e)),
            }
        }
        Err(Error::Other(format!("cannot lock {}: {} keeps reappearing", dir.display(), path.display())))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the temporary files (`.NAME.tmp<pid>`) that a killed writer left in `dir`: their
/// process no longer runs, so nobody will finish or rename them. Returns how many went.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let stale = |name: &str| {
        let pid = name.strip_prefix('.')?.rsplit_once(".tmp")?.1.parse::<u32>().ok()?;
        (!process_alive(pid)).then_some(())
    };
    let mut removed = 0;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.file_name().and_then(|n| n.to_str()).and_then(stale).is_some() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a process with this id runs (Linux `/proc`; elsewhere every owner is assumed alive).
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_never_replaced_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("rtmdet-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.json");
        write_new_atomically(&p, b"first").unwrap();
        let e = write_new_atomically(&p, b"second").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_atomically(&p, b"third").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"third");
        // A write that fails (the target is a folder) names the path and leaves nothing behind.
        let e = write_atomically(&dir, b"x").unwrap_err();
        assert!(e.to_string().contains(dir.to_str().unwrap()), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_folder_refuses_a_second_holder_until_released() {
        let dir = std::env::temp_dir().join(format!("rtmdet-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = DirLock::acquire(&dir).unwrap();
        let e = DirLock::acquire(&dir).unwrap_err();
        assert!(e.to_string().contains("in use by process"), "{e}");
        drop(lock);
        assert!(!dir.join(".lock").exists());
        // A lock of a process that does not run is stale and taken over.
        std::fs::write(dir.join(".lock"), "4294967").unwrap();
        drop(DirLock::acquire(&dir).unwrap());
        // So are temporary files of writers that no longer run; a live writer's stay.
        std::fs::write(dir.join(".last.safetensors.tmp4294967"), "partial").unwrap();
        let live = dir.join(format!(".best.safetensors.tmp{}", std::process::id()));
        std::fs::write(&live, "in progress").unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 1);
        assert!(live.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
