//! Block groups: their geometry, and the group descriptors that locate each group's bitmaps and
//! inode table and count its free blocks and inodes.

use super::bytes::{join_u64, read_u16le, read_u32le, write_u16le};
use super::checksum::{crc16, crc32c};
use super::error::ExtError;
use super::features;
use super::superblock::Superblock;

/// Index of a block group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockGroupIndex(pub u32);

const BG_BLOCK_BITMAP_LO: usize = 0x0;
const BG_INODE_BITMAP_LO: usize = 0x4;
const BG_INODE_TABLE_LO: usize = 0x8;
const BG_FREE_BLOCKS_COUNT_LO: usize = 0xC;
const BG_FREE_INODES_COUNT_LO: usize = 0xE;
const BG_USED_DIRS_COUNT_LO: usize = 0x10;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_CSUM_LO: usize = 0x18;
const BG_INODE_BITMAP_CSUM_LO: usize = 0x1A;
const BG_ITABLE_UNUSED_LO: usize = 0x1C;
const BG_CHECKSUM: usize = 0x1E;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
const BG_FREE_BLOCKS_COUNT_HI: usize = 0x2C;
const BG_FREE_INODES_COUNT_HI: usize = 0x2E;
const BG_USED_DIRS_COUNT_HI: usize = 0x30;
const BG_ITABLE_UNUSED_HI: usize = 0x32;
const BG_BLOCK_BITMAP_CSUM_HI: usize = 0x38;
const BG_INODE_BITMAP_CSUM_HI: usize = 0x3A;
/// Size of a descriptor that has the high halves of its fields.
const DESC_SIZE_64BIT: usize = 64;

/// `bg_flags`: the inode bitmap and inode table are not initialized.
pub(crate) const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the block bitmap is not initialized.
pub(crate) const BG_BLOCK_UNINIT: u16 = 0x2;

/// One group descriptor, parsed, with its raw bytes kept for writing it back.
#[derive(Clone, Debug)]
pub(crate) struct GroupDescriptor {
    bytes: Vec<u8>,
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub used_dirs_count: u32,
    pub flags: u16,
    pub itable_unused: u32,
}

impl GroupDescriptor {
    /// Parses and validates the descriptor of `group` from its `desc_size` bytes.
    pub fn parse(sb: &Superblock, group: BlockGroupIndex, bytes: &[u8]) -> Result<Self, ExtError> {
        let structure = || format!("group descriptor {}", group.0);
        let corrupt = |detail: String| ExtError::corrupt(structure(), detail);
        let wide = bytes.len() >= DESC_SIZE_64BIT;
        let hi = |offset: usize, width16: bool| -> u32 {
            match (wide, width16) {
                (false, _) => 0,
                (true, true) => u32::from(read_u16le(bytes, offset)),
                (true, false) => read_u32le(bytes, offset),
            }
        };
        let lo16 = |offset: usize| u32::from(read_u16le(bytes, offset));

        let descriptor = GroupDescriptor {
            bytes: bytes.to_vec(),
            block_bitmap: join_u64(read_u32le(bytes, BG_BLOCK_BITMAP_LO), hi(BG_BLOCK_BITMAP_HI, false)),
            inode_bitmap: join_u64(read_u32le(bytes, BG_INODE_BITMAP_LO), hi(BG_INODE_BITMAP_HI, false)),
            inode_table: join_u64(read_u32le(bytes, BG_INODE_TABLE_LO), hi(BG_INODE_TABLE_HI, false)),
            free_blocks_count: lo16(BG_FREE_BLOCKS_COUNT_LO) | hi(BG_FREE_BLOCKS_COUNT_HI, true) << 16,
            free_inodes_count: lo16(BG_FREE_INODES_COUNT_LO) | hi(BG_FREE_INODES_COUNT_HI, true) << 16,
            used_dirs_count: lo16(BG_USED_DIRS_COUNT_LO) | hi(BG_USED_DIRS_COUNT_HI, true) << 16,
            flags: read_u16le(bytes, BG_FLAGS),
            itable_unused: lo16(BG_ITABLE_UNUSED_LO) | hi(BG_ITABLE_UNUSED_HI, true) << 16,
        };

        if sb.group_desc_csum() {
            let stored = read_u16le(bytes, BG_CHECKSUM);
            let computed = descriptor_checksum(sb, group, bytes);
            if stored != computed {
                return Err(corrupt(format!(
                    "checksum {stored:#06x} does not match contents ({computed:#06x})"
                )));
            }
        }

        let fs_end = sb.blocks_count;
        let first = u64::from(sb.first_data_block);
        let in_fs = |block: u64, count: u64| {
            block >= first && block.checked_add(count).is_some_and(|end| end <= fs_end)
        };
        if !in_fs(descriptor.block_bitmap, 1) {
            return Err(corrupt(format!(
                "block bitmap at block {} is outside the filesystem",
                descriptor.block_bitmap
            )));
        }
        if !in_fs(descriptor.inode_bitmap, 1) {
            return Err(corrupt(format!(
                "inode bitmap at block {} is outside the filesystem",
                descriptor.inode_bitmap
            )));
        }
        if !in_fs(descriptor.inode_table, u64::from(sb.inode_table_blocks())) {
            return Err(corrupt(format!(
                "inode table at block {} is outside the filesystem",
                descriptor.inode_table
            )));
        }
        if descriptor.free_blocks_count > blocks_in_group(sb, group) {
            return Err(corrupt(format!(
                "{} free blocks exceed the group's size",
                descriptor.free_blocks_count
            )));
        }
        if descriptor.free_inodes_count > sb.inodes_per_group
            || descriptor.used_dirs_count > sb.inodes_per_group
        {
            return Err(corrupt(format!(
                "{} free inodes or {} directories exceed {} inodes per group",
                descriptor.free_inodes_count, descriptor.used_dirs_count, sb.inodes_per_group
            )));
        }
        if sb.group_desc_csum() && descriptor.itable_unused > descriptor.free_inodes_count {
            return Err(corrupt(format!(
                "{} unused inode table entries exceed {} free inodes",
                descriptor.itable_unused, descriptor.free_inodes_count
            )));
        }
        Ok(descriptor)
    }

