//! What one open filesystem has already read and checked: parsed directory blocks, block and
//! inode bitmaps, and inodes. Writing many files in one session reads the same directory
//! blocks, bitmaps and inodes for every file. The cache spares each later operation the read,
//! the parse and the checksum.
//!
//! Every write of the filesystem goes through [`Ext::write_volume`] or
//! [`Ext::write_volume_owned`], which drop the cached blocks and inodes the write overlaps, so
//! the cache never returns bytes that differ from the volume. A block or inode enters the cache
//! only after every check that a fresh read makes has passed, or when this module writes a
//! bitmap or directory block that it built itself.

use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::Ext;
use super::dir_block::DirBlock;
use super::inode::{Inode, InodeIndex};
use super::owners::OwnerMap;
use crate::image::volume::{FileRange, VolumeMut};

/// Maximum number of cached blocks, at most 64 MiB at the largest block size of 64 KiB. A
/// full cache starts over empty.
const MAX_CACHED_BLOCKS: usize = 1024;

/// Maximum number of cached inodes, 4 MiB at the largest inode size of 1 KiB. A full inode
/// cache starts over empty.
const MAX_CACHED_INODES: usize = 4096;

/// A checked block and what it was checked as.
#[derive(Clone, Debug)]
pub(crate) enum CachedBlock {
    /// A directory leaf block of directory `dir` (with inode generation `generation`, which
    /// its checksum covers), parsed and with its checksum verified, or built by this module.
    Dir { dir: InodeIndex, generation: u32, block: Rc<DirBlock> },
    /// The block bitmap of `group`, with its checksum verified.
    BlockBitmap { group: u32, bitmap: Vec<u8> },
    /// The inode bitmap of `group`, with its checksum verified.
    InodeBitmap { group: u32, bitmap: Vec<u8> },
}

/// Checked blocks keyed by block number.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockCache {
    blocks: BTreeMap<u64, CachedBlock>,
    /// Inodes read and checked, keyed by their byte offset in the volume.
    inodes: BTreeMap<u64, Inode>,
    /// The owners of blocks that no write operation changes (metadata, journal, resize inode,
    /// orphan file) and the inodes among them. Writes never drop it: the group descriptors'
    /// locations stay put, those inodes are never written, and the allocator never hands out
    /// a block they own.
    fixed_owners: Option<(OwnerMap, Vec<InodeIndex>)>,
}

impl BlockCache {
    /// Returns the owners that no write changes, once built.
    pub fn fixed_owners(&self) -> Option<&(OwnerMap, Vec<InodeIndex>)> {
        self.fixed_owners.as_ref()
    }

    /// Keeps the owners that no write changes.
    pub fn set_fixed_owners(&mut self, owners: (OwnerMap, Vec<InodeIndex>)) {
        self.fixed_owners = Some(owners);
    }

    /// Returns the cached directory block at `physical` if it was checked as a block of `dir`
    /// with `generation`.
    pub fn dir_block(&self, physical: u64, dir: InodeIndex, generation: u32) -> Option<&Rc<DirBlock>> {
        match self.blocks.get(&physical) {
            Some(CachedBlock::Dir { dir: cached_dir, generation: cached_generation, block })
                if *cached_dir == dir && *cached_generation == generation =>
            {
                Some(block)
            }
            _ => None,
        }
    }

    /// Returns the cached block bitmap of `group` at block `physical`.
    pub fn block_bitmap(&self, physical: u64, group: u32) -> Option<&[u8]> {
        match self.blocks.get(&physical) {
            Some(CachedBlock::BlockBitmap { group: cached_group, bitmap }) if *cached_group == group => {
                Some(bitmap)
            }
            _ => None,
        }
    }

    /// Returns the cached inode bitmap of `group` at block `physical`.
    pub fn inode_bitmap(&self, physical: u64, group: u32) -> Option<&[u8]> {
        match self.blocks.get(&physical) {
            Some(CachedBlock::InodeBitmap { group: cached_group, bitmap }) if *cached_group == group => {
                Some(bitmap)
            }
            _ => None,
        }
    }

    /// Returns the cached inode stored at byte `offset`.
    pub fn inode(&self, offset: u64) -> Option<&Inode> {
        self.inodes.get(&offset)
    }

    /// Keeps `inode`, checked, as the inode stored at byte `offset`.
    pub fn insert_inode(&mut self, offset: u64, inode: Inode) {
        if self.inodes.len() >= MAX_CACHED_INODES && !self.inodes.contains_key(&offset) {
            self.inodes.clear();
        }
        self.inodes.insert(offset, inode);
    }

