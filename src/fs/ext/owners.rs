//! Owners of blocks: which structure a block belongs to, as far as one operation has read the
//! structures. Opening a filesystem checks that the group descriptors place every bitmap and inode
//! table where e2fsprogs' `ext2fs_check_desc` accepts them. A write operation adds the blocks of
//! the inodes it reads to that map, so that a block it is about to free or to allocate cannot
//! belong to someone else.
//!
//! A full scan of every inode would find every owner, but costs a read of every inode table.
//! The map covers what one operation can learn cheaply: all filesystem metadata, the journal,
//! the resize inode, the orphan file, the directories on the path and the entries of the
//! directory being changed.

use std::collections::BTreeMap;
use std::fmt;

use super::Ext;
use super::block_group::{
    BlockGroupIndex, GroupDescriptor, group_first_block, group_last_block, group_reserved_ranges,
};
use super::bytes::read_u32le;
use super::error::ExtError;
use super::features;
use super::inode::{Inode, InodeIndex, S_IFDIR, S_IFLNK, S_IFREG};
use super::superblock::Superblock;
use crate::image::volume::Volume;

/// Inode of the resize inode, which maps the reserved GDT blocks.
const RESIZE_INODE: InodeIndex = InodeIndex(7);
/// Index in `i_block` of the resize inode's double indirect block.
const RESIZE_DIND_POINTER: usize = 13;

/// The structure a block belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BlockOwner {
    /// Superblock copy, group descriptor blocks and reserved GDT blocks of a group.
    GroupReserved(BlockGroupIndex),
    BlockBitmap(BlockGroupIndex),
    InodeBitmap(BlockGroupIndex),
    InodeTable(BlockGroupIndex),
    Journal(InodeIndex),
    /// The resize inode's double indirect block. Its other blocks are reserved GDT blocks.
    ResizeInode,
    OrphanFile(InodeIndex),
    /// A data, extent tree or indirect block of an inode.
    Inode(InodeIndex),
    /// An extended attribute block, which several inodes may share.
    XattrBlock(Vec<InodeIndex>),
}

impl BlockOwner {
    /// True when `inode` alone owns the block, so that it may free it.
    fn is_only(&self, inode: InodeIndex) -> bool {
        match self {
            BlockOwner::Inode(owner) => *owner == inode,
            BlockOwner::XattrBlock(users) => users.iter().all(|user| *user == inode),
            _ => false,
        }
    }
}

impl fmt::Display for BlockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOwner::GroupReserved(group) => {
                write!(f, "the superblock, group descriptors and reserved GDT blocks of group {}", group.0)
            }
            BlockOwner::BlockBitmap(group) => write!(f, "the block bitmap of group {}", group.0),
            BlockOwner::InodeBitmap(group) => write!(f, "the inode bitmap of group {}", group.0),
            BlockOwner::InodeTable(group) => write!(f, "the inode table of group {}", group.0),
            BlockOwner::Journal(inode) => write!(f, "the journal (inode {inode})"),
            BlockOwner::ResizeInode => write!(f, "the resize inode ({RESIZE_INODE})"),
            BlockOwner::OrphanFile(inode) => write!(f, "the orphan file (inode {inode})"),
            BlockOwner::Inode(inode) => write!(f, "inode {inode}"),
            BlockOwner::XattrBlock(users) => {
                let first = users.first().map_or(0, |user| user.0);
                write!(f, "the extended attribute block of inode {first}")
            }
        }
    }
}

/// The first block of a range that already has an owner, and that owner.
#[derive(Debug)]
pub(crate) struct Conflict<'a> {
    pub block: u64,
    pub owner: &'a BlockOwner,
}

/// Disjoint block ranges and their owners.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnerMap {
    /// Ranges keyed by their first block: (end, owner), `end` exclusive.
    ranges: BTreeMap<u64, (u64, BlockOwner)>,
}

