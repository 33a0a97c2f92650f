//! The superblock: 1024 bytes at byte 1024 of the volume that describe the whole filesystem.

use super::bytes::{join_u64, read_u8, read_u16le, read_u32le, write_u32le};
use super::checksum::crc32c;
use super::error::ExtError;
use super::features::{self, FeatureSet};

/// Byte offset of the primary superblock in the volume.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock in bytes.
pub(crate) const SUPERBLOCK_SIZE: usize = 1024;

const S_INODES_COUNT: usize = 0x0;
const S_BLOCKS_COUNT_LO: usize = 0x4;
const S_FREE_BLOCKS_COUNT_LO: usize = 0xC;
const S_FREE_INODES_COUNT: usize = 0x10;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_LOG_CLUSTER_SIZE: usize = 0x1C;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_CLUSTERS_PER_GROUP: usize = 0x24;
const S_INODES_PER_GROUP: usize = 0x28;
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_FIRST_INO: usize = 0x54;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_UUID: usize = 0x68;
const S_VOLUME_NAME: usize = 0x78;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_JOURNAL_INUM: usize = 0xE0;
const S_LAST_ORPHAN: usize = 0xE8;
const S_HASH_SEED: usize = 0xEC;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_BACKUP_BGS: usize = 0x24C;
const S_FREE_BLOCKS_COUNT_HI: usize = 0x158;
const S_MIN_EXTRA_ISIZE: usize = 0x15C;
const S_WANT_EXTRA_ISIZE: usize = 0x15E;
const S_FLAGS: usize = 0x160;
const S_CHECKSUM_TYPE: usize = 0x175;
const S_CHECKSUM_SEED: usize = 0x270;
const S_ORPHAN_FILE_INUM: usize = 0x280;
const S_CHECKSUM: usize = 0x3FC;

const EXT4_MAGIC: u16 = 0xEF53;
/// `s_state` bit set while the filesystem is cleanly unmounted.
const STATE_VALID_FS: u16 = 0x1;
/// `s_state` bit set when the kernel found errors.
const STATE_ERROR_FS: u16 = 0x2;
/// `s_state` bit set while orphans are being processed.
const STATE_ORPHAN_FS: u16 = 0x4;
/// `s_flags`: directory hashes treat bytes as unsigned.
const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// `s_checksum_type` value for CRC32C, the only one defined.
const CHECKSUM_TYPE_CRC32C: u8 = 1;

/// Size of an inode in revision 0 filesystems, and of the fields every inode has.
pub(crate) const GOOD_OLD_INODE_SIZE: u16 = 128;
/// First non-reserved inode in revision 0 filesystems.
const GOOD_OLD_FIRST_INO: u32 = 11;
/// Largest block size ext4 defines (64 KiB), as a shift of 1024.
const MAX_LOG_BLOCK_SIZE: u32 = 6;

/// The parsed superblock, with its raw bytes kept for writing it back.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    bytes: Vec<u8>,
    pub features: FeatureSet,
    pub block_size: u32,
    pub blocks_count: u64,
    pub free_blocks_count: u64,
    pub inodes_count: u32,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub first_ino: u32,
    pub state: u16,
    pub uuid: [u8; 16],
    pub desc_size: u16,
    pub reserved_gdt_blocks: u16,
    /// Inode of the journal, 0 for none or an external journal.
    pub journal_inum: u32,
    /// Inode of the orphan file (`orphan_file` feature), 0 for none.
    pub orphan_file_inum: u32,
    pub last_orphan: u32,
    pub hash_seed: [u32; 4],
    pub unsigned_hash: bool,
    pub min_extra_isize: u16,
    pub want_extra_isize: u16,
    pub first_meta_bg: u32,
    /// The two groups holding superblock backups under `sparse_super2`.
    pub backup_bgs: [u32; 2],
    pub group_count: u32,
    /// Seed of every `metadata_csum` checksum except the superblock's own.
    pub csum_seed: u32,
}

