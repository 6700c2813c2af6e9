//! The one overwrite rule for what rtmdet writes. A file named on the command line
//! (`--save-json`, `--json`, `val --out DIR`'s files) is never replaced unless `--exist-ok` is
//! given, and a path that is one of the command's inputs is refused even then. Files are
//! checked before any work starts (so a long run does not end in a refusal) and written
//! atomically (a crash or a full disk leaves the old file or none, never half a file).

use std::path::Path;

use anyhow::{Result, bail};

/// Refuses, up front, an output path that cannot or must not be written.
pub fn check(path: &Path, exist_ok: bool, inputs: &[&Path]) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder; give a file path", path.display());
    }
    if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
        bail!(
            "{} is an input of this command ({}): writing it would overwrite an input; give another output path",
            path.display(),
            input.display()
        );
    }
    if !exist_ok && path.symlink_metadata().is_ok() {
        bail!("{} already exists; give another path, or --exist-ok to replace it", path.display());
    }
    Ok(())
}

/// Writes `bytes` atomically under the rule: replaces an existing file only with `exist_ok`.
pub fn write(path: &Path, bytes: &[u8], exist_ok: bool) -> Result<()> {
    if exist_ok {
        rtmdet::files::write_atomically(path, bytes)?;
    } else {
        rtmdet::files::write_new_atomically(path, bytes)?;
    }
    Ok(())
}

/// [`write`] of a JSON value, pretty-printed.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T, exist_ok: bool) -> Result<()> {
    write(path, serde_json::to_string_pretty(value)?.as_bytes(), exist_ok)
}

/// Whether two paths name the same file: after resolving symlinks, or as hard links.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (a.canonicalize(), b.canonicalize())
        && x == y
    {
        return true;
    }
    same_inode(a, b)
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// Whether `file` lies inside the folder `dir` (DOTA inputs are folders of files).
pub fn inside(file: &Path, dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(f), Ok(d)) => f.starts_with(d),
        _ => false,
    }
}

/// A JSON Lines file written as a run goes (one object per line, flushed line by line into a
/// temporary file) and named by [`JsonLines::finish`] under the rule above: a long video's
/// results do not wait in memory, and an interrupted run still gets a complete file.
pub struct JsonLines {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    exist_ok: bool,
    lines: usize,
}

impl JsonLines {
    pub fn create(path: &Path, exist_ok: bool) -> Result<Self> {
        let tmp = rtmdet::files::temporary_path(path)?;
        let file = std::fs::File::create(&tmp).map_err(|e| rtmdet::files::write_error(&tmp, e))?;
        Ok(JsonLines { path: path.to_path_buf(), tmp, file: Some(std::io::BufWriter::new(file)), exist_ok, lines: 0 })
    }

    pub fn push<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        use std::io::Write;
        let f = self.file.as_mut().expect("open until finished");
        serde_json::to_writer(&mut *f, value)?;
        f.write_all(b"\n").map_err(|e| rtmdet::files::write_error(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Syncs the file and gives it its name.
    pub fn finish(mut self) -> Result<()> {
        let f = self.file.take().expect("finished once");
        let file = f.into_inner().map_err(|e| rtmdet::files::write_error(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| rtmdet::files::write_error(&self.path, e))?;
        rtmdet::files::publish(&self.tmp, &self.path, self.exist_ok)?;
        Ok(())
    }
}

impl Drop for JsonLines {
    /// Dropped without `finish` (the run failed before anything was worth keeping): no
    /// temporary is left behind.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
