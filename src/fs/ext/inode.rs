//! Inodes: the fixed 128-byte part every inode has, and the extra fields of larger inodes
//! (nanosecond timestamps, creation time, the high half of the checksum).

use super::bytes::{join_u64, read_u16le, read_u32le, write_u16le, write_u32le};
use super::checksum::crc32c;
use super::error::ExtError;
use super::features;
use super::superblock::{GOOD_OLD_INODE_SIZE, Superblock};

/// Number of an inode; the first is 1, and 2 is the root directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeIndex(pub(crate) u32);

impl InodeIndex {
    /// The root directory.
    pub const ROOT: InodeIndex = InodeIndex(2);

    /// Returns the inode number as stored in directory entries.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for InodeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

const I_MODE: usize = 0x0;
const I_UID: usize = 0x2;
const I_SIZE_LO: usize = 0x4;
const I_ATIME: usize = 0x8;
const I_CTIME: usize = 0xC;
const I_MTIME: usize = 0x10;
const I_DTIME: usize = 0x14;
const I_GID: usize = 0x18;
const I_LINKS_COUNT: usize = 0x1A;
const I_BLOCKS_LO: usize = 0x1C;
const I_FLAGS: usize = 0x20;
/// `i_block`: the extent tree root, the block map, a fast symlink's target or inline data.
pub(crate) const I_BLOCK: usize = 0x28;
/// Size of `i_block` in bytes.
pub(crate) const I_BLOCK_SIZE: usize = 60;
const I_GENERATION: usize = 0x64;
const I_FILE_ACL_LO: usize = 0x68;
const I_SIZE_HIGH: usize = 0x6C;
const I_BLOCKS_HIGH: usize = 0x74;
const I_FILE_ACL_HIGH: usize = 0x76;
const I_UID_HIGH: usize = 0x78;
const I_GID_HIGH: usize = 0x7A;
const I_CHECKSUM_LO: usize = 0x7C;
const I_EXTRA_ISIZE: usize = 0x80;
const I_CHECKSUM_HI: usize = 0x82;
const I_CTIME_EXTRA: usize = 0x84;
const I_MTIME_EXTRA: usize = 0x88;
const I_ATIME_EXTRA: usize = 0x8C;
const I_CRTIME: usize = 0x90;
const I_CRTIME_EXTRA: usize = 0x94;

/// Mask of the file type bits of `i_mode`.
pub(crate) const S_IFMT: u16 = 0xF000;
pub(crate) const S_IFREG: u16 = 0x8000;
pub(crate) const S_IFDIR: u16 = 0x4000;
pub(crate) const S_IFLNK: u16 = 0xA000;

/// `i_flags`: the directory has a hashed index.
pub(crate) const FLAG_INDEX: u32 = 0x1000;
/// `i_flags`: `i_blocks` counts filesystem blocks, not 512-byte sectors.
pub(crate) const FLAG_HUGE_FILE: u32 = 0x4_0000;
/// `i_flags`: `i_block` contains an extent tree.
pub(crate) const FLAG_EXTENTS: u32 = 0x8_0000;
/// `i_flags`: the file's data lives in the inode.
pub(crate) const FLAG_INLINE_DATA: u32 = 0x1000_0000;
/// `i_flags`: the contents are encrypted.
pub(crate) const FLAG_ENCRYPT: u32 = 0x800;
/// `i_flags`: the inode contains a large extended attribute value.
pub(crate) const FLAG_EA_INODE: u32 = 0x20_0000;
/// `i_flags`: directory names are compared without case.
pub(crate) const FLAG_CASEFOLD: u32 = 0x4000_0000;
/// `i_flags`: the file has fs-verity data.
pub(crate) const FLAG_VERITY: u32 = 0x10_0000;

/// Extra inode bytes up to the end of `i_checksum_hi`.
const EXTRA_CHECKSUM_HI_END: u16 = 4;
/// Largest extra timestamp field: bits 0-1 extend the seconds, bits 2-31 are nanoseconds.
const EPOCH_BITS: u32 = 2;
const EPOCH_MASK: u32 = (1 << EPOCH_BITS) - 1;
/// The extra inode size the kernel gives new inodes when `s_want_extra_isize` is 0.
const DEFAULT_EXTRA_ISIZE: u16 = 32;

/// A timestamp field of the inode.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Timestamp {
    Access,
    Change,
    Modification,
    Creation,
}

