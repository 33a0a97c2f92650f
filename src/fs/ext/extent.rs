//! Extent trees: how ext4 maps a file's logical blocks to runs of filesystem blocks. The root
//! node lives in the inode's `i_block`; deeper nodes fill whole blocks.

use std::collections::HashSet;

use super::Ext;
use super::bytes::{join_u64, read_u16le, read_u32le, write_u16le, write_u32le};
use super::checksum::crc32c;
use super::error::ExtError;
use super::file_map::{BlockBudget, BuiltMap, FileMap, Run, push_run};
use super::inode::{I_BLOCK_SIZE, Inode, InodeIndex};
use super::superblock::Superblock;
use crate::image::volume::Volume;

const EH_MAGIC: usize = 0x0;
const EH_ENTRIES: usize = 0x2;
const EH_MAX: usize = 0x4;
const EH_DEPTH: usize = 0x6;
/// Size of the node header and of each entry.
const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 12;

const EE_BLOCK: usize = 0x0;
const EE_LEN: usize = 0x4;
const EE_START_HI: usize = 0x6;
const EE_START_LO: usize = 0x8;

const EI_BLOCK: usize = 0x0;
const EI_LEAF_LO: usize = 0x4;
const EI_LEAF_HI: usize = 0x8;

const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest tree the kernel builds.
const MAX_DEPTH: u16 = 5;
/// Longest initialized extent; a larger `ee_len` marks an uninitialized extent.
pub(crate) const MAX_INIT_EXTENT_LEN: u64 = 32768;
/// Entries in the root node inside `i_block`.
const ROOT_CAPACITY: usize = (I_BLOCK_SIZE - HEADER_SIZE) / ENTRY_SIZE;

/// Entries in a node that fills a block of `block_size` bytes; the 4-byte checksum tail follows.
fn block_capacity(block_size: u32) -> usize {
    (block_size as usize - HEADER_SIZE - 4) / ENTRY_SIZE
}

/// Offset of the checksum tail of a node whose header says `max` entries.
fn tail_offset(max: usize) -> usize {
    HEADER_SIZE + max * ENTRY_SIZE
}

/// Computes the checksum of an extent tree block: CRC32C of the inode number, its generation
/// and the node up to the tail.
fn node_checksum(sb: &Superblock, inode: InodeIndex, generation: u32, node: &[u8]) -> u32 {
    let crc = crc32c(sb.csum_seed, &inode.0.to_le_bytes());
    let crc = crc32c(crc, &generation.to_le_bytes());
    crc32c(crc, node)
}

/// State of one tree walk: what was found so far, and what was visited.
struct Walk<'a> {
    inode: &'a Inode,
    map: FileMap,
    visited: HashSet<u64>,
    next_logical: u64,
    budget: BlockBudget,
}

impl<V: Volume> Ext<V> {
    /// Reads the whole extent tree of `inode`, checking every node.
    pub(crate) fn read_extent_tree(&self, inode: &Inode) -> Result<FileMap, ExtError> {
        let mut walk = Walk {
            inode,
            map: FileMap::default(),
            visited: HashSet::new(),
            next_logical: 0,
            budget: BlockBudget::new(self, inode),
        };
        let root = inode.block_area().to_vec();
        self.walk_node(&mut walk, &root, None, &format!("inode {} extent root", inode.index))?;
        Ok(walk.map)
    }