impl OwnerMap {
    /// Finds the lowest block of `start..end` that has an owner.
    fn first_overlap(&self, start: u64, end: u64) -> Option<Conflict<'_>> {
        if start >= end {
            return None;
        }
        if let Some((_, (range_end, owner))) = self.ranges.range(..=start).next_back()
            && *range_end > start
        {
            return Some(Conflict { block: start, owner });
        }
        self.ranges.range(start..end).next().map(|(&block, (_, owner))| Conflict { block, owner })
    }

    /// Records that `owner` claims `len` blocks from `start`. A block that already has an owner
    /// is corruption, except an extended attribute block that several inodes share.
    pub fn claim(&mut self, start: u64, len: u64, owner: BlockOwner) -> Result<(), ExtError> {
        let end = start.saturating_add(len);
        if len == 0 {
            return Ok(());
        }
        if let BlockOwner::XattrBlock(users) = &owner
            && let Some((range_end, BlockOwner::XattrBlock(existing))) = self.ranges.get_mut(&start)
            && *range_end == end
        {
            existing.extend(users.iter().copied());
            return Ok(());
        }
        if let Some(conflict) = self.first_overlap(start, end) {
            let detail = if *conflict.owner == owner {
                format!("claimed twice by {owner}")
            } else {
                format!("claimed by both {} and {owner}", conflict.owner)
            };
            return Err(ExtError::corrupt(format!("block {}", conflict.block), detail));
        }
        self.ranges.insert(start, (end, owner));
        Ok(())
    }

    /// Drops the ownership of `len` blocks from `start`, which `inode` frees. Fails when a block
    /// of the range belongs to someone else.
    pub fn release(&mut self, start: u64, len: u64, inode: InodeIndex) -> Result<(), ExtError> {
        let end = start.saturating_add(len);
        let mut touched = Vec::new();
        let mut cursor = start;
        while let Some(conflict) = self.first_overlap(cursor, end) {
            if !conflict.owner.is_only(inode) {
                return Err(ExtError::corrupt(
                    format!("block {}", conflict.block),
                    format!("inode {inode} claims a block that belongs to {}", conflict.owner),
                ));
            }
            let Some((&range_start, &(range_end, _))) = self.ranges.range(..=conflict.block).next_back()
            else {
                break;
            };
            touched.push(range_start);
            cursor = range_end;
        }
        for range_start in touched {
            let Some((range_end, owner)) = self.ranges.remove(&range_start) else { continue };
            if range_start < start {
                self.ranges.insert(range_start, (start, owner.clone()));
            }
            if range_end > end {
                self.ranges.insert(end, (range_end, owner));
            }
        }
        Ok(())
    }

    /// Fails when a block of `start..start + len`, which the block bitmap marks free, has an
    /// owner.
    pub fn check_unowned(&self, start: u64, len: u64) -> Result<(), ExtError> {
        match self.first_overlap(start, start.saturating_add(len)) {
            Some(conflict) => Err(ExtError::corrupt(
                format!("block {}", conflict.block),
                format!("marked free in the block bitmap but claimed by {}", conflict.owner),
            )),
            None => Ok(()),
        }
    }

    /// Builds the map of the filesystem's own metadata and checks the group descriptors as
    /// e2fsprogs' `ext2fs_check_desc` does. Every bitmap and inode table must lie inside the
    /// filesystem, inside its own group unless `flex_bg` is on, and clear of the superblock and
    /// descriptor copies, the reserved GDT blocks and every other bitmap and inode table.
    pub fn metadata(sb: &Superblock, groups: &[GroupDescriptor]) -> Result<Self, ExtError> {
        let mut map = OwnerMap::default();
        for index in 0..sb.group_count {
            let group = BlockGroupIndex(index);
            for (start, len) in group_reserved_ranges(sb, group)? {
                // Each group's reserved ranges lie inside the group, so they cannot overlap
                // another group's, and merging keeps a block listed twice by one group legal.
                map.claim_reserved(start, len, group);
            }
        }

        let flex_bg = sb.has_incompat(features::INCOMPAT_FLEX_BG);
        let table_blocks = u64::from(sb.inode_table_blocks());
        for (index, descriptor) in groups.iter().enumerate() {
            let group = BlockGroupIndex(index as u32);
            let (first, last) = if flex_bg {
                (u64::from(sb.first_data_block), sb.blocks_count - 1)
            } else {
                (group_first_block(sb, group), group_last_block(sb, group))
            };
            let places = [
                (descriptor.block_bitmap, 1, BlockOwner::BlockBitmap(group)),
                (descriptor.inode_bitmap, 1, BlockOwner::InodeBitmap(group)),
                (descriptor.inode_table, table_blocks, BlockOwner::InodeTable(group)),
            ];
            for (start, len, owner) in places {
                let corrupt = |detail: String| ExtError::corrupt(format!("group descriptor {index}"), detail);
                let inside = start >= first && start.checked_add(len - 1).is_some_and(|end| end <= last);
                if !inside {
                    let region = if flex_bg { "the filesystem" } else { "its group" };
                    return Err(corrupt(format!(
                        "{owner} at block {start} lies outside {region} (blocks {first}-{last})"
                    )));
                }
                if let Some(conflict) = map.first_overlap(start, start + len) {
                    return Err(corrupt(format!(
                        "{owner} at block {start} overlaps {} at block {}",
                        conflict.owner, conflict.block
                    )));
                }
                map.ranges.insert(start, (start + len, owner));
            }
        }
        Ok(map)
    }

    /// Records reserved blocks of `group`, merging with blocks the group already reserved.
    fn claim_reserved(&mut self, start: u64, len: u64, group: BlockGroupIndex) {
        let end = start.saturating_add(len);
        if self.first_overlap(start, end).is_none() {
            self.ranges.insert(start, (end, BlockOwner::GroupReserved(group)));
            return;
        }
        for block in start..end {
            if self.first_overlap(block, block + 1).is_none() {
                self.ranges.insert(block, (block + 1, BlockOwner::GroupReserved(group)));
            }
        }
    }
}

