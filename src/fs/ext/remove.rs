//! Removing directories: one empty directory, or a whole tree.

use super::Ext;
use super::alloc::AllocPlan;
use super::error::ExtError;
use super::inode::{FLAG_INLINE_DATA, Inode, InodeIndex};
use super::write::{Target, Writes, check_dir_writable, check_linked};
use crate::image::volume::VolumeMut;

/// Maximum number of entries one `remove_tree` call visits. It bounds the walk of a damaged filesystem whose
/// directories form a cycle.
const MAX_TREE_ENTRIES: usize = 1 << 22;

impl<V: VolumeMut> Ext<V> {
    /// Removes the empty directory `path` and frees its inode and blocks. `time` (seconds since
    /// the epoch) becomes the parent's change and modification time and the deletion time.
    pub fn remove_dir(&mut self, path: &str, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let located = self.locate(path)?;
        let Some(ino) = located.existing else {
            return Err(ExtError::NotFound(path.to_string()));
        };
        let mut inode = self.read_inode(ino)?;
        if !inode.is_dir() {
            return Err(ExtError::NotADirectory(path.to_string()));
        }
        check_linked(&inode)?;
        check_dir_writable(&inode)?;
        if self.has_children(&inode)? {
            return Err(ExtError::DirectoryNotEmpty(path.to_string()));
        }
        let mut plan = AllocPlan::new(self, self.known_owners_of(&located)?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = located;

        self.plan_dir_remove(&parent, name.as_bytes(), &mut writes)?;
        self.remove_subdir_link(&mut parent)?;
        parent.touch(time)?;
        inode.set_links_count(0);
        inode.set_time(super::inode::Timestamp::Change, time)?;
        self.plan_release_inode(&mut plan, &mut inode, time, &mut writes)?;
        writes.inodes.push(inode);
        writes.inodes.push(parent);
        self.apply(plan, writes)
    }

    /// Removes `path` and, when it is a directory, everything below it, as `rm -r` does. A
    /// symbolic link is removed itself, never followed. Nothing is written unless the whole
    /// tree can be removed.
    pub fn remove_tree(&mut self, path: &str, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let root = self.locate(path)?;
        let Some(ino) = root.existing else {
            return Err(ExtError::NotFound(path.to_string()));
        };
        self.transaction(|tx| tx.remove_tree_steps(path, ino, time))
    }

    /// Removes the tree at `path` (inode `top`) bottom up, each step a complete operation.
    fn remove_tree_steps(&mut self, path: &str, top: InodeIndex, time: i64) -> Result<(), ExtError> {
        // Depth-first with an explicit stack: (path, inode, children already pushed).
        let mut stack = vec![(path.to_string(), top, false)];
        let mut visited = 0usize;
        while let Some((current, ino, expanded)) = stack.pop() {
            visited += 1;
            if visited > MAX_TREE_ENTRIES {
                return Err(ExtError::corrupt(
                    format!("directory tree at {path}"),
                    format!("more than {MAX_TREE_ENTRIES} entries, or directories that form a cycle"),
                ));
            }
            let inode = self.read_inode(ino)?;
            if !inode.is_dir() {
                self.remove_file(&current, time)?;
                continue;
            }
            if expanded {
                self.remove_dir(&current, time)?;
                continue;
            }
            check_dir_writable(&inode)?;
            stack.push((current.clone(), ino, true));
            for (name, child, _) in self.raw_entries(&inode)? {
                if name == b"." || name == b".." {
                    continue;
                }
                let Ok(name) = std::str::from_utf8(&name) else {
                    return Err(non_utf8_name(&current));
                };
                stack.push((format!("{}/{name}", current.trim_end_matches('/')), child, false));
            }
        }
        Ok(())
    }

    /// True when directory `dir` has an entry besides `.` and `..`.
    pub(super) fn has_children(&self, dir: &Inode) -> Result<bool, ExtError> {
        if dir.has_flag(FLAG_INLINE_DATA) {
            check_dir_writable(dir)?;
        }
        let entries = self.raw_entries(dir)?;
        Ok(entries.iter().any(|(name, _, _)| name != b"." && name != b".."))
    }
}

fn non_utf8_name(path: &str) -> ExtError {
    ExtError::unsupported(
        "file names that are not UTF-8",
        format!("{path} contains such a name, which paths of this module cannot express"),
    )
}
