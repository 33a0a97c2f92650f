//! The disk image file: its partition table and byte windows onto its partitions.

pub mod bmap;
pub mod compressed;
pub mod disk_image;
pub mod partition_table;
pub mod sparse_copy;
pub mod undo_log;
pub mod volume;
