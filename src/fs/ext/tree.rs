//! `mkdir -p`: creating a directory together with every missing parent.

use super::Ext;
use super::error::ExtError;
use super::inode::InodeIndex;
use super::path::components;
use super::write::NewAttrs;
use crate::image::volume::VolumeMut;

impl<V: VolumeMut> Ext<V> {
    /// Creates directory `path` and every missing directory above it, each with `attrs`, as
    /// `mkdir -p` does: existing directories (also through symbolic links) are kept, and an
    /// existing file on the way is [`ExtError::NotADirectory`]. Returns the inode of `path`.
    /// Nothing is written unless every directory can be created.
    pub fn create_dir_all(&mut self, path: &str, attrs: &NewAttrs) -> Result<InodeIndex, ExtError> {
        self.check_writable()?;
        let parts = components(path)?;
        let mut prefixes = Vec::with_capacity(parts.len());
        let mut prefix = String::new();
        for part in &parts {
            prefix.push('/');
            prefix.push_str(&String::from_utf8_lossy(part));
            prefixes.push(prefix.clone());
        }
        if let Some(ino) = self.resolve(path, true)? {
            return if self.read_inode(ino)?.is_dir() {
                Ok(ino)
            } else {
                Err(ExtError::NotADirectory(path.to_string()))
            };
        }
        self.transaction(|tx| {
            let mut last = InodeIndex::ROOT;
            for prefix in &prefixes {
                last = match tx.resolve(prefix, true)? {
                    Some(ino) if tx.read_inode(ino)?.is_dir() => ino,
                    Some(_) => return Err(ExtError::NotADirectory(prefix.clone())),
                    None => tx.create_dir(prefix, attrs)?,
                };
            }
            Ok(last)
        })
    }
}
