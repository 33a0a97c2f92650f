//! GUID Partition Tables, as the UEFI specification (2.10, chapter 5 "GUID Partition Table (GPT)
//! Disk Layout") defines them. A protective MBR is at LBA 0 and the primary GPT header at LBA 1,
//! with its partition entry array after it. A backup header is at the disk's last LBA, with its
//! own array before it. Both CRC32s (header and entry array) are verified, and a damaged primary is
//! replaced by the backup, with a warning.
//!
//! The format is parsed here rather than with the `gpt` crate (4.1), because that crate does not
//! fit a reader that must reject hostile images without panicking or writing. It asserts that
//! entries are 128 bytes, so a valid 256-byte entry size panics. It allocates whatever entry
//! count times entry size a header claims, wants a device that implements `Write`, and does not
//! fall back to the backup entry array when only the primary array is damaged. CRC32 comes from
//! the `crc` crate, whose `CRC_32_ISO_HDLC` is the CRC32 the specification uses.

use crate::image::volume::ReadAt;
use std::fmt;

use super::mbr::{self, GPT_PROTECTIVE_TYPE};
use super::{
    Partition, PartitionTable, PartitionTableError, PartitionType, SectorSize, TableKind, check_inside,
    check_no_overlap,
};

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The header signature, "EFI PART".
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Major revision accepted. The UEFI specification up to 2.10 defines only revision 1.0
/// (0x00010000).
const REVISION_MAJOR: u16 = 1;
/// Size of the header fields defined by revision 1.0.
const MIN_HEADER_SIZE: u32 = 92;
/// Entry sizes are 128 × 2^n bytes, and this bound keeps one entry inside a 4096-byte sector.
const MIN_ENTRY_SIZE: u32 = 128;
const MAX_ENTRY_SIZE: u32 = 4096;
/// Maximum size of the partition entry array read. sfdisk and fdisk write 16 KiB (128 entries of
/// 128 bytes), and the bound keeps a hostile entry count from making the reader allocate gigabytes.
const MAX_ENTRY_ARRAY_LEN: u64 = 1 << 20;

// Offsets of the GPT header fields.
const SIGNATURE_OFFSET: usize = 0x00;
const REVISION_OFFSET: usize = 0x08;
const HEADER_SIZE_OFFSET: usize = 0x0C;
const HEADER_CRC_OFFSET: usize = 0x10;
const MY_LBA_OFFSET: usize = 0x18;
const ALTERNATE_LBA_OFFSET: usize = 0x20;
const FIRST_USABLE_LBA_OFFSET: usize = 0x28;
const LAST_USABLE_LBA_OFFSET: usize = 0x30;
const ENTRY_ARRAY_LBA_OFFSET: usize = 0x48;
const ENTRY_COUNT_OFFSET: usize = 0x50;
const ENTRY_SIZE_OFFSET: usize = 0x54;
const ENTRY_ARRAY_CRC_OFFSET: usize = 0x58;

// Offsets of the partition entry fields.
const ENTRY_TYPE_GUID_OFFSET: usize = 0x00;
const ENTRY_STARTING_LBA_OFFSET: usize = 0x20;
const ENTRY_ENDING_LBA_OFFSET: usize = 0x28;
const ENTRY_ATTRIBUTES_OFFSET: usize = 0x30;
const ENTRY_NAME_OFFSET: usize = 0x38;
/// Length of the partition name in UTF-16 code units.
const NAME_UNITS: usize = 36;
/// Attribute bit 2, "legacy BIOS bootable".
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// A GUID as GPT stores it: the first three fields little-endian, the last eight bytes in order.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    /// Writes the GUID in the registry form that `sfdisk` and `sgdisk` print, upper-case.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = &self.0;
        write!(
            formatter,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u16::from_le_bytes([bytes[4], bytes[5]]),
            u16::from_le_bytes([bytes[6], bytes[7]]),
            bytes[8],
            bytes[9]
        )?;
        bytes[10..].iter().try_for_each(|byte| write!(formatter, "{byte:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// A GPT partition name: 36 UTF-16 code units, ending at the first NUL. All NULs for MBR
/// partitions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PartitionName([u16; NAME_UNITS]);

impl Default for PartitionName {
    fn default() -> Self {
        PartitionName([0; NAME_UNITS])
    }
}

impl PartitionName {
    /// Returns true when the name has no characters.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl fmt::Display for PartitionName {
    /// Writes the name up to its first NUL; invalid UTF-16 becomes U+FFFD.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.0.iter().copied().take_while(|&unit| unit != 0);
        char::decode_utf16(units)
            .map(|decoded| decoded.unwrap_or(char::REPLACEMENT_CHARACTER))
            .try_for_each(|character| write!(formatter, "{character}"))
    }
}

impl fmt::Debug for PartitionName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.to_string())
    }
}

/// Common names of the partition type GUIDs found in Mender and other embedded Linux images.
const TYPE_NAMES: [(&str, &str); 10] = [
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"),
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM-64)"),
    ("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "Linux root (ARM)"),
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
];

