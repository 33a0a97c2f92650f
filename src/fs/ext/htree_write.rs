//! Changing hashed-index (htree) directories: inserting a name into a full leaf by splitting
//! the leaf, and the index nodes above it when they are full too, and pointing `..` elsewhere.
//!
//! A split sorts the leaf's entries by hash, keeps the lower half in place and moves the upper
//! half to a new block appended to the directory. The parent index node gets an entry for the
//! new block. A full index node is split the same way, and a full root moves its entries into
//! a new index node below it, which adds a level: at most two levels, three under `large_dir`.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::Ext;
use super::alloc::AllocPlan;
use super::bytes::{read_u8, read_u16le, read_u32le, write_u8, write_u16le, write_u32le};
use super::checksum::crc32c;
use super::dir_block::DirBlock;
use super::dir_entry::{entry_len, write_entry};
use super::error::ExtError;
use super::file_map::{Run, push_run};
use super::htree::{
    COUNT_LIMIT_COUNT, COUNT_LIMIT_LIMIT, DX_ENTRY_BLOCK, DX_ENTRY_HASH, DX_ENTRY_SIZE, DX_TAIL_SIZE,
    HtreePath, NODE_ENTRIES, ROOT_ENTRIES, ROOT_INFO_INDIRECT_LEVELS, ROOT_INFO_LENGTH, ROOT_INFO_SIZE,
    name_hash,
};
use super::inode::{FLAG_INDEX, Inode, InodeIndex};
use super::write::{Writes, expand_ranges};
use crate::image::volume::VolumeMut;

/// The format of a directory block an insert changed, which decides its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    Leaf,
    /// An index node whose count and limit start at this offset.
    Index(usize),
}

/// Directory blocks an insert changes or adds, by logical block.
struct DirChanges {
    blocks: BTreeMap<u64, (Vec<u8>, BlockKind)>,
    /// The directory's block count before the insert; blocks from here on are new.
    first_new: u64,
    next_logical: u64,
}

impl DirChanges {
    fn add(&mut self, bytes: Vec<u8>, kind: BlockKind) -> u64 {
        let logical = self.next_logical;
        self.blocks.insert(logical, (bytes, kind));
        self.next_logical += 1;
        logical
    }
}

/// One leaf entry being redistributed by a split.
struct SplitEntry {
    hash: u32,
    inode: u32,
    name: Vec<u8>,
    file_type: u8,
}

impl<V: VolumeMut> Ext<V> {
    /// Plans adding the entry `name` for `child` to the htree directory `parent`: into the leaf
    /// its hash selects, splitting that leaf (and index nodes above it) when it is full.
    pub(super) fn plan_htree_insert(
        &self,
        plan: &mut AllocPlan,
        parent: &mut Inode,
        name: &[u8],
        child: InodeIndex,
        file_type: u8,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let filetype = self.has_filetype();
        let path = self.htree_path(parent, name)?;
        let physical = self.dir_physical_block(parent, path.leaf)?;
        let mut block = Rc::unwrap_or_clone(self.read_dir_block(parent, path.leaf, physical)?);
        if self.sb.metadata_csum() && !block.has_tail {
            return Err(ExtError::corrupt(
                format!("directory inode {} block {}", parent.index, path.leaf),
                "leaf block has no checksum tail",
            ));
        }
        if let Some(room) = block.find_room(name.len()).map(|entry| entry.offset) {
            block.insert(room, child.0, name, file_type, filetype);
            block.set_checksum(&self.sb, parent.index, parent.generation());
            writes.push_dir_block(physical, parent, block);
            return Ok(());
        }

        let (_, count) = self.dir_map(parent)?;
        let mut changes = DirChanges { blocks: BTreeMap::new(), first_new: count, next_logical: count };
        let new_entry = SplitEntry { hash: path.hash, inode: child.0, name: name.to_vec(), file_type };
        let (lower, upper, split_hash) = self.split_leaf(&block, &path, new_entry)?;
        changes.blocks.insert(path.leaf, (lower, BlockKind::Leaf));
        let new_leaf = changes.add(upper, BlockKind::Leaf);
        let mut levels = path.levels;
        let depth = path.nodes.len() - 1;
        self.insert_index_entry(parent, &mut changes, &path, &mut levels, depth, split_hash, new_leaf)?;
        self.plan_dir_changes(plan, parent, changes, writes)
    }

