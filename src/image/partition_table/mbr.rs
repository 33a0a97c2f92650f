//! MBR (DOS) partition tables: four primary entries in the first sector, and logical partitions
//! in a chain of extended boot records (EBRs). The layout is documented in the `mbrman` crate
//! and in the UEFI specification's "Legacy Master Boot Record" section; Linux's
//! `block/partitions/msdos.c` shows that EBR links are relative to the extended partition.

use crate::image::volume::ReadAt;
use std::io;

use super::{
    EXT_MAGIC, EXT_MAGIC_OFFSET, Partition, PartitionName, PartitionTable, PartitionTableError,
    PartitionType, SectorSize, TableKind, check_inside, check_no_overlap, gpt,
};

/// Offset of the two-byte boot signature that ends an MBR.
const MBR_SIGNATURE_OFFSET: usize = 510;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// Offset of the first of the four 16-byte partition entries, and of the type byte inside one.
const ENTRIES_OFFSET: usize = 446;
const ENTRY_LEN: usize = 16;
const ENTRY_TYPE_OFFSET: usize = 4;
/// Offset of the boot indicator in an entry: 0x80 for active, 0x00 otherwise.
const ENTRY_BOOT_OFFSET: usize = 0;

/// Partition type of the single entry of a GPT's protective MBR.
pub(super) const GPT_PROTECTIVE_TYPE: u8 = 0xEE;

/// Maximum number of logical partitions read from an EBR chain, far more than a Mender image
/// uses; the bound keeps a hostile chain of millions of links from taking minutes.
const MAX_LOGICAL_PARTITIONS: usize = 100;

/// Offsets in a FAT boot sector of the filesystem type strings for FAT12/16 and for FAT32.
const FAT16_TYPE_OFFSET: u64 = 0x36;
const FAT32_TYPE_OFFSET: u64 = 0x52;

/// Returns true when the first sector ends with the MBR boot signature 0x55 0xAA.
pub(super) fn has_boot_signature(first_sector: &[u8; 512]) -> bool {
    first_sector[MBR_SIGNATURE_OFFSET..] == MBR_SIGNATURE
}

/// Returns true when one of the four primary entries has the GPT protective type 0xEE.
pub(super) fn is_protective(first_sector: &[u8; 512]) -> bool {
    (0..4).any(|index| {
        first_sector[ENTRIES_OFFSET + index * ENTRY_LEN + ENTRY_TYPE_OFFSET] == GPT_PROTECTIVE_TYPE
    })
}

/// Decodes the four primary entries of an MBR sector. A boot flag other than 0x00 or 0x80 is an
/// error that names the entry, numbered 1 to 4.
pub(super) fn parse_header(sector: &[u8]) -> Result<mbrman::MBRHeader, String> {
    for index in 0..4 {
        let boot = sector[ENTRIES_OFFSET + index * ENTRY_LEN + ENTRY_BOOT_OFFSET];
        if boot != 0x00 && boot != 0x80 {
            return Err(format!(
                "MBR partition {} has boot flag {boot:#04x} (expected 0x00 or 0x80)",
                index + 1
            ));
        }
    }
    mbrman::MBRHeader::read_from(&mut io::Cursor::new(sector)).map_err(|error| error.to_string())
}

/// Clears a boot flag other than 0x00 or 0x80 on the protective (0xEE) entries of `sector`, which
/// Linux and sfdisk accept, and returns a warning for each entry cleared.
pub(super) fn clear_protective_boot_flags(sector: &mut [u8; 512]) -> Vec<String> {
    let mut warnings = Vec::new();
    for index in 0..4 {
        let entry = ENTRIES_OFFSET + index * ENTRY_LEN;
        let boot = sector[entry + ENTRY_BOOT_OFFSET];
        if sector[entry + ENTRY_TYPE_OFFSET] == GPT_PROTECTIVE_TYPE && boot != 0x00 && boot != 0x80 {
            warnings.push(format!(
                "the protective MBR entry (MBR partition {}) has boot flag {boot:#04x}, not 0x00 or 0x80; \
                 the GPT is read all the same, as Linux does",
                index + 1
            ));
            sector[entry + ENTRY_BOOT_OFFSET] = 0x00;
        }
    }
    warnings
}