/// Returns the common name of a partition type GUID listed in [`TYPE_NAMES`].
pub(super) fn type_name(guid: &Guid) -> Option<&'static str> {
    let text = guid.to_string();
    TYPE_NAMES.iter().find(|(known, _)| *known == text).map(|(_, name)| *name)
}

/// The copy of the GPT a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Primary,
    Backup,
}

/// The fields of a validated GPT header that locate and bound the partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    alternate_lba: u64,
    first_usable_lba: u64,
    last_usable_lba: u64,
    entry_array_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entry_array_crc: u32,
}

/// The image file and its sector size and last LBA, which locate the GPT structures.
#[derive(Debug, Clone, Copy)]
struct Layout<'a> {
    file: &'a dyn ReadAt,
    sector_size: SectorSize,
    /// The image's last LBA, where the backup header normally is.
    last_lba: u64,
}

/// Returns the byte offset of a primary GPT header signature, at LBA 1 for 512-byte or for
/// 4096-byte sectors, or `None` when neither contains one.
pub(super) fn find_primary_header(file: &dyn ReadAt, image_len: u64) -> std::io::Result<Option<u64>> {
    for size in [SectorSize::Bytes512, SectorSize::Bytes4096] {
        if has_signature(file, image_len, size.bytes())? {
            return Ok(Some(size.bytes()));
        }
    }
    Ok(None)
}

fn has_signature(file: &dyn ReadAt, image_len: u64, offset: u64) -> std::io::Result<bool> {
    if offset.saturating_add(SIGNATURE.len() as u64) > image_len {
        return Ok(false);
    }
    let mut bytes = [0u8; 8];
    file.read_image_at(&mut bytes, offset)?;
    Ok(&bytes == SIGNATURE)
}

/// Reads the GPT of an image whose first sector is `first_sector`, with `requested` sectors or
/// else the size that [`detect_sector_size`] finds. Uses the primary GPT when it is valid, else
/// the backup; fails when neither is.
pub(super) fn read(
    file: &dyn ReadAt,
    image_len: u64,
    first_sector: &[u8; 512],
    requested: Option<SectorSize>,
) -> Result<PartitionTable, PartitionTableError> {
    let sector_size = match requested {
        Some(size) => size,
        None => detect_sector_size(file, image_len, first_sector)?,
    };
    let lba_count = image_len / sector_size.bytes();
    if lba_count < 4 {
        return Err(PartitionTableError::InvalidGpt(format!(
            "the {image_len}-byte image is too small to hold a GPT with {sector_size}-byte sectors"
        )));
    }
    let layout = Layout { file, sector_size, last_lba: lba_count - 1 };

    let primary_header = read_header(&layout, 1, Copy::Primary);
    let backup_lba = match &primary_header {
        Ok(header) => header.alternate_lba,
        Err(_) => layout.last_lba,
    };
    let primary = primary_header.and_then(|header| read_entries(&layout, &header)).transpose_io()?;
    let backup = if backup_lba > layout.last_lba {
        Err(format!("it lies past the image's last LBA {}", layout.last_lba))
    } else {
        let header = read_header(&layout, backup_lba, Copy::Backup);
        header.and_then(|header| read_entries(&layout, &header)).transpose_io()?
    };

    let mut warnings = Vec::new();
    let partitions = match (primary, backup) {
        (Ok(primary), Ok(backup)) => {
            if primary != backup {
                warnings.push(format!(
                    "the backup GPT at LBA {backup_lba} lists other partitions than the primary GPT; \
                     the primary is used"
                ));
            }
            primary
        }
        (Ok(primary), Err(backup_problem)) => {
            warnings.push(format!(
                "the backup GPT at LBA {backup_lba} is invalid ({backup_problem}); the primary GPT is used"
            ));
            primary
        }
        (Err(primary_problem), Ok(backup)) => {
            warnings.push(format!(
                "the primary GPT at LBA 1 is invalid ({primary_problem}); the backup GPT at LBA \
                 {backup_lba} is used instead. The image is not repaired: rewrite its table before \
                 flashing, for example with `sfdisk -d IMAGE | sfdisk IMAGE`"
            ));
            backup
        }
        (Err(primary_problem), Err(backup_problem)) => {
            if let Some(truncated) = truncation(&layout, image_len)? {
                return Err(PartitionTableError::InvalidGpt(truncated));
            }
            return Err(PartitionTableError::InvalidGpt(format!(
                "the primary GPT at LBA 1 is invalid ({primary_problem}), and so is the backup GPT at \
                 LBA {backup_lba} ({backup_problem}){}",
                other_sector_size_hint(file, image_len, requested)?
            )));
        }
    };

    warnings.extend(check_mbr(first_sector, sector_size, &partitions)?);
    Ok(PartitionTable { kind: TableKind::Gpt, sector_size, partitions, warnings })
}

