//! The map from a file's logical blocks to filesystem blocks, however the inode stores it
//! (extent tree or ext2/3 block map), and the metadata blocks that storage takes.

use super::Ext;
use super::error::ExtError;
use super::inode::{FLAG_EXTENTS, FLAG_INLINE_DATA, Inode, S_IFLNK};
use crate::image::volume::Volume;

/// Logical blocks `logical..logical + len` of a file stored at `physical..physical + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    /// Allocated but unwritten (an uninitialized extent): reads as zeros.
    pub uninit: bool,
}

/// The location of a file's data, and the blocks that contain the map itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileMap {
    /// Data runs in increasing logical order, not overlapping.
    pub runs: Vec<Run>,
    /// Extent tree or indirect blocks.
    pub metadata_blocks: Vec<u64>,
}

impl FileMap {
    /// Finds the run that contains `logical`, unless the block is a hole.
    pub fn find(&self, logical: u64) -> Option<&Run> {
        let index = self.runs.partition_point(|run| run.logical + run.len <= logical);
        self.runs.get(index).filter(|run| run.logical <= logical)
    }

    /// Number of data blocks.
    pub fn data_blocks(&self) -> u64 {
        self.runs.iter().map(|run| run.len).sum()
    }

    /// Lists every block the file occupies, data and metadata, as (start, length) ranges.
    pub fn all_blocks(&self) -> Vec<(u64, u64)> {
        let data = self.runs.iter().map(|run| (run.physical, run.len));
        data.chain(self.metadata_blocks.iter().map(|&block| (block, 1))).collect()
    }
}

/// The blocks a map walk may still find: the inode's `i_blocks`, which counts every data and
/// map block it owns. A map that finds more is corrupt, and stopping there bounds the walk.
pub(crate) struct BlockBudget {
    left: u64,
    limit: u64,
}

impl BlockBudget {
    pub fn new<V: Volume>(ext: &Ext<V>, inode: &Inode) -> Self {
        let limit = inode.blocks_in_fs_blocks(&ext.sb);
        BlockBudget { left: limit, limit }
    }

    /// Counts `blocks` more blocks of the map described by `structure`.
    pub fn spend(&mut self, blocks: u64, structure: &str) -> Result<(), ExtError> {
        match self.left.checked_sub(blocks) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(ExtError::corrupt(
                structure,
                format!("maps more blocks than the {} that i_blocks counts", self.limit),
            )),
        }
    }
}

/// A map ready to store: the 60 bytes for the inode's `i_block` and the extent tree or
/// indirect blocks to write, as (block, contents).
pub(crate) struct BuiltMap {
    pub block_area: [u8; super::inode::I_BLOCK_SIZE],
    pub nodes: Vec<(u64, Vec<u8>)>,
}

/// Merges `run` into the last run of `runs` when both are physically and logically contiguous.
pub(crate) fn push_run(runs: &mut Vec<Run>, run: Run) {
    if let Some(last) = runs.last_mut()
        && last.uninit == run.uninit
        && last.logical + last.len == run.logical
        && last.physical + last.len == run.physical
    {
        last.len += run.len;
        return;
    }
    runs.push(run);
}

/// True for a symbolic link whose target is stored in `i_block` rather than in a data block:
/// shorter than 60 bytes and owning no block but an extended attribute block, as the kernel
/// decides.
pub(crate) fn is_fast_symlink<V: Volume>(ext: &Ext<V>, inode: &Inode) -> bool {
    if inode.file_type() != S_IFLNK || inode.has_flag(FLAG_INLINE_DATA) {
        return false;
    }
    let xattr_blocks = u64::from(inode.file_acl(&ext.sb) != 0);
    inode.blocks_in_fs_blocks(&ext.sb) <= xattr_blocks && inode.size() < super::inode::I_BLOCK_SIZE as u64
}

impl<V: Volume> Ext<V> {
    /// Reads the map of `inode`'s data. Inline data and fast symlinks have no blocks.
    pub(crate) fn file_map(&self, inode: &Inode) -> Result<FileMap, ExtError> {
        if inode.has_flag(FLAG_INLINE_DATA) || is_fast_symlink(self, inode) {
            return Ok(FileMap::default());
        }
        if inode.has_flag(FLAG_EXTENTS) { self.read_extent_tree(inode) } else { self.read_block_map(inode) }
    }
}
