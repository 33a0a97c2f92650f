//! Directory leaf blocks: a run of entries that tiles the block, ending under `metadata_csum`
//! with a 12-byte tail entry that holds the block's checksum.

use super::bytes::{read_u8, read_u16le, read_u32le, write_u8, write_u16le, write_u32le};
use super::checksum::crc32c;
use super::dir_entry::{self, RawDirEntry, entry_len, parse_entry, write_entry};
use super::error::ExtError;
use super::inode::InodeIndex;
use super::superblock::Superblock;

/// Size of the checksum tail.
pub(crate) const TAIL_SIZE: usize = 12;
const TAIL_REC_LEN: usize = 0x4;
const TAIL_NAME_LEN: usize = 0x6;
const TAIL_FILE_TYPE: usize = 0x7;
const TAIL_CHECKSUM: usize = 0x8;
/// File type byte that marks the tail entry.
const TAIL_MARKER: u8 = 0xDE;

/// The entries of one directory block.
#[derive(Clone, Debug)]
pub(crate) struct DirBlock {
    pub bytes: Vec<u8>,
    /// Entries in block order, the tail excluded.
    pub entries: Vec<RawDirEntry>,
    pub has_tail: bool,
}

fn looks_like_tail(block: &[u8], offset: usize) -> bool {
    let Some(tail) = block.get(offset..offset + TAIL_SIZE) else {
        return false;
    };
    read_u32le(tail, 0) == 0
        && usize::from(read_u16le(tail, TAIL_REC_LEN)) == TAIL_SIZE
        && read_u8(tail, TAIL_NAME_LEN) == 0
        && read_u8(tail, TAIL_FILE_TYPE) == TAIL_MARKER
}

impl DirBlock {
    /// Parses a directory block, checking that its entries tile it exactly.
    pub fn parse(bytes: Vec<u8>, filetype: bool, structure: &str) -> Result<Self, ExtError> {
        let tail_at = bytes.len().saturating_sub(TAIL_SIZE);
        let mut entries = Vec::new();
        let mut offset = 0;
        let mut has_tail = false;
        while offset < bytes.len() {
            if offset == tail_at && looks_like_tail(&bytes, offset) {
                has_tail = true;
                break;
            }
            let entry = parse_entry(&bytes, offset, filetype, structure)?;
            offset += entry.rec_len;
            entries.push(entry);
        }
        Ok(DirBlock { bytes, entries, has_tail })
    }

    /// Builds the bytes of a block of `block_size` bytes containing `entries` (inode, name, file type), the
    /// last one stretched to the end of the usable space, with a tail (checksum not yet set)
    /// when `csum` is true. The names must fit.
    pub fn build(block_size: usize, csum: bool, filetype: bool, entries: &[(u32, &[u8], u8)]) -> Vec<u8> {
        let mut bytes = vec![0u8; block_size];
        let usable = if csum { block_size - TAIL_SIZE } else { block_size };
        let mut offset = 0;
        for (index, (inode, name, file_type)) in entries.iter().enumerate() {
            let rec_len = if index + 1 == entries.len() { usable - offset } else { entry_len(name.len()) };
            write_entry(&mut bytes, offset, *inode, rec_len, name, *file_type, filetype);
            offset += rec_len;
        }
        if entries.is_empty() {
            write_entry(&mut bytes, 0, 0, usable, b"", 0, filetype);
        }
        if csum {
            write_tail(&mut bytes);
        }
        bytes
    }

    /// Finds room for an entry with a `name_len` byte name: the offset of the entry to split or
    /// reuse, or `None` when the block is full.
    pub fn find_room(&self, name_len: usize) -> Option<&RawDirEntry> {
        let needed = entry_len(name_len);
        self.entries.iter().find(|entry| {
            if entry.inode == 0 {
                entry.rec_len >= needed
            } else {
                entry.rec_len >= entry.used_len() + needed
            }
        })
    }