impl Timestamp {
    /// Offsets of the seconds and of the extra field.
    fn offsets(self) -> (usize, usize) {
        match self {
            Timestamp::Access => (I_ATIME, I_ATIME_EXTRA),
            Timestamp::Change => (I_CTIME, I_CTIME_EXTRA),
            Timestamp::Modification => (I_MTIME, I_MTIME_EXTRA),
            Timestamp::Creation => (I_CRTIME, I_CRTIME_EXTRA),
        }
    }
}

/// One inode's raw bytes (`s_inode_size` of them) with typed access to its fields.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub index: InodeIndex,
    bytes: Vec<u8>,
}

#[cfg(test)]
impl Inode {
    /// Creates an inode of `len` zero bytes, for tests that need an inode without a filesystem.
    pub fn zeroed_for_test(index: InodeIndex, len: usize) -> Self {
        Inode { index, bytes: vec![0; len] }
    }
}

impl Inode {
    /// Wraps the bytes of inode `index` read from the inode table, checking its checksum.
    pub fn parse(sb: &Superblock, index: InodeIndex, bytes: Vec<u8>) -> Result<Self, ExtError> {
        let inode = Inode { index, bytes };
        let structure = || format!("inode {index}");
        if inode.bytes.len() > usize::from(GOOD_OLD_INODE_SIZE) {
            let extra = inode.extra_isize();
            if usize::from(extra) > inode.bytes.len() - usize::from(GOOD_OLD_INODE_SIZE)
                || !extra.is_multiple_of(4)
            {
                return Err(ExtError::corrupt(structure(), format!("extra inode size {extra} is invalid")));
            }
        }
        let blocks = inode.blocks_in_fs_blocks(sb);
        if blocks > sb.blocks_count {
            return Err(ExtError::corrupt(
                structure(),
                format!("i_blocks counts {blocks} blocks, more than the filesystem's {}", sb.blocks_count),
            ));
        }
        if sb.metadata_csum() {
            let stored = inode.stored_checksum();
            let computed = inode.checksum(sb);
            let all_zero = inode.bytes.iter().take(usize::from(GOOD_OLD_INODE_SIZE)).all(|&byte| byte == 0);
            if stored != computed && !all_zero {
                return Err(ExtError::corrupt(
                    structure(),
                    format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
                ));
            }
        }
        Ok(inode)
    }

    /// Creates a zeroed inode of `s_inode_size` bytes with the extra size new inodes get.
    pub fn new_zeroed(sb: &Superblock, index: InodeIndex) -> Self {
        let mut inode = Inode { index, bytes: vec![0; usize::from(sb.inode_size)] };
        let room = sb.inode_size - GOOD_OLD_INODE_SIZE;
        if room > 0 {
            let wanted = if sb.want_extra_isize != 0 { sb.want_extra_isize } else { DEFAULT_EXTRA_ISIZE };
            let extra = wanted.max(sb.min_extra_isize).min(room);
            write_u16le(&mut inode.bytes, I_EXTRA_ISIZE, extra);
        }
        inode
    }

    /// Updates the checksum and returns the bytes to write to the inode table.
    pub fn encode(&mut self, sb: &Superblock) -> &[u8] {
        if sb.metadata_csum() {
            let checksum = self.checksum(sb);
            write_u16le(&mut self.bytes, I_CHECKSUM_LO, checksum as u16);
            if self.has_checksum_hi() {
                write_u16le(&mut self.bytes, I_CHECKSUM_HI, (checksum >> 16) as u16);
            }
        }
        &self.bytes
    }

