//! The ext2/3 block map: twelve direct block pointers in `i_block`, then one single, one double
//! and one triple indirect block of 32-bit pointers.

use std::collections::HashSet;

use super::Ext;
use super::bytes::{read_u32le, write_u32le};
use super::error::ExtError;
use super::file_map::{BlockBudget, BuiltMap, FileMap, Run, push_run};
use super::inode::{I_BLOCK_SIZE, Inode};
use crate::image::volume::Volume;

/// Direct pointers in `i_block`.
const DIRECT_BLOCKS: u64 = 12;
/// Index in `i_block` of the single indirect pointer; double and triple follow it.
const SINGLE_INDIRECT: usize = 12;

/// State of one block map walk: the indirect blocks seen so far and the blocks left to find.
struct IndirectWalk {
    visited: HashSet<u64>,
    budget: BlockBudget,
}

/// Pointers per indirect block.
fn pointers_per_block(block_size: u32) -> u64 {
    u64::from(block_size / 4)
}

impl<V: Volume> Ext<V> {
    /// Reads the block map of `inode`, checking every pointer.
    pub(crate) fn read_block_map(&self, inode: &Inode) -> Result<FileMap, ExtError> {
        let area = inode.block_area();
        let mut map = FileMap::default();
        let mut walk = IndirectWalk { visited: HashSet::new(), budget: BlockBudget::new(self, inode) };
        let structure = format!("inode {} block map", inode.index);

        for index in 0..DIRECT_BLOCKS {
            let block = u64::from(read_u32le(area, index as usize * 4));
            self.add_mapped_block(&mut map, &mut walk.budget, index, block, &structure)?;
        }

        let per_block = pointers_per_block(self.sb.block_size);
        let mut first_logical = DIRECT_BLOCKS;
        let mut span = per_block;
        for level in 0..3u32 {
            let pointer = u64::from(read_u32le(area, (SINGLE_INDIRECT + level as usize) * 4));
            if pointer != 0 {
                self.walk_indirect(&mut map, &mut walk, pointer, level, first_logical, &structure)?;
            }
            first_logical += span;
            span = span.saturating_mul(per_block);
        }
        Ok(map)
    }

    /// Adds the data block `block` at `logical`, unless it is a hole.
    fn add_mapped_block(
        &self,
        map: &mut FileMap,
        budget: &mut BlockBudget,
        logical: u64,
        block: u64,
        structure: &str,
    ) -> Result<(), ExtError> {
        if block == 0 {
            return Ok(());
        }
        if block < u64::from(self.sb.first_data_block) || block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                structure,
                format!("logical block {logical} points to block {block} outside the filesystem"),
            ));
        }
        budget.spend(1, structure)?;
        push_run(&mut map.runs, Run { logical, physical: block, len: 1, uninit: false });
        Ok(())
    }

    /// Walks an indirect block `level` levels above the data (0 is a single indirect block).
    fn walk_indirect(
        &self,
        map: &mut FileMap,
        walk: &mut IndirectWalk,
        block: u64,
        level: u32,
        first_logical: u64,
        structure: &str,
    ) -> Result<(), ExtError> {
        if block < u64::from(self.sb.first_data_block) || block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                structure,
                format!("indirect block {block} is outside the filesystem"),
            ));
        }
        if !walk.visited.insert(block) {
            return Err(ExtError::corrupt(structure, format!("indirect block {block} is used twice")));
        }
        walk.budget.spend(1, structure)?;
        map.metadata_blocks.push(block);
        let pointers = self.read_block(block)?;
        let per_block = pointers_per_block(self.sb.block_size);
        let span = per_block.pow(level);
        for index in 0..per_block {
            let pointer = u64::from(read_u32le(&pointers, index as usize * 4));
            let logical = first_logical + index * span;
            if level == 0 {
                self.add_mapped_block(map, &mut walk.budget, logical, pointer, structure)?;
            } else if pointer != 0 {
                self.walk_indirect(map, walk, pointer, level - 1, logical, structure)?;
            }
        }
        Ok(())
    }
}

/// Returns the first logical block each tree of `i_block` maps (single, double, triple indirect), and
/// the number of logical blocks it spans.
fn indirect_trees(block_size: u32) -> [(u64, u64); 3] {
    let per_block = pointers_per_block(block_size);
    let single = (DIRECT_BLOCKS, per_block);
    let double = (DIRECT_BLOCKS + per_block, per_block.pow(2));
    let triple = (double.0 + per_block.pow(2), per_block.pow(3));
    [single, double, triple]
}

/// Number of indirect blocks needed to map the sorted logical blocks of `data` (logical,
/// physical) pairs, holes allowed.
pub(crate) fn indirect_blocks_needed(data: &[(u64, u64)], block_size: u32) -> Result<u64, ExtError> {
    check_addressable(data, block_size)?;
    let per_block = pointers_per_block(block_size);
    let mut needed = 0u64;
    for (level, (first, span)) in indirect_trees(block_size).into_iter().enumerate() {
        let inside: Vec<u64> =
            data.iter().map(|&(logical, _)| logical).filter(|&l| l >= first && l < first + span).collect();
        if inside.is_empty() {
            continue;
        }
        // Each level of the tree needs one block per distinct group of logical blocks that one
        // of its blocks covers: the top block covers the whole span.
        for depth in 0..=level as u32 {
            let covered = span / per_block.pow(depth);
            let mut groups: Vec<u64> = inside.iter().map(|l| (l - first) / covered).collect();
            groups.dedup();
            needed += groups.len() as u64;
        }
    }
    Ok(needed)
}

