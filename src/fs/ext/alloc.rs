//! Allocation of blocks and inodes. One operation plans every allocation and release in memory
//! against copies of the bitmaps and group descriptors, so running out of space is found before
//! anything is written. [`AllocPlan::commit`] then writes the changed bitmaps, descriptors and
//! superblock counts.

use std::collections::{BTreeMap, BTreeSet};

use super::Ext;
use super::bitmap::{
    clear_bit, clear_runs, clear_runs_lazily, count_set, first_clear, set_bit, set_padding, set_range,
    test_bit,
};
use super::block_group::{
    BG_BLOCK_UNINIT, BG_INODE_UNINIT, BlockGroupIndex, GroupDescriptor, blocks_in_group, descriptor_location,
    group_first_block, group_of_block, group_reserved_ranges,
};
use super::cache::CachedBlock;
use super::error::ExtError;
use super::inode::InodeIndex;
use super::owners::OwnerMap;
use super::superblock::SUPERBLOCK_OFFSET;
use crate::image::volume::{Volume, VolumeMut};

/// Planned changes to the allocation state of the filesystem.
#[derive(Debug)]
pub(crate) struct AllocPlan {
    groups: Vec<GroupDescriptor>,
    block_bitmaps: BTreeMap<u32, Vec<u8>>,
    inode_bitmaps: BTreeMap<u32, Vec<u8>>,
    dirty_block_bitmaps: BTreeSet<u32>,
    dirty_inode_bitmaps: BTreeSet<u32>,
    dirty_groups: BTreeSet<u32>,
    /// Inode table byte ranges that move below a group's unused watermark and must be zeroed.
    inode_ranges_to_zero: Vec<(u64, usize)>,
    /// Owners of the blocks this operation has read. A block marked free must have none.
    owners: OwnerMap,
}

impl AllocPlan {
    /// Starts a plan from the filesystem's current state, with the known owners of blocks.
    pub fn new<V: Volume>(ext: &Ext<V>, owners: OwnerMap) -> Self {
        AllocPlan {
            groups: ext.groups.clone(),
            block_bitmaps: BTreeMap::new(),
            inode_bitmaps: BTreeMap::new(),
            dirty_block_bitmaps: BTreeSet::new(),
            dirty_inode_bitmaps: BTreeSet::new(),
            dirty_groups: BTreeSet::new(),
            inode_ranges_to_zero: Vec::new(),
            owners,
        }
    }

    /// Free blocks left in the plan.
    pub fn free_blocks(&self) -> u64 {
        self.groups.iter().map(|group| u64::from(group.free_blocks_count)).sum()
    }

    /// Free inodes left in the plan.
    pub fn free_inodes(&self) -> u64 {
        self.groups.iter().map(|group| u64::from(group.free_inodes_count)).sum()
    }

    fn descriptor(&mut self, group: u32) -> Result<&mut GroupDescriptor, ExtError> {
        self.groups.get_mut(group as usize).ok_or_else(|| {
            ExtError::corrupt(format!("block group {group}"), "group number past the last group")
        })
    }

    /// Loads the block bitmap of `group`, building it for a group whose bitmap is uninitialized.
    fn load_block_bitmap<V: Volume>(&mut self, ext: &Ext<V>, group: u32) -> Result<(), ExtError> {
        if self.block_bitmaps.contains_key(&group) {
            return Ok(());
        }
        let sb = &ext.sb;
        let index = BlockGroupIndex(group);
        let descriptor = self.descriptor(group)?.clone();
        let structure = format!("block bitmap of group {group}");
        let size = blocks_in_group(sb, index);
        let cached = ext.cache.borrow().block_bitmap(descriptor.block_bitmap, group).map(<[u8]>::to_vec);
        let bitmap = if descriptor.has_flag(sb, BG_BLOCK_UNINIT) {
            uninit_block_bitmap(ext, index, &descriptor)?
        } else if let Some(bitmap) = cached {
            bitmap
        } else {
            let bitmap = ext.read_block(descriptor.block_bitmap)?;
            let checksummed = bitmap.get(..(sb.blocks_per_group / 8) as usize).unwrap_or_default();
            if !descriptor.block_bitmap_checksum_matches(sb, checksummed) {
                return Err(ExtError::corrupt(structure, "checksum does not match contents"));
            }
            let checked = CachedBlock::BlockBitmap { group, bitmap: bitmap.clone() };
            ext.cache.borrow_mut().insert(descriptor.block_bitmap, checked);
            bitmap
        };
        let free = size - count_set(&bitmap, size);
        if free != descriptor.free_blocks_count {
            return Err(ExtError::corrupt(
                structure,
                format!(
                    "{free} blocks are free but the group descriptor counts {}",
                    descriptor.free_blocks_count
                ),
            ));
        }
        self.block_bitmaps.insert(group, bitmap);
        Ok(())
    }

