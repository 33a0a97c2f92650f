//! The disk image file: its partition table and byte windows onto its partitions.

pub mod volume;