impl<V: Volume> Ext<V> {
    /// Builds the owner map of one write operation: the filesystem's metadata, the journal, the
    /// resize inode and the orphan file, the directories in `dirs` and the inodes in `inodes`.
    /// Any block two of them claim is corruption.
    pub(crate) fn known_owners(
        &self,
        dirs: &[InodeIndex],
        inodes: &[InodeIndex],
    ) -> Result<OwnerMap, ExtError> {
        let cached = self.cache.borrow().fixed_owners().cloned();
        let (mut map, mut seen) = match cached {
            Some(fixed) => fixed,
            None => {
                let fixed = self.fixed_owners()?;
                self.cache.borrow_mut().set_fixed_owners(fixed.clone());
                fixed
            }
        };
        for &inode in dirs.iter().chain(inodes) {
            if seen.contains(&inode) {
                continue;
            }
            seen.push(inode);
            self.claim_inode_blocks(&mut map, inode, BlockOwner::Inode(inode))?;
        }
        Ok(map)
    }

    /// Builds the owners that no write operation changes: the filesystem's metadata, the
    /// journal, the resize inode and the orphan file. Returns the map and the inodes it covers.
    fn fixed_owners(&self) -> Result<(OwnerMap, Vec<InodeIndex>), ExtError> {
        let mut map = OwnerMap::metadata(&self.sb, &self.groups)?;
        let mut seen = Vec::new();

        if self.sb.has_compat(features::COMPAT_HAS_JOURNAL) && self.sb.journal_inum != 0 {
            let journal = InodeIndex(self.sb.journal_inum);
            self.claim_inode_blocks(&mut map, journal, BlockOwner::Journal(journal))?;
            seen.push(journal);
        }
        if self.sb.has_compat(features::COMPAT_RESIZE_INODE) {
            self.claim_resize_inode(&mut map)?;
            seen.push(RESIZE_INODE);
        }
        if self.sb.has_compat(features::COMPAT_ORPHAN_FILE) && self.sb.orphan_file_inum != 0 {
            let orphan_file = InodeIndex(self.sb.orphan_file_inum);
            self.claim_inode_blocks(&mut map, orphan_file, BlockOwner::OrphanFile(orphan_file))?;
            seen.push(orphan_file);
        }
        Ok((map, seen))
    }