/// Describes an image cut short: the primary GPT header is intact (signature and CRC32), but the
/// backup header it names lies past the image's last LBA. Returns `None` for any other damage.
fn truncation(layout: &Layout, image_len: u64) -> Result<Option<String>, PartitionTableError> {
    let sector_bytes = layout.sector_size.bytes();
    let mut sector = vec![0u8; sector_bytes as usize];
    layout.file.read_image_at(&mut sector, sector_bytes)?;
    if &sector[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 8] != SIGNATURE {
        return Ok(None);
    }
    let header_size = read_u32(&sector, HEADER_SIZE_OFFSET);
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > sector_bytes {
        return Ok(None);
    }
    let mut header_bytes = sector[..header_size as usize].to_vec();
    header_bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
    if CRC32.checksum(&header_bytes) != read_u32(&sector, HEADER_CRC_OFFSET) {
        return Ok(None);
    }
    let backup_lba = read_u64(&sector, ALTERNATE_LBA_OFFSET);
    if backup_lba <= layout.last_lba {
        return Ok(None);
    }
    let expected_len = backup_lba.saturating_add(1).saturating_mul(sector_bytes);
    Ok(Some(format!(
        "the image is shorter than its GPT says (truncated?): it has {image_len} bytes, but its primary GPT \
         puts the backup GPT at LBA {backup_lba}, so the image should have at least {expected_len} bytes"
    )))
}

/// Splits the result of reading one GPT copy: a failed read of the file fails the whole table,
/// while an invalid copy becomes a reason in words, so that the other copy can be tried.
trait TransposeIo<T> {
    fn transpose_io(self) -> Result<Result<T, String>, PartitionTableError>;
}

impl<T> TransposeIo<T> for Result<T, Problem> {
    fn transpose_io(self) -> Result<Result<T, String>, PartitionTableError> {
        match self {
            Ok(value) => Ok(Ok(value)),
            Err(Problem::Invalid(text)) => Ok(Err(text)),
            Err(Problem::Io(error)) => Err(PartitionTableError::Io(error)),
        }
    }
}

/// The reason one copy of the GPT could not be used.
#[derive(Debug)]
enum Problem {
    /// The copy is damaged or inconsistent, in words.
    Invalid(String),
    /// The file could not be read.
    Io(std::io::Error),
}

impl From<String> for Problem {
    fn from(text: String) -> Self {
        Problem::Invalid(text)
    }
}

impl From<std::io::Error> for Problem {
    fn from(error: std::io::Error) -> Self {
        Problem::Io(error)
    }
}

/// Chooses the sector size of a GPT image: where a header signature is (LBA 1, else the backup
/// at the last LBA), else the size of the protective MBR entry, which covers the whole disk in
/// sectors. Falls back to 512.
fn detect_sector_size(
    file: &dyn ReadAt,
    image_len: u64,
    first_sector: &[u8; 512],
) -> Result<SectorSize, PartitionTableError> {
    let sizes = [SectorSize::Bytes512, SectorSize::Bytes4096];
    for size in sizes {
        if has_signature(file, image_len, size.bytes())? {
            return Ok(size);
        }
    }
    for size in sizes {
        let last_lba_offset = (image_len / size.bytes()).saturating_sub(1) * size.bytes();
        if last_lba_offset > 0 && has_signature(file, image_len, last_lba_offset)? {
            return Ok(size);
        }
    }
    if let Ok(header) = mbr::parse_header(first_sector)
        && let Some((_, protective)) = header.iter().find(|(_, entry)| entry.sys == GPT_PROTECTIVE_TYPE)
    {
        let covers_disk = |size: SectorSize| {
            let sectors = (image_len / size.bytes()).saturating_sub(1).min(u64::from(u32::MAX));
            u64::from(protective.sectors) == sectors
        };
        if covers_disk(SectorSize::Bytes4096) && !covers_disk(SectorSize::Bytes512) {
            return Ok(SectorSize::Bytes4096);
        }
    }
    Ok(SectorSize::Bytes512)
}

/// When the caller chose a sector size and a GPT header lies where the other size puts it,
/// returns a sentence saying so, to append to an error.
fn other_sector_size_hint(
    file: &dyn ReadAt,
    image_len: u64,
    requested: Option<SectorSize>,
) -> Result<String, PartitionTableError> {
    let Some(requested) = requested else { return Ok(String::new()) };
    let other = requested.other();
    if has_signature(file, image_len, other.bytes())? {
        return Ok(format!(
            "; a GPT header lies at byte {}, so the image has {other}-byte sectors, not the \
             {requested} requested",
            other.bytes()
        ));
    }
    Ok(String::new())
}

/// Reads and validates the header of one GPT copy at `lba`, which lies inside the image.
fn read_header(layout: &Layout, lba: u64, copy: Copy) -> Result<Header, Problem> {
    let sector_bytes = layout.sector_size.bytes();
    let mut sector = vec![0u8; sector_bytes as usize];
    layout.file.read_image_at(&mut sector, lba * sector_bytes)?;
    Ok(parse_header(&sector, lba, copy, layout)?)
}