/// Reads an MBR partition table whose first sector is `first_sector`, with `requested` sectors
/// or else the size that [`detect_sector_size`] finds.
pub(super) fn read(
    file: &dyn ReadAt,
    image_len: u64,
    first_sector: &[u8; 512],
    requested: Option<SectorSize>,
) -> Result<PartitionTable, PartitionTableError> {
    let header = parse_header(first_sector).map_err(PartitionTableError::InvalidMbr)?;
    let sector_size = match requested {
        Some(size) => size,
        None => detect_sector_size(file, image_len, &header)?,
    };
    let partitions = read_partitions(file, image_len, &header, sector_size)?;

    let mut warnings = Vec::new();
    if let Some(offset) = gpt::find_primary_header(file, image_len)? {
        warnings.push(format!(
            "a GPT header at byte {offset} is ignored, because the MBR has no protective (0xEE) \
             entry; the MBR partitions are used, as Linux does"
        ));
    }
    Ok(PartitionTable { kind: TableKind::Mbr, sector_size, partitions, warnings })
}

fn read_partitions(
    file: &dyn ReadAt,
    image_len: u64,
    header: &mbrman::MBRHeader,
    sector_size: SectorSize,
) -> Result<Vec<Partition>, PartitionTableError> {
    let mut partitions = Vec::new();
    let mut extended = None;
    for (index, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        if entry.boot != 0x00 && entry.boot != 0x80 {
            return Err(PartitionTableError::InvalidMbr(format!(
                "partition {index} has boot flag {:#04x} (expected 0x00 or 0x80)",
                entry.boot
            )));
        }
        let partition = to_partition(index as u32, entry, sector_size);
        check_inside(&partition, image_len).map_err(PartitionTableError::InvalidMbr)?;
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
        partitions.extend(read_logical_partitions(file, &extended, image_len, sector_size)?);
    }
    check_no_overlap(&partitions).map_err(PartitionTableError::InvalidMbr)?;
    Ok(partitions)
}

/// Chooses the sector size an MBR was written for. The MBR records sectors without their size,
/// so the start of every primary partition is probed for a filesystem (an ext superblock or a
/// FAT boot sector) at both sizes. 4096 wins only when it finds more filesystems than 512 and
/// every partition then still fits in the image. A tie, such as an image whose partitions are
/// all unformatted or logical, is read with 512.
fn detect_sector_size(
    file: &dyn ReadAt,
    image_len: u64,
    header: &mbrman::MBRHeader,
) -> Result<SectorSize, PartitionTableError> {
    let mut found = [0usize; 2];
    let mut fits_4096 = true;
    for (_, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        let end_4096 = (u64::from(entry.starting_lba) + u64::from(entry.sectors)) * 4096;
        fits_4096 &= end_4096 <= image_len;
        if entry.is_extended() {
            continue;
        }
        for (slot, size) in [SectorSize::Bytes512, SectorSize::Bytes4096].into_iter().enumerate() {
            let start = u64::from(entry.starting_lba) * size.bytes();
            if holds_filesystem(file, image_len, start)? {
                found[slot] += 1;
            }
        }
    }

    if fits_4096 && found[1] > found[0] {
        log::debug!(
            "MBR partitions hold {} filesystems at 4096-byte sectors and {} at 512-byte sectors; \
             reading the image with 4096-byte sectors",
            found[1],
            found[0]
        );
        return Ok(SectorSize::Bytes4096);
    }
    Ok(SectorSize::Bytes512)
}