    fn walk_node(
        &self,
        walk: &mut Walk<'_>,
        node: &[u8],
        expected_depth: Option<u16>,
        structure: &str,
    ) -> Result<(), ExtError> {
        let corrupt = |detail: String| ExtError::corrupt(structure, detail);
        let magic = read_u16le(node, EH_MAGIC);
        if magic != EXTENT_MAGIC {
            return Err(corrupt(format!("header magic is {magic:#06x}, not {EXTENT_MAGIC:#06x}")));
        }
        let entries = usize::from(read_u16le(node, EH_ENTRIES));
        let max = usize::from(read_u16le(node, EH_MAX));
        let depth = read_u16le(node, EH_DEPTH);
        if entries > max || tail_offset(max) > node.len() {
            return Err(corrupt(format!("{entries} entries of at most {max} do not fit the node")));
        }
        if depth > MAX_DEPTH || expected_depth.is_some_and(|expected| expected != depth) {
            return Err(corrupt(format!("depth {depth} is wrong at this level")));
        }

        let fs_end = self.sb.blocks_count;
        let mut previous_start: Option<u64> = None;
        for index in 0..entries {
            let entry = node.get(HEADER_SIZE + index * ENTRY_SIZE..).unwrap_or_default();
            let first_logical = u64::from(read_u32le(entry, EE_BLOCK));
            if previous_start.is_some_and(|previous| first_logical <= previous) {
                return Err(corrupt(format!(
                    "entry {index} starts at logical block {first_logical}, out of order"
                )));
            }
            previous_start = Some(first_logical);

            if depth == 0 {
                let raw_len = u64::from(read_u16le(entry, EE_LEN));
                let (len, uninit) = if raw_len > MAX_INIT_EXTENT_LEN {
                    (raw_len - MAX_INIT_EXTENT_LEN, true)
                } else {
                    (raw_len, false)
                };
                let physical =
                    join_u64(read_u32le(entry, EE_START_LO), u32::from(read_u16le(entry, EE_START_HI)));
                let in_fs = physical >= u64::from(self.sb.first_data_block)
                    && physical.checked_add(len).is_some_and(|end| end <= fs_end);
                if len == 0 || !in_fs {
                    return Err(corrupt(format!(
                        "extent {index} of {len} blocks at block {physical} lies outside the filesystem"
                    )));
                }
                if first_logical < walk.next_logical {
                    return Err(corrupt(format!("extent {index} overlaps the previous extent")));
                }
                walk.budget.spend(len, structure)?;
                walk.next_logical = first_logical + len;
                push_run(&mut walk.map.runs, Run { logical: first_logical, physical, len, uninit });
            } else {
                let child = join_u64(read_u32le(entry, EI_LEAF_LO), u32::from(read_u16le(entry, EI_LEAF_HI)));
                if child < u64::from(self.sb.first_data_block) || child >= fs_end {
                    return Err(corrupt(format!(
                        "index {index} points to block {child} outside the filesystem"
                    )));
                }
                if !walk.visited.insert(child) {
                    return Err(corrupt(format!("index {index} points to block {child} a second time")));
                }
                walk.budget.spend(1, structure)?;
                walk.map.metadata_blocks.push(child);
                let block = self.read_block(child)?;
                let child_structure = format!("inode {} extent block {child}", walk.inode.index);
                self.check_node_checksum(walk.inode, &block, &child_structure)?;
                self.walk_node(walk, &block, Some(depth - 1), &child_structure)?;
            }
        }
        Ok(())
    }

    fn check_node_checksum(&self, inode: &Inode, block: &[u8], structure: &str) -> Result<(), ExtError> {
        if !self.sb.metadata_csum() {
            return Ok(());
        }
        let max = usize::from(read_u16le(block, EH_MAX));
        let tail = tail_offset(max);
        let (Some(node), Some(_)) = (block.get(..tail), block.get(tail..tail + 4)) else {
            return Err(ExtError::corrupt(
                structure,
                format!("no room for the checksum after {max} entries"),
            ));
        };
        let stored = read_u32le(block, tail);
        let computed = node_checksum(&self.sb, inode.index, inode.generation(), node);
        if stored != computed {
            return Err(ExtError::corrupt(
                structure,
                format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
            ));
        }
        Ok(())
    }
}

/// One leaf entry to be written.
#[derive(Clone, Copy, Debug)]
struct LeafExtent {
    logical: u32,
    physical: u64,
    len: u16,
}

/// Splits data runs into extents of at most [`MAX_INIT_EXTENT_LEN`] blocks.
fn leaf_extents(runs: &[Run]) -> Result<Vec<LeafExtent>, ExtError> {
    let mut extents = Vec::new();
    for run in runs {
        let mut done = 0;
        while done < run.len {
            let max_len = if run.uninit { MAX_INIT_EXTENT_LEN - 1 } else { MAX_INIT_EXTENT_LEN };
            let len = (run.len - done).min(max_len);
            let logical = u32::try_from(run.logical + done).map_err(|_| ExtError::FileTooLarge {
                size: run.logical + run.len,
                limit: u64::from(u32::MAX),
            })?;
            let stored_len = if run.uninit { len + MAX_INIT_EXTENT_LEN } else { len };
            extents.push(LeafExtent { logical, physical: run.physical + done, len: stored_len as u16 });
            done += len;
        }
    }
    Ok(extents)
}

/// Number of extent tree blocks needed to map `runs` with blocks of `block_size` bytes.
pub(crate) fn tree_blocks_needed(runs: &[Run], block_size: u32) -> Result<u64, ExtError> {
    let mut entries = leaf_extents(runs)?.len();
    let capacity = block_capacity(block_size);
    let mut blocks = 0u64;
    while entries > ROOT_CAPACITY {
        entries = entries.div_ceil(capacity);
        blocks += entries as u64;
    }
    Ok(blocks)
}

