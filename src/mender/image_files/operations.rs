//! The file operations on an image's namespace: reading, listing, and the writes, each of which
//! changes every partition its path resolves to (rootfs A and B for the root filesystem).

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{FilesError, ImageFiles, Node, OpenFilesystem, Resolved, RootfsSlot, existing};
use crate::fs::ext::{ExtError, FileKind, Metadata, NewAttrs, SetAttrs};
use crate::fs::fat::FatError;
use crate::mender::image_path::mount_of;

/// Mode of the parent directories that `mkdir -p` creates.
const PARENT_DIR_MODE: u16 = 0o755;

/// Maximum number of inodes one recursive attribute change visits. It bounds the walk of a
/// damaged filesystem whose directories form a cycle.
const MAX_WALK_ENTRIES: usize = 1 << 22;

/// Bytes copied per read when streaming a file out of the image.
const READ_CHUNK_LEN: usize = 1 << 20;

/// Contents of a regular file to write.
#[derive(Clone, Copy)]
enum Contents<'s> {
    Bytes(&'s [u8]),
    /// A host file, whose blocks ext copies when the writes are applied.
    HostFile(&'s Arc<File>),
}

impl Contents<'_> {
    /// Returns the contents in memory, reading a host file whole.
    fn bytes(&self) -> std::io::Result<Cow<'_, [u8]>> {
        match self {
            Contents::Bytes(data) => Ok(Cow::Borrowed(data)),
            Contents::HostFile(file) => {
                let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
                let mut data = vec![0; len];
                file.read_exact_at(&mut data, 0)?;
                Ok(Cow::Owned(data))
            }
        }
    }
}

/// One entry of a listed directory.
#[derive(Debug, Clone)]
pub struct ListedEntry {
    pub name: Vec<u8>,
    pub node: Node,
    pub kind: FileKind,
}

/// A directory's entries, `.` and `..` left out, sorted by name.
#[derive(Debug, Clone)]
pub struct Listing {
    pub directory: Resolved,
    pub entries: Vec<ListedEntry>,
}