    /// Inserts an entry into the room `find_room` returned for the same name length.
    pub fn insert(
        &mut self,
        room_offset: usize,
        inode: u32,
        name: &[u8],
        file_type: u8,
        filetype: bool,
    ) -> bool {
        let Some(position) = self.entries.iter().position(|entry| entry.offset == room_offset) else {
            return false;
        };
        let Some(room) = self.entries.get(position).copied() else {
            return false;
        };
        // `entries` changes with the bytes, so the block never needs parsing again.
        let stored_type = if filetype { file_type } else { dir_entry::FT_UNKNOWN };
        let needed = entry_len(name.len());
        if room.inode == 0 && room.rec_len >= needed {
            write_entry(&mut self.bytes, room.offset, inode, room.rec_len, name, file_type, filetype);
            let reused = RawDirEntry { inode, name_len: name.len(), file_type: stored_type, ..room };
            if let Some(entry) = self.entries.get_mut(position) {
                *entry = reused;
            }
            return true;
        }
        if room.rec_len < room.used_len() + needed {
            return false;
        }
        let new_entry = RawDirEntry {
            offset: room.offset + room.used_len(),
            inode,
            rec_len: room.rec_len - room.used_len(),
            name_len: name.len(),
            file_type: stored_type,
        };
        dir_entry::set_rec_len(&mut self.bytes, room.offset, room.used_len());
        write_entry(&mut self.bytes, new_entry.offset, inode, new_entry.rec_len, name, file_type, filetype);
        if let Some(entry) = self.entries.get_mut(position) {
            entry.rec_len = room.used_len();
        }
        self.entries.insert(position + 1, new_entry);
        true
    }

    /// Removes the entry named `name`: the previous entry absorbs its record, or, first in the
    /// block, it is marked unused. Returns the removed entry's inode number.
    pub fn remove(&mut self, name: &[u8]) -> Option<u32> {
        let position = self.entries.iter().position(|entry| entry.inode != 0 && self.name(entry) == name)?;
        let removed = *self.entries.get(position)?;
        match position.checked_sub(1).and_then(|previous| self.entries.get_mut(previous)) {
            Some(previous) => {
                previous.rec_len += removed.rec_len;
                dir_entry::set_rec_len(&mut self.bytes, previous.offset, previous.rec_len);
                self.entries.remove(position);
            }
            None => {
                dir_entry::clear_inode(&mut self.bytes, removed.offset);
                if let Some(entry) = self.entries.get_mut(position) {
                    entry.inode = 0;
                }
            }
        }
        Some(removed.inode)
    }

    /// The name of `entry`, one of this block's entries.
    pub fn name(&self, entry: &RawDirEntry) -> &[u8] {
        entry.name(&self.bytes)
    }

    /// Finds the used entry named `name`.
    pub fn find(&self, name: &[u8]) -> Option<&RawDirEntry> {
        self.entries.iter().find(|entry| entry.inode != 0 && self.name(entry) == name)
    }

    /// Checks the tail checksum, if the block has a tail and the filesystem checksums metadata.
    pub fn verify_checksum(
        &self,
        sb: &Superblock,
        dir: InodeIndex,
        generation: u32,
        structure: &str,
    ) -> Result<(), ExtError> {
        if !sb.metadata_csum() || !self.has_tail {
            return Ok(());
        }
        let tail_at = self.bytes.len() - TAIL_SIZE;
        let stored = read_u32le(&self.bytes, tail_at + TAIL_CHECKSUM);
        let computed = leaf_checksum(sb, dir, generation, &self.bytes);
        if stored != computed {
            return Err(ExtError::corrupt(
                structure,
                format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
            ));
        }
        Ok(())
    }

    /// Updates the tail checksum, if the filesystem checksums metadata.
    pub fn set_checksum(&mut self, sb: &Superblock, dir: InodeIndex, generation: u32) {
        if !sb.metadata_csum() || !self.has_tail {
            return;
        }
        let tail_at = self.bytes.len() - TAIL_SIZE;
        let checksum = leaf_checksum(sb, dir, generation, &self.bytes);
        write_u32le(&mut self.bytes, tail_at + TAIL_CHECKSUM, checksum);
    }
}

/// CRC32C of the directory's inode number, its generation and the block up to the tail.
fn leaf_checksum(sb: &Superblock, dir: InodeIndex, generation: u32, block: &[u8]) -> u32 {
    let covered = block.get(..block.len() - TAIL_SIZE).unwrap_or_default();
    let crc = crc32c(sb.csum_seed, &dir.0.to_le_bytes());
    let crc = crc32c(crc, &generation.to_le_bytes());
    crc32c(crc, covered)
}