/// Builds the tree for `runs`, taking exactly [`tree_blocks_needed`] blocks from `tree_blocks`.
pub(crate) fn build_tree(
    sb: &Superblock,
    inode: InodeIndex,
    generation: u32,
    runs: &[Run],
    tree_blocks: &[u64],
) -> Result<BuiltMap, ExtError> {
    let capacity = block_capacity(sb.block_size);
    let mut level: Vec<[u8; ENTRY_SIZE]> = leaf_extents(runs)?.iter().map(encode_extent).collect();
    let mut first_logicals: Vec<u32> = leaf_extents(runs)?.iter().map(|extent| extent.logical).collect();
    let mut depth = 0u16;
    let mut free_blocks = tree_blocks.iter();
    let mut written = Vec::new();

    while level.len() > ROOT_CAPACITY {
        let mut parents = Vec::new();
        let mut parent_logicals = Vec::new();
        for (chunk, logicals) in level.chunks(capacity).zip(first_logicals.chunks(capacity)) {
            let Some(&block) = free_blocks.next() else {
                return Err(ExtError::corrupt("extent tree plan", "fewer tree blocks than the tree needs"));
            };
            let mut node = vec![0u8; sb.block_size as usize];
            write_header(&mut node, chunk.len(), capacity, depth);
            for (index, entry) in chunk.iter().enumerate() {
                let at = HEADER_SIZE + index * ENTRY_SIZE;
                if let Some(target) = node.get_mut(at..at + ENTRY_SIZE) {
                    target.copy_from_slice(entry);
                }
            }
            if sb.metadata_csum() {
                let tail = tail_offset(capacity);
                let checksum = node_checksum(sb, inode, generation, node.get(..tail).unwrap_or_default());
                write_u32le(&mut node, tail, checksum);
            }
            let first_logical = logicals.first().copied().unwrap_or(0);
            parents.push(encode_index(first_logical, block));
            parent_logicals.push(first_logical);
            written.push((block, node));
        }
        level = parents;
        first_logicals = parent_logicals;
        depth += 1;
    }

    let mut root = [0u8; I_BLOCK_SIZE];
    write_header(&mut root, level.len(), ROOT_CAPACITY, depth);
    for (index, entry) in level.iter().enumerate() {
        let at = HEADER_SIZE + index * ENTRY_SIZE;
        if let Some(target) = root.get_mut(at..at + ENTRY_SIZE) {
            target.copy_from_slice(entry);
        }
    }
    Ok(BuiltMap { block_area: root, nodes: written })
}

fn write_header(node: &mut [u8], entries: usize, max: usize, depth: u16) {
    write_u16le(node, EH_MAGIC, EXTENT_MAGIC);
    write_u16le(node, EH_ENTRIES, entries as u16);
    write_u16le(node, EH_MAX, max as u16);
    write_u16le(node, EH_DEPTH, depth);
}

fn encode_extent(extent: &LeafExtent) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    write_u32le(&mut entry, EE_BLOCK, extent.logical);
    write_u16le(&mut entry, EE_LEN, extent.len);
    write_u16le(&mut entry, EE_START_HI, (extent.physical >> 32) as u16);
    write_u32le(&mut entry, EE_START_LO, extent.physical as u32);
    entry
}

fn encode_index(first_logical: u32, block: u64) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    write_u32le(&mut entry, EI_BLOCK, first_logical);
    write_u32le(&mut entry, EI_LEAF_LO, block as u32);
    write_u16le(&mut entry, EI_LEAF_HI, (block >> 32) as u16);
    entry
}

/// Returns the `i_block` of an empty extent-mapped file.
pub(crate) fn empty_root() -> [u8; I_BLOCK_SIZE] {
    let mut root = [0u8; I_BLOCK_SIZE];
    write_header(&mut root, 0, ROOT_CAPACITY, 0);
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(count: u64) -> Vec<Run> {
        (0..count).map(|i| Run { logical: i, physical: 1000 + 2 * i, len: 1, uninit: false }).collect()
    }

    #[test]
    fn four_extents_fit_the_inode() {
        assert_eq!(tree_blocks_needed(&runs(4), 1024).unwrap(), 0);
        assert_eq!(tree_blocks_needed(&runs(5), 1024).unwrap(), 1);
    }

    #[test]
    fn many_extents_need_two_levels() {
        // 1 KiB blocks hold 84 entries: 5 * 84 extents need 5 leaves, which no longer fit the root.
        assert_eq!(block_capacity(1024), 84);
        assert_eq!(tree_blocks_needed(&runs(4 * 84), 1024).unwrap(), 4);
        assert_eq!(tree_blocks_needed(&runs(5 * 84), 1024).unwrap(), 6);
    }

    #[test]
    fn long_runs_split_at_32768_blocks() {
        let run = [Run { logical: 0, physical: 5000, len: 70000, uninit: false }];
        let extents = leaf_extents(&run).unwrap();
        let lens: Vec<u16> = extents.iter().map(|extent| extent.len).collect();
        assert_eq!(lens, [32768, 32768, 4464]);
        assert_eq!(extents[2].physical, 5000 + 65536);
    }
}