/// Returns true when an ext superblock or a FAT boot sector starts at byte `start`.
fn holds_filesystem(file: &dyn ReadAt, image_len: u64, start: u64) -> io::Result<bool> {
    let read_at = |offset: u64, buf: &mut [u8]| -> io::Result<bool> {
        if start.saturating_add(offset).saturating_add(buf.len() as u64) > image_len {
            return Ok(false);
        }
        file.read_image_at(buf, start + offset)?;
        Ok(true)
    };

    let mut magic = [0u8; 2];
    if read_at(EXT_MAGIC_OFFSET, &mut magic)? && magic == EXT_MAGIC {
        return Ok(true);
    }
    let mut signature = [0u8; 2];
    if !read_at(MBR_SIGNATURE_OFFSET as u64, &mut signature)? || signature != MBR_SIGNATURE {
        return Ok(false);
    }
    let mut fat16_type = [0u8; 3];
    let mut fat32_type = [0u8; 5];
    let is_fat16 = read_at(FAT16_TYPE_OFFSET, &mut fat16_type)? && &fat16_type == b"FAT";
    let is_fat32 = read_at(FAT32_TYPE_OFFSET, &mut fat32_type)? && &fat32_type == b"FAT32";
    Ok(is_fat16 || is_fat32)
}

/// Reads the logical partitions by following the chain of extended boot records that starts
/// at the extended partition. Each EBR is a sector laid out like an MBR: entry 0 is the logical
/// partition (its start relative to the EBR), entry 1 the next EBR (its start relative to the
/// extended partition). The chain must move forward and stays inside the extended partition.
fn read_logical_partitions(
    file: &dyn ReadAt,
    extended: &Partition,
    image_len: u64,
    sector_size: SectorSize,
) -> Result<Vec<Partition>, PartitionTableError> {
    let invalid = |detail: String| PartitionTableError::InvalidMbr(format!("extended partition: {detail}"));
    let sector_bytes = sector_size.bytes();
    let mut partitions = Vec::new();
    let mut ebr_offset = extended.start;

    loop {
        if partitions.len() >= MAX_LOGICAL_PARTITIONS {
            return Err(invalid(format!("more than {MAX_LOGICAL_PARTITIONS} logical partitions")));
        }
        let mut sector = [0u8; 512];
        file.read_image_at(&mut sector, ebr_offset)?;
        if !has_boot_signature(&sector) {
            // An extended partition without an EBR in its first sector has no logical partitions.
            if partitions.is_empty() {
                return Ok(partitions);
            }
            return Err(invalid(format!("no extended boot record signature at byte {ebr_offset}")));
        }
        let ebr = parse_header(&sector)
            .map_err(|error| invalid(format!("extended boot record at byte {ebr_offset}: {error}")))?;

        let logical = &ebr.partition_1;
        if logical.is_used() {
            let number = 5 + partitions.len() as u32;
            let start = ebr_offset + u64::from(logical.starting_lba) * sector_bytes;
            let partition = Partition {
                number,
                start,
                len: u64::from(logical.sectors) * sector_bytes,
                partition_type: PartitionType::Mbr(logical.sys),
                bootable: logical.boot == 0x80,
                name: PartitionName::default(),
            };
            check_inside(&partition, image_len).map_err(PartitionTableError::InvalidMbr)?;
            if partition.start <= ebr_offset || partition.end() > extended.end() {
                return Err(invalid(format!("logical partition {number} does not lie inside it")));
            }
            partitions.push(partition);
        }

        let next = &ebr.partition_2;
        if next.is_unused() || next.starting_lba == 0 {
            return Ok(partitions);
        }
        let next_offset = extended.start + u64::from(next.starting_lba) * sector_bytes;
        if next_offset <= ebr_offset || next_offset >= extended.end() {
            return Err(invalid(format!(
                "the extended boot record at byte {ebr_offset} links to byte {next_offset}, which is not \
                 further on inside the extended partition"
            )));
        }
        ebr_offset = next_offset;
    }
}

