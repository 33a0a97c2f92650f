//! Files of a Mender disk image as the running device sees them: one namespace made of the root
//! filesystem, the data partition at `/data` and the boot partition at `/uboot`, `/boot/efi` or
//! `/boot/grub`, with symbolic links resolved inside that namespace. Reads come from rootfs A;
//! writes to the root filesystem go to rootfs A and to rootfs B when it holds a filesystem.
//!
//! The root filesystem and the data partition hold ext2/3/4 ([`Ext`]); the boot partition may
//! hold FAT ([`Fat`]), which has no symbolic links, permission bits or owners.
//!
//! Every write lands in a [`Staged`] layer over its partition. [`ImageFiles::into_writes`]
//! hands back the planned writes of every partition, for [`DiskImage::apply_all`] to write in
//! one all-or-nothing step.

mod operations;
mod resolve;

use std::collections::BTreeMap;

use crate::fs::ext::{Ext, ExtError, FileKind, InodeIndex, Metadata};
use crate::fs::fat::{Fat, FatError};
use crate::image::disk_image::DiskImage;
use crate::image::partition_table::{Partition, TableKind};
use crate::image::volume::{FileRange, FileVolume, Staged};
use crate::mender::image_path::Mount;
use crate::mender::roles::{self, ClassifiedPartition, Filesystem, Role, partition_name};

pub use operations::{CopyOutError, ListedEntry, Listing};
pub use resolve::Resolved;

/// The filesystem of one partition with its pending writes.
pub type StagedExt<'a> = Ext<Staged<FileVolume<'a>>>;

/// A FAT boot partition with its pending writes.
pub type StagedFat<'a> = Fat<Staged<FileVolume<'a>>>;

/// An opened filesystem of one partition.
pub enum OpenFilesystem<'a> {
    Ext(StagedExt<'a>),
    Fat(StagedFat<'a>),
}

/// The kind of filesystem a partition holds, which decides how it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilesystemKind {
    Ext,
    Fat,
}

/// The file or directory a resolved path names on its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An inode of an ext filesystem.
    Inode(InodeIndex),
    /// An entry of a FAT filesystem with the metadata it was found with. FAT has no inodes, so
    /// operations find the entry again by its path.
    FatEntry(Metadata),
}

/// The planned writes of one partition, keyed by offset in the partition.
pub type PartitionWrites = (Partition, BTreeMap<u64, Vec<u8>>);

/// The planned writes of one partition, keyed by offset in the partition: bytes held in memory
/// and ranges of host files, copied when the writes are applied.
pub type PartitionWritesWithCopies = (Partition, BTreeMap<u64, Vec<u8>>, BTreeMap<u64, FileRange>);

