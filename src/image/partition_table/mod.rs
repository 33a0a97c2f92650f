//! The partition table of a disk image: MBR with primary and logical partitions (`mbr`), GPT
//! (`gpt`), or none at all for a bare filesystem image. Images with 512-byte and with 4096-byte
//! logical sectors are read. The caller gives the sector size, or it is detected from where the
//! table's structures lie. No code here writes to the image.

mod gpt;
mod mbr;

use crate::image::volume::ReadAt;
use std::fmt;
use std::io;

pub use gpt::{Guid, PartitionName};

/// Offset of the ext2/3/4 superblock magic: superblock at 1024, magic field at 0x38 inside it.
pub(crate) const EXT_MAGIC_OFFSET: u64 = 1024 + 0x38;
pub(crate) const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];

/// Smallest file that can hold an MBR or an ext superblock.
const MIN_IMAGE_LEN: u64 = 2048;

/// Failure to read a partition table.
#[derive(Debug, thiserror::Error)]
pub enum PartitionTableError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("file is too small to be a disk image ({0} bytes)")]
    TooSmall(u64),
    #[error("not a disk image: no MBR or GPT partition table and no ext2/3/4 filesystem at its start")]
    Unrecognized,
    #[error("invalid MBR partition table: {0}")]
    InvalidMbr(String),
    #[error("invalid GPT partition table: {0}")]
    InvalidGpt(String),
}

/// Logical sector size of an image: the unit of every LBA in its partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorSize {
    Bytes512,
    Bytes4096,
}

impl SectorSize {
    /// Returns the sector size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            SectorSize::Bytes512 => 512,
            SectorSize::Bytes4096 => 4096,
        }
    }

    /// Returns the other of the two sector sizes, for hints in error messages.
    fn other(self) -> SectorSize {
        match self {
            SectorSize::Bytes512 => SectorSize::Bytes4096,
            SectorSize::Bytes4096 => SectorSize::Bytes512,
        }
    }
}

impl fmt::Display for SectorSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.bytes())
    }
}

/// Kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// An MBR (DOS) partition table.
    Mbr,
    /// A GUID partition table behind a protective (or hybrid) MBR.
    Gpt,
    /// No table: the whole file is one filesystem (`.dataimg`, `.ext4`).
    Bare,
}

impl TableKind {
    /// Name used in listings and JSON: `mbr`, `gpt`, or `none` for a bare filesystem image.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
            TableKind::Bare => "none",
        }
    }
}

/// Partition type as the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// MBR system ID byte (0x83 Linux, 0x0c FAT32 LBA, ...).
    Mbr(u8),
    /// GPT partition type GUID.
    Gpt(Guid),
    /// A bare filesystem image has no partition type.
    None,
}

impl PartitionType {
    /// Common name of a well-known GPT type GUID, e.g. `EFI System`; `None` for others and for
    /// MBR types.
    pub fn common_name(&self) -> Option<&'static str> {
        match self {
            PartitionType::Gpt(guid) => gpt::type_name(guid),
            PartitionType::Mbr(_) | PartitionType::None => None,
        }
    }
}

impl fmt::Display for PartitionType {
    /// Writes an MBR type as `0x83`, a GPT type as its GUID, and nothing for no type.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Mbr(id) => write!(formatter, "{id:#04x}"),
            PartitionType::Gpt(guid) => write!(formatter, "{guid}"),
            PartitionType::None => Ok(()),
        }
    }
}

/// One partition: a byte range of the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Number as Linux names it: MBR `p1`..`p4` primary and `p5` up logical, GPT the entry's
    /// index in the partition entry array plus one; 0 for a bare image.
    pub number: u32,
    /// Offset of the first byte in the image file.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    pub partition_type: PartitionType,
    /// The MBR's active flag, or the GPT attribute "legacy BIOS bootable" (bit 2).
    pub bootable: bool,
    /// GPT partition name; empty for MBR partitions and bare images.
    pub name: PartitionName,
}

impl Partition {
    /// Offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The partitions of an image, in table order, with what the reader found wrong but could work
/// around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Logical sector size the table was read with; 512 for a bare image.
    pub sector_size: SectorSize,
    pub partitions: Vec<Partition>,
    /// Problems that did not stop the read, e.g. a damaged primary GPT replaced by its backup.
    pub warnings: Vec<String>,
}