    /// Splits the full leaf `block` with `new_entry` added: returns the lower and upper half as
    /// block bytes and the hash that starts the upper half, its low bit set when the hash
    /// continues from the lower half (a collision).
    fn split_leaf(
        &self,
        block: &DirBlock,
        path: &HtreePath,
        new_entry: SplitEntry,
    ) -> Result<(Vec<u8>, Vec<u8>, u32), ExtError> {
        let mut entries: Vec<SplitEntry> = block
            .entries
            .iter()
            .filter(|entry| entry.inode != 0)
            .map(|entry| SplitEntry {
                hash: name_hash(path.version, block.name(entry), &self.sb.hash_seed),
                inode: entry.inode,
                name: block.name(entry).to_vec(),
                file_type: entry.file_type,
            })
            .collect();
        entries.push(new_entry);
        entries.sort_by_key(|entry| entry.hash);

        let total: usize = entries.iter().map(|entry| entry_len(entry.name.len())).sum();
        let mut used = 0;
        let mut split = entries.len() - 1;
        for (index, entry) in entries.iter().enumerate() {
            used += entry_len(entry.name.len());
            if used * 2 >= total {
                split = (index + 1).clamp(1, entries.len() - 1);
                break;
            }
        }
        let (Some(last_lower), Some(first_upper)) = (entries.get(split - 1), entries.get(split)) else {
            return Err(ExtError::corrupt("htree split plan", "a full leaf with fewer than two entries"));
        };
        let continued = last_lower.hash == first_upper.hash;
        let split_hash = first_upper.hash | u32::from(continued);

        let build = |half: &[SplitEntry]| {
            let list: Vec<(u32, &[u8], u8)> =
                half.iter().map(|entry| (entry.inode, entry.name.as_slice(), entry.file_type)).collect();
            DirBlock::build(self.sb.block_size as usize, self.sb.metadata_csum(), self.has_filetype(), &list)
        };
        let (lower, upper) = entries.split_at(split);
        Ok((build(lower), build(upper), split_hash))
    }

    /// Inserts the index entry (`hash`, `child`) after the followed entry of the node at
    /// `depth` on `path`, splitting full nodes upwards and adding a level at a full root.
    #[allow(clippy::too_many_arguments)]
    fn insert_index_entry(
        &self,
        dir: &Inode,
        changes: &mut DirChanges,
        path: &HtreePath,
        levels: &mut u8,
        depth: usize,
        hash: u32,
        child: u64,
    ) -> Result<(), ExtError> {
        let Some(node) = path.nodes.get(depth) else {
            return Err(ExtError::corrupt("htree insert plan", format!("no index node at depth {depth}")));
        };
        let is_root = depth == 0;
        let entries_at = if is_root { ROOT_ENTRIES } else { NODE_ENTRIES };
        let mut bytes = match changes.blocks.get(&node.logical) {
            Some((bytes, _)) => bytes.clone(),
            None => node.bytes.clone(),
        };
        let mut entries = read_dx_entries(&bytes, entries_at);
        entries.insert((node.chosen + 1).min(entries.len()), (hash, child as u32));
        let limit = usize::from(read_u16le(&bytes, entries_at + COUNT_LIMIT_LIMIT));

        if entries.len() <= limit {
            write_dx_entries(&mut bytes, entries_at, &entries);
            changes.blocks.insert(node.logical, (bytes, BlockKind::Index(entries_at)));
            return Ok(());
        }

        if is_root {
            if *levels >= path.max_levels {
                return Err(ExtError::DirectoryIndexFull(dir.index.0));
            }
            // Move every root entry into a new node below the root, which then has one entry.
            let below = changes.add(self.new_index_node(), BlockKind::Index(NODE_ENTRIES));
            if let Some((node_bytes, _)) = changes.blocks.get_mut(&below) {
                write_dx_entries(node_bytes, NODE_ENTRIES, &entries);
            }
            *levels += 1;
            write_u8(&mut bytes, ROOT_INFO_INDIRECT_LEVELS, *levels);
            write_dx_entries(&mut bytes, entries_at, &[(0, below as u32)]);
            changes.blocks.insert(node.logical, (bytes, BlockKind::Index(entries_at)));
            return Ok(());
        }

        let upper = entries.split_off(entries.len() / 2);
        let split_hash = upper.first().map_or(0, |&(hash, _)| hash);
        write_dx_entries(&mut bytes, entries_at, &entries);
        changes.blocks.insert(node.logical, (bytes, BlockKind::Index(entries_at)));
        let mut new_node = self.new_index_node();
        write_dx_entries(&mut new_node, NODE_ENTRIES, &upper);
        let new_logical = changes.add(new_node, BlockKind::Index(NODE_ENTRIES));
        self.insert_index_entry(dir, changes, path, levels, depth - 1, split_hash, new_logical)
    }

