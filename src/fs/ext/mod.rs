//! The ext2/3/4 filesystem, read and written in place through a [`Volume`].
//!
//! One file per on-disk structure: `superblock`, `block_group` (group descriptors), `inode`,
//! `extent` and `block_map` (the two ways a file maps its blocks), `dir_entry` and `dir_block`,
//! `htree` and `htree_write` (hashed directory indexes), `bitmap` and `alloc`, `checksum`,
//! `xattr`. [`Ext`] ties them together. The read operations live in this file and in `dir` and
//! `path`. The write operations live in `write` (create, write whole files, remove files),
//! `file_data` (write at an offset, truncate), `symlink`, `link`, `rename`, `remove`
//! (directories and trees), `tree` (`mkdir -p`) and `attrs`. Operations made of several steps
//! run in a `transaction`.
//!
//! A linear directory that grows past one block stays linear, even with `dir_index`: that is
//! valid, and only directories that are already indexed get new index entries.
//!
//! Writes go straight to the volume, bypassing the journal, so they are only allowed on a
//! filesystem whose journal is clean. Every write operation first plans all its changes,
//! finding missing space, unsupported features and corruption, and only then writes. Callers
//! wrap the volume in [`crate::image::volume::Staged`] so that an error in the middle of the
//! writes (an I/O error) still leaves the image untouched.

mod alloc;
mod attrs;
mod bitmap;
mod block_group;
mod block_map;
mod bytes;
mod cache;
mod checksum;
mod dir;
mod dir_block;
mod dir_entry;
mod error;
mod extent;
mod features;
mod file_data;
mod file_map;
mod htree;
mod htree_write;
mod inode;
mod link;
mod owners;
mod path;
mod remove;
mod rename;
mod superblock;
mod symlink;
#[cfg(test)]
mod tests;
mod transaction;
mod tree;
mod write;
mod xattr;

pub use attrs::SetAttrs;
pub use error::ExtError;
pub use inode::InodeIndex;
pub use write::NewAttrs;

use std::cell::RefCell;

use block_group::{BlockGroupIndex, GroupDescriptor, descriptor_location};
use cache::BlockCache;
use inode::{FLAG_INLINE_DATA, Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Timestamp};
use superblock::{SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};

use crate::image::volume::Volume;

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// Device, FIFO or socket: the file type bits of the mode (`mode & 0o170000`).
    Other(u16),
}

impl FileKind {
    fn from_mode(mode: u16) -> Self {
        match mode & S_IFMT {
            S_IFREG => FileKind::Regular,
            S_IFDIR => FileKind::Directory,
            S_IFLNK => FileKind::Symlink,
            other => FileKind::Other(other),
        }
    }
}

/// The attributes of an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    /// Timestamps in seconds since the epoch.
    pub atime: i64,
    pub ctime: i64,
    pub mtime: i64,
    /// Creation time, when the inode is large enough to store it.
    pub crtime: Option<i64>,
    /// Storage the inode takes, in filesystem blocks (data, map and extended attribute blocks).
    pub blocks: u64,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub inode: InodeIndex,
    pub kind: FileKind,
}

/// An ext2/3/4 filesystem on a volume.
#[derive(Debug)]
pub struct Ext<V> {
    volume: V,
    sb: Superblock,
    groups: Vec<GroupDescriptor>,
    /// Blocks read and checked so far, which writes through this value keep up to date.
    cache: RefCell<BlockCache>,
}

impl<V: Volume> Ext<V> {
    /// Opens the filesystem on `volume`: validates the superblock (magic, sizes, features,
    /// checksum) and every group descriptor (counts, checksums, and locations that stay clear
    /// of each other and of the superblock and descriptor copies).
    pub fn open(volume: V) -> Result<Self, ExtError> {
        let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
        if volume.len() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(ExtError::corrupt(
                "superblock",
                format!("the volume of {} bytes is too small for an ext filesystem", volume.len()),
            ));
        }
        volume.read_at(SUPERBLOCK_OFFSET, &mut bytes)?;
        let sb = Superblock::parse(&bytes, volume.len())?;