    /// Loads the inode bitmap of `group`, building it for a group whose inodes are uninitialized.
    fn load_inode_bitmap<V: Volume>(&mut self, ext: &Ext<V>, group: u32) -> Result<(), ExtError> {
        if self.inode_bitmaps.contains_key(&group) {
            return Ok(());
        }
        let sb = &ext.sb;
        let descriptor = self.descriptor(group)?.clone();
        let structure = format!("inode bitmap of group {group}");
        let cached = ext.cache.borrow().inode_bitmap(descriptor.inode_bitmap, group).map(<[u8]>::to_vec);
        let bitmap = if descriptor.has_flag(sb, BG_INODE_UNINIT) {
            let mut bitmap = vec![0u8; sb.block_size as usize];
            set_padding(&mut bitmap, sb.inodes_per_group);
            bitmap
        } else if let Some(bitmap) = cached {
            bitmap
        } else {
            let bitmap = ext.read_block(descriptor.inode_bitmap)?;
            let checksummed = bitmap.get(..(sb.inodes_per_group / 8) as usize).unwrap_or_default();
            if !descriptor.inode_bitmap_checksum_matches(sb, checksummed) {
                return Err(ExtError::corrupt(structure, "checksum does not match contents"));
            }
            let checked = CachedBlock::InodeBitmap { group, bitmap: bitmap.clone() };
            ext.cache.borrow_mut().insert(descriptor.inode_bitmap, checked);
            bitmap
        };
        let free = sb.inodes_per_group - count_set(&bitmap, sb.inodes_per_group);
        if free != descriptor.free_inodes_count {
            return Err(ExtError::corrupt(
                structure,
                format!(
                    "{free} inodes are free but the group descriptor counts {}",
                    descriptor.free_inodes_count
                ),
            ));
        }
        self.inode_bitmaps.insert(group, bitmap);
        Ok(())
    }

    /// Marks a group's block bitmap as changed, which also initializes it on disk.
    fn touch_block_bitmap<V: Volume>(&mut self, ext: &Ext<V>, group: u32) -> Result<(), ExtError> {
        self.load_block_bitmap(ext, group)?;
        let descriptor = self.descriptor(group)?;
        descriptor.flags &= !BG_BLOCK_UNINIT;
        self.dirty_block_bitmaps.insert(group);
        self.dirty_groups.insert(group);
        Ok(())
    }

    /// Groups starting at `goal` and wrapping around: groups with initialized block bitmaps
    /// first, so that fresh groups are only opened when the others are full.
    fn group_order<V: Volume>(&self, ext: &Ext<V>, goal: BlockGroupIndex) -> Vec<u32> {
        let count = ext.sb.group_count;
        let start = if goal.0 < count { goal.0 } else { 0 };
        let rotated = (start..count).chain(0..start);
        let (mut ready, fresh): (Vec<u32>, Vec<u32>) = rotated.partition(|&group| {
            self.groups
                .get(group as usize)
                .is_some_and(|descriptor| !descriptor.has_flag(&ext.sb, BG_BLOCK_UNINIT))
        });
        ready.extend(fresh);
        ready
    }