/// Failure of a file operation on an image.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: is a directory; use -r to remove it with everything below it")]
    IsADirectoryNeedsRecursive(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{path}: is the root of the {mount}, which cannot be removed or replaced")]
    PartitionRoot { path: String, mount: &'static str },
    #[error("`..` in {path} climbs out of the {mount}, which file commands do not allow")]
    ClimbsOut { path: String, mount: &'static str },
    #[error("{0}: too many levels of symbolic links")]
    TooManySymlinks(String),
    #[error("{path}: the image has no {mount}{detail}")]
    NoPartition { path: String, mount: &'static str, detail: String },
    #[error("{path}: the {partition} is FAT, which has no {missing}")]
    FatHasNo { path: String, partition: String, missing: &'static str },
    #[error("{path}: the {mount} ({partition}) holds no filesystem that can be opened: {reason}")]
    Unusable { path: String, mount: &'static str, partition: String, reason: String },
    #[error("{path}: more than {limit} entries below it; stopped")]
    TooManyEntries { path: String, limit: usize },
    #[error("{path}: {partition}: {source}")]
    Ext { path: String, partition: String, source: ExtError },
    #[error("{path}: {partition}: {source}")]
    Fat { path: String, partition: String, source: FatError },
    #[error("{path}: reading the file to copy: {source}")]
    HostFile { path: String, source: std::io::Error },
    #[error("{path}: {partition}: file of {size} bytes is larger than the {limit} bytes read into memory")]
    TooLarge { path: String, partition: String, size: u64, limit: u64 },
}

/// Root filesystem, A or B, that a path of the root filesystem is resolved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsSlot {
    A,
    B,
}

/// The partition behind one mount of the namespace.
#[derive(Debug, Clone)]
enum Slot {
    /// An ext2/3/4 filesystem on this partition.
    Ext(Partition, &'static str),
    /// A FAT filesystem on this partition (the boot partition).
    Fat(Partition, &'static str),
    /// The partition exists but contains nothing this module can open.
    Unusable { partition: Partition, reason: String },
    /// The image has no such partition; the text names what was looked for.
    Missing(String),
}

/// Partitions of the image by the part they play. One value exists per run, so its size does
/// not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Layout {
    /// A bare filesystem image: every path lives on its one filesystem.
    Bare(Partition),
    Disk {
        rootfs_a: Slot,
        /// Rootfs B when writes must reach it too: an ext filesystem, or one that is damaged,
        /// which fails every write instead of leaving rootfs B behind rootfs A.
        rootfs_b: Option<Slot>,
        data: Slot,
        boot: Slot,
    },
}

/// The files of one opened image, with the writes planned so far.
pub struct ImageFiles<'a> {
    image: &'a DiskImage,
    layout: Layout,
    filesystems: BTreeMap<u32, OpenFilesystem<'a>>,
}

impl<'a> ImageFiles<'a> {
    /// Finds the partitions' roles on `image`. Filesystems are opened when first used.
    pub fn new(image: &'a DiskImage) -> std::io::Result<Self> {
        let layout = if image.table().kind == TableKind::Bare {
            let whole = image.table().partitions.first().copied().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the bare image has no filesystem window",
                )
            })?;
            Layout::Bare(whole)
        } else {
            let partitions = roles::classify(image.file(), image.table())?;
            disk_layout(&partitions)
        };
        Ok(ImageFiles { image, layout, filesystems: BTreeMap::new() })
    }

    /// True when writes to the root filesystem also go to rootfs B.
    pub fn has_rootfs_b(&self) -> bool {
        matches!(self.layout, Layout::Disk { rootfs_b: Some(_), .. })
    }

    /// True for a bare filesystem image, which has no root filesystem or data partition apart
    /// from its one filesystem.
    pub fn is_bare(&self) -> bool {
        matches!(self.layout, Layout::Bare(_))
    }

    /// Returns the filesystem on `partition` with the writes planned so far, opening it on
    /// first use, so that a caller can plan its own writes in the same all-or-nothing step.
    pub fn partition_ext(&mut self, partition: &Partition) -> Result<&mut StagedExt<'a>, FilesError> {
        let name = partition_name(partition);
        match self.open(partition, FilesystemKind::Ext, &name)? {
            OpenFilesystem::Ext(ext) => Ok(ext),
            OpenFilesystem::Fat(_) => Err(FilesError::Unusable {
                path: "/".to_string(),
                mount: "partition",
                partition: name,
                reason: "it holds FAT, not ext2/3/4".to_string(),
            }),
        }
    }

    /// Returns the filesystem on `partition`, opening it on first use.
    fn open(
        &mut self,
        partition: &Partition,
        kind: FilesystemKind,
        path: &str,
    ) -> Result<&mut OpenFilesystem<'a>, FilesError> {
        let number = partition.number;
        if !self.filesystems.contains_key(&number) {
            let volume = Staged::new(self.image.volume(partition));
            let filesystem = match kind {
                FilesystemKind::Ext => OpenFilesystem::Ext(Ext::open(volume).map_err(|source| {
                    FilesError::Ext { path: path.to_string(), partition: partition_name(partition), source }
                })?),
                FilesystemKind::Fat => OpenFilesystem::Fat(Fat::open(volume).map_err(|source| {
                    FilesError::Fat { path: path.to_string(), partition: partition_name(partition), source }
                })?),
            };
            self.filesystems.insert(number, filesystem);
        }
        self.filesystems.get_mut(&number).ok_or_else(|| FilesError::NotFound(path.to_string()))
    }

    /// Returns the ext filesystem and the inode of a resolved path that exists on ext2/3/4, or
    /// `None` when it does not exist or lies on FAT.
    pub fn ext_file(&self, resolved: &Resolved) -> Option<(&StagedExt<'a>, InodeIndex)> {
        match (&resolved.node, self.filesystems.get(&resolved.partition.number)) {
            (Some(Node::Inode(ino)), Some(OpenFilesystem::Ext(ext))) => Some((ext, *ino)),
            _ => None,
        }
    }

    /// Returns the filesystem of a resolved path, which resolving opened.
    pub fn filesystem(&self, resolved: &Resolved) -> &OpenFilesystem<'a> {
        self.filesystems.get(&resolved.partition.number).expect("resolving a path opens its filesystem")
    }

    /// Returns the filesystem of a resolved path for a write.
    fn filesystem_mut(&mut self, resolved: &Resolved) -> &mut OpenFilesystem<'a> {
        self.filesystems.get_mut(&resolved.partition.number).expect("resolving a path opens its filesystem")
    }

    /// Looks up `inner` on the filesystem of `partition` and returns what is there and its kind.
    fn look_up(
        &mut self,
        partition: &Partition,
        kind: FilesystemKind,
        inner: &str,
        device_path: &str,
    ) -> Result<Option<(Node, FileKind)>, FilesError> {
        match self.open(partition, kind, device_path)? {
            OpenFilesystem::Ext(ext) => {
                let ext_error = |source| FilesError::Ext {
                    path: device_path.to_string(),
                    partition: partition_name(partition),
                    source,
                };
                let Some(ino) = ext.lookup(inner).map_err(ext_error)? else { return Ok(None) };
                let metadata = ext.metadata(ino).map_err(ext_error)?;
                Ok(Some((Node::Inode(ino), metadata.kind)))
            }
            OpenFilesystem::Fat(fat) => {
                let found = fat.lookup(inner).map_err(|source| FilesError::Fat {
                    path: device_path.to_string(),
                    partition: partition_name(partition),
                    source,
                })?;
                Ok(found.map(|metadata| {
                    let kind = metadata.kind;
                    (Node::FatEntry(metadata), kind)
                }))
            }
        }
    }

    /// True when `path` resolves, for a write, to a FAT filesystem.
    pub fn is_on_fat(&mut self, path: &str) -> Result<bool, FilesError> {
        Ok(self.fat_target(path)?.is_some())
    }

    /// Rejects a write to `path` that would need to store `missing` (such as "owners") on FAT.
    pub fn reject_on_fat(&mut self, path: &str, missing: &'static str) -> Result<(), FilesError> {
        match self.fat_target(path)? {
            Some(target) => Err(FilesError::FatHasNo {
                path: target.device_path,
                partition: target.partition_label,
                missing,
            }),
            None => Ok(()),
        }
    }

    /// Returns where a write to `path` lands on a FAT filesystem, if it does. A path whose
    /// parents are missing (as `install -d` creates them) is judged by its deepest existing
    /// ancestor.
    fn fat_target(&mut self, path: &str) -> Result<Option<Resolved>, FilesError> {
        let mut candidate = path.trim_end_matches('/').to_string();
        let targets = loop {
            match self.resolve_for_write(&candidate, true) {
                Err(FilesError::NotFound(_)) if candidate.len() > 1 => {
                    let parent_len = candidate.rfind('/').unwrap_or(0);
                    candidate.truncate(parent_len.max(1));
                }
                result => break result?,
            }
        };
        Ok(targets.into_iter().find(|target| matches!(self.filesystem(target), OpenFilesystem::Fat(_))))
    }

    /// Returns the partition of a mount, its label and the kind of its filesystem, or the error
    /// that explains why there is none.
    fn slot(
        &self,
        mount: Mount,
        rootfs: RootfsSlot,
        path: &str,
    ) -> Result<(Partition, String, FilesystemKind), FilesError> {
        let slot = match &self.layout {
            Layout::Bare(whole) => return Ok((*whole, "whole image".to_string(), FilesystemKind::Ext)),
            Layout::Disk { rootfs_a, rootfs_b, data, boot } => match (mount, rootfs) {
                (Mount::Rootfs, RootfsSlot::A) => rootfs_a.clone(),
                (Mount::Rootfs, RootfsSlot::B) => rootfs_b.clone().unwrap_or_else(|| rootfs_a.clone()),
                (Mount::Data, _) => data.clone(),
                (Mount::Boot, _) => boot.clone(),
            },
        };
        match slot {
            Slot::Ext(partition, role) => {
                Ok((partition, format!("{role} ({})", partition_name(&partition)), FilesystemKind::Ext))
            }
            Slot::Fat(partition, role) => {
                Ok((partition, format!("{role} ({})", partition_name(&partition)), FilesystemKind::Fat))
            }
            Slot::Missing(detail) => {
                Err(FilesError::NoPartition { path: path.to_string(), mount: mount.name(), detail })
            }
            Slot::Unusable { partition, reason } => Err(FilesError::Unusable {
                path: path.to_string(),
                mount: mount.name(),
                partition: partition_name(&partition),
                reason,
            }),
        }
    }

    /// Hands back the planned writes of every partition that has any, for
    /// [`DiskImage::apply_all`], with the names of the partitions changed. Staged copies of
    /// host files are read into memory. Fails only when such a copy cannot be read, or when
    /// unmounting a FAT filesystem fails.
    pub fn into_writes(self) -> std::io::Result<(Vec<PartitionWrites>, Vec<String>)> {
        let mut changes = Vec::new();
        let mut names = Vec::new();
        for (partition, volume) in self.into_staged_volumes()? {
            let (_, writes) = volume.into_parts()?;
            if !writes.is_empty() {
                names.push(partition_name(&partition));
                changes.push((partition, writes));
            }
        }
        Ok((changes, names))
    }

    /// Hands back the planned writes of every partition that has any, as
    /// [`ImageFiles::into_writes`] does, but with the staged copies of host files kept as
    /// references, for [`DiskImage::apply_all_with_copies`].
    pub fn into_writes_with_copies(self) -> std::io::Result<(Vec<PartitionWritesWithCopies>, Vec<String>)> {
        let mut changes = Vec::new();
        let mut names = Vec::new();
        for (partition, volume) in self.into_staged_volumes()? {
            let (_, writes, copies) = volume.into_parts_with_copies();
            if !writes.is_empty() || !copies.is_empty() {
                names.push(partition_name(&partition));
                changes.push((partition, writes, copies));
            }
        }
        Ok((changes, names))
    }

    /// Returns the staged layer of every partition opened, with its partition. Fails when
    /// unmounting a FAT filesystem fails.
    fn into_staged_volumes(self) -> std::io::Result<Vec<(Partition, Staged<FileVolume<'a>>)>> {
        let partitions = &self.image.table().partitions;
        let mut volumes = Vec::new();
        for filesystem in self.filesystems.into_values() {
            let volume = match filesystem {
                OpenFilesystem::Ext(ext) => ext.into_volume(),
                OpenFilesystem::Fat(fat) => fat.into_volume().map_err(std::io::Error::other)?,
            };
            let start = volume.base().start();
            if let Some(partition) = partitions.iter().find(|partition| partition.start == start) {
                volumes.push((*partition, volume));
            }
        }
        Ok(volumes)
    }
}