        let mut ext = Ext { volume, sb, groups: Vec::new(), cache: RefCell::default() };
        // A descriptor table too large for group 0 is corrupt: checking that before reading the
        // table keeps a hostile group count from making this loop read the whole volume.
        block_group::group_reserved_ranges(&ext.sb, BlockGroupIndex(0))?;
        let mut groups = Vec::with_capacity(ext.sb.group_count as usize);
        let mut cached_block: Option<(u64, Vec<u8>)> = None;
        for group in 0..ext.sb.group_count {
            let index = BlockGroupIndex(group);
            let (block, offset) = descriptor_location(&ext.sb, index);
            let table_block = match cached_block.take() {
                Some((cached, contents)) if cached == block => contents,
                _ => ext.read_block(block)?,
            };
            let desc_bytes =
                table_block.get(offset..offset + usize::from(ext.sb.desc_size)).unwrap_or_default();
            groups.push(GroupDescriptor::parse(&ext.sb, index, desc_bytes)?);
            cached_block = Some((block, table_block));
        }
        owners::OwnerMap::metadata(&ext.sb, &groups)?;
        ext.groups = groups;
        Ok(ext)
    }

    /// Returns the volume the filesystem lives on.
    pub fn volume(&self) -> &V {
        &self.volume
    }

    /// Gives back the volume, with every write made so far.
    pub fn into_volume(self) -> V {
        self.volume
    }

    /// Returns the volume label (`-L` of mkfs).
    pub fn label(&self) -> String {
        self.sb.label()
    }

    pub fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }

    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Size of the filesystem: block count times block size.
    pub fn size_bytes(&self) -> u64 {
        self.sb.blocks_count * u64::from(self.sb.block_size)
    }

    /// Free space by the group descriptors' counts, reserved blocks included.
    pub fn free_bytes(&self) -> u64 {
        let free_blocks: u64 = self.groups.iter().map(|group| u64::from(group.free_blocks_count)).sum();
        free_blocks * u64::from(self.sb.block_size)
    }

    /// Free inodes by the group descriptors' counts.
    pub fn free_inodes(&self) -> u64 {
        self.groups.iter().map(|group| u64::from(group.free_inodes_count)).sum()
    }

    /// Names of the feature flags, as e2fsprogs prints them (`has_journal`, `extent`, ...).
    pub fn features(&self) -> Vec<String> {
        self.sb.features.names()
    }

    /// Reads the attributes of inode `ino`.
    pub fn metadata(&self, ino: InodeIndex) -> Result<Metadata, ExtError> {
        let inode = self.read_inode(ino)?;
        Ok(Metadata {
            kind: FileKind::from_mode(inode.mode()),
            mode: inode.mode() & 0o7777,
            uid: inode.uid(),
            gid: inode.gid(),
            size: inode.size(),
            links: inode.links_count(),
            atime: inode.time(Timestamp::Access).unwrap_or(0),
            ctime: inode.time(Timestamp::Change).unwrap_or(0),
            mtime: inode.time(Timestamp::Modification).unwrap_or(0),
            crtime: inode.time(Timestamp::Creation),
            blocks: inode.blocks_in_fs_blocks(&self.sb),
        })
    }

    /// Reads the whole contents of file `ino`, failing with [`ExtError::FileTooLarge`] when it
    /// is larger than `max_len` bytes.
    pub fn read_file(&self, ino: InodeIndex, max_len: u64) -> Result<Vec<u8>, ExtError> {
        let inode = self.read_inode(ino)?;
        if inode.is_dir() {
            return Err(ExtError::IsADirectory(format!("inode {ino}")));
        }
        let size = inode.size();
        if size > max_len {
            return Err(ExtError::FileTooLarge { size, limit: max_len });
        }
        let len = usize::try_from(size).map_err(|_| ExtError::FileTooLarge { size, limit: max_len })?;
        let mut contents = vec![0u8; len];
        let read = self.read_inode_data(&inode, 0, &mut contents)?;
        contents.truncate(read);
        Ok(contents)
    }

    /// Reads from file `ino` at `offset` into `buf`; returns the number of bytes read, which is
    /// short only at the end of the file. Holes read as zeros.
    pub fn read_at(&self, ino: InodeIndex, offset: u64, buf: &mut [u8]) -> Result<usize, ExtError> {
        let inode = self.read_inode(ino)?;
        self.read_inode_data(&inode, offset, buf)
    }

    /// Reads the target of symbolic link `ino`, from `i_block` (fast symlink) or from its data
    /// block.
    pub fn read_link(&self, ino: InodeIndex) -> Result<Vec<u8>, ExtError> {
        let inode = self.read_inode(ino)?;
        if inode.file_type() != S_IFLNK {
            return Err(ExtError::corrupt(format!("inode {ino}"), "not a symbolic link"));
        }
        let size = inode.size();
        if size > u64::from(self.sb.block_size) {
            return Err(ExtError::corrupt(format!("inode {ino}"), format!("symbolic link of {size} bytes")));
        }
        if file_map::is_fast_symlink(self, &inode) {
            return Ok(inode.block_area().get(..size as usize).unwrap_or_default().to_vec());
        }
        let mut target = vec![0u8; size as usize];
        let read = self.read_inode_data(&inode, 0, &mut target)?;
        target.truncate(read);
        Ok(target)
    }

    /// Reads `buf.len()` bytes of an inode's data from `offset`, stopping at the end of the file.
    fn read_inode_data(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, ExtError> {
        let size = inode.size();
        if offset >= size {
            return Ok(0);
        }
        let len = (size - offset).min(buf.len() as u64) as usize;
        let buf = buf.get_mut(..len).unwrap_or_default();

        if inode.has_flag(FLAG_INLINE_DATA) {
            return self.read_inline_data(inode, offset, buf);
        }
        let map = self.file_map(inode)?;
        let block_size = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < len {
            let position = offset + done as u64;
            let logical = position / block_size;
            let within = position % block_size;
            let (span, source) = match map.find(logical) {
                Some(run) if !run.uninit => {
                    let blocks_left = run.logical + run.len - logical;
                    let physical = run.physical + (logical - run.logical);
                    (blocks_left * block_size - within, Some(physical * block_size + within))
                }
                Some(run) => ((run.logical + run.len - logical) * block_size - within, None),
                None => {
                    let next_index = map.runs.partition_point(|run| run.logical <= logical);
                    let next = map.runs.get(next_index).map(|run| run.logical);
                    let hole_end = next.map_or(u64::MAX, |next| next * block_size);
                    (hole_end - position, None)
                }
            };
            let chunk = span.min((len - done) as u64) as usize;
            let target = buf.get_mut(done..done + chunk).unwrap_or_default();
            match source {
                Some(at) => self.volume.read_at(at, target)?,
                None => target.fill(0),
            }
            done += chunk;
        }
        Ok(len)
    }

    /// Reads inline data kept in `i_block`. Data that continues in the `system.data` extended
    /// attribute (files over 60 bytes) is not supported.
    fn read_inline_data(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, ExtError> {
        let area = inode.block_area();
        let end = offset as usize + buf.len();
        match area.get(offset as usize..end) {
            Some(source) => {
                buf.copy_from_slice(source);
                Ok(buf.len())
            }
            None => Err(ExtError::unsupported(
                "inline_data",
                format!("inode {} keeps data in an extended attribute, which is not read yet", inode.index),
            )),
        }
    }

    /// Reads block `block` of the filesystem.
    fn read_block(&self, block: u64) -> Result<Vec<u8>, ExtError> {
        if block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                format!("block {block}"),
                format!("past the last block {}", self.sb.blocks_count - 1),
            ));
        }
        let mut contents = vec![0u8; self.sb.block_size as usize];
        self.volume.read_at(block * u64::from(self.sb.block_size), &mut contents)?;
        Ok(contents)
    }

    /// Byte offset of inode `ino` in the volume.
    fn inode_offset(&self, ino: InodeIndex) -> Result<u64, ExtError> {
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(ExtError::corrupt(
                format!("inode {ino}"),
                format!("inode number out of range 1..={}", self.sb.inodes_count),
            ));
        }
        let group = (ino.0 - 1) / self.sb.inodes_per_group;
        let index = (ino.0 - 1) % self.sb.inodes_per_group;
        let descriptor = self
            .groups
            .get(group as usize)
            .ok_or_else(|| ExtError::corrupt(format!("inode {ino}"), "group past the last group"))?;
        let table = descriptor.inode_table * u64::from(self.sb.block_size);
        Ok(table + u64::from(index) * u64::from(self.sb.inode_size))
    }

    /// Reads and checks inode `ino`.
    fn read_inode(&self, ino: InodeIndex) -> Result<Inode, ExtError> {
        let offset = self.inode_offset(ino)?;
        if let Some(inode) = self.cache.borrow().inode(offset) {
            return Ok(inode.clone());
        }
        let mut bytes = vec![0u8; usize::from(self.sb.inode_size)];
        self.volume.read_at(offset, &mut bytes)?;
        let inode = Inode::parse(&self.sb, ino, bytes)?;
        self.cache.borrow_mut().insert_inode(offset, inode.clone());
        Ok(inode)
    }
}
