//! Expanding SOURCE arguments (files and folders) into image paths, and run folders.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "jfif", "jpe"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Files as given; folders expand to their image files (sorted, not recursive).
pub fn expand(sources: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in sources {
        if s.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(s)
                .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", s.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            files.sort();
            if files.is_empty() {
                eprintln!("warning: no images in folder {}", s.display());
            }
            out.extend(files);
        } else if s.is_file() {
            out.push(s.clone());
        } else {
            let why = rtmdet::files::not_a_regular_file(s).unwrap_or_default();
            bail!("source {} {why}", s.display());
        }
    }
    if out.is_empty() {
        bail!("no images to process");
    }
    Ok(out)
}

/// The run folder: `out` when given (created if needed), else the next free `base/<n>`.
pub fn run_dir(out: Option<&Path>, base: &str) -> Result<PathBuf> {
    match out {
        Some(d) => {
            if d.exists() && !d.is_dir() {
                bail!("--out {} is a file; give a folder", d.display());
            }
            std::fs::create_dir_all(d).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
            Ok(d.to_path_buf())
        }
        None => next_run_dir(Path::new(base)),
    }
}

/// `base/1`, `base/2`, ...: the first number not taken yet, claimed with `create_dir` (which
/// fails when another process took it first), so concurrent runs never share a folder.
pub fn next_run_dir(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", base.display()))?;
    for n in 1.. {
        let dir = base.join(n.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("cannot create {}: {e}", dir.display()),
        }
    }
    unreachable!("some run number is free")
}

/// `dir/stem.ext`, or `dir/stem_2.ext`, ... when that name is taken: nothing is overwritten.
pub fn free_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let first = dir.join(format!("{stem}.{ext}"));
    if !first.exists() {
        return first;
    }
    (2..).map(|i| dir.join(format!("{stem}_{i}.{ext}"))).find(|p| !p.exists()).unwrap()
}