/// Checks every header field that locates something against the specification's rules and the
/// image's size: signature, revision, header size, header CRC32, my LBA, the usable LBAs and
/// where the entry array lies, and the entry size and count bounds.
fn parse_header(sector: &[u8], lba: u64, copy: Copy, layout: &Layout) -> Result<Header, String> {
    if &sector[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 8] != SIGNATURE {
        return Err("no \"EFI PART\" signature".into());
    }
    let revision = read_u32(sector, REVISION_OFFSET);
    if (revision >> 16) as u16 != REVISION_MAJOR {
        return Err(format!("revision {}.{} is not 1.x", revision >> 16, revision & 0xFFFF));
    }
    let header_size = read_u32(sector, HEADER_SIZE_OFFSET);
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > layout.sector_size.bytes() {
        return Err(format!(
            "header size {header_size} is not between {MIN_HEADER_SIZE} and {}",
            layout.sector_size.bytes()
        ));
    }
    let stored_crc = read_u32(sector, HEADER_CRC_OFFSET);
    let mut header_bytes = sector[..header_size as usize].to_vec();
    header_bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
    let computed_crc = CRC32.checksum(&header_bytes);
    if stored_crc != computed_crc {
        return Err(format!(
            "header CRC32 is {stored_crc:#010x}, but the header's bytes give {computed_crc:#010x}"
        ));
    }
    let my_lba = read_u64(sector, MY_LBA_OFFSET);
    if my_lba != lba {
        return Err(format!("the header read at LBA {lba} says it is at LBA {my_lba}"));
    }

    let header = Header {
        alternate_lba: read_u64(sector, ALTERNATE_LBA_OFFSET),
        first_usable_lba: read_u64(sector, FIRST_USABLE_LBA_OFFSET),
        last_usable_lba: read_u64(sector, LAST_USABLE_LBA_OFFSET),
        entry_array_lba: read_u64(sector, ENTRY_ARRAY_LBA_OFFSET),
        entry_count: read_u32(sector, ENTRY_COUNT_OFFSET),
        entry_size: read_u32(sector, ENTRY_SIZE_OFFSET),
        entry_array_crc: read_u32(sector, ENTRY_ARRAY_CRC_OFFSET),
    };
    if copy == Copy::Backup && header.alternate_lba != 1 {
        return Err(format!("the backup header names LBA {} as the primary's, not 1", header.alternate_lba));
    }
    check_usable_range(&header, lba, copy, layout)?;
    check_entry_array_bounds(&header, lba, layout)?;
    Ok(header)
}

/// Checks that the usable LBAs lie after the primary header, before this copy's backup header,
/// and inside the image.
fn check_usable_range(header: &Header, lba: u64, copy: Copy, layout: &Layout) -> Result<(), String> {
    let (first, last) = (header.first_usable_lba, header.last_usable_lba);
    let backup_lba = if copy == Copy::Primary { header.alternate_lba } else { lba };
    if first < 2 || first > last {
        return Err(format!("the usable LBAs {first} to {last} are empty or start before LBA 2"));
    }
    if last >= backup_lba || last > layout.last_lba {
        return Err(format!(
            "the usable LBAs {first} to {last} reach the backup header (LBA {backup_lba}) or the image's \
             last LBA {}",
            layout.last_lba
        ));
    }
    Ok(())
}

/// Checks the entry size and count bounds, and that the entry array lies inside the image and
/// outside the usable LBAs and both headers.
fn check_entry_array_bounds(header: &Header, lba: u64, layout: &Layout) -> Result<(), String> {
    let size = header.entry_size;
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&size) || !size.is_power_of_two() {
        return Err(format!("partition entry size {size} is not 128 × 2^n bytes up to {MAX_ENTRY_SIZE}"));
    }
    let array_len = u64::from(header.entry_count) * u64::from(size);
    if array_len > MAX_ENTRY_ARRAY_LEN {
        return Err(format!(
            "{} partition entries of {size} bytes make a {array_len}-byte array, more than the \
             {MAX_ENTRY_ARRAY_LEN} bytes this tool reads",
            header.entry_count
        ));
    }

    let start = header.entry_array_lba;
    let sectors = array_len.div_ceil(layout.sector_size.bytes());
    let end = start.checked_add(sectors).ok_or("the partition entry array's LBA overflows")?;
    let overlaps = |first: u64, last: u64| start <= last && first < end;
    if start < 2
        || end > layout.last_lba + 1
        || overlaps(header.first_usable_lba, header.last_usable_lba)
        || overlaps(lba, lba)
        || overlaps(header.alternate_lba, header.alternate_lba)
    {
        return Err(format!(
            "the partition entry array at LBAs {start} to {} overlaps a header, the usable LBAs or the \
             image's end",
            end - 1
        ));
    }
    Ok(())
}

