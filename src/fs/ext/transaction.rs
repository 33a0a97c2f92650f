//! Operations made of several smaller ones (`create_dir_all`, `remove_tree`, `rename`) run
//! inside a transaction: every step writes to an in-memory staging layer over the volume, later
//! steps read what earlier steps wrote, and the volume itself changes only when the last step
//! has succeeded. An error in any step leaves the volume as it was.

use super::Ext;
use super::error::ExtError;
use crate::image::volume::{Staged, VolumeMut};

impl<V: VolumeMut> Ext<V> {
    /// Runs `steps` on a staged copy of this filesystem and, when they succeed, writes their
    /// changes to the volume and adopts the new superblock counts, group descriptors and
    /// cached blocks.
    pub(crate) fn transaction<T>(
        &mut self,
        steps: impl FnOnce(&mut Ext<Staged<&V>>) -> Result<T, ExtError>,
    ) -> Result<T, ExtError> {
        let mut staged = Ext {
            volume: Staged::new(&self.volume),
            sb: self.sb.clone(),
            groups: self.groups.clone(),
            cache: self.cache.clone(),
        };
        let value = steps(&mut staged)?;

        let Ext { volume, sb, groups, cache } = staged;
        let (_, pending, copies) = volume.into_parts_with_copies();
        for (offset, data) in pending {
            self.write_volume_owned(offset, data)?;
        }
        for (offset, range) in copies {
            self.write_volume_file_range(offset, range)?;
        }
        // The staged copy's cache saw every write that was just applied.
        self.cache = cache;
        self.sb = sb;
        self.groups = groups;
        Ok(value)
    }
}