/// Builds the namespace's mounts from the partitions' roles.
fn disk_layout(partitions: &[ClassifiedPartition]) -> Layout {
    let slot_of =
        |classified: Option<&ClassifiedPartition>, role: &'static str, missing: &str| match classified {
            None => Slot::Missing(missing.to_string()),
            Some(found) => match &found.filesystem {
                Filesystem::Ext { .. } => Slot::Ext(found.partition, role),
                Filesystem::Vfat { .. } => Slot::Fat(found.partition, role),
                Filesystem::Unknown { reason } => Slot::Unusable {
                    partition: found.partition,
                    reason: reason.clone().unwrap_or_else(|| "unknown content".into()),
                },
                Filesystem::Empty => {
                    Slot::Unusable { partition: found.partition, reason: "unformatted".into() }
                }
            },
        };
    let rootfs_a = slot_of(
        roles::find_role(partitions, Role::RootfsA),
        "rootfs A",
        " (no ext2/3/4 partition holds /etc/mender or /usr/bin/mender*)",
    );
    let rootfs_b = match roles::find_role(partitions, Role::RootfsB) {
        Some(found) if matches!(found.filesystem, Filesystem::Ext { .. }) => {
            Some(Slot::Ext(found.partition, "rootfs B"))
        }
        _ => damaged_rootfs_b(partitions),
    };
    let data = match roles::find_data_partition(partitions, None) {
        Ok(found) => slot_of(Some(found), "data partition", ""),
        Err(error) => Slot::Missing(format!(" ({error})")),
    };
    let boot = slot_of(roles::find_role(partitions, Role::Boot), "boot partition", "");
    Layout::Disk { rootfs_a, rootfs_b, data, boot }
}

/// Returns the partition right after rootfs A when its ext superblock could not be opened.
/// mender-artifact skips such a rootfs B; writing only rootfs A would leave the two different.
fn damaged_rootfs_b(partitions: &[ClassifiedPartition]) -> Option<Slot> {
    let position = partitions.iter().position(|found| found.role == Some(Role::RootfsA))?;
    let next = partitions.get(position + 1)?;
    match &next.filesystem {
        Filesystem::Unknown { reason: Some(reason) } if next.role.is_none() && reason.starts_with("ext ") => {
            Some(Slot::Unusable { partition: next.partition, reason: reason.clone() })
        }
        _ => None,
    }
}

/// Returns what is at a resolved path, or the error for a missing one.
pub fn existing(resolved: &Resolved) -> Result<&Node, FilesError> {
    resolved.node.as_ref().ok_or_else(|| FilesError::NotFound(resolved.device_path.clone()))
}
