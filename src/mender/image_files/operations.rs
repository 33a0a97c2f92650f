//! The file operations on an image's namespace: reading, listing, and the writes, each of which
//! changes every partition its path resolves to (rootfs A and B for the root filesystem).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use super::{FilesError, ImageFiles, Resolved, RootfsSlot, StagedExt, existing};
use crate::fs::ext::{ExtError, FileKind, InodeIndex, Metadata, NewAttrs, SetAttrs};
use crate::mender::image_path::mount_of;

/// Mode of the parent directories that `mkdir -p` creates.
const PARENT_DIR_MODE: u16 = 0o755;

/// Maximum number of inodes one recursive attribute change visits. It bounds the walk of a
/// damaged filesystem whose directories form a cycle.
const MAX_WALK_ENTRIES: usize = 1 << 22;

/// Bytes copied per read when streaming a file out of the image.
const READ_CHUNK_LEN: usize = 1 << 20;

/// One entry of a listed directory.
#[derive(Debug, Clone)]
pub struct ListedEntry {
    pub name: Vec<u8>,
    pub inode: InodeIndex,
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

    /// Reads the attributes of an existing resolved path.
    pub fn metadata(&self, resolved: &Resolved) -> Result<Metadata, FilesError> {
        let ino = existing(resolved)?;
        self.ext(resolved).metadata(ino).map_err(Self::ext_error(resolved))
    }

    /// Reads the target of the symbolic link at a resolved path.
    pub fn read_link(&self, resolved: &Resolved) -> Result<Vec<u8>, FilesError> {
        let ino = existing(resolved)?;
        self.ext(resolved).read_link(ino).map_err(Self::ext_error(resolved))
    }

    /// Lists the directory at a resolved path.
    pub fn list(&self, directory: &Resolved) -> Result<Listing, FilesError> {
        let ino = existing(directory)?;
        let ext = self.ext(directory);
        let metadata = ext.metadata(ino).map_err(Self::ext_error(directory))?;
        if metadata.kind != FileKind::Directory {
            return Err(FilesError::NotADirectory(directory.device_path.clone()));
        }
        let mut entries: Vec<ListedEntry> = ext
            .read_dir(ino)
            .map_err(Self::ext_error(directory))?
            .into_iter()
            .filter(|entry| entry.name != b"." && entry.name != b"..")
            .map(|entry| ListedEntry { name: entry.name, inode: entry.inode, kind: entry.kind })
            .collect();
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
        Ok(Resolved { inner, device_path, inode: Some(entry.inode), ..directory.clone() })
    }

    /// Copies the regular file at a resolved path to `output`, streaming it.
    pub fn copy_out(&self, resolved: &Resolved, output: &mut dyn Write) -> Result<u64, CopyOutError> {
        let ino = existing(resolved)?;
        let ext = self.ext(resolved);
        let metadata = ext.metadata(ino).map_err(Self::ext_error(resolved))?;
        match metadata.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FilesError::IsADirectory(resolved.device_path.clone()).into()),
            _ => return Err(FilesError::NotFound(resolved.device_path.clone()).into()),
        }
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
        self.write_each_target(path, attrs.time, |ext, inner| ext.write_file(inner, data, attrs))
    }

    /// Writes the contents of the host file `source` as the regular file `path`, like
    /// [`ImageFiles::write_file`]. Its whole blocks are copied from `source` only when the
    /// writes are applied, so `source` must not change until then.
    pub fn write_file_from(
        &mut self,
        path: &str,
        source: &Arc<File>,
        attrs: &NewAttrs,
    ) -> Result<Vec<Resolved>, FilesError> {
        self.write_each_target(path, attrs.time, |ext, inner| {
            ext.write_file_from(inner, Arc::clone(source), attrs)
        })
    }

    /// Runs `write` on every place `path` resolves to for a write, after removing a symbolic
    /// link or other non-regular file there.
    fn write_each_target(
        &mut self,
        path: &str,
        time: i64,
        mut write: impl FnMut(&mut StagedExt<'a>, &str) -> Result<InodeIndex, ExtError>,
    ) -> Result<Vec<Resolved>, FilesError> {
        let targets = self.resolve_for_write(path, false)?;
        for target in &targets {
            self.check_replaceable(target)?;
            let kind = self.existing_kind(target)?;
            let ext = self.open(&target.partition, &target.device_path)?;
            match kind {
                Some(FileKind::Directory) => {
                    return Err(FilesError::IsADirectory(target.device_path.clone()));
                }
                Some(FileKind::Regular) | None => {}
                Some(_) => ext.remove_file(&target.inner, time).map_err(Self::ext_error(target))?,
            }
            write(ext, &target.inner).map_err(Self::ext_error(target))?;
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
            if target.inode.is_some() {
                return Err(FilesError::AlreadyExists(target.device_path.clone()));
            }
            let ext = self.open(&target.partition, &target.device_path)?;
            ext.create_dir(&target.inner, attrs).map_err(Self::ext_error(target))?;
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
                    None => {
                        let ext = self.open(&target.partition, &target.device_path)?;
                        ext.create_dir(&target.inner, attrs).map_err(Self::ext_error(target))?;
                    }
                }
            }
            last = targets;
        }
        Ok(last)
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
            let ext = self.open(&target.partition, &target.device_path)?;
            match kind {
                FileKind::Directory if !recursive => {
                    return Err(FilesError::IsADirectoryNeedsRecursive(target.device_path.clone()));
                }
                FileKind::Directory => ext.remove_tree(&target.inner, time),
                _ => ext.remove_file(&target.inner, time),
            }
            .map_err(Self::ext_error(target))?;
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
            let ext = self.open(&target.partition, &target.device_path)?;
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
            let top = existing(target)?;
            let ext = self.open(&target.partition, &target.device_path)?;
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

    /// Returns the kind of the inode at a resolved path, `None` when nothing is there.
    fn existing_kind(&self, resolved: &Resolved) -> Result<Option<FileKind>, FilesError> {
        match resolved.inode {
            None => Ok(None),
            Some(ino) => Ok(Some(self.ext(resolved).metadata(ino).map_err(Self::ext_error(resolved))?.kind)),
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
