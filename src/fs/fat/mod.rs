//! FAT12/16/32 with long file names, read and written in place through a [`VolumeMut`] by the
//! `fatfs` crate. This module checks the boot sector and the allocation table before `fatfs`
//! sees them (`boot_sector.rs`, `table.rs`), walks paths itself, and presents entries with the
//! same [`Metadata`] as the ext module. FAT has no permission bits, owners, link counts or
//! symbolic links, so every file and directory reads as owned by root with mode 0755 (0555 when
//! its read-only attribute is set), as Linux shows a FAT filesystem mounted with umask 022.

mod boot_sector;
mod error;
mod table;
mod time;
mod tree;
mod volume_io;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;

use fatfs::{Dir, DirEntry, FileAttributes, FileSystem, FsOptions};

pub use boot_sector::FatType;
pub use error::FatError;

use crate::fs::ext::{FileKind, Metadata};
use crate::image::volume::VolumeMut;
use boot_sector::{BOOT_SECTOR_LEN, Geometry};
use error::from_fatfs;
use time::WriteClock;
use volume_io::{DOT_DOT_NAME, DOT_NAME, DotWrites, VolumeIo};

/// Largest file FAT can hold: its size field has 32 bits.
const MAX_FILE_LEN: u64 = u32::MAX as u64;

/// Maximum number of entries one directory walk visits. It bounds a walk of a damaged tree whose
/// directories link back to a parent; the specification allows 65,536 entries per directory.
const MAX_WALK_ENTRIES: usize = 1 << 20;

/// Maximum number of directories a path descends through. A damaged directory entry can link
/// back to a parent, and `fatfs` exposes no cluster numbers to detect that, so a walk that goes
/// deeper is taken for such a loop.
/// NOTE: FAT itself sets no depth limit; Windows' 260-character MAX_PATH keeps real trees far
/// shallower than this.
const MAX_DEPTH: usize = 128;

/// Mode that Linux shows for FAT files and directories with umask 022.
const FAT_MODE: u16 = 0o755;

/// Size of one directory entry, and the offsets of the two halves of its first cluster number.
const DIR_ENTRY_LEN: u32 = 32;
const FIRST_CLUSTER_HIGH_OFFSET: usize = 0x14;
const FIRST_CLUSTER_LOW_OFFSET: usize = 0x1A;

/// One entry of a FAT directory, `.` and `..` left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatEntry {
    /// The long name, or the short name when the entry has no long name.
    pub name: String,
    pub metadata: Metadata,
}

/// A FAT filesystem open on a volume, with the writes made so far in that volume.
pub struct Fat<V: VolumeMut> {
    fs: FileSystem<VolumeIo<V>>,
    volume: Rc<RefCell<V>>,
    geometry: Geometry,
    clock: &'static WriteClock,
    dot_writes: DotWrites,
}