    /// True when `flag` is set and the filesystem has group descriptor checksums, without which
    /// the kernel ignores the uninit flags.
    pub fn has_flag(&self, sb: &Superblock, flag: u16) -> bool {
        sb.group_desc_csum() && self.flags & flag != 0
    }

    /// Stores the bitmap checksums of `metadata_csum`; `block_bitmap` and `inode_bitmap` are the
    /// checksummed parts of the bitmaps.
    pub fn set_bitmap_checksums(
        &mut self,
        sb: &Superblock,
        block_bitmap: Option<&[u8]>,
        inode_bitmap: Option<&[u8]>,
    ) {
        if !sb.metadata_csum() {
            return;
        }
        let wide = self.bytes.len() >= DESC_SIZE_64BIT;
        if let Some(bitmap) = block_bitmap {
            let checksum = crc32c(sb.csum_seed, bitmap);
            write_u16le(&mut self.bytes, BG_BLOCK_BITMAP_CSUM_LO, checksum as u16);
            if wide {
                write_u16le(&mut self.bytes, BG_BLOCK_BITMAP_CSUM_HI, (checksum >> 16) as u16);
            }
        }
        if let Some(bitmap) = inode_bitmap {
            let checksum = crc32c(sb.csum_seed, bitmap);
            write_u16le(&mut self.bytes, BG_INODE_BITMAP_CSUM_LO, checksum as u16);
            if wide {
                write_u16le(&mut self.bytes, BG_INODE_BITMAP_CSUM_HI, (checksum >> 16) as u16);
            }
        }
    }

    /// Checks the stored checksum of a block bitmap whose checksummed part is `bitmap`.
    pub fn block_bitmap_checksum_matches(&self, sb: &Superblock, bitmap: &[u8]) -> bool {
        self.bitmap_checksum_matches(sb, bitmap, BG_BLOCK_BITMAP_CSUM_LO, BG_BLOCK_BITMAP_CSUM_HI)
    }

    /// Checks the stored checksum of an inode bitmap whose checksummed part is `bitmap`.
    pub fn inode_bitmap_checksum_matches(&self, sb: &Superblock, bitmap: &[u8]) -> bool {
        self.bitmap_checksum_matches(sb, bitmap, BG_INODE_BITMAP_CSUM_LO, BG_INODE_BITMAP_CSUM_HI)
    }

    fn bitmap_checksum_matches(&self, sb: &Superblock, bitmap: &[u8], lo: usize, hi: usize) -> bool {
        if !sb.metadata_csum() {
            return true;
        }
        let computed = crc32c(sb.csum_seed, bitmap);
        let mut stored = u32::from(read_u16le(&self.bytes, lo));
        if self.bytes.len() >= DESC_SIZE_64BIT {
            stored |= u32::from(read_u16le(&self.bytes, hi)) << 16;
            stored == computed
        } else {
            stored == computed & 0xFFFF
        }
    }

