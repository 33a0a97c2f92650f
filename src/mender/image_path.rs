//! Paths of the form `IMAGE:/path`, as `mender-artifact` takes them, and where a path of the
//! running device lives in a Mender image: `/data/...` on the data partition, `/uboot/...`,
//! `/boot/efi/...` and `/boot/grub/...` on the boot partition, everything else on the root
//! filesystem.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// A path inside a disk image, split into the image file and the absolute path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePath {
    pub image: PathBuf,
    /// The path inside the image as given, absolute.
    pub path: String,
}

impl std::fmt::Display for ImagePath {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.image.display(), self.path)
    }
}

/// Why an argument is not a usable `IMAGE:/path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagePathError {
    #[error("{0}: expected IMAGE:/PATH, such as core-image.sdimg:/etc/hostname")]
    NoColon(String),
    #[error("{0}: no path inside the image follows the colon; write IMAGE:/PATH")]
    EmptyPath(String),
    #[error("{0}: the path inside the image must be absolute (start with /)")]
    Relative(String),
    #[error("{0}: the path inside the image is not valid UTF-8")]
    NotUtf8(String),
    #[error("{0}: the path inside the image contains a NUL byte")]
    Nul(String),
}

impl ImagePath {
    /// Splits `IMAGE:/path`. The image is what comes before the first colon whose prefix names
    /// an existing file, else before the first colon, so image names that contain a colon work.
    pub fn parse(argument: &OsStr) -> Result<Self, ImagePathError> {
        let bytes = argument.as_bytes();
        let shown = argument.to_string_lossy().into_owned();
        let colons: Vec<usize> =
            bytes.iter().enumerate().filter(|(_, byte)| **byte == b':').map(|(i, _)| i).collect();
        let Some(&first) = colons.first() else {
            return Err(ImagePathError::NoColon(shown));
        };
        let split = colons
            .iter()
            .copied()
            .find(|&colon| PathBuf::from(OsStr::from_bytes(&bytes[..colon])).is_file())
            .unwrap_or(first);

        let image = PathBuf::from(OsString::from_vec(bytes[..split].to_vec()));
        let path_bytes = &bytes[split + 1..];
        if path_bytes.is_empty() {
            return Err(ImagePathError::EmptyPath(shown));
        }
        if !path_bytes.starts_with(b"/") {
            return Err(ImagePathError::Relative(shown));
        }
        if path_bytes.contains(&0) {
            return Err(ImagePathError::Nul(shown));
        }
        let path = String::from_utf8(path_bytes.to_vec()).map_err(|_| ImagePathError::NotUtf8(shown))?;
        Ok(ImagePath { image, path })
    }

    /// True when `argument` is meant as `IMAGE:/path` rather than a path on the host: it
    /// contains a colon, and no host file of that whole name exists.
    pub fn looks_like_image_path(argument: &OsStr) -> bool {
        argument.as_bytes().contains(&b':') && std::fs::symlink_metadata(argument).is_err()
    }
}

/// Location in the image of a path of the running device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// The root filesystem: rootfs A, and rootfs B when it contains a filesystem.
    Rootfs,
    /// The data partition, mounted at `/data`.
    Data,
    /// The boot partition, mounted at `/uboot`, `/boot/efi` or `/boot/grub`.
    Boot,
}

impl Mount {
    /// The partition's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Mount::Rootfs => "root filesystem",
            Mount::Data => "data partition",
            Mount::Boot => "boot partition",
        }
    }
}

/// Mount points of the boot partition, as mender-artifact maps them, as path components.
const BOOT_MOUNT_POINTS: [&[&[u8]]; 3] = [&[b"uboot"], &[b"boot", b"efi"], &[b"boot", b"grub"]];

/// Returns where the canonical device path `components` lives, and how many of its first
/// components name the mount point (0 for the root filesystem).
pub fn mount_of(components: &[Vec<u8>]) -> (Mount, usize) {
    if components.first().is_some_and(|first| first == b"data") {
        return (Mount::Data, 1);
    }
    for mount_point in BOOT_MOUNT_POINTS {
        let matches = components.len() >= mount_point.len()
            && mount_point.iter().zip(components).all(|(expected, part)| *expected == part.as_slice());
        if matches {
            return (Mount::Boot, mount_point.len());
        }
    }
    (Mount::Rootfs, 0)
}

/// True when `components` lead to a boot mount point without reaching it (`/boot` of
/// `/boot/efi`), so the walk may pass through them even when the root filesystem lacks them.
pub fn leads_to_mount_point(components: &[Vec<u8>]) -> bool {
    BOOT_MOUNT_POINTS.iter().any(|mount_point| {
        components.len() < mount_point.len()
            && mount_point.iter().zip(components).all(|(expected, part)| *expected == part.as_slice())
    })
}

/// Joins components into an absolute path.
pub fn join_components(components: &[Vec<u8>]) -> String {
    let mut path = String::new();
    for part in components {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(part));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Vec<Vec<u8>> {
        path.split('/').filter(|part| !part.is_empty()).map(|part| part.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parse_splits_image_and_path() {
        let parsed = ImagePath::parse(OsStr::new("out/core.sdimg:/etc/hostname")).unwrap();
        assert_eq!(parsed.image, PathBuf::from("out/core.sdimg"));
        assert_eq!(parsed.path, "/etc/hostname");
    }

    #[test]
    fn parse_rejects_bad_forms() {
        assert!(matches!(ImagePath::parse(OsStr::new("core.sdimg")), Err(ImagePathError::NoColon(_))));
        assert!(matches!(ImagePath::parse(OsStr::new("core.sdimg:")), Err(ImagePathError::EmptyPath(_))));
        assert!(matches!(ImagePath::parse(OsStr::new("core.sdimg:etc")), Err(ImagePathError::Relative(_))));
    }

    #[test]
    fn parse_prefers_an_existing_image_with_a_colon() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a:b.img");
        std::fs::write(&image, b"").unwrap();
        let argument = format!("{}:/etc", image.display());

        let parsed = ImagePath::parse(OsStr::new(&argument)).unwrap();

        assert_eq!(parsed.image, image);
        assert_eq!(parsed.path, "/etc");
    }

    #[test]
    fn mount_follows_mender_artifact() {
        assert_eq!(mount_of(&parts("/data/mender/x")), (Mount::Data, 1));
        assert_eq!(mount_of(&parts("/data")), (Mount::Data, 1));
        assert_eq!(mount_of(&parts("/database/x")), (Mount::Rootfs, 0));
        assert_eq!(mount_of(&parts("/uboot/boot.scr")), (Mount::Boot, 1));
        assert_eq!(mount_of(&parts("/boot/efi/EFI")), (Mount::Boot, 2));
        assert_eq!(mount_of(&parts("/boot/grub")), (Mount::Boot, 2));
        assert_eq!(mount_of(&parts("/boot/zImage")), (Mount::Rootfs, 0));
        assert_eq!(mount_of(&parts("/etc/uboot/x")), (Mount::Rootfs, 0));
        assert_eq!(mount_of(&[]), (Mount::Rootfs, 0));
    }
}