    /// Keeps `block`, checked, as the contents of block `physical`.
    pub fn insert(&mut self, physical: u64, block: CachedBlock) {
        if self.blocks.len() >= MAX_CACHED_BLOCKS && !self.blocks.contains_key(&physical) {
            self.blocks.clear();
        }
        self.blocks.insert(physical, block);
    }

    /// Drops every cached block and inode that the `len` bytes at byte `offset` overlap, for
    /// blocks of `block_size` and inodes of `inode_size` bytes.
    pub fn invalidate(&mut self, offset: u64, len: u64, block_size: u64, inode_size: u64) {
        if len == 0 {
            return;
        }
        let end = offset.saturating_add(len);
        let first = offset / block_size;
        let last = (end - 1) / block_size;
        let overlapped: Vec<u64> = self.blocks.range(first..=last).map(|(&block, _)| block).collect();
        for block in overlapped {
            self.blocks.remove(&block);
        }

        // An inode at `start` overlaps the write when it starts before `end` and ends after
        // `offset`.
        let earliest = offset.saturating_sub(inode_size.saturating_sub(1));
        let overlapped: Vec<u64> = self.inodes.range(earliest..end).map(|(&start, _)| start).collect();
        for start in overlapped {
            self.inodes.remove(&start);
        }
    }
}

impl<V: VolumeMut> Ext<V> {
    /// Writes `data` at byte `offset` of the volume, dropping the cached blocks and inodes it
    /// overlaps.
    pub(super) fn write_volume(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let (block_size, inode_size) = (u64::from(self.sb.block_size), u64::from(self.sb.inode_size));
        self.cache.get_mut().invalidate(offset, data.len() as u64, block_size, inode_size);
        self.volume.write_at(offset, data)
    }

    /// Writes the bytes of `range` at byte `offset` like [`Ext::write_volume`].
    pub(super) fn write_volume_file_range(&mut self, offset: u64, range: FileRange) -> io::Result<()> {
        let (block_size, inode_size) = (u64::from(self.sb.block_size), u64::from(self.sb.inode_size));
        self.cache.get_mut().invalidate(offset, range.len, block_size, inode_size);
        self.volume.write_file_range(offset, range)
    }

    /// Writes `data` at byte `offset` like [`Ext::write_volume`], handing the buffer over.
    pub(super) fn write_volume_owned(&mut self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let (block_size, inode_size) = (u64::from(self.sb.block_size), u64::from(self.sb.inode_size));
        self.cache.get_mut().invalidate(offset, data.len() as u64, block_size, inode_size);
        self.volume.write_owned(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(group: u32) -> CachedBlock {
        CachedBlock::BlockBitmap { group, bitmap: vec![group as u8; 16] }
    }

    #[test]
    fn writes_drop_the_blocks_they_overlap() {
        let mut cache = BlockCache::default();
        for block in [10, 11, 12, 20] {
            cache.insert(block, bitmap(block as u32));
        }

        cache.invalidate(11 * 1024 + 1000, 100, 1024, 256);

        assert!(cache.block_bitmap(10, 10).is_some());
        assert!(cache.block_bitmap(11, 11).is_none());
        assert!(cache.block_bitmap(12, 12).is_none());
        assert!(cache.block_bitmap(20, 20).is_some());
    }

    #[test]
    fn writes_drop_the_inodes_they_overlap() {
        let mut cache = BlockCache::default();
        for slot in 0..8u32 {
            let inode = Inode::zeroed_for_test(InodeIndex(slot + 1), 256);
            cache.insert_inode(u64::from(slot) * 256, inode);
        }

        cache.invalidate(3 * 256 + 10, 300, 4096, 256);

        let kept: Vec<u64> = (0..8).map(|slot| slot * 256).filter(|&at| cache.inode(at).is_some()).collect();
        assert_eq!(kept, [0, 256, 512, 5 * 256, 6 * 256, 7 * 256]);
    }

    #[test]
    fn lookups_check_what_the_block_was_checked_as() {
        let mut cache = BlockCache::default();
        cache.insert(5, bitmap(3));

        assert!(cache.block_bitmap(5, 3).is_some());
        assert!(cache.block_bitmap(5, 4).is_none(), "another group's bitmap");
        assert!(cache.inode_bitmap(5, 3).is_none(), "an inode bitmap");
        assert!(cache.dir_block(5, InodeIndex(2), 0).is_none(), "a directory block");
    }

    #[test]
    fn full_cache_starts_over() {
        let mut cache = BlockCache::default();
        for block in 0..MAX_CACHED_BLOCKS as u64 + 1 {
            cache.insert(block, bitmap(block as u32));
        }

        assert_eq!(cache.blocks.len(), 1);
        assert!(cache.block_bitmap(MAX_CACHED_BLOCKS as u64, MAX_CACHED_BLOCKS as u32).is_some());
    }
}