fn write_tail(block: &mut [u8]) {
    let tail_at = block.len() - TAIL_SIZE;
    write_u32le(block, tail_at, 0);
    write_u16le(block, tail_at + TAIL_REC_LEN, TAIL_SIZE as u16);
    write_u8(block, tail_at + TAIL_NAME_LEN, 0);
    write_u8(block, tail_at + TAIL_FILE_TYPE, TAIL_MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::ext::dir_entry::{FT_DIR, FT_REG_FILE};

    #[test]
    fn insert_splits_the_last_entry() {
        let bytes = DirBlock::build(1024, true, true, &[(2, b".", FT_DIR), (2, b"..", FT_DIR)]);
        let mut block = DirBlock::parse(bytes, true, "test").unwrap();
        assert!(block.has_tail);
        let room = block.find_room(7).unwrap().offset;
        assert!(block.insert(room, 12, b"key.pem", FT_REG_FILE, true));

        let block = DirBlock::parse(block.bytes, true, "test").unwrap();
        let names: Vec<&[u8]> = block.entries.iter().map(|entry| block.name(entry)).collect();
        assert_eq!(names, [&b"."[..], b"..", b"key.pem"]);
        assert_eq!(block.entries[2].rec_len, 1024 - 12 - 24);
    }

    #[test]
    fn remove_merges_into_previous_entry() {
        let entries: [(u32, &[u8], u8); 3] =
            [(2, b".", FT_DIR), (2, b"..", FT_DIR), (13, b"gone", FT_REG_FILE)];
        let bytes = DirBlock::build(1024, false, true, &entries);
        let mut block = DirBlock::parse(bytes, true, "test").unwrap();
        assert_eq!(block.remove(b"gone"), Some(13));

        let block = DirBlock::parse(block.bytes, true, "test").unwrap();
        assert_eq!(block.entries.len(), 2);
        assert_eq!(block.entries[1].rec_len, 1024 - 12);
    }

    #[test]
    fn entries_follow_inserts_and_removals() {
        let bytes = DirBlock::build(1024, true, true, &[(2, b".", FT_DIR), (2, b"..", FT_DIR)]);
        let mut block = DirBlock::parse(bytes, true, "test").unwrap();
        for (inode, name) in [(12, &b"first"[..]), (13, b"second"), (14, b"third")] {
            let room = block.find_room(name.len()).unwrap().offset;
            assert!(block.insert(room, inode, name, FT_REG_FILE, true));
        }
        assert_eq!(block.remove(b"second"), Some(13));
        let room = block.find_room(3).unwrap().offset;
        assert!(block.insert(room, 15, b"new", FT_REG_FILE, true));
        // Removing the first entry marks it unused, and an insert may reuse it.
        assert_eq!(block.remove(b"."), Some(2));
        let room = block.find_room(1).unwrap().offset;
        assert_eq!(room, 0);
        assert!(block.insert(room, 16, b"x", FT_DIR, true));

        let reparsed = DirBlock::parse(block.bytes.clone(), true, "test").unwrap();
        assert_eq!(block.entries, reparsed.entries);
        let names: Vec<&[u8]> = block.entries.iter().map(|entry| block.name(entry)).collect();
        assert_eq!(names, [&b"x"[..], b"..", b"first", b"new", b"third"], "new takes the room of second");
    }

    #[test]
    fn full_block_has_no_room() {
        // Three 252-byte records and one of 256 bytes fill the 1012 bytes before the tail.
        let (short, long) = ([b'n'; 244], [b'm'; 248]);
        let mut entries: Vec<(u32, &[u8], u8)> = (0..3).map(|i| (20 + i, &short[..], FT_REG_FILE)).collect();
        entries.push((23, &long[..], FT_REG_FILE));
        let bytes = DirBlock::build(1024, true, true, &entries);
        let block = DirBlock::parse(bytes, true, "test").unwrap();
        assert_eq!(block.entries.len(), 4);
        assert!(block.find_room(8).is_none());
    }
}
