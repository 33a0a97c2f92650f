//! mender-preauth: offline preauthorization of Mender devices. The library holds every layer;
//! `main.rs` only parses arguments and maps errors to an exit code.
//!
//! Layers, from the bytes up (see `docs/ARCHITECTURE.md`):
//! - [`image`]: the disk image file, its partition table and byte windows onto partitions;
//! - [`fs`]: filesystems on those windows (ext2/3/4);
//! - [`mender`]: the Mender data on them (device key, mender-store, target layout);
//! - [`preauth`]: identity data and the preauthorization request bodies;
//! - [`commands`]: the subcommands, each a short sequence of calls into the layers above.

#![forbid(unsafe_code)]

pub mod commands;
pub mod fs;
pub mod image;
pub mod mender;
pub mod preauth;

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod test_support;