impl PartitionTable {
    /// Reads the partition table of `file`, never writing to it. A protective MBR (type 0xEE)
    /// means GPT; any other MBR is read as MBR; without an MBR boot signature, an ext superblock
    /// at byte 1024 makes a bare filesystem, and a GPT header alone makes GPT. `sector_size`
    /// overrides the detected sector size. Every partition is checked to lie inside the file and
    /// not to overlap another.
    pub fn read(file: &dyn ReadAt, sector_size: Option<SectorSize>) -> Result<Self, PartitionTableError> {
        let len = file.image_len()?;
        if len < MIN_IMAGE_LEN {
            return Err(PartitionTableError::TooSmall(len));
        }
        let mut first_sector = [0u8; 512];
        file.read_image_at(&mut first_sector, 0)?;

        if mbr::has_boot_signature(&first_sector) {
            if mbr::is_protective(&first_sector) {
                return gpt::read(file, len, &first_sector, sector_size);
            }
            return mbr::read(file, len, &first_sector, sector_size);
        }
        if read_array::<2>(file, EXT_MAGIC_OFFSET)? == EXT_MAGIC {
            let whole = Partition {
                number: 0,
                start: 0,
                len,
                partition_type: PartitionType::None,
                bootable: false,
                name: PartitionName::default(),
            };
            return Ok(PartitionTable {
                kind: TableKind::Bare,
                sector_size: SectorSize::Bytes512,
                partitions: vec![whole],
                warnings: Vec::new(),
            });
        }
        if gpt::find_primary_header(file, len)?.is_some() {
            return gpt::read(file, len, &first_sector, sector_size);
        }
        Err(PartitionTableError::Unrecognized)
    }

    /// Returns the partition numbered `number`, if any.
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|partition| partition.number == number)
    }
}

fn read_array<const N: usize>(file: &dyn ReadAt, offset: u64) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    file.read_image_at(&mut bytes, offset)?;
    Ok(bytes)
}

/// Checks that `partition` is not empty, does not start at byte 0 (where the table itself is)
/// and ends inside the image. Returns the problem in words.
fn check_inside(partition: &Partition, image_len: u64) -> Result<(), String> {
    let end = partition.start.checked_add(partition.len);
    if partition.len == 0 || partition.start == 0 || end.is_none_or(|end| end > image_len) {
        return Err(format!(
            "partition {} (bytes {}..{}) does not lie inside the {image_len}-byte image",
            partition.number,
            partition.start,
            partition.start.saturating_add(partition.len)
        ));
    }
    Ok(())
}

/// Checks that no two partitions share a byte. Returns the problem in words.
fn check_no_overlap(partitions: &[Partition]) -> Result<(), String> {
    let mut sorted: Vec<&Partition> = partitions.iter().collect();
    sorted.sort_by_key(|partition| partition.start);
    for pair in sorted.windows(2) {
        if let [first, second] = pair
            && first.end() > second.start
        {
            return Err(format!("partitions {} and {} overlap", first.number, second.number));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(super) fn image_with(first_bytes: &[u8], len: u64) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(first_bytes).unwrap();
        file.as_file().set_len(len).unwrap();
        file
    }

    #[test]
    fn file_without_table_or_filesystem_is_unrecognized() {
        let image = image_with(&[0xAB; 4096], 1 << 20);

        let result = PartitionTable::read(image.as_file(), None);

        assert!(matches!(result, Err(PartitionTableError::Unrecognized)), "{result:?}");
    }

    #[test]
    fn tiny_file_is_too_small() {
        let image = image_with(b"hello", 5);

        let result = PartitionTable::read(image.as_file(), None);

        assert!(matches!(result, Err(PartitionTableError::TooSmall(5))), "{result:?}");
    }

    #[test]
    fn ext_superblock_makes_a_bare_image() {
        let mut start = vec![0u8; 2048];
        start[1024 + 0x38] = 0x53;
        start[1024 + 0x39] = 0xEF;
        let image = image_with(&start, 4 << 20);

        let table = PartitionTable::read(image.as_file(), None).unwrap();

        assert_eq!(table.kind, TableKind::Bare);
        assert_eq!(
            table.partitions,
            vec![Partition {
                number: 0,
                start: 0,
                len: 4 << 20,
                partition_type: PartitionType::None,
                bootable: false,
                name: PartitionName::default(),
            }]
        );
    }
}
