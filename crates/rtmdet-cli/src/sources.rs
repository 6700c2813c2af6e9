//! Expanding SOURCE arguments (files, folders, glob patterns, lists of paths, camera numbers
//! and stream URLs) into images and videos, and run folders.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use rtmdet::video::{VideoSource, is_video_file};

const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "jfif", "jpe"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// An image or a video file, by extension: what folders, globs and lists contribute.
fn is_media(path: &Path) -> bool {
    is_image(path) || is_video_file(path)
}

/// The images and videos named by the sources, and how many inputs were skipped on the way (a
/// listed path that is missing, a glob pattern that matches nothing): each was reported, and
/// like an unreadable image it makes the run end with exit code 3.
#[derive(Debug, Default, PartialEq)]
pub struct Expanded {
    /// Still images, in source order.
    pub paths: Vec<PathBuf>,
    /// Video files, cameras and streams, in source order.
    pub videos: Vec<VideoSource>,
    pub skipped: usize,
}

/// Each source in turn: a stream URL (`rtsp://`, `http://`, ...) or a camera number (`0`), a
/// file as given, a `.txt` file as a list of paths, a folder as its images and videos (sorted;
/// with `recursive` also those of its subfolders), and a path that does not exist but holds
/// `*`, `?` or `[` as a glob pattern. Video files are told from images by their extension. A
/// source that gives nothing is reported; when no source gives anything, that is an error.
pub fn expand(sources: &[PathBuf], recursive: bool) -> Result<Expanded> {
    let mut out = Expanded::default();
    for s in sources {
        let camera_or_stream = s.to_str().and_then(VideoSource::parse).filter(|v| !matches!(v, VideoSource::File(_)));
        if let Some(v) = camera_or_stream {
            out.videos.push(v);
        } else if s.is_dir() {
            out.paths.extend(folder_images(s, recursive));
        } else if is_list(s) {
            read_list(s, recursive, &mut out)?;
        } else if s.is_file() {
            out.paths.push(s.clone());
        } else if is_pattern(s) {
            let files = glob_images(s)?;
            out.skipped += usize::from(files.is_empty());
            out.paths.extend(files);
        } else {
            let why = rtmdet::files::not_a_regular_file(s).unwrap_or_default();
            bail!("source {} {why}", s.display());
        }
    }
    // Video files found among the paths move to the videos, in their order.
    let (videos, images): (Vec<PathBuf>, Vec<PathBuf>) = out.paths.drain(..).partition(|p| is_video_file(p));
    out.paths = images;
    out.videos.extend(videos.into_iter().map(VideoSource::File));
    if out.paths.is_empty() && out.videos.is_empty() {
        bail!("no images or videos to process");
    }
    Ok(out)
}

fn is_list(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// Only a path that does not exist is read as a pattern, so that a file whose name holds
/// `[` is still that file.
fn is_pattern(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.contains(['*', '?', '[']))
}

/// The image and video files matching a glob pattern (`imgs/*.jpg`, `**/*.png`), in path order.
fn glob_images(pattern: &Path) -> Result<Vec<PathBuf>> {
    let text = pattern.to_str().expect("patterns are UTF-8");
    let matches = glob::glob(text).map_err(|e| anyhow::anyhow!("bad glob pattern '{text}': {e}"))?;
    let mut files = Vec::new();
    // `**` follows symlinked folders, so a link back up the tree yields each file again under
    // ever longer paths (until the system's link limit): only the first path of a file counts.
    let mut seen = HashSet::new();
    for m in matches {
        match m {
            Ok(p) if p.is_file() && is_media(&p) => {
                if std::fs::canonicalize(&p).is_ok_and(|real| seen.insert(real)) {
                    files.push(p);
                }
            }
            Ok(_) => {}
            // A folder the pattern could not look into: the rest still counts.
            Err(e) => eprintln!("warning: glob '{text}': {e}"),
        }
    }
    if files.is_empty() {
        eprintln!("warning: no images or videos match the glob pattern '{text}'");
    }
    Ok(files)
}