impl<V: VolumeMut> Fat<V> {
    /// Checks the boot sector, the chains of the allocation table and the first cluster of
    /// every directory entry, then opens the filesystem.
    pub fn open(volume: V) -> Result<Self, FatError> {
        let mut sector = [0u8; BOOT_SECTOR_LEN];
        volume.read_at(0, &mut sector)?;
        let geometry = boot_sector::parse(&sector, volume.len())?;
        let fat_len = usize::try_from(geometry.fat_len).map_err(|_| FatError::Corrupt {
            structure: "boot sector",
            detail: format!("a FAT of {} bytes", geometry.fat_len),
        })?;
        let mut fat = vec![0u8; fat_len];
        volume.read_at(geometry.active_fat_offset, &mut fat)?;
        let chains = table::check_chains(&fat, &geometry)?;
        tree::check_tree(&volume, &geometry, &chains)?;
        drop((fat, chains));

        // NOTE: leaks one small clock per opened filesystem, because fatfs 0.3 takes its time
        // provider only as a `'static` reference.
        let clock: &'static WriteClock = Box::leak(Box::default());
        let volume = Rc::new(RefCell::new(volume));
        let options = FsOptions::new().update_accessed_date(false).time_provider(clock);
        let dot_writes = DotWrites::default();
        let io = VolumeIo::new(Rc::clone(&volume), Rc::clone(&dot_writes));
        let fs = FileSystem::new(io, options)
            .map_err(|error| FatError::Corrupt { structure: "boot sector", detail: error.to_string() })?;
        Ok(Fat { fs, volume, geometry, clock, dot_writes })
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_type(&self) -> FatType {
        self.geometry.fat_type
    }

    /// Bytes per cluster, the unit in which files take space.
    pub fn cluster_len(&self) -> u32 {
        self.geometry.cluster_len()
    }

    /// Unmounts the filesystem, which writes the FSInfo sector and clears the dirty flag, and
    /// returns the volume with every write in it.
    pub fn into_volume(self) -> Result<V, FatError> {
        let Fat { fs, volume, .. } = self;
        fs.unmount()?;
        let volume = Rc::try_unwrap(volume)
            .map_err(|_| std::io::Error::other("the FAT volume is still borrowed after unmounting"))?;
        Ok(volume.into_inner())
    }

    /// Returns the metadata of `path`, or `None` when its last component does not exist.
    pub fn lookup(&self, path: &str) -> Result<Option<Metadata>, FatError> {
        let Some((parent, name)) = split_last(path) else {
            return Ok(Some(root_metadata()));
        };
        let directory = self.directory(parent)?;
        Ok(find(&directory, name, path)?.map(|entry| self.metadata(&entry)))
    }

    /// Lists the directory `path`, `.` and `..` left out, in on-disk order.
    pub fn read_dir(&self, path: &str) -> Result<Vec<FatEntry>, FatError> {
        let directory = self.directory(path)?;
        let mut entries = Vec::new();
        for entry in directory.iter() {
            let entry = entry.map_err(|error| from_fatfs(error, path))?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            entries.push(FatEntry { name, metadata: self.metadata(&entry) });
            if entries.len() > MAX_WALK_ENTRIES {
                return Err(FatError::TooManyEntries { path: path.to_string(), limit: MAX_WALK_ENTRIES });
            }
        }
        Ok(entries)
    }

    /// Copies the file `path` to `output` and returns its size. Errors of `output` come back as
    /// the `Err` of the inner result, so that callers can tell them from errors of the image.
    pub fn copy_to(
        &self,
        path: &str,
        output: &mut dyn Write,
        chunk_len: usize,
    ) -> Result<Result<u64, std::io::Error>, FatError> {
        let (parent, name) = split_last(path).ok_or_else(|| FatError::IsADirectory(path.to_string()))?;
        let entry =
            find(&self.directory(parent)?, name, path)?.ok_or_else(|| FatError::NotFound(path.into()))?;
        if entry.is_dir() {
            return Err(FatError::IsADirectory(path.to_string()));
        }
        let size = entry.len();
        let mut file = entry.to_file();
        let mut buffer = vec![0u8; chunk_len.min(size as usize).max(1)];
        let mut copied = 0u64;
        while copied < size {
            let read = file.read(&mut buffer).map_err(|error| from_fatfs(error, path))?;
            if read == 0 {
                return Err(FatError::Corrupt {
                    structure: "directory entry",
                    detail: format!("{path}: the cluster chain ends at byte {copied} of {size}"),
                });
            }
            if let Err(error) = output.write_all(&buffer[..read]) {
                return Ok(Err(error));
            }
            copied += read as u64;
        }
        Ok(Ok(copied))
    }

    /// Writes `data` as the file `path`, creating it or replacing its contents, stamped with
    /// `time` (seconds since the epoch).
    pub fn write_file(&mut self, path: &str, data: &[u8], time: i64) -> Result<(), FatError> {
        if data.len() as u64 > MAX_FILE_LEN {
            return Err(FatError::TooLarge(path.to_string(), data.len() as u64));
        }
        let (parent, name) = split_last(path).ok_or_else(|| FatError::IsADirectory(path.to_string()))?;
        self.clock.set(time);
        let directory = self.directory(parent)?;
        let mut file = match find(&directory, name, path)? {
            Some(entry) if entry.is_dir() => return Err(FatError::IsADirectory(path.to_string())),
            Some(entry) => entry.to_file(),
            None => directory.create_file(name).map_err(|error| from_fatfs(error, path))?,
        };
        file.truncate().map_err(|error| from_fatfs(error, path))?;
        file.write_all(data).map_err(|error| from_fatfs(error, path))?;
        file.flush().map_err(|error| from_fatfs(error, path))
    }

    /// Creates the directory `path`, whose parent must exist, stamped with `time`.
    pub fn create_dir(&mut self, path: &str, time: i64) -> Result<(), FatError> {
        let (parent, name) = split_last(path).ok_or_else(|| FatError::IsADirectory(path.to_string()))?;
        self.clock.set(time);
        let directory = self.directory(parent)?;
        if find(&directory, name, path)?.is_some() {
            return Err(FatError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{path}: already exists"),
            )));
        }
        self.dot_writes.borrow_mut().clear();
        directory.create_dir(name).map_err(|error| from_fatfs(error, path))?;
        drop(directory);
        self.fix_dot_entries(path, parent.trim_matches('/').is_empty())
    }

    /// Rewrites the `.` and `..` entries of a directory `fatfs` 0.3.6 has just created. It puts a
    /// long-name entry before each of them, which the specification does not allow
    /// (`.` and `..` are the first two entries) and `fsck.vfat` reports. It also points `..`
    /// of a directory in the root at the root's cluster, where the specification wants 0.
    fn fix_dot_entries(&mut self, path: &str, parent_is_root: bool) -> Result<(), FatError> {
        let writes = std::mem::take(&mut *self.dot_writes.borrow_mut());
        let unexpected = || {
            FatError::Io(std::io::Error::other(format!(
                "{path}: fatfs wrote the `.` and `..` entries of the new directory where they were not expected"
            )))
        };
        let [(dot, dot_name), (dot_dot, dot_dot_name)] = writes[..] else { return Err(unexpected()) };
        let slot = u64::from(DIR_ENTRY_LEN);
        let first_slot = dot.checked_sub(slot).ok_or_else(unexpected)?;
        if dot_name != DOT_NAME || dot_dot_name != DOT_DOT_NAME || dot_dot != dot + 2 * slot {
            return Err(unexpected());
        }

        let mut volume = self.volume.borrow_mut();
        let mut dot_entry = [0u8; DIR_ENTRY_LEN as usize];
        let mut dot_dot_entry = [0u8; DIR_ENTRY_LEN as usize];
        volume.read_at(dot, &mut dot_entry)?;
        volume.read_at(dot_dot, &mut dot_dot_entry)?;
        if parent_is_root {
            dot_dot_entry[FIRST_CLUSTER_HIGH_OFFSET..][..2].fill(0);
            dot_dot_entry[FIRST_CLUSTER_LOW_OFFSET..][..2].fill(0);
        }
        volume.write_at(first_slot, &dot_entry)?;
        volume.write_at(first_slot + slot, &dot_dot_entry)?;
        volume.write_at(first_slot + 2 * slot, &[0u8; 2 * DIR_ENTRY_LEN as usize])?;
        Ok(())
    }

    /// Removes the file or empty directory `path`; the parent directory's times become `time`.
    pub fn remove(&mut self, path: &str, time: i64) -> Result<(), FatError> {
        let (parent, name) = split_last(path).ok_or_else(|| FatError::IsADirectory(path.to_string()))?;
        self.clock.set(time);
        let directory = self.directory(parent)?;
        let entry = find(&directory, name, path)?.ok_or_else(|| FatError::NotFound(path.to_string()))?;
        // fatfs removes by name, so pass the name as stored, which also matches case-insensitively.
        directory.remove(&entry.file_name()).map_err(|error| from_fatfs(error, path))
    }

    /// Removes the directory `path` and everything below it, deepest entries first, stamping
    /// the changed directories with `time`.
    pub fn remove_tree(&mut self, path: &str, time: i64) -> Result<(), FatError> {
        let mut pending = vec![(path.to_string(), false)];
        let mut visited = 0usize;
        while let Some((current, listed)) = pending.pop() {
            visited += 1;
            if visited > MAX_WALK_ENTRIES {
                return Err(FatError::TooManyEntries { path: path.to_string(), limit: MAX_WALK_ENTRIES });
            }
            let is_dir = self.lookup(&current)?.is_some_and(|metadata| metadata.kind == FileKind::Directory);
            if !is_dir || listed {
                self.remove(&current, time)?;
                continue;
            }
            pending.push((current.clone(), true));
            for entry in self.read_dir(&current)? {
                pending.push((format!("{}/{}", current.trim_end_matches('/'), entry.name), false));
            }
        }
        Ok(())
    }

    /// Opens the directory `path`, following each component from the root.
    fn directory(&self, path: &str) -> Result<Dir<'_, VolumeIo<V>>, FatError> {
        let mut directory = self.fs.root_dir();
        let mut walked = String::new();
        for (depth, component) in path.split('/').filter(|part| !part.is_empty()).enumerate() {
            if depth >= MAX_DEPTH {
                return Err(FatError::Corrupt {
                    structure: "directory tree",
                    detail: format!(
                        "{path} is more than {MAX_DEPTH} directories deep, as when a damaged entry links back to a parent"
                    ),
                });
            }
            walked.push('/');
            walked.push_str(component);
            let entry =
                find(&directory, component, &walked)?.ok_or_else(|| FatError::NotFound(walked.clone()))?;
            if !entry.is_dir() {
                return Err(FatError::NotADirectory(walked));
            }
            directory = entry.to_dir();
        }
        Ok(directory)
    }

    /// Converts what FAT stores for an entry to the ext module's metadata.
    fn metadata(&self, entry: &DirEntry<'_, VolumeIo<V>>) -> Metadata {
        let kind = if entry.is_dir() { FileKind::Directory } else { FileKind::Regular };
        let read_only = entry.attributes().contains(FileAttributes::READ_ONLY);
        let mtime = time::from_fat(entry.modified());
        let accessed = entry.accessed();
        let atime = time::from_fat(fatfs::DateTime {
            date: accessed,
            time: fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 },
        });
        Metadata {
            kind,
            mode: if read_only { FAT_MODE & !0o222 } else { FAT_MODE },
            uid: 0,
            gid: 0,
            size: entry.len(),
            links: 1,
            atime,
            ctime: mtime,
            mtime,
            crtime: Some(time::from_fat(entry.created())),
            blocks: entry.len().div_ceil(u64::from(self.cluster_len())),
        }
    }
}