/// Reads the entry array that `header` locates, checks its CRC32 and returns the used entries
/// as partitions, numbered by index + 1. Each must lie inside the usable LBAs and overlap no other.
fn read_entries(layout: &Layout, header: &Header) -> Result<Vec<Partition>, Problem> {
    let sector_bytes = layout.sector_size.bytes();
    let entry_size = header.entry_size as usize;
    let mut array = vec![0u8; header.entry_count as usize * entry_size];
    layout.file.read_image_at(&mut array, header.entry_array_lba * sector_bytes)?;
    let computed_crc = CRC32.checksum(&array);
    if computed_crc != header.entry_array_crc {
        return Err(Problem::Invalid(format!(
            "partition entry array CRC32 is {:#010x}, but the array's bytes give {computed_crc:#010x}",
            header.entry_array_crc
        )));
    }

    let mut partitions = Vec::new();
    for (index, entry) in array.chunks_exact(entry_size).enumerate() {
        let type_guid = read_guid(entry, ENTRY_TYPE_GUID_OFFSET);
        if type_guid.is_zero() {
            continue;
        }
        let number = index as u32 + 1;
        let first_lba = read_u64(entry, ENTRY_STARTING_LBA_OFFSET);
        let last_lba = read_u64(entry, ENTRY_ENDING_LBA_OFFSET);
        if first_lba > last_lba || first_lba < header.first_usable_lba || last_lba > header.last_usable_lba {
            return Err(Problem::Invalid(format!(
                "partition {number} (LBAs {first_lba} to {last_lba}) does not lie inside the usable LBAs \
                 {} to {}",
                header.first_usable_lba, header.last_usable_lba
            )));
        }

        let mut name = [0u16; NAME_UNITS];
        for (unit_index, unit) in name.iter_mut().enumerate() {
            let at = ENTRY_NAME_OFFSET + unit_index * 2;
            *unit = u16::from_le_bytes([entry[at], entry[at + 1]]);
        }
        // The usable range ends inside the image, so these products fit in u64.
        let partition = Partition {
            number,
            start: first_lba * sector_bytes,
            len: (last_lba - first_lba + 1) * sector_bytes,
            partition_type: PartitionType::Gpt(type_guid),
            bootable: read_u64(entry, ENTRY_ATTRIBUTES_OFFSET) & LEGACY_BIOS_BOOTABLE != 0,
            name: PartitionName(name),
        };
        check_inside(&partition, (layout.last_lba + 1) * sector_bytes)?;
        partitions.push(partition);
    }
    check_no_overlap(&partitions)?;
    Ok(partitions)
}

/// Checks the MBR in front of a GPT. A protective MBR (one 0xEE entry) needs nothing more. A
/// hybrid MBR, which also lists some partitions for legacy systems, is accepted when each of
/// those matches a GPT partition exactly, and rejected otherwise, because the two tables would
/// then disagree about where data lies. Returns warnings for a missing MBR or an odd 0xEE entry.
fn check_mbr(
    first_sector: &[u8; 512],
    sector_size: SectorSize,
    partitions: &[Partition],
) -> Result<Vec<String>, PartitionTableError> {
    if !mbr::has_boot_signature(first_sector) {
        return Ok(vec![
            "LBA 0 holds no protective MBR; tools that read the MBR first may see an empty disk".into(),
        ]);
    }
    let mut sector = *first_sector;
    let mut warnings = mbr::clear_protective_boot_flags(&mut sector);
    let header = mbr::parse_header(&sector).map_err(PartitionTableError::InvalidGpt)?;

    for (index, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        if entry.sys == GPT_PROTECTIVE_TYPE {
            if entry.starting_lba != 1 {
                warnings.push(format!(
                    "the protective MBR entry starts at LBA {}, not 1; the GPT is read all the same",
                    entry.starting_lba
                ));
            }
            continue;
        }
        let legacy = mbr::to_partition(index as u32, entry, sector_size);
        let matches_gpt =
            partitions.iter().any(|partition| partition.start == legacy.start && partition.len == legacy.len);
        if !matches_gpt {
            return Err(PartitionTableError::InvalidGpt(format!(
                "hybrid MBR: its partition {index} (type {:#04x}, bytes {}..{}) matches no GPT partition, so \
                 the MBR and the GPT disagree; make the MBR protective only (one 0xEE entry) or list the \
                 same partition in both",
                entry.sys,
                legacy.start,
                legacy.end()
            )));
        }
    }
    Ok(warnings)
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(field)
}

fn read_guid(bytes: &[u8], offset: usize) -> Guid {
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&bytes[offset..offset + 16]);
    Guid(guid)
}

#[cfg(test)]
mod tests {
    use super::super::tests::image_with;
    use super::*;
    use std::os::unix::fs::FileExt;

    const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    const LINUX_FILESYSTEM: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    /// One partition entry to write: entry index, type GUID bytes, first and last LBA, name.
    struct TestEntry {
        index: usize,
        type_guid: [u8; 16],
        first_lba: u64,
        last_lba: u64,
        name: &'static str,
    }

