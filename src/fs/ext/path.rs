//! Absolute paths inside the filesystem: splitting them and walking them from the root.

use std::collections::VecDeque;

use super::Ext;
use super::error::ExtError;
use super::inode::{InodeIndex, S_IFLNK};
use crate::image::volume::Volume;

/// Most symbolic links one resolution follows, as Linux allows (`MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// Splits an absolute path into its components, dropping empty components and `.`.
pub(crate) fn components(path: &str) -> Result<Vec<&[u8]>, ExtError> {
    if !path.starts_with('/') {
        return Err(ExtError::InvalidPath(path.to_string(), "the path must be absolute"));
    }
    if path.contains('\0') {
        return Err(ExtError::InvalidPath(path.to_string(), "the path contains a NUL byte"));
    }
    Ok(path.as_bytes().split(|&byte| byte == b'/').filter(|part| !part.is_empty() && *part != b".").collect())
}

/// Splits an absolute path into its parent's path and its last component.
pub(crate) fn split_parent(path: &str) -> Result<(String, &[u8]), ExtError> {
    let parts = components(path)?;
    let Some((last, parents)) = parts.split_last() else {
        return Err(ExtError::InvalidPath(path.to_string(), "the path names the root directory"));
    };
    let mut parent = String::from("/");
    for part in parents {
        parent.push_str(&String::from_utf8_lossy(part));
        parent.push('/');
    }
    Ok((parent, last))
}

impl<V: Volume> Ext<V> {
    /// Finds the inode at absolute `path` without following symbolic links. `..` never leaves
    /// the root. Returns `None` when a component does not exist.
    pub fn lookup(&self, path: &str) -> Result<Option<InodeIndex>, ExtError> {
        self.walk(path, false, false, &mut Vec::new())
    }

    /// Finds the inode at absolute `path`, following symbolic links inside this filesystem (an
    /// absolute target starts again at this filesystem's root), at most 40 of them. The last
    /// component is followed only when `follow_last` is true.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<InodeIndex>, ExtError> {
        self.walk(path, true, follow_last, &mut Vec::new())
    }

    /// Resolves `path` as [`Ext::resolve`] does and adds every directory it searched to `dirs`.
    pub(crate) fn resolve_recording(
        &self,
        path: &str,
        follow_last: bool,
        dirs: &mut Vec<InodeIndex>,
    ) -> Result<Option<InodeIndex>, ExtError> {
        self.walk(path, true, follow_last, dirs)
    }

    fn walk(
        &self,
        path: &str,
        follow: bool,
        follow_last: bool,
        dirs: &mut Vec<InodeIndex>,
    ) -> Result<Option<InodeIndex>, ExtError> {
        let mut pending: VecDeque<Vec<u8>> = components(path)?.into_iter().map(<[u8]>::to_vec).collect();
        let mut stack = vec![InodeIndex::ROOT];
        let mut links_followed = 0;

        while let Some(part) = pending.pop_front() {
            if part == b"." {
                continue;
            }
            if part == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let current = *stack.last().unwrap_or(&InodeIndex::ROOT);
            let dir = self.read_inode(current)?;
            if !dir.is_dir() {
                return Err(ExtError::NotADirectory(path.to_string()));
            }
            if !dirs.contains(&current) {
                dirs.push(current);
            }
            let Some(child) = self.find_entry(&dir, &part)? else {
                return Ok(None);
            };
            let is_last = pending.is_empty();
            if follow && (!is_last || follow_last) && self.read_inode(child)?.file_type() == S_IFLNK {
                links_followed += 1;
                if links_followed > MAX_SYMLINKS {
                    return Err(ExtError::TooManySymlinks(path.to_string()));
                }
                let target = self.read_link(child)?;
                if target.is_empty() {
                    return Ok(None);
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                let target_parts = target.split(|&byte| byte == b'/').filter(|part| !part.is_empty());
                for target_part in target_parts.rev() {
                    pending.push_front(target_part.to_vec());
                }
                continue;
            }
            stack.push(child);
        }
        Ok(stack.last().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_drop_empty_and_dot() {
        let parts = components("//data/./mender//mender-store").unwrap();
        assert_eq!(parts, [&b"data"[..], b"mender", b"mender-store"]);
        assert!(matches!(components("data"), Err(ExtError::InvalidPath(..))));
    }

    #[test]
    fn split_parent_keeps_the_last_name() {
        let (parent, name) = split_parent("/mender/mender-agent.pem").unwrap();
        assert_eq!(parent, "/mender/");
        assert_eq!(name, b"mender-agent.pem");
        assert!(matches!(split_parent("/"), Err(ExtError::InvalidPath(..))));
    }
}