    /// Stores the counts and flags in the raw bytes, updates the checksum and returns the bytes.
    pub fn encode(&mut self, sb: &Superblock, group: BlockGroupIndex) -> &[u8] {
        let wide = self.bytes.len() >= DESC_SIZE_64BIT;
        let bytes = &mut self.bytes;
        write_u16le(bytes, BG_FREE_BLOCKS_COUNT_LO, self.free_blocks_count as u16);
        write_u16le(bytes, BG_FREE_INODES_COUNT_LO, self.free_inodes_count as u16);
        write_u16le(bytes, BG_USED_DIRS_COUNT_LO, self.used_dirs_count as u16);
        write_u16le(bytes, BG_FLAGS, self.flags);
        write_u16le(bytes, BG_ITABLE_UNUSED_LO, self.itable_unused as u16);
        if wide {
            write_u16le(bytes, BG_FREE_BLOCKS_COUNT_HI, (self.free_blocks_count >> 16) as u16);
            write_u16le(bytes, BG_FREE_INODES_COUNT_HI, (self.free_inodes_count >> 16) as u16);
            write_u16le(bytes, BG_USED_DIRS_COUNT_HI, (self.used_dirs_count >> 16) as u16);
            write_u16le(bytes, BG_ITABLE_UNUSED_HI, (self.itable_unused >> 16) as u16);
        }
        if sb.group_desc_csum() {
            let checksum = descriptor_checksum(sb, group, bytes);
            write_u16le(bytes, BG_CHECKSUM, checksum);
        }
        &self.bytes
    }
}

/// Computes the checksum of a group descriptor: CRC32C under `metadata_csum`, CRC16 under
/// `uninit_bg`. Both skip the checksum field itself.
fn descriptor_checksum(sb: &Superblock, group: BlockGroupIndex, bytes: &[u8]) -> u16 {
    let group_le = group.0.to_le_bytes();
    let before = bytes.get(..BG_CHECKSUM).unwrap_or_default();
    let after = bytes.get(BG_CHECKSUM + 2..).unwrap_or_default();
    if sb.metadata_csum() {
        let crc = crc32c(sb.csum_seed, &group_le);
        let crc = crc32c(crc, before);
        let crc = crc32c(crc, &[0, 0]);
        (crc32c(crc, after) & 0xFFFF) as u16
    } else {
        let crc = crc16(!0, &sb.uuid);
        let crc = crc16(crc, &group_le);
        let crc = crc16(crc, before);
        crc16(crc, after)
    }
}

/// First block of `group`.
pub(crate) fn group_first_block(sb: &Superblock, group: BlockGroupIndex) -> u64 {
    u64::from(sb.first_data_block) + u64::from(group.0) * u64::from(sb.blocks_per_group)
}

/// Number of blocks in `group`; only the last group can be short.
pub(crate) fn blocks_in_group(sb: &Superblock, group: BlockGroupIndex) -> u32 {
    let first = group_first_block(sb, group);
    let left = sb.blocks_count.saturating_sub(first);
    left.min(u64::from(sb.blocks_per_group)) as u32
}

/// Group of `block`, and the block's index inside it.
pub(crate) fn group_of_block(sb: &Superblock, block: u64) -> (BlockGroupIndex, u32) {
    let relative = block.saturating_sub(u64::from(sb.first_data_block));
    let per_group = u64::from(sb.blocks_per_group);
    (BlockGroupIndex((relative / per_group) as u32), (relative % per_group) as u32)
}

/// True when `group` holds a backup of the superblock (and, without `meta_bg`, of the group
/// descriptor table).
pub(crate) fn group_has_superblock(sb: &Superblock, group: BlockGroupIndex) -> bool {
    let group = group.0;
    if group == 0 {
        return true;
    }
    if sb.has_compat(features::COMPAT_SPARSE_SUPER2) {
        return group == sb.backup_bgs[0] || group == sb.backup_bgs[1];
    }
    if group <= 1 || !sb.has_ro_compat(features::RO_COMPAT_SPARSE_SUPER) {
        return true;
    }
    if group.is_multiple_of(2) {
        return false;
    }
    [3u32, 5, 7].iter().any(|&base| is_power_of(group, base))
}

fn is_power_of(mut value: u32, base: u32) -> bool {
    while value > 1 && value.is_multiple_of(base) {
        value /= base;
    }
    value == 1
}