/// Returns the metadata of the root directory, which has no directory entry and so no times.
fn root_metadata() -> Metadata {
    Metadata {
        kind: FileKind::Directory,
        mode: FAT_MODE,
        uid: 0,
        gid: 0,
        size: 0,
        links: 1,
        atime: 0,
        ctime: 0,
        mtime: 0,
        crtime: None,
        blocks: 0,
    }
}

/// Splits a path into its parent and last component, or `None` for the root.
fn split_last(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() { None } else { Some((parent, name)) }
}

/// Finds `name` in `directory` by its long or short name, ignoring case as FAT does.
fn find<'a, V: VolumeMut>(
    directory: &Dir<'a, VolumeIo<V>>,
    name: &str,
    path: &str,
) -> Result<Option<DirEntry<'a, VolumeIo<V>>>, FatError> {
    let expected = fold_case(name);
    let mut seen = 0usize;
    for entry in directory.iter() {
        let entry = entry.map_err(|error| from_fatfs(error, path))?;
        if fold_case(&entry.file_name()) == expected || fold_case(&entry.short_file_name()) == expected {
            return Ok(Some(entry));
        }
        seen += 1;
        if seen > MAX_WALK_ENTRIES {
            return Err(FatError::TooManyEntries { path: path.to_string(), limit: MAX_WALK_ENTRIES });
        }
    }
    Ok(None)
}

/// Upper-cases a name the way `fatfs` compares names.
fn fold_case(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}