    /// Parameters of a GPT image built in memory.
    struct TestDisk {
        sector: u64,
        lbas: u64,
        entry_count: u32,
        entry_size: u32,
        entries: Vec<TestEntry>,
    }

    /// Returns the GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI System) as stored on disk.
    fn efi_system_guid() -> [u8; 16] {
        [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]
    }

    /// Returns the GUID 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem) as stored on disk.
    fn linux_guid() -> [u8; 16] {
        [0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]
    }

    impl TestDisk {
        fn new(sector: u64, lbas: u64) -> Self {
            TestDisk { sector, lbas, entry_count: 128, entry_size: 128, entries: Vec::new() }
        }

        fn with(
            mut self,
            index: usize,
            type_guid: [u8; 16],
            first_lba: u64,
            last_lba: u64,
            name: &'static str,
        ) -> Self {
            self.entries.push(TestEntry { index, type_guid, first_lba, last_lba, name });
            self
        }

        fn array_sectors(&self) -> u64 {
            (u64::from(self.entry_count) * u64::from(self.entry_size)).div_ceil(self.sector)
        }

        fn first_usable(&self) -> u64 {
            2 + self.array_sectors()
        }

        fn last_usable(&self) -> u64 {
            self.lbas - 2 - self.array_sectors()
        }

        fn entry_array(&self) -> Vec<u8> {
            let mut array = vec![0u8; self.entry_count as usize * self.entry_size as usize];
            for entry in &self.entries {
                let at = entry.index * self.entry_size as usize;
                array[at..at + 16].copy_from_slice(&entry.type_guid);
                array[at + 16] = entry.index as u8 + 1;
                array[at + 0x20..at + 0x28].copy_from_slice(&entry.first_lba.to_le_bytes());
                array[at + 0x28..at + 0x30].copy_from_slice(&entry.last_lba.to_le_bytes());
                for (unit_index, unit) in entry.name.encode_utf16().enumerate() {
                    let unit_at = at + ENTRY_NAME_OFFSET + unit_index * 2;
                    array[unit_at..unit_at + 2].copy_from_slice(&unit.to_le_bytes());
                }
            }
            array
        }

        fn header(&self, my_lba: u64, alternate_lba: u64, array_lba: u64, array_crc: u32) -> Vec<u8> {
            let mut header = vec![0u8; self.sector as usize];
            header[..8].copy_from_slice(SIGNATURE);
            header[REVISION_OFFSET..REVISION_OFFSET + 4].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            header[HEADER_SIZE_OFFSET..HEADER_SIZE_OFFSET + 4].copy_from_slice(&92u32.to_le_bytes());
            let fields: [(usize, u64); 5] = [
                (MY_LBA_OFFSET, my_lba),
                (ALTERNATE_LBA_OFFSET, alternate_lba),
                (FIRST_USABLE_LBA_OFFSET, self.first_usable()),
                (LAST_USABLE_LBA_OFFSET, self.last_usable()),
                (ENTRY_ARRAY_LBA_OFFSET, array_lba),
            ];
            for (offset, value) in fields {
                header[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            }
            header[0x38] = 0x42;
            header[ENTRY_COUNT_OFFSET..ENTRY_COUNT_OFFSET + 4]
                .copy_from_slice(&self.entry_count.to_le_bytes());
            header[ENTRY_SIZE_OFFSET..ENTRY_SIZE_OFFSET + 4].copy_from_slice(&self.entry_size.to_le_bytes());
            header[ENTRY_ARRAY_CRC_OFFSET..ENTRY_ARRAY_CRC_OFFSET + 4]
                .copy_from_slice(&array_crc.to_le_bytes());
            let crc = CRC32.checksum(&header[..92]);
            header[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
            header
        }

        /// Writes the protective MBR, both headers and both entry arrays into a new image file.
        fn build(&self) -> tempfile::NamedTempFile {
            let mut mbr = vec![0u8; 512];
            mbr[446 + 4] = GPT_PROTECTIVE_TYPE;
            mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
            let protective_sectors = (self.lbas - 1).min(u64::from(u32::MAX)) as u32;
            mbr[446 + 12..446 + 16].copy_from_slice(&protective_sectors.to_le_bytes());
            mbr[510] = 0x55;
            mbr[511] = 0xAA;
            let image = image_with(&mbr, self.lbas * self.sector);

            let array = self.entry_array();
            let array_crc = CRC32.checksum(&array);
            let last = self.lbas - 1;
            let backup_array_lba = last - self.array_sectors();
            let file = image.as_file();
            file.write_all_at(&self.header(1, last, 2, array_crc), self.sector).unwrap();
            file.write_all_at(&array, 2 * self.sector).unwrap();
            file.write_all_at(&array, backup_array_lba * self.sector).unwrap();
            file.write_all_at(&self.header(last, 1, backup_array_lba, array_crc), last * self.sector)
                .unwrap();
            image
        }
    }

    /// Describes a 16 MiB disk of 512-byte sectors with partitions 1 (EFI System, "boot") and 3
    /// (Linux, "data").
    fn two_partition_disk() -> TestDisk {
        TestDisk::new(512, 32768).with(0, efi_system_guid(), 2048, 4095, "boot").with(
            2,
            linux_guid(),
            4096,
            8191,
            "data",
        )
    }

    fn corrupt(image: &tempfile::NamedTempFile, offset: u64) {
        let mut byte = [0u8; 1];
        image.as_file().read_exact_at(&mut byte, offset).unwrap();
        image.as_file().write_all_at(&[byte[0] ^ 0xFF], offset).unwrap();
    }

    fn read_table(image: &tempfile::NamedTempFile) -> Result<PartitionTable, PartitionTableError> {
        PartitionTable::read(image.as_file(), None)
    }

    #[test]
    fn partitions_are_numbered_by_entry_index() {
        let image = two_partition_disk().build();

        let table = read_table(&image).unwrap();

        assert_eq!(table.kind, TableKind::Gpt);
        assert_eq!(table.sector_size, SectorSize::Bytes512);
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        let found: Vec<(u32, u64, u64)> = table
            .partitions
            .iter()
            .map(|partition| (partition.number, partition.start, partition.len))
            .collect();
        assert_eq!(found, vec![(1, 2048 * 512, 2048 * 512), (3, 4096 * 512, 4096 * 512)]);
        assert_eq!(table.partitions[0].partition_type.to_string(), EFI_SYSTEM);
        assert_eq!(table.partitions[0].partition_type.common_name(), Some("EFI System"));
        assert_eq!(table.partitions[1].partition_type.to_string(), LINUX_FILESYSTEM);
        assert_eq!(table.partitions[0].name.to_string(), "boot");
        assert_eq!(table.partitions[1].name.to_string(), "data");
    }

    #[test]
    fn header_at_4096_means_4096_byte_sectors() {
        let image = TestDisk::new(4096, 4096).with(0, linux_guid(), 256, 1023, "rootfs").build();

        let table = read_table(&image).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes4096);
        assert_eq!(table.partitions[0].start, 256 * 4096);
        assert_eq!(table.partitions[0].len, 768 * 4096);
    }

