//! The boot sector and its BIOS parameter block (BPB), checked before `fatfs` sees them. Field
//! offsets and the arithmetic follow Microsoft's "FAT: General Overview of On-Disk Format"
//! (version 1.03), its boot sector and BPB description. Every derived value is computed with
//! checked arithmetic, so that a hostile boot sector is rejected here instead of overflowing
//! inside `fatfs`.

use super::error::FatError;

const BYTES_PER_SECTOR_OFFSET: usize = 0x0B;
const SECTORS_PER_CLUSTER_OFFSET: usize = 0x0D;
const RESERVED_SECTORS_OFFSET: usize = 0x0E;
const FAT_COUNT_OFFSET: usize = 0x10;
const ROOT_ENTRIES_OFFSET: usize = 0x11;
const TOTAL_SECTORS_16_OFFSET: usize = 0x13;
const FAT_SIZE_16_OFFSET: usize = 0x16;
const TOTAL_SECTORS_32_OFFSET: usize = 0x20;
const FAT_SIZE_32_OFFSET: usize = 0x24;
const EXT_FLAGS_OFFSET: usize = 0x28;
const FS_VERSION_OFFSET: usize = 0x2A;
const ROOT_CLUSTER_OFFSET: usize = 0x2C;
const FS_INFO_SECTOR_OFFSET: usize = 0x30;
const BACKUP_BOOT_SECTOR_OFFSET: usize = 0x32;
const SIGNATURE_OFFSET: usize = 0x1FE;

/// Bytes of the boot sector this module reads; the BPB and the signature lie inside them.
pub const BOOT_SECTOR_LEN: usize = 512;

/// Size of one directory entry in bytes.
const DIR_ENTRY_LEN: u32 = 32;

/// A volume with fewer clusters than this is FAT12, and one with fewer than
/// [`MAX_FAT16_CLUSTERS`] is FAT16; the specification decides the type by this count alone.
const MAX_FAT12_CLUSTERS: u32 = 4085;
const MAX_FAT16_CLUSTERS: u32 = 65525;

/// Highest cluster count a FAT32 entry (28 bits, less the reserved values) can address.
const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF5;

/// The FAT variant, decided by the number of data clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// Name used in messages and `inspect`: `FAT12`, `FAT16` or `FAT32`.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// The layout of a FAT volume, derived from a boot sector whose fields are consistent with each
/// other and with the size of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub fat_type: FatType,
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    /// Byte offset of the first FAT, the one that is read and checked.
    pub active_fat_offset: u64,
    /// Length of one FAT in bytes.
    pub fat_len: u64,
    /// Number of data clusters; valid cluster numbers are 2 to `cluster_count + 1`.
    pub cluster_count: u32,
    /// First cluster of the root directory on FAT32, `None` on FAT12 and FAT16, where the root
    /// directory has a fixed region.
    pub root_cluster: Option<u32>,
    /// Byte offset and length of the fixed root directory region of FAT12 and FAT16; the length
    /// is 0 on FAT32.
    pub root_dir_offset: u64,
    pub root_dir_len: u64,
    /// Byte offset of cluster 2, the first data cluster.
    pub data_offset: u64,
}

impl Geometry {
    /// Bytes in one cluster.
    pub fn cluster_len(&self) -> u32 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    /// Byte offset of data cluster `cluster`, which lies in 2 to `cluster_count + 1`.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * u64::from(self.cluster_len())
    }
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

fn corrupt(detail: impl Into<String>) -> FatError {
    FatError::Corrupt { structure: "boot sector", detail: detail.into() }
}