    fn has_checksum_hi(&self) -> bool {
        self.bytes.len() > usize::from(GOOD_OLD_INODE_SIZE) && self.extra_isize() >= EXTRA_CHECKSUM_HI_END
    }

    fn stored_checksum(&self) -> u32 {
        let lo = u32::from(read_u16le(&self.bytes, I_CHECKSUM_LO));
        if self.has_checksum_hi() { lo | u32::from(read_u16le(&self.bytes, I_CHECKSUM_HI)) << 16 } else { lo }
    }

    /// Computes the inode checksum: CRC32C of the inode number, the generation and the inode
    /// with both checksum fields zeroed. Without `i_checksum_hi` only the low 16 bits are kept.
    fn checksum(&self, sb: &Superblock) -> u32 {
        let mut copy = self.bytes.clone();
        write_u16le(&mut copy, I_CHECKSUM_LO, 0);
        if self.has_checksum_hi() {
            write_u16le(&mut copy, I_CHECKSUM_HI, 0);
        }
        let crc = crc32c(sb.csum_seed, &self.index.0.to_le_bytes());
        let crc = crc32c(crc, &self.generation().to_le_bytes());
        let crc = crc32c(crc, &copy);
        if self.has_checksum_hi() { crc } else { crc & 0xFFFF }
    }

    pub fn mode(&self) -> u16 {
        read_u16le(&self.bytes, I_MODE)
    }

    pub fn set_mode(&mut self, mode: u16) {
        write_u16le(&mut self.bytes, I_MODE, mode);
    }

    pub fn file_type(&self) -> u16 {
        self.mode() & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub fn uid(&self) -> u32 {
        u32::from(read_u16le(&self.bytes, I_UID)) | u32::from(read_u16le(&self.bytes, I_UID_HIGH)) << 16
    }

    pub fn gid(&self) -> u32 {
        u32::from(read_u16le(&self.bytes, I_GID)) | u32::from(read_u16le(&self.bytes, I_GID_HIGH)) << 16
    }

    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        write_u16le(&mut self.bytes, I_UID, uid as u16);
        write_u16le(&mut self.bytes, I_UID_HIGH, (uid >> 16) as u16);
        write_u16le(&mut self.bytes, I_GID, gid as u16);
        write_u16le(&mut self.bytes, I_GID_HIGH, (gid >> 16) as u16);
    }

    /// File size in bytes; ext4 keeps the high half for every file type.
    pub fn size(&self) -> u64 {
        join_u64(read_u32le(&self.bytes, I_SIZE_LO), read_u32le(&self.bytes, I_SIZE_HIGH))
    }

    pub fn set_size(&mut self, size: u64) {
        write_u32le(&mut self.bytes, I_SIZE_LO, size as u32);
        write_u32le(&mut self.bytes, I_SIZE_HIGH, (size >> 32) as u32);
    }

    pub fn links_count(&self) -> u16 {
        read_u16le(&self.bytes, I_LINKS_COUNT)
    }

    pub fn set_links_count(&mut self, links: u16) {
        write_u16le(&mut self.bytes, I_LINKS_COUNT, links);
    }

    pub fn flags(&self) -> u32 {
        read_u32le(&self.bytes, I_FLAGS)
    }

