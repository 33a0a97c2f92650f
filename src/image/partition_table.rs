//! The partition table of a disk image: MBR with primary and logical partitions, or none at all
//! for a bare filesystem image. The MBR layout is documented in the `mbrman` crate and in the
//! UEFI specification's "Legacy Master Boot Record" section.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes in a sector. Images with 4096-byte sectors are not handled yet.
pub const SECTOR_SIZE: u64 = 512;

/// Offset of the ext2/3/4 superblock magic: superblock at 1024, magic field at 0x38 inside it.
pub(crate) const EXT_MAGIC_OFFSET: u64 = 1024 + 0x38;
pub(crate) const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];

/// Offset of the two-byte boot signature that ends an MBR.
const MBR_SIGNATURE_OFFSET: u64 = 510;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// Partition type of the single entry of a GPT's protective MBR.
const GPT_PROTECTIVE_TYPE: u8 = 0xEE;

/// Maximum number of logical partitions read from an EBR chain, far more than a Mender image
/// uses; the bound keeps a hostile chain of millions of links from taking minutes.
const MAX_LOGICAL_PARTITIONS: usize = 100;

/// Smallest file that can hold an MBR or an ext superblock.
const MIN_IMAGE_LEN: u64 = 2048;

/// Failure to read a partition table.
#[derive(Debug, thiserror::Error)]
pub enum PartitionTableError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("file is too small to be a disk image ({0} bytes)")]
    TooSmall(u64),
    #[error("not a disk image: no MBR partition table and no ext2/3/4 filesystem at its start")]
    Unrecognized,
    #[error(
        "GPT partition tables are not supported yet; copy the data partition out (dd with its \
         offset), provision it as a bare filesystem image, and copy it back"
    )]
    Gpt,
    #[error("invalid MBR partition table: {0}")]
    InvalidMbr(String),
}

/// Kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// An MBR (DOS) partition table.
    Mbr,
    /// No table: the whole file is one filesystem (`.dataimg`, `.ext4`).
    Bare,
}

/// One partition: a byte range of the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Number as Linux names it (`p1`..`p4` primary, `p5` and up logical); 0 for a bare image.
    pub number: u32,
    /// Offset of the first byte in the image file.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// MBR partition type byte (0x83 Linux, 0x0c FAT32 LBA, ...); 0 for a bare image.
    pub type_id: u8,
    /// Whether the MBR marks the partition active (bootable).
    pub bootable: bool,
}

impl Partition {
    /// Offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The partitions of an image, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub kind: TableKind,
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// Reads the partition table of `file`: an MBR when the first sector ends with the boot
    /// signature, else a bare filesystem when an ext superblock sits at byte 1024. Every partition is checked to lie inside
    /// the file and not to overlap another.
    pub fn read(file: &File) -> Result<Self, PartitionTableError> {
        let len = file.metadata()?.len();
        if len < MIN_IMAGE_LEN {
            return Err(PartitionTableError::TooSmall(len));
        }

        if read_array::<2>(file, MBR_SIGNATURE_OFFSET)? == MBR_SIGNATURE {
            let partitions = read_mbr(file, len)?;
            return Ok(PartitionTable { kind: TableKind::Mbr, partitions });
        }
        if read_array::<2>(file, EXT_MAGIC_OFFSET)? == EXT_MAGIC {
            let whole = Partition { number: 0, start: 0, len, type_id: 0, bootable: false };
            return Ok(PartitionTable { kind: TableKind::Bare, partitions: vec![whole] });
        }
        Err(PartitionTableError::Unrecognized)
    }

    /// Returns the partition numbered `number`, if any.
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|partition| partition.number == number)
    }
}

fn read_array<const N: usize>(file: &File, offset: u64) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

fn read_mbr(file: &File, image_len: u64) -> Result<Vec<Partition>, PartitionTableError> {
    let mut sector = [0u8; SECTOR_SIZE as usize];
    file.read_exact_at(&mut sector, 0)?;
    let header = mbrman::MBRHeader::read_from(&mut io::Cursor::new(&sector[..]))
        .map_err(|error| PartitionTableError::InvalidMbr(error.to_string()))?;

    let mut partitions = Vec::new();
    let mut extended = None;
    for (index, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        if entry.sys == GPT_PROTECTIVE_TYPE {
            return Err(PartitionTableError::Gpt);
        }
        if entry.boot != 0x00 && entry.boot != 0x80 {
            return Err(PartitionTableError::InvalidMbr(format!(
                "partition {index} has boot flag {:#04x} (expected 0x00 or 0x80)",
                entry.boot
            )));
        }
        let partition = to_partition(index as u32, entry);
        check_inside(&partition, image_len)?;
        if entry.is_extended() {
            if extended.is_some() {
                return Err(PartitionTableError::InvalidMbr("more than one extended partition".into()));
            }
            extended = Some(partition);
        } else {
            partitions.push(partition);
        }
    }

    if let Some(extended) = extended {
        partitions.extend(read_logical_partitions(file, &extended, image_len)?);
    }
    check_no_overlap(&partitions)?;
    Ok(partitions)
}

