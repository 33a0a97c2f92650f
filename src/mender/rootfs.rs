//! Facts read from a root filesystem: the device's word size and byte order, from the ELF
//! header of a binary the device runs; the Artifact name in artifact_info; and the checksum of
//! the filesystem image, as a bootstrap Artifact provides it.

use sha2::{Digest, Sha256};

use crate::fs::ext::{Ext, ExtError, FileKind};
use crate::image::volume::Volume;
use crate::mender::artifact_info::{ARTIFACT_INFO_PATH, ArtifactInfoError, parse_artifact_name};
use crate::mender::target::{ELF_HEADER_FLAGS_END, TARGET_PROBE_PATHS, TargetLayout};

/// Largest artifact_info read; Yocto writes one short line.
const MAX_ARTIFACT_INFO_LEN: u64 = 64 << 10;

/// Bytes read at a time while hashing a filesystem: large reads keep system calls rare, and
/// two such buffers stay small next to the page cache.
const HASH_CHUNK_LEN: usize = 8 << 20;

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

/// Errors reading the Artifact name from a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactInfoReadError {
    #[error("{ARTIFACT_INFO_PATH}: {0}")]
    Ext(#[from] ExtError),
    #[error(transparent)]
    Invalid(#[from] ArtifactInfoError),
}

/// Reads the Artifact name from `/etc/mender/artifact_info`, following symlinks inside the
/// filesystem. Returns `None` when the file is missing or names no Artifact.
pub fn read_artifact_name<V: Volume>(rootfs: &Ext<V>) -> Result<Option<Vec<u8>>, ArtifactInfoReadError> {
    let Some(ino) = rootfs.resolve(ARTIFACT_INFO_PATH, true)? else { return Ok(None) };
    if rootfs.metadata(ino)?.kind != FileKind::Regular {
        return Ok(None);
    }
    let text = rootfs.read_file(ino, MAX_ARTIFACT_INFO_LEN)?;
    Ok(parse_artifact_name(&text)?)
}

/// Computes the SHA-256 of the first `len` bytes of `volume` as lower-case hex, the form of
/// mender-artifact's `rootfs-image.checksum`. For an ext filesystem, `len` is its block count
/// times its block size, so the bytes are those of the `.ext4` file a Yocto build deploys even
/// when the partition is larger. `progress` is called with the bytes hashed so far after each
/// chunk.
pub fn volume_sha256<V: Volume + Sync>(
    volume: &V,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    hash_volume(volume, len, &mut hasher, progress)?;
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Feeds `len` bytes of `volume` to `hasher`. A second thread reads the next chunk while this one
/// hashes the last, so reading and hashing overlap.
fn hash_volume<V: Volume + Sync>(
    volume: &V,
    len: u64,
    hasher: &mut Sha256,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let (filled_sender, filled) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
    let (empty_sender, empty) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..2 {
        let _ = empty_sender.send(Vec::new());
    }

    // Moving the senders into the closure drops them when it returns, so the reader never waits
    // for a buffer that will not come.
    std::thread::scope(move |scope| {
        scope.spawn(move || {
            let mut offset = 0u64;
            while offset < len {
                let Ok(mut buffer) = empty.recv() else { return };
                let chunk_len = (len - offset).min(HASH_CHUNK_LEN as u64) as usize;
                buffer.resize(chunk_len, 0);
                let read = volume.read_at(offset, &mut buffer).map(|()| buffer);
                let failed = read.is_err();
                if filled_sender.send(read).is_err() || failed {
                    return;
                }
                offset += chunk_len as u64;
            }
        });

        let mut hashed = 0u64;
        while hashed < len {
            let buffer = filled.recv().map_err(|_| {
                std::io::Error::other("the thread reading the filesystem stopped before the end")
            })??;
            hasher.update(&buffer);
            hashed += buffer.len() as u64;
            progress(hashed);
            let _ = empty_sender.send(buffer);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn checksum_covers_prefix_across_chunks() {
        let volume: Vec<u8> = (0..2 * HASH_CHUNK_LEN + 4099).map(|index| (index % 251) as u8).collect();
        let len = (2 * HASH_CHUNK_LEN + 4096) as u64;
        let mut reported = Vec::new();

        let checksum = volume_sha256(&volume, len, &mut |done| reported.push(done)).unwrap();

        assert_eq!(checksum, hex(&Sha256::digest(&volume[..len as usize])));
        assert_eq!(reported, [HASH_CHUNK_LEN as u64, 2 * HASH_CHUNK_LEN as u64, len]);
    }

    #[test]
    fn checksum_of_empty_prefix_is_empty_digest() {
        let checksum = volume_sha256(&vec![1u8; 16], 0, &mut |_| {}).unwrap();

        assert_eq!(checksum, hex(&Sha256::digest(b"")));
    }

    #[test]
    fn length_past_volume_end_is_an_error() {
        let volume = vec![0u8; HASH_CHUNK_LEN + 10];

        let result = volume_sha256(&volume, (HASH_CHUNK_LEN + 11) as u64, &mut |_| {});

        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