    /// Allocates `count` blocks below block `limit`, near group `goal`: one contiguous run when
    /// a group has one, else the first free runs found. Returns (start, length) runs in order
    /// of allocation.
    ///
    /// NOTE: the blocks reserved for root (`s_r_blocks_count`) are handed out like any other,
    /// as they would be to a process running as root.
    pub fn allocate_blocks<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        goal: BlockGroupIndex,
        count: u64,
        limit: u64,
    ) -> Result<Vec<(u64, u64)>, ExtError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let free = self.free_blocks();
        if count > free {
            return Err(ExtError::NoSpace { what: "blocks", needed: count, free });
        }
        let order = self.group_order(ext, goal);

        if count <= u64::from(ext.sb.blocks_per_group) {
            for &group in &order {
                if u64::from(self.descriptor(group)?.free_blocks_count) < count {
                    continue;
                }
                if let Some(start) = self.first_free_run(ext, group, limit, count)? {
                    self.owners.check_unowned(start, count)?;
                    self.take_blocks(ext, group, start, count)?;
                    return Ok(vec![(start, count)]);
                }
            }
        }

        let mut allocated = Vec::new();
        let mut left = count;
        for &group in &order {
            if self.descriptor(group)?.free_blocks_count == 0 {
                continue;
            }
            for (start, len) in self.free_runs(ext, group, limit)? {
                let here = len.min(left);
                self.owners.check_unowned(start, here)?;
                self.take_blocks(ext, group, start, here)?;
                allocated.push((start, here));
                left -= here;
                if left == 0 {
                    return Ok(allocated);
                }
            }
        }
        Err(ExtError::NoSpace { what: "blocks", needed: count, free: count - left })
    }

    /// Free runs of `group` as absolute (start, length), cut off at block `limit`.
    fn free_runs<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        group: u32,
        limit: u64,
    ) -> Result<Vec<(u64, u64)>, ExtError> {
        self.load_block_bitmap(ext, group)?;
        let index = BlockGroupIndex(group);
        let first = group_first_block(&ext.sb, index);
        let bitmap = self.block_bitmaps.get(&group).map(Vec::as_slice).unwrap_or_default();
        let runs = clear_runs(bitmap, blocks_in_group(&ext.sb, index));
        Ok(runs
            .into_iter()
            .map(|(start, len)| (first + u64::from(start), u64::from(len)))
            .filter(|&(start, _)| start < limit)
            .map(|(start, len)| (start, len.min(limit - start)))
            .collect())
    }

    /// Start of the first free run of `group` below block `limit` that has `count` blocks.
    fn first_free_run<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        group: u32,
        limit: u64,
        count: u64,
    ) -> Result<Option<u64>, ExtError> {
        self.load_block_bitmap(ext, group)?;
        let index = BlockGroupIndex(group);
        let first = group_first_block(&ext.sb, index);
        let bitmap = self.block_bitmaps.get(&group).map(Vec::as_slice).unwrap_or_default();
        let found = clear_runs_lazily(bitmap, blocks_in_group(&ext.sb, index))
            .map(|(start, len)| (first + u64::from(start), u64::from(len)))
            .take_while(|&(start, _)| start < limit)
            .find(|&(start, len)| len.min(limit - start) >= count);
        Ok(found.map(|(start, _)| start))
    }

    fn take_blocks<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        group: u32,
        start: u64,
        len: u64,
    ) -> Result<(), ExtError> {
        self.touch_block_bitmap(ext, group)?;
        let first = group_first_block(&ext.sb, BlockGroupIndex(group));
        let bitmap = self.block_bitmaps.get_mut(&group).map(Vec::as_mut_slice).unwrap_or_default();
        set_range(bitmap, (start - first) as u32, len as u32);
        let descriptor = self.descriptor(group)?;
        descriptor.free_blocks_count =
            descriptor.free_blocks_count.checked_sub(len as u32).ok_or_else(|| {
                ExtError::corrupt(format!("group descriptor {group}"), "free block count underflows")
            })?;
        Ok(())
    }

    /// Releases the blocks of `ranges` (start, length) that `inode` owns. Every block must be
    /// marked in use and must belong to no other known owner.
    pub fn release_blocks<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        ranges: &[(u64, u64)],
        inode: InodeIndex,
    ) -> Result<(), ExtError> {
        for &(start, len) in ranges {
            self.owners.release(start, len, inode)?;
            for block in start..start.saturating_add(len) {
                let (group, bit) = group_of_block(&ext.sb, block);
                self.touch_block_bitmap(ext, group.0)?;
                let bitmap = self.block_bitmaps.get_mut(&group.0).map(Vec::as_mut_slice).unwrap_or_default();
                if !test_bit(bitmap, bit) {
                    return Err(ExtError::corrupt(
                        format!("block {block}"),
                        "a file claims a block marked free",
                    ));
                }
                clear_bit(bitmap, bit);
                let descriptor = self.descriptor(group.0)?;
                descriptor.free_blocks_count += 1;
            }
        }
        Ok(())
    }

    /// Allocates an inode, preferring group `goal`: the lowest free inode of the first group
    /// with one.
    pub fn allocate_inode<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        goal: BlockGroupIndex,
        is_dir: bool,
    ) -> Result<InodeIndex, ExtError> {
        let free = self.free_inodes();
        if free == 0 {
            return Err(ExtError::NoSpace { what: "inodes", needed: 1, free: 0 });
        }
        let sb = &ext.sb;
        let count = sb.group_count;
        let start = if goal.0 < count { goal.0 } else { 0 };
        for group in (start..count).chain(0..start) {
            if self.descriptor(group)?.free_inodes_count == 0 {
                continue;
            }
            self.load_inode_bitmap(ext, group)?;
            let first_allowed = if group == 0 { sb.first_ino - 1 } else { 0 };
            let bitmap = self.inode_bitmaps.get_mut(&group).map(Vec::as_mut_slice).unwrap_or_default();
            let Some(bit) = first_clear(bitmap, first_allowed, sb.inodes_per_group) else {
                continue;
            };
            set_bit(bitmap, bit);
            self.dirty_inode_bitmaps.insert(group);
            self.dirty_groups.insert(group);

            let inodes_per_group = sb.inodes_per_group;
            let inode_size = u64::from(sb.inode_size);
            let block_size = u64::from(sb.block_size);
            let group_desc_csum = sb.group_desc_csum();
            let descriptor = self.descriptor(group)?;
            descriptor.free_inodes_count -= 1;
            if is_dir {
                descriptor.used_dirs_count += 1;
            }
            if group_desc_csum {
                descriptor.flags &= !BG_INODE_UNINIT;
                let watermark = inodes_per_group - descriptor.itable_unused;
                if bit >= watermark {
                    if bit > watermark {
                        let offset = descriptor.inode_table * block_size + u64::from(watermark) * inode_size;
                        self.inode_ranges_to_zero
                            .push((offset, (u64::from(bit - watermark) * inode_size) as usize));
                    }
                    let descriptor = self.descriptor(group)?;
                    descriptor.itable_unused = inodes_per_group - bit - 1;
                }
                // The kernel initializes the block bitmap of a group as soon as it holds an inode.
                if self.descriptor(group)?.has_flag(sb, BG_BLOCK_UNINIT) {
                    self.touch_block_bitmap(ext, group)?;
                }
            }
            let number = u64::from(group) * u64::from(inodes_per_group) + u64::from(bit) + 1;
            return Ok(InodeIndex(number as u32));
        }
        Err(ExtError::NoSpace { what: "inodes", needed: 1, free })
    }

    /// Releases inode `inode`, which must be in use.
    pub fn release_inode<V: Volume>(
        &mut self,
        ext: &Ext<V>,
        inode: InodeIndex,
        is_dir: bool,
    ) -> Result<(), ExtError> {
        let per_group = ext.sb.inodes_per_group;
        let group = (inode.0 - 1) / per_group;
        let bit = (inode.0 - 1) % per_group;
        self.load_inode_bitmap(ext, group)?;
        let bitmap = self.inode_bitmaps.get_mut(&group).map(Vec::as_mut_slice).unwrap_or_default();
        if !test_bit(bitmap, bit) {
            return Err(ExtError::corrupt(format!("inode {inode}"), "the inode is in use but marked free"));
        }
        clear_bit(bitmap, bit);
        self.dirty_inode_bitmaps.insert(group);
        self.dirty_groups.insert(group);
        let descriptor = self.descriptor(group)?;
        descriptor.free_inodes_count += 1;
        if is_dir {
            descriptor.used_dirs_count = descriptor.used_dirs_count.saturating_sub(1);
        }
        Ok(())
    }

    /// Writes the changed bitmaps and group descriptors and the superblock's free counts. Only
    /// the primary superblock and descriptor table change, as with the kernel: e2fsck does not
    /// compare the backups' counts.
    pub fn commit<V: VolumeMut>(mut self, ext: &mut Ext<V>) -> Result<(), ExtError> {
        let block_size = u64::from(ext.sb.block_size);
        // Each written bitmap stays cached: it was built here, so it needs no checking when
        // the next operation loads it.
        for &group in &self.dirty_block_bitmaps {
            let Some(bitmap) = self.block_bitmaps.remove(&group) else { continue };
            let Some(descriptor) = self.groups.get_mut(group as usize) else { continue };
            let checksummed = bitmap.get(..(ext.sb.blocks_per_group / 8) as usize).unwrap_or_default();
            descriptor.set_bitmap_checksums(&ext.sb, Some(checksummed), None);
            ext.write_volume(descriptor.block_bitmap * block_size, &bitmap)?;
            ext.cache.get_mut().insert(descriptor.block_bitmap, CachedBlock::BlockBitmap { group, bitmap });
        }
        for &group in &self.dirty_inode_bitmaps {
            let Some(bitmap) = self.inode_bitmaps.remove(&group) else { continue };
            let Some(descriptor) = self.groups.get_mut(group as usize) else { continue };
            let checksummed = bitmap.get(..(ext.sb.inodes_per_group / 8) as usize).unwrap_or_default();
            descriptor.set_bitmap_checksums(&ext.sb, None, Some(checksummed));
            ext.write_volume(descriptor.inode_bitmap * block_size, &bitmap)?;
            ext.cache.get_mut().insert(descriptor.inode_bitmap, CachedBlock::InodeBitmap { group, bitmap });
        }
        for &(offset, len) in &self.inode_ranges_to_zero {
            ext.write_volume(offset, &vec![0u8; len])?;
        }
        for &group in &self.dirty_groups {
            let index = BlockGroupIndex(group);
            let (block, offset) = descriptor_location(&ext.sb, index);
            let Some(descriptor) = self.groups.get_mut(group as usize) else { continue };
            let bytes = descriptor.encode(&ext.sb, index);
            ext.write_volume(block * block_size + offset as u64, bytes)?;
        }

        let free_blocks = self.free_blocks();
        let free_inodes = u32::try_from(self.free_inodes()).unwrap_or(u32::MAX);
        let bytes = ext.sb.encode_free_counts(free_blocks, free_inodes).to_vec();
        ext.write_volume(SUPERBLOCK_OFFSET, &bytes)?;
        ext.groups = std::mem::take(&mut self.groups);
        Ok(())
    }
}

