//! Renaming within one filesystem: files, symbolic links and whole directories, replacing an
//! existing target as `rename(2)` does.

use super::Ext;
use super::alloc::AllocPlan;
use super::dir_entry::FT_UNKNOWN;
use super::error::ExtError;
use super::inode::{Inode, InodeIndex, Timestamp};
use super::link::entry_file_type;
use super::write::{Target, Writes, check_dir_writable, check_linked};
use crate::image::volume::VolumeMut;

/// Maximum number of `..` steps from a directory up to the root. A longer chain means a cycle.
const MAX_DEPTH: usize = 1 << 16;

impl<V: VolumeMut> Ext<V> {
    /// Moves `from` to `to`. An existing `to` is replaced: a file or symbolic link by a
    /// non-directory, an empty directory by a directory. A directory cannot move below itself.
    /// Renaming a name onto another name of the same inode changes nothing. `time` becomes the
    /// change time of the moved inode and the change and modification time of both parents.
    pub fn rename(&mut self, from: &str, to: &str, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let source = self.locate(from)?;
        let Some(ino) = source.existing else {
            return Err(ExtError::NotFound(from.to_string()));
        };
        let inode = self.read_inode(ino)?;
        check_linked(&inode)?;
        let is_dir = inode.is_dir();
        let destination = self.locate(to)?;
        if destination.existing == Some(ino) {
            return Ok(());
        }
        if is_dir {
            check_dir_writable(&inode)?;
            if self.is_ancestor(ino, destination.parent.index)? {
                return Err(ExtError::RenameIntoItself { from: from.to_string(), to: to.to_string() });
            }
        }
        if let Some(existing) = destination.existing {
            let replaced = self.read_inode(existing)?;
            match (is_dir, replaced.is_dir()) {
                (true, false) => return Err(ExtError::NotADirectory(to.to_string())),
                (false, true) => return Err(ExtError::IsADirectory(to.to_string())),
                (true, true) if self.has_children(&replaced)? => {
                    return Err(ExtError::DirectoryNotEmpty(to.to_string()));
                }
                _ => {}
            }
        }
        let moves_parent = source.parent.index != destination.parent.index;

        self.transaction(|tx| {
            if destination.existing.is_some() {
                if is_dir { tx.remove_dir(to, time)? } else { tx.remove_file(to, time)? }
            }
            tx.add_entry(to, ino, is_dir && moves_parent, time)?;
            tx.remove_entry(from, is_dir && moves_parent, time)?;
            let mut moved = tx.read_inode(ino)?;
            if is_dir && moves_parent {
                let new_parent = tx.locate(to)?.parent.index;
                tx.set_dotdot(&moved, new_parent)?;
            }
            moved.set_time(Timestamp::Change, time)?;
            let offset = tx.inode_offset(ino)?;
            let bytes = moved.encode(&tx.sb).to_vec();
            tx.write_volume(offset, &bytes)?;
            Ok(())
        })
    }

    /// Adds the entry `path` for the existing inode `ino`, counting one more subdirectory in
    /// the parent when `subdir` is true.
    fn add_entry(&mut self, path: &str, ino: InodeIndex, subdir: bool, time: i64) -> Result<(), ExtError> {
        let located = self.locate(path)?;
        if located.existing.is_some() {
            return Err(ExtError::AlreadyExists(path.to_string()));
        }
        let inode = self.read_inode(ino)?;
        let mut plan = AllocPlan::new(self, self.known_owners_of(&located)?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = located;
        let file_type = if self.has_filetype() { entry_file_type(inode.mode()) } else { FT_UNKNOWN };
        if subdir {
            self.add_subdir_link(&mut parent, path)?;
        }
        self.plan_dir_insert(&mut plan, &mut parent, name.as_bytes(), ino, file_type, &mut writes)?;
        parent.touch(time)?;
        writes.inodes.push(parent);
        self.apply(plan, writes)
    }

    /// Removes the entry `path` without touching the inode it names, counting one subdirectory
    /// less in the parent when `subdir` is true.
    fn remove_entry(&mut self, path: &str, subdir: bool, time: i64) -> Result<(), ExtError> {
        let located = self.locate(path)?;
        if located.existing.is_none() {
            return Err(ExtError::NotFound(path.to_string()));
        }
        let plan = AllocPlan::new(self, self.known_owners(&located.dirs, &[])?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = located;
        self.plan_dir_remove(&parent, name.as_bytes(), &mut writes)?;
        if subdir {
            self.remove_subdir_link(&mut parent)?;
        }
        parent.touch(time)?;
        writes.inodes.push(parent);
        self.apply(plan, writes)
    }

    /// True when directory `ancestor` is `dir` or lies above it, found by following `..`.
    fn is_ancestor(&self, ancestor: InodeIndex, dir: InodeIndex) -> Result<bool, ExtError> {
        let mut current = dir;
        for _ in 0..MAX_DEPTH {
            if current == ancestor {
                return Ok(true);
            }
            if current == InodeIndex::ROOT {
                return Ok(false);
            }
            let inode = self.read_inode(current)?;
            let Some(parent) = self.find_entry(&inode, b"..")? else {
                return Err(ExtError::corrupt(format!("directory inode {current}"), "it has no .. entry"));
            };
            current = parent;
        }
        Err(ExtError::corrupt(
            format!("directory inode {dir}"),
            format!("its .. entries do not reach the root within {MAX_DEPTH} steps"),
        ))
    }

    /// Points the `..` entry of directory `dir` at `parent`.
    fn set_dotdot(&mut self, dir: &Inode, parent: InodeIndex) -> Result<(), ExtError> {
        let mut writes = Writes::default();
        self.plan_set_dotdot(dir, parent, &mut writes)?;
        let plan = AllocPlan::new(self, self.known_owners(&[dir.index], &[])?);
        self.apply(plan, writes)
    }
}
