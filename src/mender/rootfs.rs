//! Facts read from a root filesystem: the device's word size and byte order, from the ELF
//! header of a binary the device runs.

use crate::fs::ext::{Ext, ExtError, FileKind};
use crate::image::volume::Volume;
use crate::mender::target::{TARGET_PROBE_PATHS, TargetLayout};

/// Bytes of an ELF header that decide the layout (e_ident and e_machine).
const ELF_HEADER_PROBE_LEN: usize = 20;

/// A target layout and the binary it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedTarget {
    pub layout: TargetLayout,
    pub binary: &'static str,
}

/// Reads the target layout from the first of the probe binaries that exists in `rootfs` and
/// holds a valid ELF header; symlinks are followed inside the filesystem. Returns `None`
/// when none does.
pub fn detect_target<V: Volume>(rootfs: &Ext<V>) -> Result<Option<DetectedTarget>, ExtError> {
    for binary in TARGET_PROBE_PATHS {
        let Some(ino) = rootfs.resolve(binary, true)? else { continue };
        if rootfs.metadata(ino)?.kind != FileKind::Regular {
            continue;
        }
        let mut header = [0u8; ELF_HEADER_PROBE_LEN];
        let read = rootfs.read_at(ino, 0, &mut header)?;
        match TargetLayout::from_elf_header(&header[..read]) {
            Ok(layout) => return Ok(Some(DetectedTarget { layout, binary })),
            Err(error) => log::debug!("{binary} on the rootfs is not a usable ELF binary: {error}"),
        }
    }
    Ok(None)
}
