//! Extended attribute blocks, as far as removing a file needs them: a block shared by several
//! inodes counts its users in `h_refcount` and is freed when the last one goes.

use super::Ext;
use super::bytes::{read_u32le, write_u32le, write_u64le};
use super::checksum::crc32c;
use super::error::ExtError;
use crate::image::volume::Volume;

const H_MAGIC: usize = 0x0;
const H_REFCOUNT: usize = 0x4;
const H_BLOCKS: usize = 0x8;
const H_CHECKSUM: usize = 0x10;
const XATTR_MAGIC: u32 = 0xEA02_0000;

/// The outcome of dropping one reference to an extended attribute block.
pub(crate) enum XattrRelease {
    /// The block has no users left and is freed.
    Free(u64),
    /// Other inodes still use the block: its new contents.
    Rewrite(u64, Vec<u8>),
}

/// CRC32C of the block number and the block with the checksum field zeroed.
fn block_checksum(seed: u32, block: u64, contents: &[u8]) -> u32 {
    let mut copy = contents.to_vec();
    write_u32le(&mut copy, H_CHECKSUM, 0);
    let mut number = [0u8; 8];
    write_u64le(&mut number, 0, block);
    crc32c(crc32c(seed, &number), &copy)
}

impl<V: Volume> Ext<V> {
    /// Plans dropping one reference to the extended attribute block `block`.
    pub(crate) fn release_xattr_block(&self, block: u64) -> Result<XattrRelease, ExtError> {
        let structure = format!("extended attribute block {block}");
        let mut contents = self.read_block(block)?;
        let magic = read_u32le(&contents, H_MAGIC);
        if magic != XATTR_MAGIC || read_u32le(&contents, H_BLOCKS) != 1 {
            return Err(ExtError::corrupt(
                structure,
                format!("header magic {magic:#010x} or block count is invalid"),
            ));
        }
        if self.sb.metadata_csum() {
            let stored = read_u32le(&contents, H_CHECKSUM);
            let computed = block_checksum(self.sb.csum_seed, block, &contents);
            if stored != computed {
                return Err(ExtError::corrupt(
                    structure,
                    format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
                ));
            }
        }
        let refcount = read_u32le(&contents, H_REFCOUNT);
        match refcount {
            0 => Err(ExtError::corrupt(structure, "reference count is 0 while an inode uses it")),
            1 => Ok(XattrRelease::Free(block)),
            _ => {
                write_u32le(&mut contents, H_REFCOUNT, refcount - 1);
                if self.sb.metadata_csum() {
                    let checksum = block_checksum(self.sb.csum_seed, block, &contents);
                    write_u32le(&mut contents, H_CHECKSUM, checksum);
                }
                Ok(XattrRelease::Rewrite(block, contents))
            }
        }
    }
}