    #[test]
    fn damaged_primary_header_falls_back_to_backup() {
        let image = two_partition_disk().build();
        corrupt(&image, 512 + 0x38);

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert_eq!(table.partitions[1].name.to_string(), "data");
        assert_eq!(table.warnings.len(), 1, "{:?}", table.warnings);
        assert!(
            table.warnings[0].contains("primary GPT at LBA 1 is invalid (header CRC32"),
            "{:?}",
            table.warnings
        );
        assert!(table.warnings[0].contains("backup GPT at LBA 32767 is used"), "{:?}", table.warnings);
    }

    #[test]
    fn zeroed_primary_header_is_found_by_backup_signature() {
        let image = TestDisk::new(4096, 4096).with(0, linux_guid(), 256, 1023, "rootfs").build();
        image.as_file().write_all_at(&[0u8; 4096], 4096).unwrap();

        let table = read_table(&image).unwrap();

        assert_eq!(table.sector_size, SectorSize::Bytes4096);
        assert_eq!(table.partitions[0].start, 256 * 4096);
        assert!(table.warnings[0].contains("no \"EFI PART\" signature"), "{:?}", table.warnings);
    }

    #[test]
    fn damaged_primary_entries_fall_back_to_backup() {
        let image = two_partition_disk().build();
        corrupt(&image, 2 * 512 + 0x38);

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions[0].name.to_string(), "boot");
        assert!(table.warnings[0].contains("partition entry array CRC32"), "{:?}", table.warnings);
    }

    #[test]
    fn grown_image_reads_backup_at_alternate_lba() {
        let image = two_partition_disk().build();
        image.as_file().set_len(64 << 20).unwrap();

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    }

    #[test]
    fn damaged_backup_is_a_warning() {
        let image = two_partition_disk().build();
        corrupt(&image, 32767 * 512 + 0x38);

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert!(table.warnings[0].contains("backup GPT at LBA 32767 is invalid"), "{:?}", table.warnings);
    }

    #[test]
    fn protective_entry_boot_flag_is_a_warning() {
        let image = two_partition_disk().build();
        image.as_file().write_all_at(&[0x01], 446).unwrap();

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert_eq!(table.warnings.len(), 1, "{:?}", table.warnings);
        assert!(table.warnings[0].contains("protective MBR entry (MBR partition 1)"), "{:?}", table.warnings);
        assert!(table.warnings[0].contains("boot flag 0x01"), "{:?}", table.warnings);
    }

    #[test]
    fn other_mbr_entry_boot_flag_names_its_slot() {
        let image = two_partition_disk().build();
        image.as_file().write_all_at(&[0x01, 0, 0, 0, 0x83], 446 + 16).unwrap();

        let error = read_table(&image).unwrap_err().to_string();

        assert!(error.contains("MBR partition 2 has boot flag 0x01"), "{error}");
    }

