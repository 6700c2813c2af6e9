//! One error type for the library; every variant says what the user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("tensor '{name}' is missing from the weights")]
    MissingTensor { name: String },
    #[error("tensor '{name}' has shape {found:?} in the weights, the model expects {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("unexpected tensors in the weights (not part of this model): {names}")]
    UnexpectedTensors { names: String },
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A `--device` that cannot be used: unknown, not in this build, or absent here.
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("video {input}: {reason}")]
    Video { input: String, reason: String },
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn weights(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Weights { path: path.into(), reason: reason.to_string() }
    }
}