    /// Claims the data, map and extended attribute blocks of `ino` for `owner`. Devices, FIFOs
    /// and sockets own no data blocks because their `i_block` contains no block numbers. The
    /// journal and the orphan file always have a map, whatever their mode says.
    fn claim_inode_blocks(
        &self,
        map: &mut OwnerMap,
        ino: InodeIndex,
        owner: BlockOwner,
    ) -> Result<(), ExtError> {
        let inode = self.read_inode(ino)?;
        let special = matches!(owner, BlockOwner::Journal(_) | BlockOwner::OrphanFile(_));
        if special || matches!(inode.file_type(), S_IFREG | S_IFDIR | S_IFLNK) {
            for (start, len) in self.file_map(&inode)?.all_blocks() {
                map.claim(start, len, owner.clone())?;
            }
        }
        self.claim_xattr_block(map, &inode)
    }

    /// Claims the extended attribute block of `inode`, if it has one, after checking that it
    /// lies inside the filesystem.
    pub(crate) fn claim_xattr_block(&self, map: &mut OwnerMap, inode: &Inode) -> Result<(), ExtError> {
        let block = inode.file_acl(&self.sb);
        if block == 0 {
            return Ok(());
        }
        if block < u64::from(self.sb.first_data_block) || block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                format!("inode {}", inode.index),
                format!("extended attribute block {block} is outside the filesystem"),
            ));
        }
        map.claim(block, 1, BlockOwner::XattrBlock(vec![inode.index]))
    }

    /// Claims the resize inode's double indirect block. Its indirect blocks are the reserved
    /// GDT blocks of group 0, and its data blocks are their copies in the other groups. The
    /// metadata map already holds both, so the inode's map is not walked, which would read every
    /// reserved GDT block.
    fn claim_resize_inode(&self, map: &mut OwnerMap) -> Result<(), ExtError> {
        let inode = self.read_inode(RESIZE_INODE)?;
        let block = u64::from(read_u32le(inode.block_area(), RESIZE_DIND_POINTER * 4));
        if block == 0 {
            return Ok(());
        }
        if block < u64::from(self.sb.first_data_block) || block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                format!("inode {RESIZE_INODE}"),
                format!("double indirect block {block} is outside the filesystem"),
            ));
        }
        map.claim(block, 1, BlockOwner::ResizeInode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_splits_a_range() {
        let mut map = OwnerMap::default();
        map.claim(100, 10, BlockOwner::Inode(InodeIndex(12))).unwrap();
        map.release(103, 2, InodeIndex(12)).unwrap();
        assert!(map.check_unowned(103, 2).is_ok());
        assert!(map.check_unowned(102, 1).is_err());
        assert!(map.check_unowned(105, 1).is_err());
    }

    #[test]
    fn release_of_another_owners_block_fails() {
        let mut map = OwnerMap::default();
        map.claim(100, 1, BlockOwner::Inode(InodeIndex(12))).unwrap();
        map.claim(101, 1, BlockOwner::Inode(InodeIndex(14))).unwrap();
        let error = map.release(100, 2, InodeIndex(14)).unwrap_err();
        assert!(error.to_string().contains("block 100"), "{error}");
        assert!(map.check_unowned(101, 1).is_err(), "a failed release keeps every owner");
    }

    #[test]
    fn overlapping_claims_name_both_owners() {
        let mut map = OwnerMap::default();
        map.claim(100, 10, BlockOwner::Inode(InodeIndex(12))).unwrap();
        let error = map.claim(108, 4, BlockOwner::Journal(InodeIndex(8))).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("block 108"), "{message}");
        assert!(message.contains("inode 12"), "{message}");
        assert!(message.contains("the journal (inode 8)"), "{message}");
    }

    #[test]
    fn shared_xattr_block_is_not_a_conflict() {
        let mut map = OwnerMap::default();
        map.claim(50, 1, BlockOwner::XattrBlock(vec![InodeIndex(12)])).unwrap();
        map.claim(50, 1, BlockOwner::XattrBlock(vec![InodeIndex(13)])).unwrap();
        assert!(map.release(50, 1, InodeIndex(12)).is_err(), "inode 13 still uses the block");
        assert!(map.claim(50, 1, BlockOwner::Inode(InodeIndex(14))).is_err());
    }
}
