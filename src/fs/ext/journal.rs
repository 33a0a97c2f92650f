//! The superblock of an internal journal (JBD2), read only to decide whether writes that bypass
//! the journal are safe: the journal must be valid, mapped without holes, and empty. The layout is the kernel's
//! `Documentation/filesystems/ext4/journal.rst`; unlike the rest of ext4, JBD2 fields are
//! big-endian.

use super::Ext;
use super::error::ExtError;
use super::features;
use super::inode::{Inode, InodeIndex};
use crate::image::volume::Volume;

/// `h_magic` of every JBD2 block header.
const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `h_blocktype` of a version 1 and a version 2 journal superblock.
const BLOCKTYPE_SUPERBLOCK_V1: u32 = 3;
const BLOCKTYPE_SUPERBLOCK_V2: u32 = 4;
/// Smallest journal the kernel and mke2fs accept (`JBD2_MIN_JOURNAL_BLOCKS`).
const MIN_JOURNAL_BLOCKS: u32 = 1024;

const H_MAGIC: usize = 0x0;
const H_BLOCKTYPE: usize = 0x4;
const S_BLOCKSIZE: usize = 0xC;
const S_MAXLEN: usize = 0x10;
const S_FIRST: usize = 0x14;
const S_START: usize = 0x1C;
const S_ERRNO: usize = 0x20;

/// Bytes of the journal superblock that this module reads.
const READ_LEN: usize = 0x24;

/// Reads the big-endian `u32` at `offset` of a buffer at least `offset + 4` bytes long.
fn read_u32be(bytes: &[u8; READ_LEN], offset: usize) -> u32 {
    let mut field = [0u8; 4];
    field.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(field)
}

impl<V: Volume> Ext<V> {
    /// Rejects writes unless the journal is known to be empty: an internal journal must have a
    /// valid superblock with no log to replay, and an external journal, whose state this module
    /// cannot read, is not supported. A filesystem without a journal passes.
    pub(crate) fn check_journal_clean(&self) -> Result<(), ExtError> {
        if !self.sb.has_compat(features::COMPAT_HAS_JOURNAL) {
            return Ok(());
        }
        if self.sb.journal_inum == 0 {
            return Err(ExtError::unsupported(
                "external journal",
                "writes bypass the journal, so they need a journal whose state can be checked",
            ));
        }

        let ino = InodeIndex(self.sb.journal_inum);
        let structure = format!("journal superblock (inode {ino})");
        let inode = self.read_inode(ino)?;
        let mut bytes = [0u8; READ_LEN];
        let read = self.read_inode_data(&inode, 0, &mut bytes)?;
        if read < READ_LEN {
            return Err(ExtError::corrupt(structure, format!("the journal is only {read} bytes long")));
        }

        let magic = read_u32be(&bytes, H_MAGIC);
        if magic != JBD2_MAGIC {
            return Err(ExtError::corrupt(
                structure,
                format!("magic {magic:#010x}, expected {JBD2_MAGIC:#010x}"),
            ));
        }
        let block_type = read_u32be(&bytes, H_BLOCKTYPE);
        if block_type != BLOCKTYPE_SUPERBLOCK_V1 && block_type != BLOCKTYPE_SUPERBLOCK_V2 {
            return Err(ExtError::corrupt(structure, format!("block type {block_type} is not a superblock")));
        }
        let block_size = read_u32be(&bytes, S_BLOCKSIZE);
        if block_size != self.sb.block_size {
            return Err(ExtError::corrupt(
                structure,
                format!("block size {block_size} differs from the filesystem's {}", self.sb.block_size),
            ));
        }
        let max_len = read_u32be(&bytes, S_MAXLEN);
        let inode_blocks = inode.size() / u64::from(self.sb.block_size);
        if max_len < MIN_JOURNAL_BLOCKS || u64::from(max_len) > inode_blocks {
            return Err(ExtError::corrupt(
                structure,
                format!("length of {max_len} blocks is outside {MIN_JOURNAL_BLOCKS}..={inode_blocks}"),
            ));
        }
        let mapped = self.journal_mapped_blocks(&inode)?;
        if mapped < u64::from(max_len) {
            return Err(ExtError::corrupt(
                format!("journal (inode {ino})"),
                format!("only the first {mapped} of its {max_len} blocks are mapped without a hole"),
            ));
        }
        let first = read_u32be(&bytes, S_FIRST);
        if first == 0 || first >= max_len {
            return Err(ExtError::corrupt(
                structure,
                format!("first log block {first} is outside 1..{max_len}"),
            ));
        }

        if read_u32be(&bytes, S_START) != 0 {
            return Err(ExtError::NeedsRecovery {
                reason: "the journal holds transactions not yet replayed",
            });
        }
        if read_u32be(&bytes, S_ERRNO) != 0 {
            return Err(ExtError::NeedsRecovery { reason: "the journal recorded an error" });
        }
        Ok(())
    }

    /// Counts the blocks from the start of the journal that its map stores, up to the first
    /// hole or unwritten extent. The map walk itself checks that each block lies in the
    /// filesystem.
    fn journal_mapped_blocks(&self, inode: &Inode) -> Result<u64, ExtError> {
        let map = self.file_map(inode)?;
        let mut next = 0;
        for run in &map.runs {
            if run.logical != next || run.uninit {
                break;
            }
            next = run.logical + run.len;
        }
        Ok(next)
    }
}