    /// Returns an empty interior index node: a fake entry spanning the block, then count and
    /// limit.
    fn new_index_node(&self) -> Vec<u8> {
        let block_size = self.sb.block_size as usize;
        let mut bytes = vec![0u8; block_size];
        write_entry(&mut bytes, 0, 0, block_size, b"", 0, self.has_filetype());
        let tail = if self.sb.metadata_csum() { DX_TAIL_SIZE } else { 0 };
        let limit = (block_size - NODE_ENTRIES - tail) / DX_ENTRY_SIZE;
        write_u16le(&mut bytes, NODE_ENTRIES + COUNT_LIMIT_LIMIT, limit as u16);
        bytes
    }

    /// Writes the changed and new blocks of `changes`, appending the new ones to `dir`.
    fn plan_dir_changes(
        &self,
        plan: &mut AllocPlan,
        dir: &mut Inode,
        changes: DirChanges,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let block_size = u64::from(self.sb.block_size);
        let new_count = changes.next_logical - changes.first_new;
        let (old_map, count) = self.dir_map(dir)?;
        if old_map.runs.last().is_some_and(|run| run.logical + run.len > count) {
            return Err(ExtError::corrupt(
                format!("directory inode {}", dir.index),
                format!("blocks are mapped past its size of {} bytes, where new blocks go", dir.size()),
            ));
        }
        let limit = self.block_limit(dir);
        let allocated = plan.allocate_blocks(self, self.group_of_inode(dir.index), new_count, limit)?;
        let mut runs = old_map.runs.clone();
        let mut logical = count;
        for &(start, len) in &allocated {
            push_run(&mut runs, Run { logical, physical: start, len, uninit: false });
            logical += len;
        }

        for (logical, (mut bytes, kind)) in changes.blocks {
            let Some(run) = runs.iter().find(|run| run.logical <= logical && logical < run.logical + run.len)
            else {
                return Err(ExtError::corrupt(
                    format!("directory inode {}", dir.index),
                    format!("block {logical} is a hole"),
                ));
            };
            let physical = run.physical + (logical - run.logical);
            match kind {
                BlockKind::Leaf => {
                    let mut block = DirBlock::parse(bytes, self.has_filetype(), "split directory block")?;
                    block.set_checksum(&self.sb, dir.index, dir.generation());
                    bytes = block.bytes;
                }
                BlockKind::Index(entries_at) => self.set_dx_checksum(dir, &mut bytes, entries_at),
            }
            writes.blocks.push((physical, bytes));
        }

        if new_count > 0 {
            plan.release_blocks(self, &expand_ranges(&old_map.metadata_blocks), dir.index)?;
            let planned = self.plan_map(plan, dir, &runs, old_map.data_blocks() + new_count)?;
            writes.blocks.extend(planned.built.nodes);
            let xattr_blocks = u64::from(dir.file_acl(&self.sb) != 0);
            dir.set_block_area(&planned.built.block_area);
            dir.set_size(dir.size() + new_count * block_size);
            dir.set_blocks(&self.sb, planned.blocks_used + xattr_blocks)?;
        }
        Ok(())
    }