impl Superblock {
    /// Parses and validates the superblock bytes of a volume of `volume_len` bytes.
    pub fn parse(bytes: &[u8], volume_len: u64) -> Result<Self, ExtError> {
        let corrupt = |detail: String| ExtError::corrupt("superblock", detail);
        if bytes.len() != SUPERBLOCK_SIZE {
            return Err(corrupt(format!("expected {SUPERBLOCK_SIZE} bytes, read {}", bytes.len())));
        }
        let magic = read_u16le(bytes, S_MAGIC);
        if magic != EXT4_MAGIC {
            return Err(corrupt(format!(
                "magic is {magic:#06x}, not {EXT4_MAGIC:#06x}: not an ext2/3/4 filesystem"
            )));
        }

        let features = FeatureSet {
            compat: read_u32le(bytes, S_FEATURE_COMPAT),
            incompat: read_u32le(bytes, S_FEATURE_INCOMPAT),
            ro_compat: read_u32le(bytes, S_FEATURE_RO_COMPAT),
        };
        features.check_readable()?;
        let has = |word: u32, mask: u32| word & mask != 0;
        let metadata_csum = has(features.ro_compat, features::RO_COMPAT_METADATA_CSUM);

        if metadata_csum {
            let checksum_type = read_u8(bytes, S_CHECKSUM_TYPE);
            if checksum_type != CHECKSUM_TYPE_CRC32C {
                return Err(corrupt(format!("checksum type {checksum_type} is not crc32c")));
            }
            let stored = read_u32le(bytes, S_CHECKSUM);
            let computed = crc32c(!0, bytes.get(..S_CHECKSUM).unwrap_or_default());
            if stored != computed {
                return Err(corrupt(format!(
                    "checksum {stored:#010x} does not match contents ({computed:#010x})"
                )));
            }
        }

        let log_block_size = read_u32le(bytes, S_LOG_BLOCK_SIZE);
        if log_block_size > MAX_LOG_BLOCK_SIZE {
            return Err(corrupt(format!(
                "block size shift {log_block_size} is larger than {MAX_LOG_BLOCK_SIZE}"
            )));
        }
        let block_size = 1024u32 << log_block_size;
        let log_cluster_size = read_u32le(bytes, S_LOG_CLUSTER_SIZE);

        let is_64bit = has(features.incompat, features::INCOMPAT_64BIT);
        let blocks_count_hi = if is_64bit { read_u32le(bytes, S_BLOCKS_COUNT_HI) } else { 0 };
        let blocks_count = join_u64(read_u32le(bytes, S_BLOCKS_COUNT_LO), blocks_count_hi);
        let free_blocks_hi = if is_64bit { read_u32le(bytes, S_FREE_BLOCKS_COUNT_HI) } else { 0 };
        let free_blocks_count = join_u64(read_u32le(bytes, S_FREE_BLOCKS_COUNT_LO), free_blocks_hi);
        let fs_bytes = blocks_count.checked_mul(u64::from(block_size));
        match fs_bytes {
            Some(fs_bytes) if fs_bytes <= volume_len => {}
            _ => {
                return Err(corrupt(format!(
                    "{blocks_count} blocks of {block_size} bytes do not fit in the {volume_len} byte volume"
                )));
            }
        }

        let first_data_block = read_u32le(bytes, S_FIRST_DATA_BLOCK);
        if first_data_block > 1 || (block_size > 1024 && first_data_block != 0) {
            return Err(corrupt(format!(
                "first data block {first_data_block} is invalid for {block_size} byte blocks"
            )));
        }
        if blocks_count <= u64::from(first_data_block) {
            return Err(corrupt(format!("block count {blocks_count} leaves no data blocks")));
        }

        let bits_per_block = block_size.saturating_mul(8);
        let bigalloc = has(features.ro_compat, features::RO_COMPAT_BIGALLOC);
        if log_cluster_size < log_block_size || log_cluster_size > log_block_size + 16 {
            return Err(corrupt(format!("cluster size shift {log_cluster_size} is invalid")));
        }
        let cluster_ratio = 1u32 << (log_cluster_size - log_block_size);
        let blocks_per_group = read_u32le(bytes, S_BLOCKS_PER_GROUP);
        let clusters_per_group = read_u32le(bytes, S_CLUSTERS_PER_GROUP);
        if clusters_per_group == 0
            || clusters_per_group > bits_per_block
            || u64::from(blocks_per_group) != u64::from(clusters_per_group) * u64::from(cluster_ratio)
        {
            return Err(corrupt(format!(
                "{blocks_per_group} blocks and {clusters_per_group} clusters per group do not fit one bitmap block"
            )));
        }
        if !bigalloc && cluster_ratio != 1 {
            return Err(corrupt("clusters are larger than blocks without bigalloc".to_string()));
        }
        let inodes_per_group = read_u32le(bytes, S_INODES_PER_GROUP);
        if inodes_per_group == 0 || inodes_per_group > bits_per_block {
            return Err(corrupt(format!("{inodes_per_group} inodes per group do not fit one bitmap block")));
        }

        let data_blocks = blocks_count - u64::from(first_data_block);
        let group_count = data_blocks.div_ceil(u64::from(blocks_per_group));
        let group_count = u32::try_from(group_count)
            .map_err(|_| corrupt(format!("{group_count} block groups are too many")))?;
        let inodes_count = read_u32le(bytes, S_INODES_COUNT);
        if u64::from(inodes_count) != u64::from(group_count) * u64::from(inodes_per_group) {
            return Err(corrupt(format!(
                "inode count {inodes_count} is not {group_count} groups of {inodes_per_group} inodes"
            )));
        }
        let free_inodes_count = read_u32le(bytes, S_FREE_INODES_COUNT);

        let rev_level = read_u32le(bytes, S_REV_LEVEL);
        let (inode_size, first_ino) = match rev_level {
            0 => (GOOD_OLD_INODE_SIZE, GOOD_OLD_FIRST_INO),
            1 => (read_u16le(bytes, S_INODE_SIZE), read_u32le(bytes, S_FIRST_INO)),
            other => return Err(corrupt(format!("revision level {other} is unknown"))),
        };
        if inode_size < GOOD_OLD_INODE_SIZE
            || !inode_size.is_power_of_two()
            || u32::from(inode_size) > block_size
        {
            return Err(corrupt(format!("inode size {inode_size} is invalid for {block_size} byte blocks")));
        }
        if first_ino < GOOD_OLD_FIRST_INO || first_ino > inodes_count {
            return Err(corrupt(format!("first non-reserved inode {first_ino} is out of range")));
        }
        let inodes_per_block = block_size / u32::from(inode_size);
        if !inodes_per_group.is_multiple_of(inodes_per_block) {
            return Err(corrupt(format!(
                "{inodes_per_group} inodes per group do not fill whole inode table blocks"
            )));
        }

        let desc_size = if is_64bit {
            let size = read_u16le(bytes, S_DESC_SIZE);
            if size < 64 || !size.is_power_of_two() || u32::from(size) > block_size {
                return Err(corrupt(format!("group descriptor size {size} is invalid")));
            }
            size
        } else {
            32
        };

        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(bytes.get(S_UUID..S_UUID + 16).unwrap_or(&[0; 16]));
        let mut hash_seed = [0u32; 4];
        for (index, word) in hash_seed.iter_mut().enumerate() {
            *word = read_u32le(bytes, S_HASH_SEED + 4 * index);
        }
        let csum_seed = if has(features.incompat, features::INCOMPAT_CSUM_SEED) {
            read_u32le(bytes, S_CHECKSUM_SEED)
        } else {
            crc32c(!0, &uuid)
        };

        let inode_extra_room = inode_size - GOOD_OLD_INODE_SIZE;
        let min_extra_isize = read_u16le(bytes, S_MIN_EXTRA_ISIZE);
        let want_extra_isize = read_u16le(bytes, S_WANT_EXTRA_ISIZE);
        if min_extra_isize > inode_extra_room || want_extra_isize > inode_extra_room {
            return Err(corrupt(format!(
                "extra inode sizes {min_extra_isize} and {want_extra_isize} do not fit {inode_size} byte inodes"
            )));
        }

        // Each reserved GDT block is an indirect block of the resize inode, so there can be at
        // most as many as one block holds pointers, as e2fsck requires.
        let reserved_gdt_blocks = read_u16le(bytes, S_RESERVED_GDT_BLOCKS);
        if u32::from(reserved_gdt_blocks) > block_size / 4 {
            return Err(corrupt(format!(
                "{reserved_gdt_blocks} reserved GDT blocks exceed {} for {block_size} byte blocks",
                block_size / 4
            )));
        }

        Ok(Superblock {
            bytes: bytes.to_vec(),
            features,
            block_size,
            blocks_count,
            free_blocks_count,
            inodes_count,
            free_inodes_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            first_ino,
            state: read_u16le(bytes, S_STATE),
            uuid,
            desc_size,
            reserved_gdt_blocks,
            journal_inum: read_u32le(bytes, S_JOURNAL_INUM),
            orphan_file_inum: read_u32le(bytes, S_ORPHAN_FILE_INUM),
            last_orphan: read_u32le(bytes, S_LAST_ORPHAN),
            hash_seed,
            unsigned_hash: read_u32le(bytes, S_FLAGS) & FLAGS_UNSIGNED_HASH != 0,
            min_extra_isize,
            want_extra_isize,
            first_meta_bg: read_u32le(bytes, S_FIRST_META_BG),
            backup_bgs: [read_u32le(bytes, S_BACKUP_BGS), read_u32le(bytes, S_BACKUP_BGS + 4)],
            group_count,
            csum_seed,
        })
    }

