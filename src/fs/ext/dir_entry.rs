//! Directory entries (`ext4_dir_entry_2`): inode number, record length, name length, file type
//! and name, packed back to back in directory blocks.

use super::bytes::{read_u8, read_u16le, read_u32le, write_u8, write_u16le, write_u32le};
use super::error::ExtError;

const DE_INODE: usize = 0x0;
const DE_REC_LEN: usize = 0x4;
const DE_NAME_LEN: usize = 0x6;
const DE_FILE_TYPE: usize = 0x7;
/// Size of the fixed part before the name.
pub(crate) const DE_HEADER_SIZE: usize = 8;
const DE_NAME: usize = 0x8;
/// Maximum length of a name in an entry.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// File type codes stored in entries when the `filetype` feature is on.
pub(crate) const FT_UNKNOWN: u8 = 0;
pub(crate) const FT_REG_FILE: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_SYMLINK: u8 = 7;

/// A name that can be stored in a directory entry: 1 to 255 bytes, no `/` or NUL, and neither
/// `.` nor `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirEntryName(Vec<u8>);

impl DirEntryName {
    /// Validates `name`; `path` is only used in the error.
    pub fn new(name: &[u8], path: &str) -> Result<Self, ExtError> {
        if name.len() > MAX_NAME_LEN {
            return Err(ExtError::NameTooLong(name.len()));
        }
        if name.is_empty() || name == b"." || name == b".." {
            return Err(ExtError::InvalidPath(path.to_string(), "the last component must be a file name"));
        }
        if name.iter().any(|&byte| byte == b'/' || byte == 0) {
            return Err(ExtError::InvalidPath(path.to_string(), "a name cannot hold '/' or NUL"));
        }
        Ok(DirEntryName(name.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One entry as found in a directory block. The name stays in the block's bytes, so parsing a
/// block allocates nothing per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawDirEntry {
    /// Byte offset of the entry in its block.
    pub offset: usize,
    /// Inode number, 0 for an unused entry.
    pub inode: u32,
    pub rec_len: usize,
    pub name_len: usize,
    pub file_type: u8,
}

impl RawDirEntry {
    /// Bytes the entry needs for its name, rounded to 4 as the kernel lays entries out.
    pub fn used_len(&self) -> usize {
        entry_len(self.name_len)
    }

    /// The entry's name in `block`, the bytes it was parsed from.
    pub fn name<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        let start = self.offset + DE_NAME;
        block.get(start..start + self.name_len).unwrap_or_default()
    }
}

/// Bytes an entry with a name of `name_len` bytes needs.
pub(crate) fn entry_len(name_len: usize) -> usize {
    (DE_HEADER_SIZE + name_len).next_multiple_of(4)
}

/// Decodes a stored record length; blocks of 64 KiB store a whole-block record as 65535 or 0.
fn decode_rec_len(raw: u16, block_size: usize) -> usize {
    if block_size >= 65536 && (raw == 65535 || raw == 0) { block_size } else { usize::from(raw) }
}

fn encode_rec_len(len: usize) -> u16 {
    if len >= 65536 { 65535 } else { len as u16 }
}

/// Parses the entry at `offset` of `block`, checking that it stays inside the block. With
/// `filetype` (the feature of that name) the name length field is split in two.
pub(crate) fn parse_entry(
    block: &[u8],
    offset: usize,
    filetype: bool,
    structure: &str,
) -> Result<RawDirEntry, ExtError> {
    let corrupt = |detail: String| ExtError::corrupt(structure, detail);
    let header = offset.checked_add(DE_HEADER_SIZE).filter(|&end| end <= block.len());
    if header.is_none() {
        return Err(corrupt(format!("entry at offset {offset} runs past the end of the block")));
    }
    let entry = block.get(offset..).unwrap_or_default();
    let rec_len = decode_rec_len(read_u16le(entry, DE_REC_LEN), block.len());
    let (name_len, file_type) = if filetype {
        (usize::from(read_u8(entry, DE_NAME_LEN)), read_u8(entry, DE_FILE_TYPE))
    } else {
        (usize::from(read_u16le(entry, DE_NAME_LEN)), FT_UNKNOWN)
    };
    if rec_len < DE_HEADER_SIZE || !rec_len.is_multiple_of(4) || rec_len > entry.len() {
        return Err(corrupt(format!("entry at offset {offset} has invalid record length {rec_len}")));
    }
    if DE_HEADER_SIZE + name_len > rec_len {
        return Err(corrupt(format!(
            "entry at offset {offset} has a {name_len} byte name in a {rec_len} byte record"
        )));
    }
    Ok(RawDirEntry { offset, inode: read_u32le(entry, DE_INODE), rec_len, name_len, file_type })
}

/// Writes an entry at `offset` of `block`. The caller has checked that `rec_len` bytes fit.
pub(crate) fn write_entry(
    block: &mut [u8],
    offset: usize,
    inode: u32,
    rec_len: usize,
    name: &[u8],
    file_type: u8,
    filetype: bool,
) {
    let Some(entry) = block.get_mut(offset..) else {
        return;
    };
    write_u32le(entry, DE_INODE, inode);
    write_u16le(entry, DE_REC_LEN, encode_rec_len(rec_len));
    if filetype {
        write_u8(entry, DE_NAME_LEN, name.len() as u8);
        write_u8(entry, DE_FILE_TYPE, file_type);
    } else {
        write_u16le(entry, DE_NAME_LEN, name.len() as u16);
    }
    if let Some(target) = entry.get_mut(DE_NAME..DE_NAME + name.len()) {
        target.copy_from_slice(name);
    }
}

/// Changes only the record length of the entry at `offset`.
pub(crate) fn set_rec_len(block: &mut [u8], offset: usize, rec_len: usize) {
    write_u16le(block, offset + DE_REC_LEN, encode_rec_len(rec_len));
}

/// Marks the entry at `offset` unused, keeping its record length.
pub(crate) fn clear_inode(block: &mut [u8], offset: usize) {
    write_u32le(block, offset + DE_INODE, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(DirEntryName::new(b"mender-agent.pem", "/x").is_ok());
        assert!(matches!(DirEntryName::new(&[b'a'; 256], "/x"), Err(ExtError::NameTooLong(256))));
        assert!(matches!(DirEntryName::new(b"..", "/x"), Err(ExtError::InvalidPath(..))));
        assert!(matches!(DirEntryName::new(b"a\0b", "/x"), Err(ExtError::InvalidPath(..))));
    }

    #[test]
    fn entry_round_trips() {
        let mut block = vec![0u8; 1024];
        write_entry(&mut block, 12, 42, 1012, b"key.pem", FT_REG_FILE, true);
        let entry = parse_entry(&block, 12, true, "test").unwrap();
        assert_eq!(
            (entry.inode, entry.rec_len, entry.name(&block), entry.file_type),
            (42, 1012, &b"key.pem"[..], 1)
        );
        assert_eq!(entry.used_len(), 16);
    }

    #[test]
    fn record_overrunning_the_block_is_corrupt() {
        let mut block = vec![0u8; 1024];
        write_entry(&mut block, 1000, 42, 28, b"x", FT_REG_FILE, true);
        assert!(matches!(parse_entry(&block, 1000, true, "test"), Err(ExtError::Corrupt { .. })));
    }
}