/// Reads the logical partitions by following the chain of extended boot records that starts
/// at the extended partition. Each EBR is a sector laid out like an MBR: entry 0 is the logical
/// partition (its start relative to the EBR), entry 1 the next EBR (its start relative to the
/// extended partition). The chain must move forward and stays inside the extended partition.
fn read_logical_partitions(
    file: &File,
    extended: &Partition,
    image_len: u64,
) -> Result<Vec<Partition>, PartitionTableError> {
    let invalid = |detail: String| PartitionTableError::InvalidMbr(format!("extended partition: {detail}"));
    let mut partitions = Vec::new();
    let mut ebr_offset = extended.start;

    loop {
        if partitions.len() >= MAX_LOGICAL_PARTITIONS {
            return Err(invalid(format!("more than {MAX_LOGICAL_PARTITIONS} logical partitions")));
        }
        let mut sector = [0u8; SECTOR_SIZE as usize];
        file.read_exact_at(&mut sector, ebr_offset)?;
        if sector[MBR_SIGNATURE_OFFSET as usize..] != MBR_SIGNATURE {
            // An extended partition without an EBR in its first sector has no logical partitions.
            if partitions.is_empty() {
                return Ok(partitions);
            }
            return Err(invalid(format!("no extended boot record signature at byte {ebr_offset}")));
        }
        let ebr = mbrman::MBRHeader::read_from(&mut io::Cursor::new(&sector[..]))
            .map_err(|error| invalid(format!("extended boot record at byte {ebr_offset}: {error}")))?;

        let logical = &ebr.partition_1;
        if logical.is_used() {
            let number = 5 + partitions.len() as u32;
            let start = ebr_offset + u64::from(logical.starting_lba) * SECTOR_SIZE;
            let partition = Partition {
                number,
                start,
                len: u64::from(logical.sectors) * SECTOR_SIZE,
                type_id: logical.sys,
                bootable: logical.boot == 0x80,
            };
            check_inside(&partition, image_len)?;
            if partition.start <= ebr_offset || partition.end() > extended.end() {
                return Err(invalid(format!("logical partition {number} does not lie inside it")));
            }
            partitions.push(partition);
        }

        let next = &ebr.partition_2;
        if next.is_unused() || next.starting_lba == 0 {
            return Ok(partitions);
        }
        let next_offset = extended.start + u64::from(next.starting_lba) * SECTOR_SIZE;
        if next_offset <= ebr_offset || next_offset >= extended.end() {
            return Err(invalid(format!(
                "the extended boot record at byte {ebr_offset} links to byte {next_offset}, which is not \
                 further on inside the extended partition"
            )));
        }
        ebr_offset = next_offset;
    }
}

fn to_partition(number: u32, entry: &mbrman::MBRPartitionEntry) -> Partition {
    Partition {
        number,
        start: u64::from(entry.starting_lba) * SECTOR_SIZE,
        len: u64::from(entry.sectors) * SECTOR_SIZE,
        type_id: entry.sys,
        bootable: entry.boot == 0x80,
    }
}

fn check_inside(partition: &Partition, image_len: u64) -> Result<(), PartitionTableError> {
    if partition.len == 0 || partition.start == 0 || partition.end() > image_len {
        return Err(PartitionTableError::InvalidMbr(format!(
            "partition {} (bytes {}..{}) does not lie inside the {image_len}-byte image",
            partition.number,
            partition.start,
            partition.end()
        )));
    }
    Ok(())
}

