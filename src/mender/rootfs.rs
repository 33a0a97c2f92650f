//! Facts read from a root filesystem: the device's word size and byte order, from the ELF
//! header of a binary the device runs.

use crate::fs::ext::{Ext, ExtError, FileKind};
use crate::image::volume::Volume;
use crate::mender::target::{ELF_HEADER_FLAGS_END, TARGET_PROBE_PATHS, TargetLayout};

/// Bytes of an ELF header that decide the layout and name the CPU (e_ident, e_machine, e_flags).
const ELF_HEADER_PROBE_LEN: usize = ELF_HEADER_FLAGS_END;

/// A target layout and the binary it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedTarget {
    pub layout: TargetLayout,
    pub binary: &'static str,
}

/// Reads the target layout from the first of the probe binaries that exists in `rootfs` and
/// contains a valid ELF header; symlinks are followed inside the filesystem. A probe path that
/// cannot be read is skipped. Returns `None` when no probe path gives a layout.
pub fn detect_target<V: Volume>(rootfs: &Ext<V>) -> Result<Option<DetectedTarget>, ExtError> {
    for binary in TARGET_PROBE_PATHS {
        match read_elf_header(rootfs, binary) {
            Ok(Some(header)) => match TargetLayout::from_elf_header(&header) {
                Ok(layout) => return Ok(Some(DetectedTarget { layout, binary })),
                Err(error) => log::debug!("{binary} on the rootfs is not a usable ELF binary: {error}"),
            },
            Ok(None) => {}
            // A broken link or a damaged inode on one path must not hide the next binary.
            Err(error) => log::debug!("skipped {binary} on the rootfs: {error}"),
        }
    }
    Ok(None)
}

/// Returns the first bytes of the regular file at `binary`, following symlinks, or `None` when
/// there is no such file.
fn read_elf_header<V: Volume>(rootfs: &Ext<V>, binary: &str) -> Result<Option<Vec<u8>>, ExtError> {
    let Some(ino) = rootfs.resolve(binary, true)? else { return Ok(None) };
    if rootfs.metadata(ino)?.kind != FileKind::Regular {
        return Ok(None);
    }
    let mut header = vec![0u8; ELF_HEADER_PROBE_LEN];
    let read = rootfs.read_at(ino, 0, &mut header)?;
    header.truncate(read);
    Ok(Some(header))
}
