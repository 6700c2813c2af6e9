//! Official weights by model name: `rtmdet-tiny` → the OpenMMLab checkpoint, downloaded
//! once into a user cache and verified against the hash in its file name (OpenMMLab names
//! files `<name>-<first 8 hex of sha256>.pth`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Size;
use crate::error::{Error, Result};

/// An official checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Official {
    pub name: &'static str,
    pub size: Size,
    pub url: &'static str,
}

/// An mmdetection RTMDet release file.
macro_rules! mmdet {
    ($file:literal) => {
        concat!("https://download.openmmlab.com/mmdetection/v3.0/rtmdet/", $file)
    };
}

pub const OFFICIAL: [Official; 6] = [
    Official {
        name: "rtmdet-tiny",
        size: Size::Tiny,
        url: mmdet!("rtmdet_tiny_8xb32-300e_coco/rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth"),
    },
    Official {
        name: "rtmdet-s",
        size: Size::S,
        url: mmdet!("rtmdet_s_8xb32-300e_coco/rtmdet_s_8xb32-300e_coco_20220905_161602-387a891e.pth"),
    },
    Official {
        name: "rtmdet-m",
        size: Size::M,
        url: mmdet!("rtmdet_m_8xb32-300e_coco/rtmdet_m_8xb32-300e_coco_20220719_112220-229f527c.pth"),
    },
    Official {
        name: "rtmdet-l",
        size: Size::L,
        url: mmdet!("rtmdet_l_8xb32-300e_coco/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth"),
    },
    Official {
        name: "rtmdet-x",
        size: Size::X,
        url: mmdet!("rtmdet_x_8xb32-300e_coco/rtmdet_x_8xb32-300e_coco_20220715_230555-cc79b9ae.pth"),
    },
    Official {
        name: "rtmdet-nano",
        size: Size::Nano,
        url: "https://download.openmmlab.com/mmpose/v1/projects/rtmpose/rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
    },
];

/// Looks a model name up (`rtmdet-tiny`, `tiny`, `rtmdet_s`, ...).
pub fn find(name: &str) -> Result<Official> {
    let size = Size::parse(name)?;
    OFFICIAL
        .into_iter()
        .find(|o| o.size == size)
        .ok_or_else(|| Error::Config(format!("no official weights for '{name}'")))
}

impl Official {
    pub fn file_name(&self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or(self.name)
    }

    /// The sha256 prefix in the file name.
    pub fn hash_prefix(&self) -> &'static str {
        let stem = self.file_name().trim_end_matches(".pth");
        stem.rsplit('-').next().unwrap_or("")
    }
}

/// `$RTMDET_CACHE`, else `$XDG_CACHE_HOME/rtmdet`, else `~/.cache/rtmdet`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RTMDET_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("rtmdet");
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache").join("rtmdet")
}

/// The cached checkpoint of `model`, downloading it first when it is not there yet.
pub fn fetch(model: &Official) -> Result<PathBuf> {
    let path = cache_dir().join(model.file_name());
    if path.is_file() {
        return Ok(path);
    }
    download(model, &path).map_err(|reason| Error::Download {
        url: model.url.to_string(),
        reason: format!(
            "{reason}. Without network access, download it elsewhere and put it at {} (or pass --weights FILE)",
            path.display()
        ),
    })?;
    Ok(path)
}

fn download(model: &Official, target: &Path) -> std::result::Result<(), String> {
    let dir = target.parent().ok_or("bad cache path")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let response = ureq::get(model.url).call().map_err(|e| e.to_string())?;
    let total = response.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .map_err(|e| e.to_string())?,
    );
    bar.set_message(format!("downloading {}", model.file_name()));
    let tmp = dir.join(format!(".{}.part{}", model.file_name(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut reader = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            bar.inc(n as u64);
        }
        file.sync_all().map_err(|e| e.to_string())?;
        let digest = format!("{:x}", hasher.finalize());
        if !digest.starts_with(model.hash_prefix()) {
            return Err(format!("checksum mismatch: sha256 {digest} does not start with {}", model.hash_prefix()));
        }
        std::fs::rename(&tmp, target).map_err(|e| e.to_string())
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_hashed_files() {
        let t = find("rtmdet-tiny").unwrap();
        assert_eq!(t.hash_prefix(), "78e30dcc");
        assert!(t.url.starts_with("https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_tiny"));
        assert_eq!(find("x").unwrap().hash_prefix(), "cc79b9ae");
        assert_eq!(find("nano").unwrap().hash_prefix(), "05d8511e");
        assert!(find("huge").is_err());
    }
}
