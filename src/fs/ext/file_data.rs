//! Changing the data of an existing regular file in place: writing at an offset, into holes
//! and past the end, and truncating to a smaller or larger size.

use super::Ext;
use super::alloc::AllocPlan;
use super::error::ExtError;
use super::features;
use super::file_map::{FileMap, Run, push_run};
use super::inode::{Inode, S_IFDIR, S_IFREG};
use super::write::{NO_LARGE_FILE_MAX, Target, Writes, check_file_writable, check_linked, expand_ranges};
use crate::image::volume::VolumeMut;

impl<V: VolumeMut> Ext<V> {
    /// Writes `data` at byte `offset` of the existing regular file `path`, as `pwrite` does.
    /// Blocks already there are overwritten in place, and holes and the space past the end get
    /// new blocks. The size grows when the write ends past it. A gap between the old end and
    /// `offset` stays a hole. `time` becomes the modification and change time.
    pub fn write_at(&mut self, path: &str, offset: u64, data: &[u8], time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let (located, mut inode) = self.locate_regular_file(path)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(ExtError::FileTooLarge { size: u64::MAX, limit: u64::MAX })?;
        self.check_file_size(end)?;
        let mut plan = AllocPlan::new(self, self.known_owners_of(&located)?);
        let mut writes = Writes::default();
        let block_size = u64::from(self.sb.block_size);
        let map = self.file_map(&inode)?;
        let old_size = inode.size();

        if offset > old_size && !old_size.is_multiple_of(block_size) {
            self.plan_zero_block_tail(&map, old_size, &mut writes)?;
        }
        let mut runs = map.runs.clone();
        if !data.is_empty() {
            let first = offset / block_size;
            let last = (end - 1) / block_size;
            let holes: Vec<u64> = (first..=last).filter(|&logical| map.find(logical).is_none()).collect();
            let goal = self.group_of_inode(inode.index);
            let allocated = plan.allocate_blocks(self, goal, holes.len() as u64, self.block_limit(&inode))?;
            let mut new_blocks = allocated.into_iter().flat_map(|(start, len)| start..start + len);

            let mut written = Vec::new();
            for logical in first..=last {
                let block_start = logical * block_size;
                let from = offset.max(block_start);
                let to = end.min(block_start + block_size);
                let (physical, mut contents) = match map.find(logical) {
                    Some(run) => {
                        let physical = run.physical + (logical - run.logical);
                        let whole = from == block_start && to == block_start + block_size;
                        let mut contents = if run.uninit || whole {
                            vec![0u8; block_size as usize]
                        } else {
                            self.read_block(physical)?
                        };
                        // Bytes past the old end read as zeros once the size grows over them.
                        let old_end_within = old_size.saturating_sub(block_start).min(block_size) as usize;
                        contents.get_mut(old_end_within..).unwrap_or_default().fill(0);
                        (physical, contents)
                    }
                    None => {
                        let Some(physical) = new_blocks.next() else {
                            return Err(ExtError::corrupt("write plan", "fewer blocks allocated than holes"));
                        };
                        (physical, vec![0u8; block_size as usize])
                    }
                };
                let source = data.get((from - offset) as usize..(to - offset) as usize).unwrap_or_default();
                let within = (from - block_start) as usize;
                if let Some(target) = contents.get_mut(within..within + source.len()) {
                    target.copy_from_slice(source);
                }
                writes.blocks.push((physical, contents));
                written.push(Run { logical, physical, len: 1, uninit: false });
            }
            runs = replace_range(&map.runs, first, last + 1, &written);
        }

        self.plan_remap(&mut plan, &mut inode, &map, &runs, &mut writes)?;
        inode.set_size(old_size.max(end));
        inode.touch(time)?;
        writes.inodes.push(inode);
        self.apply(plan, writes)
    }

    /// Sets the size of the existing regular file `path` to `size`, as `truncate` does: blocks
    /// past the new end are freed, and growing leaves a hole that reads as zeros. `time`
    /// becomes the modification and change time.
    pub fn truncate(&mut self, path: &str, size: u64, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let (located, mut inode) = self.locate_regular_file(path)?;
        self.check_file_size(size)?;
        let mut plan = AllocPlan::new(self, self.known_owners_of(&located)?);
        let mut writes = Writes::default();
        let block_size = u64::from(self.sb.block_size);
        let map = self.file_map(&inode)?;
        let old_size = inode.size();

        let edge = size.min(old_size);
        if edge != size.max(old_size) && !edge.is_multiple_of(block_size) {
            self.plan_zero_block_tail(&map, edge, &mut writes)?;
        }
        let keep = size.div_ceil(block_size);
        let mut runs = Vec::new();
        let mut released = Vec::new();
        for run in &map.runs {
            let kept = run.len.min(keep.saturating_sub(run.logical));
            if kept > 0 {
                runs.push(Run { len: kept, ..*run });
            }
            if kept < run.len {
                released.push((run.physical + kept, run.len - kept));
            }
        }
        plan.release_blocks(self, &released, inode.index)?;

        self.plan_remap(&mut plan, &mut inode, &map, &runs, &mut writes)?;
        inode.set_size(size);
        inode.touch(time)?;
        writes.inodes.push(inode);
        self.apply(plan, writes)
    }

