//! Hard links, and the link counts of directories that gain or lose a subdirectory.

use super::alloc::AllocPlan;
use super::dir_entry::{FT_DIR, FT_REG_FILE, FT_SYMLINK, FT_UNKNOWN};
use super::error::ExtError;
use super::features;
use super::inode::{Inode, S_IFDIR, Timestamp};
use super::write::{EXT2_LINK_MAX, EXT4_LINK_MAX, Target, Writes, check_linked};
use super::{Ext, FileKind};
use crate::image::volume::VolumeMut;

/// File type code of a directory entry for an inode of `mode`.
pub(super) fn entry_file_type(mode: u16) -> u8 {
    match FileKind::from_mode(mode) {
        FileKind::Regular => FT_REG_FILE,
        FileKind::Directory => FT_DIR,
        FileKind::Symlink => FT_SYMLINK,
        FileKind::Other(kind) => match kind {
            0o020000 => 3,
            0o060000 => 4,
            0o010000 => 5,
            0o140000 => 6,
            _ => FT_UNKNOWN,
        },
    }
}

impl<V: VolumeMut> Ext<V> {
    /// Creates `new_path` as another name of the file `existing`, which may be a regular file,
    /// a symbolic link or a special file but not a directory. A symbolic link named by
    /// `existing` is linked itself, not its target. `time` becomes the change time of the file
    /// and the change and modification time of the new parent.
    pub fn link(&mut self, existing: &str, new_path: &str, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let source = self.locate(existing)?;
        let Some(ino) = source.existing else {
            return Err(ExtError::NotFound(existing.to_string()));
        };
        let mut inode = self.read_inode(ino)?;
        if inode.is_dir() {
            return Err(ExtError::HardLinkToDirectory(existing.to_string()));
        }
        check_linked(&inode)?;
        let links = inode.links_count();
        if links >= EXT4_LINK_MAX {
            return Err(ExtError::TooManyLinks(existing.to_string()));
        }

        let target = self.locate(new_path)?;
        if target.existing.is_some() {
            return Err(ExtError::AlreadyExists(new_path.to_string()));
        }
        let mut owners_of = target.dirs.clone();
        owners_of.extend(source.dirs.iter().copied());
        let mut plan = AllocPlan::new(self, self.known_owners(&owners_of, &[ino])?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = target;

        let file_type = if self.has_filetype() { entry_file_type(inode.mode()) } else { FT_UNKNOWN };
        self.plan_dir_insert(&mut plan, &mut parent, name.as_bytes(), ino, file_type, &mut writes)?;
        parent.touch(time)?;
        inode.set_links_count(links + 1);
        inode.set_time(Timestamp::Change, time)?;
        writes.inodes.push(parent);
        writes.inodes.push(inode);
        self.apply(plan, writes)
    }

    /// Counts one more subdirectory in `parent`'s link count. Under `dir_nlink` a count that
    /// would pass the maximum becomes 1, which means "not counted"; without it the subdirectory
    /// is rejected with [`ExtError::TooManyLinks`] naming `path`.
    pub(super) fn add_subdir_link(&self, parent: &mut Inode, path: &str) -> Result<(), ExtError> {
        let links = parent.links_count();
        let dir_nlink = self.sb.has_ro_compat(features::RO_COMPAT_DIR_NLINK);
        let max_links = if dir_nlink { EXT4_LINK_MAX } else { EXT2_LINK_MAX };
        if links == 1 && dir_nlink {
            return Ok(());
        }
        if links >= max_links - 1 {
            if !dir_nlink {
                return Err(ExtError::TooManyLinks(path.to_string()));
            }
            parent.set_links_count(1);
        } else {
            parent.set_links_count(links + 1);
        }
        Ok(())
    }

    /// Counts one subdirectory less in `parent`'s link count. The entry of that subdirectory
    /// must still be on disk, because its removal is planned but not written. A count of 1
    /// (not counted, under `dir_nlink`) is recomputed from the entries, because e2fsck expects
    /// the real count again once it fits.
    pub(super) fn remove_subdir_link(&self, parent: &mut Inode) -> Result<(), ExtError> {
        let links = parent.links_count();
        if links > 2 {
            parent.set_links_count(links - 1);
            return Ok(());
        }
        if links != 1 {
            return Err(ExtError::corrupt(
                format!("directory inode {}", parent.index),
                format!("link count {links} leaves no room for the subdirectory being removed"),
            ));
        }
        // NOTE: no test creates the 65000 subdirectories that make a count of 1, so this
        // recount is checked by reading only.
        let mut subdirs = 0u64;
        for (name, child, file_type) in self.raw_entries(parent)? {
            if name == b"." || name == b".." {
                continue;
            }
            let is_dir = match file_type {
                FT_DIR => true,
                FT_UNKNOWN => self.read_inode(child)?.file_type() == S_IFDIR,
                _ => false,
            };
            subdirs += u64::from(is_dir);
        }
        let counted = 2 + subdirs.saturating_sub(1);
        if counted < u64::from(EXT4_LINK_MAX) {
            parent.set_links_count(counted as u16);
        }
        Ok(())
    }
}
