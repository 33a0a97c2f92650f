//! The four LMDB file layouts: word size (the width of `size_t` and page numbers) times byte
//! order, and how each encodes the integer fields of pages, nodes and meta pages (LMDB 0.9's
//! `mdb.c`). Every read is bounds-checked and returns `None` past the end of the bytes.

use std::fmt;

use crate::mender::target::{Endian, TargetLayout, WordSize};

/// Word size and byte order of an LMDB file, which follow the machine that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreLayout {
    /// Width of `size_t`, page numbers and transaction IDs.
    pub bits: WordSize,
    /// Byte order of every integer field, and of the free database's keys and values.
    pub endian: Endian,
}

impl StoreLayout {
    pub const LE64: StoreLayout = StoreLayout { bits: WordSize::Bits64, endian: Endian::Little };
    pub const LE32: StoreLayout = StoreLayout { bits: WordSize::Bits32, endian: Endian::Little };
    pub const BE64: StoreLayout = StoreLayout { bits: WordSize::Bits64, endian: Endian::Big };
    pub const BE32: StoreLayout = StoreLayout { bits: WordSize::Bits32, endian: Endian::Big };

    /// Layout of the LMDB files that the LMDB library linked into this program reads and writes.
    pub fn host() -> Self {
        StoreLayout {
            bits: if cfg!(target_pointer_width = "64") { WordSize::Bits64 } else { WordSize::Bits32 },
            endian: if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big },
        }
    }

    /// Layout of the LMDB files that a program on `target` writes.
    pub fn of_target(target: &TargetLayout) -> Self {
        StoreLayout { bits: target.bits, endian: target.endian }
    }

    /// Short name: "64le", "32le", "64be" or "32be", as `--target-layout` takes it.
    pub fn short_name(self) -> &'static str {
        match (self.bits, self.endian) {
            (WordSize::Bits64, Endian::Little) => "64le",
            (WordSize::Bits32, Endian::Little) => "32le",
            (WordSize::Bits64, Endian::Big) => "64be",
            (WordSize::Bits32, Endian::Big) => "32be",
        }
    }

    /// Bytes in a word: `size_t`, `pgno_t` and `txnid_t`.
    pub(super) fn word_len(self) -> usize {
        match self.bits {
            WordSize::Bits32 => 4,
            WordSize::Bits64 => 8,
        }
    }

    /// Largest value a word holds.
    pub(super) fn word_max(self) -> u64 {
        match self.bits {
            WordSize::Bits32 => u64::from(u32::MAX),
            WordSize::Bits64 => u64::MAX,
        }
    }

    /// Size of the page header (`PAGEHDRSZ`): page number, then four 16-bit fields.
    pub(super) fn page_header_len(self) -> usize {
        self.word_len() + 8
    }

    pub(super) fn read_u16(self, bytes: &[u8], offset: usize) -> Option<u16> {
        let field: [u8; 2] = bytes.get(offset..offset.checked_add(2)?)?.try_into().ok()?;
        Some(match self.endian {
            Endian::Little => u16::from_le_bytes(field),
            Endian::Big => u16::from_be_bytes(field),
        })
    }

    pub(super) fn read_u32(self, bytes: &[u8], offset: usize) -> Option<u32> {
        let field: [u8; 4] = bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
        Some(match self.endian {
            Endian::Little => u32::from_le_bytes(field),
            Endian::Big => u32::from_be_bytes(field),
        })
    }

    /// Reads a word (`size_t`, `pgno_t`, `txnid_t`) at `offset`.
    pub(super) fn read_word(self, bytes: &[u8], offset: usize) -> Option<u64> {
        match self.bits {
            WordSize::Bits32 => self.read_u32(bytes, offset).map(u64::from),
            WordSize::Bits64 => {
                let field: [u8; 8] = bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?;
                Some(match self.endian {
                    Endian::Little => u64::from_le_bytes(field),
                    Endian::Big => u64::from_be_bytes(field),
                })
            }
        }
    }

    /// Writes `value` at `offset`. The caller has sized `bytes` for the field.
    pub(super) fn write_u16(self, bytes: &mut [u8], offset: usize, value: u16) {
        let field = match self.endian {
            Endian::Little => value.to_le_bytes(),
            Endian::Big => value.to_be_bytes(),
        };
        bytes[offset..offset + 2].copy_from_slice(&field);
    }

    /// Writes `value` at `offset`. The caller has sized `bytes` for the field.
    pub(super) fn write_u32(self, bytes: &mut [u8], offset: usize, value: u32) {
        let field = match self.endian {
            Endian::Little => value.to_le_bytes(),
            Endian::Big => value.to_be_bytes(),
        };
        bytes[offset..offset + 4].copy_from_slice(&field);
    }

    /// Writes a word at `offset`. Returns `None`, writing nothing, when `value` does not fit in
    /// a word of this layout.
    pub(super) fn write_word(self, bytes: &mut [u8], offset: usize, value: u64) -> Option<()> {
        match self.bits {
            WordSize::Bits32 => self.write_u32(bytes, offset, u32::try_from(value).ok()?),
            WordSize::Bits64 => {
                let field = match self.endian {
                    Endian::Little => value.to_le_bytes(),
                    Endian::Big => value.to_be_bytes(),
                };
                bytes[offset..offset + 8].copy_from_slice(&field);
            }
        }
        Some(())
    }

    /// Encodes `value` as a word of this layout.
    pub(super) fn encode_word(self, value: u64) -> Option<Vec<u8>> {
        let mut word = vec![0; self.word_len()];
        self.write_word(&mut word, 0, value)?;
        Some(word)
    }
}

impl fmt::Display for StoreLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.bits, self.endian)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_width_and_byte_order() {
        let mut bytes = [0u8; 8];

        StoreLayout::LE32.write_word(&mut bytes, 0, 0x0102_0304).unwrap();
        assert_eq!(bytes[..4], [4, 3, 2, 1]);
        StoreLayout::BE32.write_word(&mut bytes, 0, 0x0102_0304).unwrap();
        assert_eq!(bytes[..4], [1, 2, 3, 4]);
        StoreLayout::BE64.write_word(&mut bytes, 0, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(StoreLayout::LE64.read_word(&bytes, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(StoreLayout::BE32.read_word(&bytes, 4), Some(0x0506_0708));
        assert_eq!(StoreLayout::LE32.read_word(&bytes, 6), None);
    }

    #[test]
    fn wide_word_is_not_written_in_32_bits() {
        let mut bytes = [9u8; 4];

        assert_eq!(StoreLayout::LE32.write_word(&mut bytes, 0, 1 << 32), None);
        assert_eq!(bytes, [9; 4]);
    }

    #[test]
    fn header_sizes_match_lmdb() {
        assert_eq!(StoreLayout::LE64.page_header_len(), 16);
        assert_eq!(StoreLayout::LE32.page_header_len(), 12);
        assert_eq!(StoreLayout::LE32.to_string(), "32-bit little-endian");
        assert_eq!(StoreLayout::BE64.short_name(), "64be");
    }
}