/// Builds the block bitmap the kernel builds for a group marked `BLOCK_UNINIT`. It marks the
/// superblock backup, the descriptor blocks (the whole table and the reserved GDT blocks, or
/// under `meta_bg` the group's one descriptor block) at the group's start, and
/// the group's own bitmaps and inode table when they lie inside it. The result must agree with
/// the descriptor's free count.
fn uninit_block_bitmap<V: Volume>(
    ext: &Ext<V>,
    group: BlockGroupIndex,
    descriptor: &GroupDescriptor,
) -> Result<Vec<u8>, ExtError> {
    let sb = &ext.sb;
    let mut bitmap = vec![0u8; sb.block_size as usize];
    let first = group_first_block(sb, group);
    let size = blocks_in_group(sb, group);

    for (start, len) in group_reserved_ranges(sb, group)? {
        for block in start..start + len {
            if block >= first && block < first + u64::from(size) {
                set_bit(&mut bitmap, (block - first) as u32);
            }
        }
    }
    let own = [
        (descriptor.block_bitmap, 1u64),
        (descriptor.inode_bitmap, 1),
        (descriptor.inode_table, u64::from(sb.inode_table_blocks())),
    ];
    for (start, len) in own {
        for block in start..start + len {
            if block >= first && block < first + u64::from(size) {
                set_bit(&mut bitmap, (block - first) as u32);
            }
        }
    }
    set_padding(&mut bitmap, size);

    let free = size - count_set(&bitmap, size);
    if free != descriptor.free_blocks_count {
        return Err(ExtError::corrupt(
            format!("group descriptor {}", group.0),
            format!(
                "uninitialized group would have {free} free blocks but the descriptor counts {}",
                descriptor.free_blocks_count
            ),
        ));
    }
    Ok(bitmap)
}