/// Checks the boot sector `sector` of a volume of `volume_len` bytes and returns its geometry.
pub fn parse(sector: &[u8; BOOT_SECTOR_LEN], volume_len: u64) -> Result<Geometry, FatError> {
    if sector[SIGNATURE_OFFSET] != 0x55 || sector[SIGNATURE_OFFSET + 1] != 0xAA {
        return Err(corrupt("the signature 55 AA at byte 510 is missing"));
    }

    let bytes_per_sector = u32::from(read_u16(sector, BYTES_PER_SECTOR_OFFSET));
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return Err(corrupt(format!(
            "{bytes_per_sector} bytes per sector; expected 512, 1024, 2048 or 4096"
        )));
    }
    let sectors_per_cluster = u32::from(sector[SECTORS_PER_CLUSTER_OFFSET]);
    if !sectors_per_cluster.is_power_of_two() || sectors_per_cluster > 128 {
        return Err(corrupt(format!(
            "{sectors_per_cluster} sectors per cluster; expected a power of two up to 128"
        )));
    }
    let reserved_sectors = u32::from(read_u16(sector, RESERVED_SECTORS_OFFSET));
    if reserved_sectors == 0 {
        return Err(corrupt("no reserved sectors; the boot sector itself is one"));
    }
    let fat_count = u32::from(sector[FAT_COUNT_OFFSET]);
    if fat_count == 0 {
        return Err(corrupt("the number of FATs is 0"));
    }

    let root_entries = u32::from(read_u16(sector, ROOT_ENTRIES_OFFSET));
    let root_dir_sectors = (root_entries * DIR_ENTRY_LEN).div_ceil(bytes_per_sector);
    let fat_size_16 = u32::from(read_u16(sector, FAT_SIZE_16_OFFSET));
    let fat_sectors = if fat_size_16 != 0 { fat_size_16 } else { read_u32(sector, FAT_SIZE_32_OFFSET) };
    if fat_sectors == 0 {
        return Err(corrupt("the FAT size is 0 sectors"));
    }
    let total_sectors_16 = u32::from(read_u16(sector, TOTAL_SECTORS_16_OFFSET));
    let total_sectors =
        if total_sectors_16 != 0 { total_sectors_16 } else { read_u32(sector, TOTAL_SECTORS_32_OFFSET) };

    let volume_sectors = volume_len / u64::from(bytes_per_sector);
    if u64::from(total_sectors) > volume_sectors {
        return Err(corrupt(format!(
            "{total_sectors} sectors of {bytes_per_sector} bytes do not fit in the partition of {volume_len} bytes"
        )));
    }
    let metadata_sectors = fat_count
        .checked_mul(fat_sectors)
        .and_then(|fats| fats.checked_add(reserved_sectors))
        .and_then(|sectors| sectors.checked_add(root_dir_sectors))
        .filter(|&sectors| sectors < total_sectors)
        .ok_or_else(|| {
            corrupt(format!("the reserved sectors, FATs and root directory fill all {total_sectors} sectors"))
        })?;
    let cluster_count = (total_sectors - metadata_sectors) / sectors_per_cluster;

    let fat_type = match cluster_count {
        count if count < MAX_FAT12_CLUSTERS => FatType::Fat12,
        count if count < MAX_FAT16_CLUSTERS => FatType::Fat16,
        _ => FatType::Fat32,
    };
    let is_fat32_layout = fat_size_16 == 0;
    if is_fat32_layout != (fat_type == FatType::Fat32) {
        return Err(corrupt(format!(
            "{cluster_count} clusters make a {} volume, but the 16-bit FAT size field says otherwise",
            fat_type.name()
        )));
    }

    let fat_len = u64::from(fat_sectors) * u64::from(bytes_per_sector);
    let fat_bits: u64 = match fat_type {
        FatType::Fat12 => 12,
        FatType::Fat16 => 16,
        FatType::Fat32 => 32,
    };
    if fat_len * 8 / fat_bits < u64::from(cluster_count) + 2 {
        return Err(corrupt(format!("a FAT of {fat_sectors} sectors cannot hold {cluster_count} clusters")));
    }

    let mut active_fat = 0;
    let mut root_cluster = None;
    if fat_type == FatType::Fat32 {
        if cluster_count > MAX_FAT32_CLUSTERS {
            return Err(corrupt(format!("{cluster_count} clusters are more than FAT32 can address")));
        }
        if root_entries != 0 || total_sectors_16 != 0 {
            return Err(corrupt("a FAT32 volume has a nonzero root entry count or 16-bit sector count"));
        }
        let version = read_u16(sector, FS_VERSION_OFFSET);
        if version != 0 {
            return Err(corrupt(format!("FAT32 version {version:#06x}; only version 0.0 exists")));
        }
        let root = read_u32(sector, ROOT_CLUSTER_OFFSET);
        if root < 2 || root > cluster_count + 1 {
            return Err(corrupt(format!(
                "root directory cluster {root} is outside clusters 2 to {}",
                cluster_count + 1
            )));
        }
        root_cluster = Some(root);
        let fs_info = u32::from(read_u16(sector, FS_INFO_SECTOR_OFFSET));
        let backup = u32::from(read_u16(sector, BACKUP_BOOT_SECTOR_OFFSET));
        if fs_info == 0 || fs_info >= reserved_sectors || backup >= reserved_sectors {
            return Err(corrupt("the FSInfo or backup boot sector lies outside the reserved sectors"));
        }
        let ext_flags = read_u16(sector, EXT_FLAGS_OFFSET);
        if ext_flags & 0x80 != 0 {
            // Mirroring is off, so only the FAT numbered in the low four bits is in use.
            active_fat = u32::from(ext_flags & 0x0F);
            if active_fat >= fat_count {
                return Err(corrupt(format!("active FAT {active_fat} of {fat_count}")));
            }
        }
    } else if root_entries == 0 {
        return Err(corrupt("a FAT12 or FAT16 volume with no root directory entries"));
    }

    let active_fat_offset = (u64::from(reserved_sectors) + u64::from(active_fat) * u64::from(fat_sectors))
        * u64::from(bytes_per_sector);
    let root_dir_offset = (u64::from(reserved_sectors) + u64::from(fat_count) * u64::from(fat_sectors))
        * u64::from(bytes_per_sector);
    Ok(Geometry {
        fat_type,
        bytes_per_sector,
        sectors_per_cluster,
        active_fat_offset,
        fat_len,
        cluster_count,
        root_cluster,
        root_dir_offset,
        root_dir_len: u64::from(root_entries) * u64::from(DIR_ENTRY_LEN),
        data_offset: u64::from(metadata_sectors) * u64::from(bytes_per_sector),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16 boot sector of 16 MiB as `mkfs.vfat -F 16` lays it out: 512-byte sectors,
    /// 4 sectors per cluster, 4 reserved sectors, 2 FATs of 32 sectors, 512 root entries.
    fn fat16_sector() -> [u8; BOOT_SECTOR_LEN] {
        let mut sector = [0u8; BOOT_SECTOR_LEN];
        sector[BYTES_PER_SECTOR_OFFSET..][..2].copy_from_slice(&512u16.to_le_bytes());
        sector[SECTORS_PER_CLUSTER_OFFSET] = 4;
        sector[RESERVED_SECTORS_OFFSET..][..2].copy_from_slice(&4u16.to_le_bytes());
        sector[FAT_COUNT_OFFSET] = 2;
        sector[ROOT_ENTRIES_OFFSET..][..2].copy_from_slice(&512u16.to_le_bytes());
        sector[TOTAL_SECTORS_16_OFFSET..][..2].copy_from_slice(&32768u16.to_le_bytes());
        sector[FAT_SIZE_16_OFFSET..][..2].copy_from_slice(&32u16.to_le_bytes());
        sector[SIGNATURE_OFFSET] = 0x55;
        sector[SIGNATURE_OFFSET + 1] = 0xAA;
        sector
    }

    #[test]
    fn fat16_geometry_follows_the_specification() {
        let geometry = parse(&fat16_sector(), 16 << 20).unwrap();

        assert_eq!(geometry.fat_type, FatType::Fat16);
        assert_eq!(geometry.cluster_count, (32768 - 4 - 64 - 32) / 4);
        assert_eq!(geometry.active_fat_offset, 4 * 512);
        assert_eq!(geometry.cluster_len(), 2048);
    }

    #[test]
    fn volume_larger_than_partition_is_rejected() {
        let error = parse(&fat16_sector(), 8 << 20).unwrap_err();

        assert!(error.to_string().contains("do not fit in the partition"), "{error}");
    }

    #[test]
    fn overflowing_fat_size_is_rejected() {
        let mut sector = fat16_sector();
        sector[FAT_SIZE_16_OFFSET..][..2].copy_from_slice(&0xFFFFu16.to_le_bytes());
        sector[FAT_COUNT_OFFSET] = 255;

        let error = parse(&sector, 16 << 20).unwrap_err();

        assert!(error.to_string().contains("fill all"), "{error}");
    }

    #[test]
    fn zero_and_odd_fields_are_rejected() {
        let cases: [(usize, u8); 4] = [
            (SECTORS_PER_CLUSTER_OFFSET, 0),
            (SECTORS_PER_CLUSTER_OFFSET, 3),
            (FAT_COUNT_OFFSET, 0),
            (SIGNATURE_OFFSET, 0),
        ];
        for (offset, value) in cases {
            let mut sector = fat16_sector();
            sector[offset] = value;
            assert!(parse(&sector, 16 << 20).is_err(), "byte {offset:#x} = {value}");
        }
    }

    #[test]
    fn cluster_count_decides_the_type() {
        let mut few_clusters = fat16_sector();
        few_clusters[SECTORS_PER_CLUSTER_OFFSET] = 16;
        let mut fat32_layout = fat16_sector();
        fat32_layout[FAT_SIZE_16_OFFSET..][..2].fill(0);
        fat32_layout[FAT_SIZE_32_OFFSET..][..4].copy_from_slice(&32u32.to_le_bytes());

        let error = parse(&fat32_layout, 16 << 20).unwrap_err();

        assert_eq!(parse(&few_clusters, 16 << 20).unwrap().fat_type, FatType::Fat12);
        assert!(error.to_string().contains("FAT16 volume"), "{error}");
    }
}