    /// Returns the volume label, up to the first NUL.
    pub fn label(&self) -> String {
        let name = self.bytes.get(S_VOLUME_NAME..S_VOLUME_NAME + 16).unwrap_or_default();
        let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
        String::from_utf8_lossy(name.get(..end).unwrap_or_default()).into_owned()
    }

    pub fn has_compat(&self, mask: u32) -> bool {
        self.features.compat & mask != 0
    }

    pub fn has_incompat(&self, mask: u32) -> bool {
        self.features.incompat & mask != 0
    }

    pub fn has_ro_compat(&self, mask: u32) -> bool {
        self.features.ro_compat & mask != 0
    }

    /// True when metadata blocks carry CRC32C checksums.
    pub fn metadata_csum(&self) -> bool {
        self.has_ro_compat(features::RO_COMPAT_METADATA_CSUM)
    }

    /// True when group descriptors carry checksums and groups may be uninitialized.
    pub fn group_desc_csum(&self) -> bool {
        self.metadata_csum() || self.has_ro_compat(features::RO_COMPAT_GDT_CSUM)
    }

    /// Inodes per inode table block.
    pub fn inodes_per_block(&self) -> u32 {
        self.block_size / u32::from(self.inode_size)
    }

    /// Blocks of one group's inode table.
    pub fn inode_table_blocks(&self) -> u32 {
        self.inodes_per_group / self.inodes_per_block()
    }

