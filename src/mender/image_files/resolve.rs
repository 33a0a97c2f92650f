//! Resolving a device path to a partition and a path in its filesystem, following symbolic links
//! the way the device would: an absolute target starts again at the device's root, so
//! `/var/lib/mender -> /data/mender` leads onto the data partition.

use std::collections::VecDeque;

use super::{FilesError, FilesystemKind, ImageFiles, Layout, Node, OpenFilesystem, RootfsSlot};
use crate::fs::ext::{FileKind, InodeIndex};
use crate::image::partition_table::Partition;
use crate::mender::image_path::{Mount, join_components, leads_to_mount_point, mount_of};

/// Most symbolic links one resolution follows, as Linux allows (`MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// A device path resolved to the partition that stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub partition: Partition,
    /// The partition's role and number, for messages: `rootfs A (partition 2)`.
    pub partition_label: String,
    pub mount: Mount,
    /// The path inside the partition's filesystem, free of symbolic links, `.` and `..`.
    pub inner: String,
    /// The device path after following symbolic links.
    pub device_path: String,
    /// The file or directory at the path, or `None` when the last component does not exist.
    pub node: Option<Node>,
}

impl Resolved {
    /// True when the path is the root directory of its partition.
    pub fn is_partition_root(&self) -> bool {
        self.inner == "/"
    }
}

impl ImageFiles<'_> {
    /// Where `components` live: the mount and the number of components that name its mount point.
    fn mount(&self, components: &[Vec<u8>]) -> (Mount, usize) {
        match self.layout {
            Layout::Bare(_) => (Mount::Rootfs, 0),
            Layout::Disk { .. } => mount_of(components),
        }
    }

    /// True when a missing directory on the root filesystem may be passed through, because it
    /// leads to a mount point (`/boot` on the way to `/boot/efi`).
    fn passes_to_mount_point(&self, stack: &[Vec<u8>]) -> bool {
        matches!(self.layout, Layout::Disk { .. }) && leads_to_mount_point(stack)
    }

    /// Resolves the device path `path` with the root filesystem of `rootfs`. Symbolic links in
    /// directories on the way are followed; the last component is followed only when
    /// `follow_last` is true. Every component but the last must exist.
    pub fn resolve(
        &mut self,
        path: &str,
        follow_last: bool,
        rootfs: RootfsSlot,
    ) -> Result<Resolved, FilesError> {
        let mut pending: VecDeque<Vec<u8>> = split(path.as_bytes());
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut links_followed = 0;
        let mut node = None;

        while let Some(part) = pending.pop_front() {
            if part == b"." {
                continue;
            }
            if part == b".." {
                let (mount, prefix) = self.mount(&stack);
                if stack.len() <= prefix {
                    return Err(FilesError::ClimbsOut { path: path.to_string(), mount: mount.name() });
                }
                stack.pop();
                node = None;
                continue;
            }
            stack.push(part);
            let (mount, prefix) = self.mount(&stack);
            let device_path = join_components(&stack);
            let (partition, _, kind) = self.slot(mount, rootfs, &device_path)?;
            let inner = join_components(&stack[prefix..]);
            let found = self.look_up(&partition, kind, &inner, &device_path)?;
            let is_last = pending.is_empty();
            let Some((found_node, file_kind)) = found else {
                if !is_last && self.passes_to_mount_point(&stack) {
                    continue;
                }
                if is_last {
                    node = None;
                    break;
                }
                return Err(FilesError::NotFound(device_path));
            };
            match (file_kind, &found_node) {
                (FileKind::Symlink, Node::Inode(ino)) if !is_last || follow_last => {
                    links_followed += 1;
                    if links_followed > MAX_SYMLINKS {
                        return Err(FilesError::TooManySymlinks(path.to_string()));
                    }
                    let OpenFilesystem::Ext(ext) = self.open(&partition, kind, &device_path)? else {
                        return Err(FilesError::NotFound(device_path));
                    };
                    let target = ext.read_link(*ino).map_err(|source| FilesError::Ext {
                        path: device_path.clone(),
                        partition: super::partition_name(&partition),
                        source,
                    })?;
                    stack.pop();
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for target_part in split(&target).into_iter().rev() {
                        pending.push_front(target_part);
                    }
                    if pending.is_empty() {
                        // A link to "/" or "." names the directory reached so far.
                        node = None;
                    }
                }
                (FileKind::Directory, _) => node = Some(found_node),
                _ if !is_last => return Err(FilesError::NotADirectory(device_path)),
                _ => node = Some(found_node),
            }
        }

        let (mount, prefix) = self.mount(&stack);
        let device_path = join_components(&stack);
        let (partition, partition_label, kind) = self.slot(mount, rootfs, &device_path)?;
        let inner = join_components(&stack[prefix..]);
        self.open(&partition, kind, &device_path)?;
        let at_root = inner == "/" || node.is_none() && stack.len() <= prefix;
        if at_root && kind == FilesystemKind::Ext {
            node = Some(Node::Inode(InodeIndex::ROOT));
        } else if at_root {
            node = self.look_up(&partition, kind, "/", &device_path)?.map(|(found, _)| found);
        } else if node.is_none() {
            node = self.look_up(&partition, kind, &inner, &device_path)?.map(|(found, _)| found);
        }
        let resolved = Resolved { partition, partition_label, mount, inner, device_path, node };
        if path.ends_with('/') {
            self.check_trailing_slash(path, &resolved, rootfs)?;
        }
        Ok(resolved)
    }

    /// Rejects a path that ends in `/` but names something other than a directory, or a
    /// symbolic link to one, as Linux does (`ENOTDIR`). A missing last component passes.
    fn check_trailing_slash(
        &mut self,
        path: &str,
        resolved: &Resolved,
        rootfs: RootfsSlot,
    ) -> Result<(), FilesError> {
        if resolved.node.is_none() {
            return Ok(());
        }
        match self.metadata(resolved)?.kind {
            FileKind::Directory => Ok(()),
            FileKind::Symlink => self.resolve(path, true, rootfs).map(|_| ()),
            _ => Err(FilesError::NotADirectory(resolved.device_path.clone())),
        }
    }

    /// Resolves `path` for a read: on rootfs A.
    pub fn resolve_for_read(&mut self, path: &str, follow_last: bool) -> Result<Resolved, FilesError> {
        self.resolve(path, follow_last, RootfsSlot::A)
    }

    /// Resolves `path` for a write: on rootfs A and, when it contains a filesystem, on rootfs B.
    /// A path that both resolve to the same place (such as one on the data partition) is
    /// returned once.
    pub fn resolve_for_write(&mut self, path: &str, follow_last: bool) -> Result<Vec<Resolved>, FilesError> {
        let mut targets = vec![self.resolve(path, follow_last, RootfsSlot::A)?];
        if self.has_rootfs_b() {
            let on_b = self.resolve(path, follow_last, RootfsSlot::B)?;
            let duplicate = targets
                .iter()
                .any(|target| target.partition.number == on_b.partition.number && target.inner == on_b.inner);
            if !duplicate {
                targets.push(on_b);
            }
        }
        Ok(targets)
    }
}

/// Splits a path into its non-empty components.
fn split(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&byte| byte == b'/').filter(|part| !part.is_empty()).map(<[u8]>::to_vec).collect()
}
