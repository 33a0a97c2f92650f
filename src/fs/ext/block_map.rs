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

/// Number of indirect blocks needed to map `data_blocks` blocks without holes.
pub(crate) fn indirect_blocks_needed(data_blocks: u64, block_size: u32) -> Result<u64, ExtError> {
    let per_block = pointers_per_block(block_size);
    let mut left = data_blocks.saturating_sub(DIRECT_BLOCKS);
    let mut needed = 0u64;
    for level in 1..=3u32 {
        if left == 0 {
            break;
        }
        let capacity = per_block.pow(level);
        let here = left.min(capacity);
        // One block at the top of this tree, and one per group of pointers on each lower level.
        for lower in 1..level {
            needed += here.div_ceil(per_block.pow(lower));
        }
        needed += 1;
        left -= here;
    }
    if left > 0 {
        let limit = max_blocks(block_size).saturating_mul(u64::from(block_size));
        return Err(ExtError::FileTooLarge {
            size: data_blocks.saturating_mul(u64::from(block_size)),
            limit,
        });
    }
    Ok(needed)
}

/// Largest number of blocks a block map can address.
fn max_blocks(block_size: u32) -> u64 {
    let per_block = pointers_per_block(block_size);
    DIRECT_BLOCKS + per_block + per_block.pow(2) + per_block.pow(3)
}

/// Builds the block map of `data` (the data block of each logical block, in order), taking
/// its indirect blocks from `indirect_blocks`.
pub(crate) fn build_block_map(
    block_size: u32,
    data: &[u64],
    indirect_blocks: &[u64],
) -> Result<BuiltMap, ExtError> {
    let as_pointer = |block: u64| {
        u32::try_from(block).map_err(|_| {
            ExtError::corrupt("block map plan", format!("block {block} does not fit a 32-bit pointer"))
        })
    };
    let mut area = [0u8; I_BLOCK_SIZE];
    for (index, &block) in data.iter().take(DIRECT_BLOCKS as usize).enumerate() {
        write_u32le(&mut area, index * 4, as_pointer(block)?);
    }

    let per_block = pointers_per_block(block_size);
    let mut rest = data.get(DIRECT_BLOCKS as usize..).unwrap_or_default();
    let mut free = indirect_blocks.iter();
    let mut written = Vec::new();
    for level in 0..3u32 {
        if rest.is_empty() {
            break;
        }
        let capacity = per_block.pow(level + 1) as usize;
        let (here, later) = rest.split_at(rest.len().min(capacity));
        let top = fill_indirect(block_size, level, here, &mut free, &mut written)?;
        write_u32le(&mut area, (SINGLE_INDIRECT + level as usize) * 4, as_pointer(top)?);
        rest = later;
    }
    Ok(BuiltMap { block_area: area, nodes: written })
}

/// Fills one indirect block `level` levels above `data` and returns its block number.
fn fill_indirect<'a>(
    block_size: u32,
    level: u32,
    data: &[u64],
    free: &mut impl Iterator<Item = &'a u64>,
    written: &mut Vec<(u64, Vec<u8>)>,
) -> Result<u64, ExtError> {
    let Some(&block) = free.next() else {
        return Err(ExtError::corrupt("block map plan", "fewer indirect blocks than the map needs"));
    };
    let per_block = pointers_per_block(block_size) as usize;
    let span = per_block.pow(level);
    let mut contents = vec![0u8; block_size as usize];
    for (index, chunk) in data.chunks(span).enumerate() {
        let pointer = if level == 0 {
            chunk.first().copied().unwrap_or(0)
        } else {
            fill_indirect(block_size, level - 1, chunk, free, written)?
        };
        let pointer = u32::try_from(pointer).map_err(|_| {
            ExtError::corrupt("block map plan", format!("block {pointer} does not fit a 32-bit pointer"))
        })?;
        write_u32le(&mut contents, index * 4, pointer);
    }
    written.push((block, contents));
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_counts_for_1k_blocks() {
        assert_eq!(indirect_blocks_needed(12, 1024).unwrap(), 0);
        assert_eq!(indirect_blocks_needed(13, 1024).unwrap(), 1);
        assert_eq!(indirect_blocks_needed(12 + 256, 1024).unwrap(), 1);
        // One double indirect block and one single indirect block below it.
        assert_eq!(indirect_blocks_needed(12 + 256 + 1, 1024).unwrap(), 3);
        assert_eq!(indirect_blocks_needed(12 + 256 + 257, 1024).unwrap(), 4);
    }

    #[test]
    fn built_map_uses_every_planned_block() {
        let data: Vec<u64> = (0..600).map(|i| 5000 + i).collect();
        let needed = indirect_blocks_needed(600, 1024).unwrap();
        let indirect: Vec<u64> = (0..needed).map(|i| 100 + i).collect();
        let built = build_block_map(1024, &data, &indirect).unwrap();
        assert_eq!(built.nodes.len() as u64, needed);
        assert_eq!(read_u32le(&built.block_area, 0), 5000);
        assert_eq!(read_u32le(&built.block_area, 12 * 4), 100);
        assert_eq!(read_u32le(&built.block_area, 13 * 4), 101);
    }
}