    /// Rejects a filesystem whose state forbids writing: errors recorded, or recovery pending.
    pub fn check_state_writable(&self) -> Result<(), ExtError> {
        if self.state & STATE_ERROR_FS != 0 {
            return Err(ExtError::HasErrors);
        }
        if self.has_incompat(features::INCOMPAT_RECOVER) {
            return Err(ExtError::NeedsRecovery {
                reason: "the journal holds transactions not yet replayed",
            });
        }
        if self.has_ro_compat(features::RO_COMPAT_ORPHAN_PRESENT)
            || self.last_orphan != 0
            || self.state & STATE_ORPHAN_FS != 0
        {
            return Err(ExtError::NeedsRecovery { reason: "orphan inodes wait to be released" });
        }
        if self.state & STATE_VALID_FS == 0 {
            return Err(ExtError::NeedsRecovery { reason: "the filesystem was not cleanly unmounted" });
        }
        Ok(())
    }

    /// Records new free counts and returns the bytes to write at [`SUPERBLOCK_OFFSET`].
    pub fn encode_free_counts(&mut self, free_blocks: u64, free_inodes: u32) -> &[u8] {
        self.free_blocks_count = free_blocks;
        self.free_inodes_count = free_inodes;
        write_u32le(&mut self.bytes, S_FREE_BLOCKS_COUNT_LO, free_blocks as u32);
        if self.has_incompat(features::INCOMPAT_64BIT) {
            write_u32le(&mut self.bytes, S_FREE_BLOCKS_COUNT_HI, (free_blocks >> 32) as u32);
        }
        write_u32le(&mut self.bytes, S_FREE_INODES_COUNT, free_inodes);
        if self.metadata_csum() {
            let checksum = crc32c(!0, self.bytes.get(..S_CHECKSUM).unwrap_or_default());
            write_u32le(&mut self.bytes, S_CHECKSUM, checksum);
        }
        &self.bytes
    }
}
