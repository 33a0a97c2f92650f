//! The ext2/3/4 filesystem.