fn check_no_overlap(partitions: &[Partition]) -> Result<(), PartitionTableError> {
    let mut sorted: Vec<&Partition> = partitions.iter().collect();
    sorted.sort_by_key(|partition| partition.start);
    for pair in sorted.windows(2) {
        if let [first, second] = pair
            && first.end() > second.start
        {
            return Err(PartitionTableError::InvalidMbr(format!(
                "partitions {} and {} overlap",
                first.number, second.number
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// Builds an MBR sector with the given (type, start sector, sector count) entries.
    fn mbr_sector(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        for (index, (type_id, start, sectors)) in entries.iter().enumerate() {
            let at = 446 + index * 16;
            sector[at + 4] = *type_id;
            sector[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            sector[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector
    }

    fn image_with(first_sector: &[u8], len: u64) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(first_sector).unwrap();
        file.as_file().set_len(len).unwrap();
        file
    }

    #[test]
    fn mbr_primary_partitions_are_listed_in_order() {
        let sector = mbr_sector(&[(0x0c, 16384, 16384), (0x83, 32768, 32768), (0x83, 65536, 16384)]);
        let image = image_with(&sector, 96 << 20);

        let table = PartitionTable::read(image.as_file()).unwrap();

        assert_eq!(table.kind, TableKind::Mbr);
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, vec![1, 2, 3]);
        assert_eq!(table.partitions[1].start, 32768 * 512);
        assert_eq!(table.partitions[1].len, 32768 * 512);
        assert_eq!(table.partitions[0].type_id, 0x0c);
    }

    /// Writes an EBR at `sector` with a logical partition `(relative start, sectors)` and a link
    /// to the next EBR at `next` sectors from the extended partition's start (0: none).
    fn write_ebr(image: &File, sector: u64, logical: (u32, u32), next: u32) {
        let mut ebr =
            mbr_sector(&[(0x83, logical.0, logical.1), (if next == 0 { 0 } else { 0x05 }, next, 2048)]);
        if next == 0 {
            ebr[446 + 16..446 + 32].fill(0);
        }
        image.write_all_at(&ebr, sector * 512).unwrap();
    }

    #[test]
    fn logical_partitions_follow_the_ebr_chain() {
        let sector = mbr_sector(&[(0x0c, 2048, 2048), (0x05, 8192, 16384)]);
        let image = image_with(&sector, 16 << 20);
        write_ebr(image.as_file(), 8192, (2048, 4096), 8192);
        write_ebr(image.as_file(), 8192 + 8192, (2048, 2048), 0);

        let table = PartitionTable::read(image.as_file()).unwrap();

        let found: Vec<(u32, u64, u64)> = table
            .partitions
            .iter()
            .map(|partition| (partition.number, partition.start / 512, partition.len / 512))
            .collect();
        assert_eq!(found, vec![(1, 2048, 2048), (5, 10240, 4096), (6, 18432, 2048)]);
    }

    #[test]
    fn ebr_chain_pointing_backwards_is_rejected() {
        let sector = mbr_sector(&[(0x05, 8192, 16384)]);
        let image = image_with(&sector, 16 << 20);
        write_ebr(image.as_file(), 8192, (2048, 2048), 4096);
        write_ebr(image.as_file(), 8192 + 4096, (2048, 1024), 4096);

        let error = PartitionTable::read(image.as_file()).unwrap_err();

        assert!(error.to_string().contains("not further on"), "{error}");
    }

    #[test]
    fn ebr_chain_longer_than_linux_follows_is_rejected() {
        let sector = mbr_sector(&[(0x05, 2048, 8192)]);
        let image = image_with(&sector, 8 << 20);
        for index in 0..=MAX_LOGICAL_PARTITIONS as u32 {
            write_ebr(image.as_file(), 2048 + u64::from(index) * 2, (1, 1), (index + 1) * 2);
        }

        let error = PartitionTable::read(image.as_file()).unwrap_err();

        assert!(error.to_string().contains("more than 100 logical partitions"), "{error}");
    }

    #[test]
    fn partition_past_end_of_image_is_rejected() {
        let sector = mbr_sector(&[(0x83, 2048, 1 << 20)]);
        let image = image_with(&sector, 8 << 20);

        let error = PartitionTable::read(image.as_file()).unwrap_err();

        assert!(error.to_string().contains("does not lie inside"), "{error}");
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let sector = mbr_sector(&[(0x83, 2048, 8192), (0x83, 4096, 8192)]);
        let image = image_with(&sector, 16 << 20);

        let error = PartitionTable::read(image.as_file()).unwrap_err();

        assert!(error.to_string().contains("overlap"), "{error}");
    }

    #[test]
    fn protective_mbr_reports_gpt() {
        let sector = mbr_sector(&[(GPT_PROTECTIVE_TYPE, 1, 20479)]);
        let image = image_with(&sector, 10 << 20);

        assert!(matches!(PartitionTable::read(image.as_file()), Err(PartitionTableError::Gpt)));
    }

    #[test]
    fn file_without_table_or_filesystem_is_unrecognized() {
        let image = image_with(&[0xAB; 4096], 1 << 20);

        assert!(matches!(PartitionTable::read(image.as_file()), Err(PartitionTableError::Unrecognized)));
    }

    #[test]
    fn tiny_file_is_too_small() {
        let image = image_with(b"hello", 5);

        assert!(matches!(PartitionTable::read(image.as_file()), Err(PartitionTableError::TooSmall(5))));
    }

    #[test]
    fn ext_superblock_makes_a_bare_image() {
        let mut start = vec![0u8; 2048];
        start[1024 + 0x38] = 0x53;
        start[1024 + 0x39] = 0xEF;
        let image = image_with(&start, 4 << 20);

        let table = PartitionTable::read(image.as_file()).unwrap();

        assert_eq!(table.kind, TableKind::Bare);
        assert_eq!(
            table.partitions,
            vec![Partition { number: 0, start: 0, len: 4 << 20, type_id: 0, bootable: false }]
        );
    }
}