impl<'a> ImageFiles<'a> {
    /// Wraps an error of the ext layer with the path and partition it happened on.
    fn ext_error(resolved: &Resolved) -> impl Fn(ExtError) -> FilesError + '_ {
        move |source| FilesError::Ext {
            path: resolved.device_path.clone(),
            partition: resolved.partition_label.clone(),
            source,
        }
    }

    /// Wraps an error of the FAT layer with the path and partition it happened on.
    fn fat_error(resolved: &Resolved) -> impl Fn(FatError) -> FilesError + '_ {
        move |source| FilesError::Fat {
            path: resolved.device_path.clone(),
            partition: resolved.partition_label.clone(),
            source,
        }
    }

    /// Builds the error for an operation that FAT cannot store, such as a symbolic link.
    fn fat_has_no(resolved: &Resolved, missing: &'static str) -> FilesError {
        FilesError::FatHasNo {
            path: resolved.device_path.clone(),
            partition: resolved.partition_label.clone(),
            missing,
        }
    }

    /// Reads the attributes of an existing resolved path.
    pub fn metadata(&self, resolved: &Resolved) -> Result<Metadata, FilesError> {
        self.node_metadata(resolved, existing(resolved)?)
    }

    /// Reads the attributes of `node` on the filesystem of `resolved`.
    fn node_metadata(&self, resolved: &Resolved, node: &Node) -> Result<Metadata, FilesError> {
        match (self.filesystem(resolved), node) {
            (OpenFilesystem::Ext(ext), Node::Inode(ino)) => {
                ext.metadata(*ino).map_err(Self::ext_error(resolved))
            }
            (_, Node::FatEntry(metadata)) => Ok(metadata.clone()),
            (OpenFilesystem::Fat(_), Node::Inode(_)) => {
                Err(FilesError::NotFound(resolved.device_path.clone()))
            }
        }
    }

    /// Reads the target of the symbolic link at a resolved path.
    pub fn read_link(&self, resolved: &Resolved) -> Result<Vec<u8>, FilesError> {
        self.node_link(resolved, existing(resolved)?)
    }

    /// Reads the target of the symbolic link `node` on the filesystem of `resolved`.
    fn node_link(&self, resolved: &Resolved, node: &Node) -> Result<Vec<u8>, FilesError> {
        match (self.filesystem(resolved), node) {
            (OpenFilesystem::Ext(ext), Node::Inode(ino)) => {
                ext.read_link(*ino).map_err(Self::ext_error(resolved))
            }
            _ => Err(Self::fat_has_no(resolved, "symbolic links")),
        }
    }

    /// Reads the attributes of an entry of a listed directory.
    pub fn entry_metadata(&self, listing: &Listing, entry: &ListedEntry) -> Result<Metadata, FilesError> {
        self.node_metadata(&listing.directory, &entry.node)
    }

    /// Reads the target of an entry of a listed directory that is a symbolic link.
    pub fn entry_link(&self, listing: &Listing, entry: &ListedEntry) -> Result<Vec<u8>, FilesError> {
        self.node_link(&listing.directory, &entry.node)
    }

    /// Bytes per block of the filesystem of a resolved path: the ext block or the FAT cluster.
    pub fn block_size(&self, resolved: &Resolved) -> u32 {
        match self.filesystem(resolved) {
            OpenFilesystem::Ext(ext) => ext.block_size(),
            OpenFilesystem::Fat(fat) => fat.cluster_len(),
        }
    }

    /// True when a resolved path lies on a FAT filesystem.
    pub fn is_fat(&self, resolved: &Resolved) -> bool {
        matches!(self.filesystem(resolved), OpenFilesystem::Fat(_))
    }

    /// Lists the directory at a resolved path.
    pub fn list(&self, directory: &Resolved) -> Result<Listing, FilesError> {
        let metadata = self.metadata(directory)?;
        if metadata.kind != FileKind::Directory {
            return Err(FilesError::NotADirectory(directory.device_path.clone()));
        }
        let mut entries: Vec<ListedEntry> = match (self.filesystem(directory), existing(directory)?) {
            (OpenFilesystem::Ext(ext), Node::Inode(ino)) => ext
                .read_dir(*ino)
                .map_err(Self::ext_error(directory))?
                .into_iter()
                .filter(|entry| entry.name != b"." && entry.name != b"..")
                .map(|entry| ListedEntry {
                    name: entry.name,
                    node: Node::Inode(entry.inode),
                    kind: entry.kind,
                })
                .collect(),
            (OpenFilesystem::Fat(fat), _) => fat
                .read_dir(&directory.inner)
                .map_err(Self::fat_error(directory))?
                .into_iter()
                .map(|entry| ListedEntry {
                    name: entry.name.into_bytes(),
                    kind: entry.metadata.kind,
                    node: Node::FatEntry(entry.metadata),
                })
                .collect(),
            (OpenFilesystem::Ext(_), Node::FatEntry(_)) => {
                return Err(FilesError::NotFound(directory.device_path.clone()));
            }
        };
        entries.sort_by(|first, second| first.name.cmp(&second.name));
        Ok(Listing { directory: directory.clone(), entries })
    }

    /// Resolves an entry of a listed directory without walking from the root again. An entry
    /// that is a mount point (`/data` on the root filesystem) resolves to the root of the
    /// partition mounted there.
    pub fn child(&mut self, listing: &Listing, entry: &ListedEntry) -> Result<Resolved, FilesError> {
        let directory = &listing.directory;
        let name = String::from_utf8_lossy(&entry.name);
        let device_path = if directory.device_path == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", directory.device_path)
        };
        let components: Vec<Vec<u8>> = device_path
            .split('/')
            .filter(|part| !part.is_empty())
            .map(|part| part.as_bytes().to_vec())
            .collect();
        let is_bare = matches!(self.layout, super::Layout::Bare(_));
        let (_, prefix) = mount_of(&components);
        if !is_bare && prefix == components.len() && directory.mount != mount_of(&components).0 {
            return self.resolve(&device_path, false, RootfsSlot::A);
        }
        let inner =
            if directory.inner == "/" { format!("/{name}") } else { format!("{}/{name}", directory.inner) };
        Ok(Resolved { inner, device_path, node: Some(entry.node.clone()), ..directory.clone() })
    }

    /// Copies the regular file at a resolved path to `output`, streaming it.
    pub fn copy_out(&self, resolved: &Resolved, output: &mut dyn Write) -> Result<u64, CopyOutError> {
        let metadata = self.metadata(resolved)?;
        match metadata.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FilesError::IsADirectory(resolved.device_path.clone()).into()),
            _ => return Err(FilesError::NotFound(resolved.device_path.clone()).into()),
        }
        let (ext, ino) = match (self.filesystem(resolved), existing(resolved)?) {
            (OpenFilesystem::Ext(ext), Node::Inode(ino)) => (ext, *ino),
            (OpenFilesystem::Fat(fat), _) => {
                let copied = fat
                    .copy_to(&resolved.inner, output, READ_CHUNK_LEN)
                    .map_err(Self::fat_error(resolved))?;
                return copied.map_err(CopyOutError::Output);
            }
            (OpenFilesystem::Ext(_), Node::FatEntry(_)) => {
                return Err(FilesError::NotFound(resolved.device_path.clone()).into());
            }
        };
        let mut buffer = vec![0u8; READ_CHUNK_LEN.min(metadata.size as usize).max(1)];
        let mut offset = 0u64;
        while offset < metadata.size {
            let read = ext.read_at(ino, offset, &mut buffer).map_err(Self::ext_error(resolved))?;
            if read == 0 {
                break;
            }
            output.write_all(&buffer[..read]).map_err(CopyOutError::Output)?;
            offset += read as u64;
        }
        Ok(offset)
    }

    /// Writes `data` as the regular file `path`, creating it or replacing its contents. A
    /// symbolic link at `path` is replaced by the file, as `mender-artifact cp` does.
    pub fn write_file(
        &mut self,
        path: &str,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<Vec<Resolved>, FilesError> {
        self.write_each_target(path, attrs, Contents::Bytes(data))
    }

    /// Writes the contents of the host file `source` as the regular file `path`, like
    /// [`ImageFiles::write_file`]. On ext, its whole blocks are copied from `source` only when
    /// the writes are applied, so `source` must not change until then; FAT gets the file read
    /// into memory.
    pub fn write_file_from(
        &mut self,
        path: &str,
        source: &Arc<File>,
        attrs: &NewAttrs,
    ) -> Result<Vec<Resolved>, FilesError> {
        self.write_each_target(path, attrs, Contents::HostFile(source))
    }

    /// Writes `contents` on every place `path` resolves to for a write, after removing a
    /// symbolic link or other non-regular file there.
    fn write_each_target(
        &mut self,
        path: &str,
        attrs: &NewAttrs,
        contents: Contents,
    ) -> Result<Vec<Resolved>, FilesError> {
        let targets = self.resolve_for_write(path, false)?;
        for target in &targets {
            self.check_replaceable(target)?;
            let kind = self.existing_kind(target)?;
            if kind == Some(FileKind::Directory) {
                return Err(FilesError::IsADirectory(target.device_path.clone()));
            }
            let ext = match self.filesystem_mut(target) {
                OpenFilesystem::Ext(ext) => ext,
                OpenFilesystem::Fat(fat) => {
                    let data = contents.bytes().map_err(|source| FilesError::HostFile {
                        path: target.device_path.clone(),
                        source,
                    })?;
                    fat.write_file(&target.inner, &data, attrs.time).map_err(Self::fat_error(target))?;
                    continue;
                }
            };
            if !matches!(kind, Some(FileKind::Regular) | None) {
                ext.remove_file(&target.inner, attrs.time).map_err(Self::ext_error(target))?;
            }
            match contents {
                Contents::Bytes(data) => ext.write_file(&target.inner, data, attrs),
                Contents::HostFile(source) => ext.write_file_from(&target.inner, Arc::clone(source), attrs),
            }
            .map_err(Self::ext_error(target))?;
        }
        Ok(targets)
    }

    /// Creates the directory `path`; with `parents`, also every missing directory above it,
    /// and an existing directory is no error.
    pub fn create_dir(
        &mut self,
        path: &str,
        attrs: &NewAttrs,
        parents: bool,
    ) -> Result<Vec<Resolved>, FilesError> {
        if parents {
            return self.create_dir_all(path, attrs);
        }
        let targets = self.resolve_for_write(path, false)?;
        for target in &targets {
            if target.node.is_some() {
                return Err(FilesError::AlreadyExists(target.device_path.clone()));
            }
            self.create_one_dir(target, attrs)?;
        }
        Ok(targets)
    }

    /// `mkdir -p`: creates each missing component in turn, so that the parents resolve through
    /// symbolic links and mount points the way the device sees them. As with `mkdir -p -m`,
    /// only the last directory gets `attrs.mode`; missing parents get 0755.
    fn create_dir_all(&mut self, path: &str, attrs: &NewAttrs) -> Result<Vec<Resolved>, FilesError> {
        let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        let parent_attrs = NewAttrs { mode: PARENT_DIR_MODE, ..*attrs };
        let mut prefix = String::new();
        let mut last = Vec::new();
        for (index, component) in components.iter().enumerate() {
            let attrs = if index + 1 == components.len() { attrs } else { &parent_attrs };
            prefix.push('/');
            prefix.push_str(component);
            if *component == "." || *component == ".." {
                continue;
            }
            let targets = self.resolve_for_write(&prefix, true)?;
            for target in &targets {
                match self.existing_kind(target)? {
                    Some(FileKind::Directory) => {}
                    Some(_) => return Err(FilesError::NotADirectory(target.device_path.clone())),
                    None => self.create_one_dir(target, attrs)?,
                }
            }
            last = targets;
        }
        Ok(last)
    }

    /// Creates the directory at a resolved path whose parent exists. FAT stores no mode, so
    /// `attrs.mode` applies to ext only.
    fn create_one_dir(&mut self, target: &Resolved, attrs: &NewAttrs) -> Result<(), FilesError> {
        match self.filesystem_mut(target) {
            OpenFilesystem::Ext(ext) => {
                ext.create_dir(&target.inner, attrs).map(drop).map_err(Self::ext_error(target))
            }
            OpenFilesystem::Fat(fat) => {
                fat.create_dir(&target.inner, attrs.time).map_err(Self::fat_error(target))
            }
        }
    }

    /// Removes the file or symbolic link `path`, or with `recursive` also a directory and
    /// everything below it. A symbolic link is removed itself, never followed.
    pub fn remove(&mut self, path: &str, recursive: bool, time: i64) -> Result<Vec<Resolved>, FilesError> {
        let targets = self.resolve_for_write(path, false)?;
        for target in &targets {
            self.check_replaceable(target)?;
            let kind = self
                .existing_kind(target)?
                .ok_or_else(|| FilesError::NotFound(target.device_path.clone()))?;
            if kind == FileKind::Directory && !recursive {
                return Err(FilesError::IsADirectoryNeedsRecursive(target.device_path.clone()));
            }
            match self.filesystem_mut(target) {
                OpenFilesystem::Ext(ext) => match kind {
                    FileKind::Directory => ext.remove_tree(&target.inner, time),
                    _ => ext.remove_file(&target.inner, time),
                }
                .map_err(Self::ext_error(target))?,
                OpenFilesystem::Fat(fat) => match kind {
                    FileKind::Directory => fat.remove_tree(&target.inner, time),
                    _ => fat.remove(&target.inner, time),
                }
                .map_err(Self::fat_error(target))?,
            }
        }
        Ok(targets)
    }

    /// Creates the symbolic link `path` to `target`; with `replace`, an existing file or link
    /// there is removed first, as `ln -sf` does.
    pub fn symlink(
        &mut self,
        path: &str,
        link_target: &[u8],
        attrs: &NewAttrs,
        replace: bool,
    ) -> Result<Vec<Resolved>, FilesError> {
        let targets = self.resolve_for_write(path, false)?;
        for target in &targets {
            self.check_replaceable(target)?;
            let kind = self.existing_kind(target)?;
            let OpenFilesystem::Ext(ext) = self.filesystem_mut(target) else {
                return Err(Self::fat_has_no(target, "symbolic links"));
            };
            match kind {
                None => {}
                Some(FileKind::Directory) => {
                    return Err(FilesError::AlreadyExists(target.device_path.clone()));
                }
                Some(_) if replace => {
                    ext.remove_file(&target.inner, attrs.time).map_err(Self::ext_error(target))?
                }
                Some(_) => return Err(FilesError::AlreadyExists(target.device_path.clone())),
            }
            ext.symlink(&target.inner, link_target, attrs).map_err(Self::ext_error(target))?;
        }
        Ok(targets)
    }

    /// Changes mode, owner or times of `path`; the last component is followed when it is a
    /// symbolic link and `follow_last` is true.
    pub fn set_attrs(
        &mut self,
        path: &str,
        attrs: &SetAttrs,
        follow_last: bool,
    ) -> Result<Vec<Resolved>, FilesError> {
        self.update_attrs(path, follow_last, false, &|_| *attrs)
    }

    /// Changes the attributes of `path`, and with `recursive` of everything below it, to what
    /// `update` makes of each inode's current attributes. The walk stays on the partition
    /// `path` is on and does not follow symbolic links below `path`.
    pub fn update_attrs(
        &mut self,
        path: &str,
        follow_last: bool,
        recursive: bool,
        update: &dyn Fn(&Metadata) -> SetAttrs,
    ) -> Result<Vec<Resolved>, FilesError> {
        let targets = self.resolve_for_write(path, follow_last)?;
        for target in &targets {
            let top = match existing(target)? {
                Node::Inode(ino) => *ino,
                Node::FatEntry(_) => return Err(Self::fat_has_no(target, "permission bits or owners")),
            };
            let OpenFilesystem::Ext(ext) = self.filesystem_mut(target) else {
                return Err(Self::fat_has_no(target, "permission bits or owners"));
            };
            let mut pending = vec![(target.inner.clone(), top)];
            let mut visited = 0usize;
            while let Some((inner, ino)) = pending.pop() {
                visited += 1;
                if visited > MAX_WALK_ENTRIES {
                    return Err(FilesError::TooManyEntries {
                        path: target.device_path.clone(),
                        limit: MAX_WALK_ENTRIES,
                    });
                }
                let metadata = ext.metadata(ino).map_err(Self::ext_error(target))?;
                if recursive && metadata.kind == FileKind::Directory {
                    for entry in ext.read_dir(ino).map_err(Self::ext_error(target))? {
                        if entry.name == b"." || entry.name == b".." {
                            continue;
                        }
                        let name = String::from_utf8_lossy(&entry.name);
                        let child = if inner == "/" { format!("/{name}") } else { format!("{inner}/{name}") };
                        pending.push((child, entry.inode));
                    }
                }
                ext.set_attrs(&inner, &update(&metadata)).map_err(Self::ext_error(target))?;
            }
        }
        Ok(targets)
    }

    /// Returns the kind of what is at a resolved path, `None` when nothing is there.
    fn existing_kind(&self, resolved: &Resolved) -> Result<Option<FileKind>, FilesError> {
        match &resolved.node {
            None => Ok(None),
            Some(node) => Ok(Some(self.node_metadata(resolved, node)?.kind)),
        }
    }

    /// Rejects an operation that would remove or replace the root of a partition.
    fn check_replaceable(&self, resolved: &Resolved) -> Result<(), FilesError> {
        if resolved.is_partition_root() {
            return Err(FilesError::PartitionRoot {
                path: resolved.device_path.clone(),
                mount: resolved.mount.name(),
            });
        }
        Ok(())
    }
}

/// Why copying a file out of the image failed: reading the image, or writing the output.
#[derive(Debug, thiserror::Error)]
pub enum CopyOutError {
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("writing the output failed: {0}")]
    Output(std::io::Error),
}
