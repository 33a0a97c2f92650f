//! Errors of the FAT module, one variant per cause.

use std::io;

/// Everything that can go wrong while reading or writing a FAT filesystem.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Reading from or writing to the underlying volume failed, or `fatfs` reported an error
    /// that has no variant of its own.
    #[error("FAT filesystem i/o failed: {0}")]
    Io(#[from] io::Error),

    /// An on-disk structure contains a value that cannot be right.
    #[error("corrupt FAT filesystem: {structure}: {detail}; run `fsck.vfat` on it")]
    Corrupt { structure: &'static str, detail: String },

    /// No file or directory has this path.
    #[error("{0}: no such file or directory in the FAT filesystem")]
    NotFound(String),

    /// A path component that must be a directory is a file.
    #[error("{0}: not a directory")]
    NotADirectory(String),

    /// The path names a directory where a file was expected.
    #[error("{0}: is a directory")]
    IsADirectory(String),

    /// The directory to remove still has entries.
    #[error("{0}: directory not empty")]
    NotEmpty(String),

    /// No free cluster or directory entry is left.
    #[error("no space left on the FAT filesystem")]
    NoSpace,

    /// FAT cannot store this name: a reserved character, an empty name or more than 255 characters.
    #[error("{0:?}: FAT cannot store this file name ({1})")]
    InvalidName(String, String),

    /// A file of more than 4 GiB, which a 32-bit FAT size field cannot hold.
    #[error("{0}: file of {1} bytes is larger than the 4 GiB - 1 a FAT file can hold")]
    TooLarge(String, u64),

    /// A directory tree with more entries than one walk visits, as in a damaged filesystem whose
    /// directories link back to their parents.
    #[error("{path}: more than {limit} entries below it; stopped")]
    TooManyEntries { path: String, limit: usize },
}

/// Turns an error from `fatfs`, which reports every failure as `io::Error` with a message, into
/// the variant for its cause.
pub(super) fn from_fatfs(error: io::Error, path: &str) -> FatError {
    let message = error.to_string();
    match (error.kind(), message.as_str()) {
        (io::ErrorKind::NotFound, _) => FatError::NotFound(path.to_string()),
        (_, "No space left on device") => FatError::NoSpace,
        (_, "Directory not empty") => FatError::NotEmpty(path.to_string()),
        (_, "File name is empty" | "File name too long" | "File name contains unsupported characters") => {
            let name = path.rsplit('/').next().unwrap_or(path);
            FatError::InvalidName(name.to_string(), message.to_lowercase())
        }
        _ => FatError::Io(error),
    }
}
