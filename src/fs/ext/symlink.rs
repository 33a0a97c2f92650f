//! Creating symbolic links: fast links keep a target of up to 59 bytes in `i_block`, slow links
//! keep it in one data block.

use super::Ext;
use super::alloc::AllocPlan;
use super::dir_entry::FT_SYMLINK;
use super::error::ExtError;
use super::file_map::Run;
use super::inode::{I_BLOCK_SIZE, InodeIndex, S_IFLNK};
use super::write::{NewAttrs, Target, Writes};
use crate::image::volume::VolumeMut;

/// Permissions of every symbolic link, as Linux creates them.
const SYMLINK_MODE: u16 = 0o777;

impl<V: VolumeMut> Ext<V> {
    /// Creates the symbolic link `path` pointing to `target`, owned by `attrs.uid`/`attrs.gid`
    /// with the times of `attrs`; `attrs.mode` is ignored because links always have mode 0777.
    /// A target shorter than 60 bytes is stored in the inode (a fast link), a longer one in a
    /// data block, so the target must be shorter than a block.
    pub fn symlink(&mut self, path: &str, target: &[u8], attrs: &NewAttrs) -> Result<InodeIndex, ExtError> {
        self.check_writable()?;
        let len = target.len();
        if target.is_empty() {
            return Err(ExtError::InvalidSymlinkTarget { len, reason: "the target is empty" });
        }
        if target.contains(&0) {
            return Err(ExtError::InvalidSymlinkTarget { len, reason: "the target contains a NUL byte" });
        }
        if len >= self.sb.block_size as usize {
            return Err(ExtError::InvalidSymlinkTarget { len, reason: "the target does not fit one block" });
        }
        let located = self.locate(path)?;
        if located.existing.is_some() {
            return Err(ExtError::AlreadyExists(path.to_string()));
        }
        let mut plan = AllocPlan::new(self, self.known_owners_of(&located)?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = located;

        let ino = plan.allocate_inode(self, self.group_of_inode(parent.index), false)?;
        let mut inode = self.new_inode(ino, S_IFLNK | SYMLINK_MODE, attrs)?;
        inode.set_links_count(1);
        inode.set_size(len as u64);
        if len < I_BLOCK_SIZE {
            // The kernel stores fast links without the extents flag: i_block is the target.
            let mut area = [0u8; I_BLOCK_SIZE];
            area.get_mut(..len).unwrap_or_default().copy_from_slice(target);
            inode.set_flags(0);
            inode.set_block_area(&area);
        } else {
            let limit = self.block_limit(&inode);
            let allocated = plan.allocate_blocks(self, self.group_of_inode(ino), 1, limit)?;
            let block = allocated.first().map(|&(start, _)| start).unwrap_or(0);
            let mut contents = target.to_vec();
            contents.resize(self.sb.block_size as usize, 0);
            writes.blocks.push((block, contents));
            let run = Run { logical: 0, physical: block, len: 1, uninit: false };
            let planned = self.plan_map(&mut plan, &inode, &[run], 1)?;
            writes.blocks.extend(planned.built.nodes);
            inode.set_block_area(&planned.built.block_area);
            inode.set_blocks(&self.sb, planned.blocks_used)?;
        }

        let file_type = if self.has_filetype() { FT_SYMLINK } else { 0 };
        self.plan_dir_insert(&mut plan, &mut parent, name.as_bytes(), ino, file_type, &mut writes)?;
        parent.touch(attrs.time)?;
        writes.inodes.push(inode);
        writes.inodes.push(parent);
        self.apply(plan, writes)?;
        Ok(ino)
    }
}
