//! Changing the mode, owner and timestamps of an existing inode.

use super::error::ExtError;
use super::inode::{S_IFMT, Timestamp};
use super::path::components;
use super::write::check_linked;
use super::{Ext, InodeIndex};
use crate::image::volume::VolumeMut;

/// Attribute changes for [`Ext::set_attrs`]; `None` keeps the current value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrs {
    /// Permission bits including setuid, setgid and sticky; bits above 0o7777 are ignored.
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Access, modification and change times, in seconds since the epoch.
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    pub ctime: Option<i64>,
}

impl<V: VolumeMut> Ext<V> {
    /// Changes the attributes of the inode that `path` names. A symbolic link as the last
    /// component is changed itself, not followed, as `lchown` does. The root is `/`. The
    /// change time changes only when `attrs.ctime` is set.
    pub fn set_attrs(&mut self, path: &str, attrs: &SetAttrs) -> Result<(), ExtError> {
        self.check_writable()?;
        let ino = if components(path)?.is_empty() {
            InodeIndex::ROOT
        } else {
            match self.locate(path)?.existing {
                Some(ino) => ino,
                None => return Err(ExtError::NotFound(path.to_string())),
            }
        };
        let mut inode = self.read_inode(ino)?;
        check_linked(&inode)?;

        if let Some(mode) = attrs.mode {
            inode.set_mode((inode.mode() & S_IFMT) | (mode & 0o7777));
        }
        if attrs.uid.is_some() || attrs.gid.is_some() {
            inode.set_owner(attrs.uid.unwrap_or(inode.uid()), attrs.gid.unwrap_or(inode.gid()));
        }
        let times = [
            (Timestamp::Access, attrs.atime),
            (Timestamp::Modification, attrs.mtime),
            (Timestamp::Change, attrs.ctime),
        ];
        for (which, value) in times {
            if let Some(seconds) = value {
                inode.set_time(which, seconds)?;
            }
        }

        let offset = self.inode_offset(ino)?;
        let bytes = inode.encode(&self.sb).to_vec();
        self.write_volume(offset, &bytes)?;
        Ok(())
    }
}