/// Converts a primary entry of an MBR or EBR into a partition numbered `number`.
pub(super) fn to_partition(
    number: u32,
    entry: &mbrman::MBRPartitionEntry,
    sector_size: SectorSize,
) -> Partition {
    Partition {
        number,
        start: u64::from(entry.starting_lba) * sector_size.bytes(),
        len: u64::from(entry.sectors) * sector_size.bytes(),
        partition_type: PartitionType::Mbr(entry.sys),
        bootable: entry.boot == 0x80,
        name: PartitionName::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::image_with;
    use super::*;
    use std::fs::File;
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

    #[test]
    fn mbr_primary_partitions_are_listed_in_order() {
        let sector = mbr_sector(&[(0x0c, 16384, 16384), (0x83, 32768, 32768), (0x83, 65536, 16384)]);
        let image = image_with(&sector, 96 << 20);

        let table = PartitionTable::read(image.as_file(), None).unwrap();

        assert_eq!(table.kind, TableKind::Mbr);
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, vec![1, 2, 3]);
        assert_eq!(table.partitions[1].start, 32768 * 512);
        assert_eq!(table.partitions[1].len, 32768 * 512);
        assert_eq!(table.partitions[0].partition_type, PartitionType::Mbr(0x0c));
        assert_eq!(table.sector_size, SectorSize::Bytes512);
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

        let table = PartitionTable::read(image.as_file(), None).unwrap();

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

        let error = PartitionTable::read(image.as_file(), None).unwrap_err();

        assert!(error.to_string().contains("not further on"), "{error}");
    }

    #[test]
    fn ebr_chain_longer_than_linux_follows_is_rejected() {
        let sector = mbr_sector(&[(0x05, 2048, 8192)]);
        let image = image_with(&sector, 8 << 20);
        for index in 0..=MAX_LOGICAL_PARTITIONS as u32 {
            write_ebr(image.as_file(), 2048 + u64::from(index) * 2, (1, 1), (index + 1) * 2);
        }

        let error = PartitionTable::read(image.as_file(), None).unwrap_err();

        assert!(error.to_string().contains("more than 100 logical partitions"), "{error}");
    }

    #[test]
    fn partition_past_end_of_image_is_rejected() {
        let sector = mbr_sector(&[(0x83, 2048, 1 << 20)]);
        let image = image_with(&sector, 8 << 20);

        let error = PartitionTable::read(image.as_file(), None).unwrap_err();

        assert!(error.to_string().contains("does not lie inside"), "{error}");
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let sector = mbr_sector(&[(0x83, 2048, 8192), (0x83, 4096, 8192)]);
        let image = image_with(&sector, 16 << 20);

        let error = PartitionTable::read(image.as_file(), None).unwrap_err();

        assert!(error.to_string().contains("overlap"), "{error}");
    }

    /// Writes an ext superblock magic into the partition that starts at byte `start`.
    fn put_ext_magic(image: &File, start: u64) {
        image.write_all_at(&EXT_MAGIC, start + EXT_MAGIC_OFFSET).unwrap();
    }

    #[test]
    fn filesystems_at_4096_byte_sectors_choose_4096() {
        let sector = mbr_sector(&[(0x83, 256, 1024), (0x83, 2048, 1024)]);
        let image = image_with(&sector, 16 << 20);
        put_ext_magic(image.as_file(), 256 * 4096);
        put_ext_magic(image.as_file(), 2048 * 4096);

        let table = PartitionTable::read(image.as_file(), None).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes4096);
        assert_eq!(table.partitions[1].start, 2048 * 4096);
        assert_eq!(table.partitions[1].len, 1024 * 4096);
    }

    #[test]
    fn filesystems_at_512_byte_sectors_keep_512() {
        let sector = mbr_sector(&[(0x83, 256, 1024), (0x83, 2048, 1024)]);
        let image = image_with(&sector, 16 << 20);
        put_ext_magic(image.as_file(), 256 * 512);
        put_ext_magic(image.as_file(), 2048 * 512);

        let table = PartitionTable::read(image.as_file(), None).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes512);
        assert_eq!(table.partitions[1].start, 2048 * 512);
    }

    #[test]
    fn requested_sector_size_overrides_detection() {
        let sector = mbr_sector(&[(0x83, 256, 1024)]);
        let image = image_with(&sector, 16 << 20);
        put_ext_magic(image.as_file(), 256 * 512);

        let table = PartitionTable::read(image.as_file(), Some(SectorSize::Bytes4096)).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes4096);
        assert_eq!(table.partitions[0].start, 256 * 4096);
    }

    #[test]
    fn partitions_past_the_end_at_4096_keep_512() {
        let sector = mbr_sector(&[(0x83, 2048, 8192)]);
        let image = image_with(&sector, 8 << 20);
        put_ext_magic(image.as_file(), 2048 * 4096);

        let table = PartitionTable::read(image.as_file(), None).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes512);
    }
}