    /// Stores the checksum of an index node under `metadata_csum`: CRC32C of the directory's
    /// inode number and generation, the node up to its last entry, and the tail's reserved word.
    fn set_dx_checksum(&self, dir: &Inode, bytes: &mut [u8], entries_at: usize) {
        if !self.sb.metadata_csum() {
            return;
        }
        let limit = usize::from(read_u16le(bytes, entries_at + COUNT_LIMIT_LIMIT));
        let count = usize::from(read_u16le(bytes, entries_at + COUNT_LIMIT_COUNT));
        let tail_at = entries_at + limit * DX_ENTRY_SIZE;
        let crc = crc32c(self.sb.csum_seed, &dir.index.0.to_le_bytes());
        let crc = crc32c(crc, &dir.generation().to_le_bytes());
        let crc = crc32c(crc, bytes.get(..entries_at + count * DX_ENTRY_SIZE).unwrap_or_default());
        let crc = crc32c(crc, bytes.get(tail_at..tail_at + 4).unwrap_or_default());
        let crc = crc32c(crc, &[0; 4]);
        write_u32le(bytes, tail_at + 4, crc);
    }

    /// Plans pointing the `..` entry of directory `dir` at `parent`. In an htree directory the
    /// entry lives in the index root, whose checksum is the index node's.
    pub(super) fn plan_set_dotdot(
        &self,
        dir: &Inode,
        parent: InodeIndex,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let physical = self.dir_physical_block(dir, 0)?;
        let mut block = Rc::unwrap_or_clone(self.read_dir_block(dir, 0, physical)?);
        let dotdot = match block.entries.get(1) {
            Some(entry) if block.name(entry) == b".." => entry.offset,
            _ => {
                return Err(ExtError::corrupt(
                    format!("directory inode {} block 0", dir.index),
                    "the second entry is not ..",
                ));
            }
        };
        write_u32le(&mut block.bytes, dotdot, parent.0);
        if dir.has_flag(FLAG_INDEX) && read_u8(&block.bytes, ROOT_INFO_LENGTH) == ROOT_INFO_SIZE {
            // The root info's length byte is non-zero only in an index root.
            self.set_dx_checksum(dir, &mut block.bytes, ROOT_ENTRIES);
        } else {
            block.set_checksum(&self.sb, dir.index, dir.generation());
        }
        writes.blocks.push((physical, block.bytes));
        Ok(())
    }
}

/// Reads the `count` entries of an index node as (hash, block); entry 0 has no hash.
fn read_dx_entries(bytes: &[u8], entries_at: usize) -> Vec<(u32, u32)> {
    let count = usize::from(read_u16le(bytes, entries_at + COUNT_LIMIT_COUNT));
    (0..count)
        .map(|index| {
            let at = entries_at + index * DX_ENTRY_SIZE;
            let hash = if index == 0 { 0 } else { read_u32le(bytes, at + DX_ENTRY_HASH) };
            (hash, read_u32le(bytes, at + DX_ENTRY_BLOCK))
        })
        .collect()
}