/// Fails with [`ExtError::FileTooLarge`] when a logical block lies past what a block map can
/// address.
fn check_addressable(data: &[(u64, u64)], block_size: u32) -> Result<(), ExtError> {
    let max = max_blocks(block_size);
    match data.last() {
        Some(&(logical, _)) if logical >= max => Err(ExtError::FileTooLarge {
            size: logical.saturating_add(1).saturating_mul(u64::from(block_size)),
            limit: max.saturating_mul(u64::from(block_size)),
        }),
        _ => Ok(()),
    }
}

/// Largest number of blocks a block map can address.
fn max_blocks(block_size: u32) -> u64 {
    let per_block = pointers_per_block(block_size);
    DIRECT_BLOCKS + per_block + per_block.pow(2) + per_block.pow(3)
}

/// Builds the block map of `data`, (logical, physical) pairs in increasing logical order with
/// holes allowed, taking its indirect blocks from `indirect_blocks`.
pub(crate) fn build_block_map(
    block_size: u32,
    data: &[(u64, u64)],
    indirect_blocks: &[u64],
) -> Result<BuiltMap, ExtError> {
    check_addressable(data, block_size)?;
    let mut area = [0u8; I_BLOCK_SIZE];
    for &(logical, physical) in data.iter().filter(|&&(logical, _)| logical < DIRECT_BLOCKS) {
        write_u32le(&mut area, logical as usize * 4, as_pointer(physical)?);
    }

    let mut free = indirect_blocks.iter();
    let mut written = Vec::new();
    for (level, (first, span)) in indirect_trees(block_size).into_iter().enumerate() {
        let inside: Vec<(u64, u64)> =
            data.iter().copied().filter(|&(l, _)| l >= first && l < first + span).collect();
        if inside.is_empty() {
            continue;
        }
        let top = fill_indirect(block_size, level as u32, first, &inside, &mut free, &mut written)?;
        write_u32le(&mut area, (SINGLE_INDIRECT + level) * 4, as_pointer(top)?);
    }
    Ok(BuiltMap { block_area: area, nodes: written })
}

fn as_pointer(block: u64) -> Result<u32, ExtError> {
    u32::try_from(block).map_err(|_| {
        ExtError::corrupt("block map plan", format!("block {block} does not fit a 32-bit pointer"))
    })
}

/// Fills one indirect block `level` levels above the data, covering the logical blocks from
/// `first`, and returns its block number. `data` holds only blocks that this block covers.
fn fill_indirect<'a>(
    block_size: u32,
    level: u32,
    first: u64,
    data: &[(u64, u64)],
    free: &mut impl Iterator<Item = &'a u64>,
    written: &mut Vec<(u64, Vec<u8>)>,
) -> Result<u64, ExtError> {
    let Some(&block) = free.next() else {
        return Err(ExtError::corrupt("block map plan", "fewer indirect blocks than the map needs"));
    };
    let span = pointers_per_block(block_size).pow(level);
    let mut contents = vec![0u8; block_size as usize];
    let mut rest = data;
    while let Some(&(logical, physical)) = rest.first() {
        let index = (logical - first) / span;
        let child_first = first + index * span;
        let count = rest.iter().take_while(|&&(l, _)| l < child_first + span).count();
        let (here, later) = rest.split_at(count);
        let pointer = if level == 0 {
            physical
        } else {
            fill_indirect(block_size, level - 1, child_first, here, free, written)?
        };
        write_u32le(&mut contents, index as usize * 4, as_pointer(pointer)?);
        rest = later;
    }
    written.push((block, contents));
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(count: u64) -> Vec<(u64, u64)> {
        (0..count).map(|i| (i, 5000 + i)).collect()
    }

    #[test]
    fn indirect_counts_for_1k_blocks() {
        assert_eq!(indirect_blocks_needed(&dense(12), 1024).unwrap(), 0);
        assert_eq!(indirect_blocks_needed(&dense(13), 1024).unwrap(), 1);
        assert_eq!(indirect_blocks_needed(&dense(12 + 256), 1024).unwrap(), 1);
        // One double indirect block and one single indirect block below it.
        assert_eq!(indirect_blocks_needed(&dense(12 + 256 + 1), 1024).unwrap(), 3);
        assert_eq!(indirect_blocks_needed(&dense(12 + 256 + 257), 1024).unwrap(), 4);
    }

    #[test]
    fn holes_need_no_indirect_blocks() {
        // One block deep inside the double indirect range: the top block and one below it.
        let sparse = [(0, 7000), (12 + 256 + 1000, 7001)];
        assert_eq!(indirect_blocks_needed(&sparse, 1024).unwrap(), 2);
        let built = build_block_map(1024, &sparse, &[100, 101]).unwrap();
        assert_eq!(read_u32le(&built.block_area, 12 * 4), 0, "no single indirect block");
        assert_eq!(read_u32le(&built.block_area, 13 * 4), 100);
        let (_, top) = built.nodes.iter().find(|(block, _)| *block == 100).unwrap();
        assert_eq!(read_u32le(top, (1000 / 256) * 4), 101);
        let (_, leaf) = built.nodes.iter().find(|(block, _)| *block == 101).unwrap();
        assert_eq!(read_u32le(leaf, (1000 % 256) * 4), 7001);
    }

    #[test]
    fn built_map_uses_every_planned_block() {
        let data = dense(600);
        let needed = indirect_blocks_needed(&data, 1024).unwrap();
        let indirect: Vec<u64> = (0..needed).map(|i| 100 + i).collect();
        let built = build_block_map(1024, &data, &indirect).unwrap();
        assert_eq!(built.nodes.len() as u64, needed);
        assert_eq!(read_u32le(&built.block_area, 0), 5000);
        assert_eq!(read_u32le(&built.block_area, 12 * 4), 100);
        assert_eq!(read_u32le(&built.block_area, 13 * 4), 101);
    }
}