/// Number of blocks the group descriptor table takes.
pub(crate) fn descriptor_table_blocks(sb: &Superblock) -> u64 {
    let table_bytes = u64::from(sb.group_count) * u64::from(sb.desc_size);
    table_bytes.div_ceil(u64::from(sb.block_size))
}

/// Block that holds descriptor `group`, and the descriptor's byte offset inside that block.
pub(crate) fn descriptor_location(sb: &Superblock, group: BlockGroupIndex) -> (u64, usize) {
    let per_block = sb.block_size / u32::from(sb.desc_size);
    let table_block = group.0 / per_block;
    let offset = (group.0 % per_block) as usize * usize::from(sb.desc_size);
    let block = if sb.has_incompat(features::INCOMPAT_META_BG) && table_block >= sb.first_meta_bg {
        // Under meta_bg each run of `per_block` groups keeps its descriptor block in the first
        // group of the run, after that group's superblock backup.
        let meta_group = BlockGroupIndex(table_block * per_block);
        group_first_block(sb, meta_group) + u64::from(group_has_superblock(sb, meta_group))
    } else {
        // The table follows the block that holds the primary superblock (byte 1024), which is
        // block 1 for 1 KiB blocks even under bigalloc, where the first data block is 0.
        let superblock_block = 1024 / u64::from(sb.block_size);
        superblock_block + 1 + u64::from(table_block)
    };
    (block, offset)
}

/// Last block of `group`.
pub(crate) fn group_last_block(sb: &Superblock, group: BlockGroupIndex) -> u64 {
    group_first_block(sb, group) + u64::from(blocks_in_group(sb, group)).saturating_sub(1)
}

/// Blocks of `group` kept for the superblock, the group descriptors and the reserved GDT blocks,
/// as (start, length) ranges and as e2fsprogs reserves them. Without `meta_bg` a group with a
/// superblock copy keeps the whole descriptor table and the reserved GDT blocks after it. Under
/// `meta_bg` the groups past `s_first_meta_bg` keep one descriptor block in the first, second
/// and last group of each meta group. Ranges are cut at the end of the filesystem; a range that
/// runs into the next group is a corrupt superblock.
pub(crate) fn group_reserved_ranges(
    sb: &Superblock,
    group: BlockGroupIndex,
) -> Result<Vec<(u64, u64)>, ExtError> {
    let mut first = group_first_block(sb, group);
    if first == 0 && sb.block_size == 1024 {
        // bigalloc with 1 KiB blocks: the superblock is block 1 although the group starts at 0.
        first = 1;
    }
    let has_super = group_has_superblock(sb, group);
    let meta_bg = sb.has_incompat(features::INCOMPAT_META_BG);
    let per_block = sb.block_size / u32::from(sb.desc_size);

    let mut ranges = Vec::new();
    if group.0 == 0 && first == 1 && sb.first_data_block == 0 {
        ranges.push((0, 1));
    }
    if !meta_bg || group.0 / per_block < sb.first_meta_bg {
        if has_super {
            let table_blocks = if meta_bg {
                u64::from(sb.first_meta_bg)
            } else {
                descriptor_table_blocks(sb) + u64::from(sb.reserved_gdt_blocks)
            };
            ranges.push((first, 1 + table_blocks));
        }
    } else {
        if has_super {
            ranges.push((first, 1));
        }
        let position = group.0 % per_block;
        if position == 0 || position == 1 || position == per_block - 1 {
            ranges.push((first + u64::from(has_super), 1));
        }
    }

    let group_end = group_last_block(sb, group) + 1;
    let is_last = group.0 + 1 == sb.group_count;
    let mut clipped = Vec::with_capacity(ranges.len());
    for (start, len) in ranges {
        let end = start.saturating_add(len);
        if end > group_end && !is_last {
            return Err(ExtError::corrupt(
                "superblock",
                format!(
                    "the superblock copy, group descriptors and {} reserved GDT blocks of group {} \
                     run past the group's last block {}",
                    sb.reserved_gdt_blocks,
                    group.0,
                    group_end - 1
                ),
            ));
        }
        let end = end.min(sb.blocks_count);
        if start < end {
            clipped.push((start, end - start));
        }
    }
    Ok(clipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_three_five_seven() {
        let powers: Vec<u32> = (2..400)
            .filter(|&group| group % 2 == 1 && [3, 5, 7].iter().any(|&b| is_power_of(group, b)))
            .collect();
        assert_eq!(powers, [3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }
}