/// Writes `entries` and their count into an index node, clearing the unused slots up to the
/// limit. Entry 0's hash slot contains the count and limit, so its hash is not written.
fn write_dx_entries(bytes: &mut [u8], entries_at: usize, entries: &[(u32, u32)]) {
    let limit = usize::from(read_u16le(bytes, entries_at + COUNT_LIMIT_LIMIT));
    write_u16le(bytes, entries_at + COUNT_LIMIT_COUNT, entries.len() as u16);
    for index in 0..limit.max(entries.len()) {
        let at = entries_at + index * DX_ENTRY_SIZE;
        let (hash, block) = entries.get(index).copied().unwrap_or((0, 0));
        if index > 0 {
            write_u32le(bytes, at + DX_ENTRY_HASH, hash);
        }
        write_u32le(bytes, at + DX_ENTRY_BLOCK, block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::ext::htree::{HashVersion, PathNode};
    use crate::fs::ext::tests::{image_bytes, one_file};
    use crate::test_support::require_tools;

    /// Builds a full root over a full index node, as (root, node) bytes of a 1 KiB block filesystem
    /// without `metadata_csum`: 124 root entries and 127 node entries.
    fn full_two_levels(ext: &Ext<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
        let mut root = vec![0u8; 1024];
        write_u16le(&mut root, ROOT_ENTRIES + COUNT_LIMIT_LIMIT, 124);
        write_u8(&mut root, ROOT_INFO_INDIRECT_LEVELS, 1);
        let root_entries: Vec<(u32, u32)> = (0..124).map(|i| (i * 0x100_0000, 1 + i)).collect();
        write_dx_entries(&mut root, ROOT_ENTRIES, &root_entries);
        let mut node = ext.new_index_node();
        assert_eq!(read_u16le(&node, NODE_ENTRIES + COUNT_LIMIT_LIMIT), 127);
        let node_entries: Vec<(u32, u32)> = (0..127).map(|i| (i * 0x1000, 200 + i)).collect();
        write_dx_entries(&mut node, NODE_ENTRIES, &node_entries);
        (root, node)
    }

    fn path_through(root: Vec<u8>, node: Vec<u8>, max_levels: u8) -> HtreePath {
        HtreePath {
            version: HashVersion::HalfMd4 { unsigned: false },
            hash: 0x5000,
            levels: 1,
            max_levels,
            nodes: vec![
                PathNode { logical: 0, bytes: root, chosen: 0 },
                PathNode { logical: 1, bytes: node, chosen: 5 },
            ],
            leaf: 205,
        }
    }

    #[test]
    fn full_index_without_large_dir_is_rejected() {
        if require_tools(&["mkfs.ext4"], "full_index_without_large_dir_is_rejected").is_none() {
            return;
        }
        let ext = Ext::open(image_bytes(4096, &["-b", "1024", "-O", "^metadata_csum"], one_file)).unwrap();
        let dir = ext.read_inode(InodeIndex::ROOT).unwrap();
        let (root, node) = full_two_levels(&ext);
        let path = path_through(root, node, 1);
        let mut changes = DirChanges { blocks: BTreeMap::new(), first_new: 400, next_logical: 401 };
        let mut levels = 1;
        let error =
            ext.insert_index_entry(&dir, &mut changes, &path, &mut levels, 1, 0x5002, 400).unwrap_err();
        assert!(matches!(error, ExtError::DirectoryIndexFull(2)), "{error}");
    }

    #[test]
    fn large_dir_index_gains_third_level() {
        if require_tools(&["mkfs.ext4"], "large_dir_index_gains_third_level").is_none() {
            return;
        }
        let ext = Ext::open(image_bytes(4096, &["-b", "1024", "-O", "^metadata_csum"], one_file)).unwrap();
        let dir = ext.read_inode(InodeIndex::ROOT).unwrap();
        let (root, node) = full_two_levels(&ext);
        let path = path_through(root, node, 2);
        let mut changes = DirChanges { blocks: BTreeMap::new(), first_new: 400, next_logical: 401 };
        let mut levels = 1;
        ext.insert_index_entry(&dir, &mut changes, &path, &mut levels, 1, 0x5002, 400).unwrap();
        assert_eq!(levels, 2);

        // The node split in two: block 1 and new block 401. The root's 125 entries moved to new
        // block 402, and the root points at that block alone.
        let (root, _) = &changes.blocks[&0];
        assert_eq!(read_u8(root, ROOT_INFO_INDIRECT_LEVELS), 2);
        assert_eq!(read_dx_entries(root, ROOT_ENTRIES), [(0, 402)]);
        let (middle, _) = &changes.blocks[&402];
        let middle = read_dx_entries(middle, NODE_ENTRIES);
        assert_eq!(middle.len(), 125);
        assert_eq!(middle[2], (0x100_0000, 2), "entries keep their order after the new one");
        let (lower, _) = &changes.blocks[&1];
        let (upper, _) = &changes.blocks[&401];
        let (lower, upper) = (read_dx_entries(lower, NODE_ENTRIES), read_dx_entries(upper, NODE_ENTRIES));
        assert_eq!(lower.len() + upper.len(), 128);
        assert!(lower.contains(&(0x5002, 400)), "the new entry follows the chosen one");
        // 128 entries split at 64: the upper node starts with old entry 63 (hash 0x3F000,
        // block 263), whose hash moves up into the middle level's entry for the new node.
        assert_eq!(upper[0].1, 263);
        assert_eq!(middle[1], (0x3F000, 401), "the middle level points at the new node");
    }
}
