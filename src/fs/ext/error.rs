//! Errors of the ext2/3/4 module, one variant per cause.

use std::io;

/// Everything that can go wrong while reading or writing an ext2/3/4 filesystem.
#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    /// Reading from or writing to the underlying volume failed.
    #[error("ext filesystem i/o failed: {0}")]
    Io(#[from] io::Error),

    /// An on-disk structure contains a value that cannot be right.
    #[error("corrupt ext filesystem: {structure}: {detail}; run `e2fsck -f` on it")]
    Corrupt { structure: String, detail: String },

    /// The filesystem uses a feature this module cannot handle for the requested operation.
    #[error("unsupported ext filesystem feature: {feature}; {hint}")]
    Unsupported { feature: String, hint: String },

    /// The journal or the orphan list still contains work, or the filesystem was not cleanly
    /// unmounted.
    #[error("ext filesystem needs recovery ({reason}); run `e2fsck -fy` on it first")]
    NeedsRecovery { reason: &'static str },

    /// The superblock records that the kernel found errors on this filesystem.
    #[error("ext filesystem is marked as having errors; run `e2fsck -fy` on it first")]
    HasErrors,

    /// No file or directory has this path.
    #[error("{0}: no such file or directory in the ext filesystem")]
    NotFound(String),

    /// A path component that must be a directory is something else.
    #[error("{0}: not a directory")]
    NotADirectory(String),

    /// The path names a directory where a file was expected.
    #[error("{0}: is a directory")]
    IsADirectory(String),

    /// The path names something that cannot be replaced by this operation.
    #[error("{0}: already exists")]
    AlreadyExists(String),

    /// The path names neither a regular file nor a symbolic link.
    #[error("{0}: not a regular file or symbolic link")]
    NotAFile(String),

    /// Not enough free blocks or inodes for the operation.
    #[error("no space left on the ext filesystem: {needed} free {what} needed, {free} available")]
    NoSpace { what: &'static str, needed: u64, free: u64 },

    /// A path component is longer than the 255 bytes a directory entry can hold.
    #[error("file name of {0} bytes is longer than the maximum of 255")]
    NameTooLong(usize),

    /// The path is not absolute, is empty or contains a NUL byte, or its last component cannot be
    /// created.
    #[error("invalid path {0:?}: {1}")]
    InvalidPath(String, &'static str),

    /// A file is larger than the caller's limit or than the filesystem can hold.
    #[error("file of {size} bytes is larger than the limit of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },

    /// Resolving a path followed more symbolic links than allowed.
    #[error("{0}: too many levels of symbolic links")]
    TooManySymlinks(String),

    /// A directory would get more links than its inode can count.
    #[error("{0}: too many links")]
    TooManyLinks(String),

    /// An extended attribute name that the write operations do not accept.
    #[error("invalid extended attribute name {0:?}: {1}")]
    InvalidXattrName(String, &'static str),

    /// The file has no extended attribute of this name.
    #[error("{path}: no extended attribute named {name}")]
    XattrNotFound { path: String, name: String },

    /// The extended attributes of a file do not fit in its inode and one attribute block.
    #[error("{path}: extended attributes need {needed} bytes in {place}, which has room for {available}")]
    XattrNoSpace { path: String, place: &'static str, needed: usize, available: usize },

    /// A directory to remove or to replace by a rename still has entries besides `.` and `..`.
    #[error("{0}: directory not empty")]
    DirectoryNotEmpty(String),

    /// A rename would move a directory into itself or one of its own subdirectories.
    #[error("cannot move {from} into its own subdirectory {to}")]
    RenameIntoItself { from: String, to: String },

    /// A hard link was requested for a directory, which ext4 does not allow.
    #[error("{0}: hard links to directories are not allowed")]
    HardLinkToDirectory(String),

    /// A symbolic link target is empty, contains a NUL byte or does not fit one block.
    #[error("invalid symbolic link target of {len} bytes: {reason}")]
    InvalidSymlinkTarget { len: usize, reason: &'static str },

    /// A hashed-index directory needs another index level than the filesystem allows: the
    /// kernel reports this as "Directory index full!" and ENOSPC.
    #[error("directory inode {0}: its hashed index is full; enable large_dir or use another directory")]
    DirectoryIndexFull(u32),

    /// A timestamp lies outside the range the inode format can store.
    #[error("timestamp {0} is outside the range the inodes of this filesystem can store")]
    TimeOutOfRange(i64),
}

impl ExtError {
    /// Builds a [`ExtError::Corrupt`] for `structure`.
    pub(crate) fn corrupt(structure: impl Into<String>, detail: impl Into<String>) -> Self {
        ExtError::Corrupt { structure: structure.into(), detail: detail.into() }
    }

    /// Builds an [`ExtError::Unsupported`] for `feature` with the hint `hint`.
    pub(crate) fn unsupported(feature: impl Into<String>, hint: impl Into<String>) -> Self {
        ExtError::Unsupported { feature: feature.into(), hint: hint.into() }
    }
}