/// A list file: one path per line, relative to the list's folder; blank lines and lines
/// starting with `#` are skipped. A listed folder expands as a folder source; a listed path
/// that is missing is reported and counted, and the others are still processed.
fn read_list(list: &Path, recursive: bool, out: &mut Expanded) -> Result<()> {
    let text = rtmdet::files::read_text(list)?;
    let base = list.parent().unwrap_or(Path::new(""));
    let before = out.paths.len();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let path = base.join(line);
        if path.is_dir() {
            out.paths.extend(folder_images(&path, recursive));
        } else if path.is_file() {
            out.paths.push(path);
        } else {
            let why = rtmdet::files::not_a_regular_file(&path).unwrap_or_default();
            eprintln!("skipping {} (listed in {}): {why}", path.display(), list.display());
            out.skipped += 1;
        }
    }
    if out.paths.len() == before {
        eprintln!("warning: no images or videos in list {}", list.display());
    }
    Ok(())
}

/// The image and video files of a folder, sorted by path; with `recursive` those of its subfolders
/// too. Subfolders are followed through symlinks, each real folder once, so a link back up
/// the tree does not loop. An unreadable folder is reported and skipped.
fn folder_images(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if !std::fs::canonicalize(&d).is_ok_and(|real| seen.insert(real)) {
            continue;
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) => {
                eprintln!("warning: cannot list {}: {e}", d.display());
                continue;
            }
        };
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.is_file() && is_media(&p) {
                files.push(p);
            } else if recursive && p.is_dir() {
                todo.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        let which = if recursive { "folder (or its subfolders)" } else { "folder" };
        eprintln!("warning: no images or videos in {which} {}", dir.display());
    }
    files
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `root/a.jpg`, `root/notes.md`, `root/sub/b.png`, `root/sub/deeper/c.jpg` and a link
    /// `root/sub/up` back to `root`.
    fn tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("rtmdet-sources-{}-{name}", std::process::id()));
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for f in ["a.jpg", "notes.md", "sub/b.png", "sub/deeper/c.jpg", "sub/clip.mp4"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        let _ = std::os::unix::fs::symlink(&root, root.join("sub/up"));
        root
    }

    fn names(root: &Path, paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect()
    }

    #[test]
    fn folders_recurse_only_when_asked_and_a_link_loop_ends() {
        let root = tree("recurse");
        let flat = expand(std::slice::from_ref(&root), false).unwrap();
        assert_eq!(names(&root, &flat.paths), ["a.jpg"]);
        let deep = expand(std::slice::from_ref(&root), true).unwrap();
        assert_eq!(names(&root, &deep.paths), ["a.jpg", "sub/b.png", "sub/deeper/c.jpg"]);
        assert_eq!(deep.videos, [VideoSource::File(root.join("sub/clip.mp4"))]);
        assert_eq!(deep.skipped, 0);
    }

    #[test]
    fn cameras_and_streams_are_video_sources() {
        let got = expand(&["0".into(), "rtsp://cam.local/live".into()], false).unwrap();
        assert_eq!(got.videos, [VideoSource::Webcam(0), VideoSource::Stream("rtsp://cam.local/live".into())]);
        assert!(got.paths.is_empty());
    }

    #[test]
    fn globs_match_images_and_an_empty_one_is_skipped() {
        let root = tree("glob");
        let all = expand(&[root.join("**/*.jpg")], false).unwrap();
        assert_eq!(names(&root, &all.paths), ["a.jpg", "sub/deeper/c.jpg"]);
        let mixed = expand(&[root.join("sub/*.png"), root.join("*.gif")], false).unwrap();
        assert_eq!((names(&root, &mixed.paths), mixed.skipped), (vec!["sub/b.png".to_string()], 1));
        let none = expand(&[root.join("*.gif")], false).unwrap_err();
        assert!(none.to_string().contains("no images or videos to process"), "{none}");
    }

    #[test]
    fn lists_are_relative_to_their_folder_and_count_missing_paths() {
        let root = tree("list");
        let list = root.join("sub/list.txt");
        std::fs::write(&list, "# my picks\n\n../a.jpg\n  deeper/c.jpg  \nmissing.jpg\n").unwrap();
        let got = expand(&[list], false).unwrap();
        assert_eq!(names(&root, &got.paths), ["sub/../a.jpg", "sub/deeper/c.jpg"]);
        assert_eq!(got.skipped, 1);
    }
}