    /// Resolves `path` to an existing regular file whose data writes can change.
    fn locate_regular_file(&self, path: &str) -> Result<(Target, Inode), ExtError> {
        let located = self.locate(path)?;
        let Some(ino) = located.existing else {
            return Err(ExtError::NotFound(path.to_string()));
        };
        let inode = self.read_inode(ino)?;
        match inode.file_type() {
            S_IFREG => {}
            S_IFDIR => return Err(ExtError::IsADirectory(path.to_string())),
            _ => return Err(ExtError::NotAFile(path.to_string())),
        }
        check_file_writable(&inode)?;
        check_linked(&inode)?;
        Ok((located, inode))
    }

    /// Rejects a file size over 2 GiB - 1 without the `large_file` feature.
    fn check_file_size(&self, size: u64) -> Result<(), ExtError> {
        if !self.sb.has_ro_compat(features::RO_COMPAT_LARGE_FILE) && size > NO_LARGE_FILE_MAX {
            return Err(ExtError::FileTooLarge { size, limit: NO_LARGE_FILE_MAX });
        }
        Ok(())
    }

    /// Plans zeroing the bytes from `position` to the end of its block, when that block holds
    /// written data, so that a later larger size does not show old bytes.
    fn plan_zero_block_tail(
        &self,
        map: &FileMap,
        position: u64,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let block_size = u64::from(self.sb.block_size);
        let logical = position / block_size;
        let Some(run) = map.find(logical).filter(|run| !run.uninit) else {
            return Ok(());
        };
        let physical = run.physical + (logical - run.logical);
        let mut contents = self.read_block(physical)?;
        contents.get_mut((position % block_size) as usize..).unwrap_or_default().fill(0);
        writes.blocks.push((physical, contents));
        Ok(())
    }

    /// Replaces the map of `inode` (now `old`) by one of `runs`: frees the old extent tree or
    /// indirect blocks and builds new ones.
    fn plan_remap(
        &self,
        plan: &mut AllocPlan,
        inode: &mut Inode,
        old: &FileMap,
        runs: &[Run],
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        plan.release_blocks(self, &expand_ranges(&old.metadata_blocks), inode.index)?;
        let data_blocks = runs.iter().map(|run| run.len).sum();
        let planned = self.plan_map(plan, inode, runs, data_blocks)?;
        writes.blocks.extend(planned.built.nodes);
        let xattr_blocks = u64::from(inode.file_acl(&self.sb) != 0);
        inode.set_block_area(&planned.built.block_area);
        inode.set_blocks(&self.sb, planned.blocks_used + xattr_blocks)?;
        Ok(())
    }
}

/// Returns `runs` with logical blocks `first..end` replaced by the single-block runs of
/// `written`, merged where contiguous.
fn replace_range(runs: &[Run], first: u64, end: u64, written: &[Run]) -> Vec<Run> {
    let mut pieces = Vec::new();
    for run in runs {
        let run_end = run.logical + run.len;
        if run.logical < first {
            let len = run_end.min(first) - run.logical;
            pieces.push(Run { len, ..*run });
        }
        if run_end > end {
            let start = run.logical.max(end);
            pieces.push(Run {
                logical: start,
                physical: run.physical + (start - run.logical),
                len: run_end - start,
                uninit: run.uninit,
            });
        }
    }
    pieces.extend_from_slice(written);
    pieces.sort_by_key(|run| run.logical);
    let mut merged = Vec::with_capacity(pieces.len());
    for piece in pieces {
        push_run(&mut merged, piece);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_range_splits_and_merges() {
        let runs = [Run { logical: 0, physical: 100, len: 10, uninit: true }];
        let written = [
            Run { logical: 3, physical: 103, len: 1, uninit: false },
            Run { logical: 4, physical: 104, len: 1, uninit: false },
        ];
        let merged = replace_range(&runs, 3, 5, &written);
        assert_eq!(
            merged,
            [
                Run { logical: 0, physical: 100, len: 3, uninit: true },
                Run { logical: 3, physical: 103, len: 2, uninit: false },
                Run { logical: 5, physical: 105, len: 5, uninit: true },
            ]
        );
    }
}