    pub fn set_flags(&mut self, flags: u32) {
        write_u32le(&mut self.bytes, I_FLAGS, flags);
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    pub fn generation(&self) -> u32 {
        read_u32le(&self.bytes, I_GENERATION)
    }

    pub fn extra_isize(&self) -> u16 {
        if self.bytes.len() > usize::from(GOOD_OLD_INODE_SIZE) {
            read_u16le(&self.bytes, I_EXTRA_ISIZE)
        } else {
            0
        }
    }

    /// Block of the extended attribute block, or 0.
    pub fn file_acl(&self, sb: &Superblock) -> u64 {
        let hi = if sb.has_incompat(features::INCOMPAT_64BIT) {
            u32::from(read_u16le(&self.bytes, I_FILE_ACL_HIGH))
        } else {
            0
        };
        join_u64(read_u32le(&self.bytes, I_FILE_ACL_LO), hi)
    }

    pub fn set_file_acl(&mut self, block: u64) {
        write_u32le(&mut self.bytes, I_FILE_ACL_LO, block as u32);
        write_u16le(&mut self.bytes, I_FILE_ACL_HIGH, (block >> 32) as u16);
    }

    /// Storage in filesystem blocks, converted from `i_blocks` and its units.
    pub fn blocks_in_fs_blocks(&self, sb: &Superblock) -> u64 {
        let lo = u64::from(read_u32le(&self.bytes, I_BLOCKS_LO));
        let huge = sb.has_ro_compat(features::RO_COMPAT_HUGE_FILE);
        let raw = if huge { lo | u64::from(read_u16le(&self.bytes, I_BLOCKS_HIGH)) << 32 } else { lo };
        if huge && self.has_flag(FLAG_HUGE_FILE) { raw } else { raw / u64::from(sb.block_size / 512) }
    }

    /// Stores the storage of `fs_blocks` filesystem blocks in `i_blocks`, in 512-byte units.
    pub fn set_blocks(&mut self, sb: &Superblock, fs_blocks: u64) -> Result<(), ExtError> {
        let sectors = fs_blocks.checked_mul(u64::from(sb.block_size / 512));
        let limit = if sb.has_ro_compat(features::RO_COMPAT_HUGE_FILE) { 1u64 << 48 } else { 1u64 << 32 };
        let sectors = match sectors {
            Some(sectors) if sectors < limit => sectors,
            _ => {
                let size = fs_blocks.saturating_mul(u64::from(sb.block_size));
                return Err(ExtError::FileTooLarge { size, limit: limit.saturating_mul(512) });
            }
        };
        write_u32le(&mut self.bytes, I_BLOCKS_LO, sectors as u32);
        if sb.has_ro_compat(features::RO_COMPAT_HUGE_FILE) {
            write_u16le(&mut self.bytes, I_BLOCKS_HIGH, (sectors >> 32) as u16);
        }
        self.set_flags(self.flags() & !FLAG_HUGE_FILE);
        Ok(())
    }

    /// Returns the 60 bytes of `i_block`.
    pub fn block_area(&self) -> &[u8] {
        self.bytes.get(I_BLOCK..I_BLOCK + I_BLOCK_SIZE).unwrap_or_default()
    }

    pub fn set_block_area(&mut self, area: &[u8; I_BLOCK_SIZE]) {
        if let Some(target) = self.bytes.get_mut(I_BLOCK..I_BLOCK + I_BLOCK_SIZE) {
            target.copy_from_slice(area);
        }
    }

    /// Returns the bytes after the extra fields (`128 + i_extra_isize` to the inode's end), where
    /// the inode keeps extended attributes. Empty for 128-byte inodes.
    pub fn after_extra_fields(&self) -> &[u8] {
        self.bytes.get(self.extra_fields_end()..).unwrap_or_default()
    }

    pub fn after_extra_fields_mut(&mut self) -> &mut [u8] {
        let start = self.extra_fields_end();
        self.bytes.get_mut(start..).unwrap_or_default()
    }

    fn extra_fields_end(&self) -> usize {
        usize::from(GOOD_OLD_INODE_SIZE) + usize::from(self.extra_isize())
    }

    fn has_extra_field(&self, offset: usize) -> bool {
        let end = offset + 4;
        self.bytes.len() > usize::from(GOOD_OLD_INODE_SIZE)
            && end <= usize::from(GOOD_OLD_INODE_SIZE) + usize::from(self.extra_isize())
    }

    /// Returns a timestamp in seconds since the epoch, or `None` for a creation time the inode
    /// has no room for.
    pub fn time(&self, which: Timestamp) -> Option<i64> {
        let (seconds_at, extra_at) = which.offsets();
        if !self.has_extra_field(seconds_at) && seconds_at >= usize::from(GOOD_OLD_INODE_SIZE) {
            return None;
        }
        let seconds = i64::from(read_u32le(&self.bytes, seconds_at) as i32);
        if !self.has_extra_field(extra_at) {
            return Some(seconds);
        }
        let epoch = read_u32le(&self.bytes, extra_at) & EPOCH_MASK;
        Some(seconds + (i64::from(epoch) << 32))
    }

    /// Stores a timestamp with zero nanoseconds. Fails when the inode cannot represent `seconds`:
    /// 32-bit signed seconds without the extra field, 34 bits (years 1901 to 2446) with it.
    pub fn set_time(&mut self, which: Timestamp, seconds: i64) -> Result<(), ExtError> {
        let (seconds_at, extra_at) = which.offsets();
        if !self.has_extra_field(seconds_at) && seconds_at >= usize::from(GOOD_OLD_INODE_SIZE) {
            return Ok(());
        }
        let low = seconds as i32;
        let epoch = (seconds - i64::from(low)) >> 32;
        let has_extra = self.has_extra_field(extra_at);
        let max_epoch = if has_extra { i64::from(EPOCH_MASK) } else { 0 };
        if !(0..=max_epoch).contains(&epoch) {
            return Err(ExtError::TimeOutOfRange(seconds));
        }
        write_u32le(&mut self.bytes, seconds_at, low as u32);
        if has_extra {
            write_u32le(&mut self.bytes, extra_at, epoch as u32);
        }
        Ok(())
    }

    /// Sets access, change, modification and (where present) creation time to `seconds`.
    pub fn set_all_times(&mut self, seconds: i64) -> Result<(), ExtError> {
        for which in [Timestamp::Access, Timestamp::Change, Timestamp::Modification, Timestamp::Creation] {
            self.set_time(which, seconds)?;
        }
        Ok(())
    }

    /// Sets change and modification time, as a directory gets when an entry changes.
    pub fn touch(&mut self, seconds: i64) -> Result<(), ExtError> {
        self.set_time(Timestamp::Change, seconds)?;
        self.set_time(Timestamp::Modification, seconds)
    }

    pub fn set_dtime(&mut self, seconds: u32) {
        write_u32le(&mut self.bytes, I_DTIME, seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode_with_extra(extra: u16) -> Inode {
        let mut bytes = vec![0u8; 256];
        write_u16le(&mut bytes, I_EXTRA_ISIZE, extra);
        Inode { index: InodeIndex(12), bytes }
    }

    #[test]
    fn times_after_2038_use_the_epoch_bits() {
        let mut inode = inode_with_extra(32);
        let year_2100 = 4_102_444_800;
        inode.set_time(Timestamp::Modification, year_2100).unwrap();
        assert_eq!(inode.time(Timestamp::Modification), Some(year_2100));
        assert_eq!(read_u32le(&inode.bytes, I_MTIME_EXTRA), 1);
    }

    #[test]
    fn small_inodes_reject_times_after_2038() {
        let mut inode = Inode { index: InodeIndex(12), bytes: vec![0u8; 128] };
        assert!(matches!(inode.set_time(Timestamp::Change, 1 << 31), Err(ExtError::TimeOutOfRange(_))));
        inode.set_time(Timestamp::Change, 1_700_000_000).unwrap();
        assert_eq!(inode.time(Timestamp::Change), Some(1_700_000_000));
        assert_eq!(inode.time(Timestamp::Creation), None);
    }

    #[test]
    fn times_before_1970_round_trip() {
        let mut inode = inode_with_extra(32);
        inode.set_time(Timestamp::Access, -86_400).unwrap();
        assert_eq!(inode.time(Timestamp::Access), Some(-86_400));
    }
}