    #[test]
    fn truncated_image_is_named_truncated() {
        let image = two_partition_disk().build();
        image.as_file().set_len(30720 * 512).unwrap();

        let error = read_table(&image).unwrap_err().to_string();

        assert!(error.contains("shorter than its GPT says (truncated?)"), "{error}");
        assert!(error.contains("it has 15728640 bytes"), "{error}");
        assert!(error.contains("backup GPT at LBA 32767"), "{error}");
        assert!(error.contains("at least 16777216 bytes"), "{error}");
        assert!(!error.contains("..="), "{error}");
    }

    #[test]
    fn both_copies_damaged_is_an_error() {
        let image = two_partition_disk().build();
        corrupt(&image, 512 + 0x38);
        corrupt(&image, 32767 * 512 + 0x38);

        let error = read_table(&image).unwrap_err();

        assert!(matches!(error, PartitionTableError::InvalidGpt(_)), "{error}");
        assert!(error.to_string().contains("primary GPT at LBA 1 is invalid"), "{error}");
        assert!(error.to_string().contains("and so is the backup GPT at LBA 32767"), "{error}");
    }

    #[test]
    fn wrong_requested_sector_size_names_the_right_one() {
        let image = two_partition_disk().build();

        let error = PartitionTable::read(image.as_file(), Some(SectorSize::Bytes4096)).unwrap_err();

        assert!(
            error.to_string().contains("the image has 512-byte sectors, not the 4096 requested"),
            "{error}"
        );
    }

    #[test]
    fn entry_size_256_is_read() {
        let mut disk = two_partition_disk();
        disk.entry_size = 256;
        disk.entry_count = 64;
        let image = disk.build();

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert_eq!(table.partitions[1].number, 3);
    }

    #[test]
    fn entry_size_192_is_rejected() {
        let mut disk = two_partition_disk();
        disk.entry_size = 192;
        let image = disk.build();

        let error = read_table(&image).unwrap_err();

        assert!(error.to_string().contains("partition entry size 192"), "{error}");
    }

    #[test]
    fn huge_entry_count_is_rejected() {
        let mut disk = TestDisk::new(512, 32768).with(0, linux_guid(), 20000, 20100, "");
        disk.entry_count = 16384;
        let image = disk.build();

        let error = read_table(&image).unwrap_err();

        assert!(error.to_string().contains("more than the 1048576 bytes"), "{error}");
    }

    #[test]
    fn partition_outside_usable_lbas_is_rejected() {
        let image = TestDisk::new(512, 32768).with(0, linux_guid(), 2048, 32767, "").build();

        let error = read_table(&image).unwrap_err();

        assert!(error.to_string().contains("does not lie inside the usable LBAs 34 to 32734"), "{error}");
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let image = two_partition_disk().with(5, linux_guid(), 4000, 4200, "").build();

        let error = read_table(&image).unwrap_err();

        assert!(error.to_string().contains("partitions 1 and 6 overlap"), "{error}");
    }

    /// Adds an MBR entry (type, first sector, sector count) to the image's first sector.
    fn add_mbr_entry(image: &tempfile::NamedTempFile, slot: usize, type_id: u8, start: u32, sectors: u32) {
        let mut entry = [0u8; 16];
        entry[4] = type_id;
        entry[8..12].copy_from_slice(&start.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        image.as_file().write_all_at(&entry, 446 + slot as u64 * 16).unwrap();
    }

    #[test]
    fn hybrid_mbr_matching_the_gpt_is_accepted() {
        let image = two_partition_disk().build();
        add_mbr_entry(&image, 1, 0x0c, 2048, 2048);

        let table = read_table(&image).unwrap();

        assert_eq!(table.kind, TableKind::Gpt);
        assert_eq!(table.partitions.len(), 2);
    }

    #[test]
    fn hybrid_mbr_disagreeing_with_the_gpt_is_rejected() {
        let image = two_partition_disk().build();
        add_mbr_entry(&image, 1, 0x0c, 2048, 1024);

        let error = read_table(&image).unwrap_err();

        assert!(error.to_string().contains("hybrid MBR: its partition 2 (type 0x0c"), "{error}");
    }

    #[test]
    fn missing_protective_mbr_is_a_warning() {
        let image = two_partition_disk().build();
        image.as_file().write_all_at(&[0u8; 512], 0).unwrap();

        let table = read_table(&image).unwrap();

        assert_eq!(table.partitions.len(), 2);
        assert!(table.warnings[0].contains("no protective MBR"), "{:?}", table.warnings);
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let clean = std::fs::read(two_partition_disk().build().path()).unwrap();
        // A fixed xorshift sequence makes every run flip the same bytes.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let image = image_with(&clean, clean.len() as u64);
            for _ in 0..4 {
                let region = [0u64, 512, 1024, 32767 * 512][(next() % 4) as usize];
                let offset = region + next() % 512;
                image.as_file().write_all_at(&[next() as u8], offset).unwrap();
            }
            let _ = read_table(&image);
        }
    }
}
