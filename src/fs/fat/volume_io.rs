//! A `Read + Write + Seek` cursor over a shared [`VolumeMut`], the interface `fatfs` reads and
//! writes a filesystem through. The volume is shared so that it can be taken back once `fatfs`
//! has been unmounted: `fatfs` 0.3 has no way to hand back the storage it owns.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use crate::image::volume::VolumeMut;

/// The 11-byte short names of the `.` and `..` entries of a directory.
pub(super) const DOT_NAME: &[u8; 11] = b".          ";
pub(super) const DOT_DOT_NAME: &[u8; 11] = b"..         ";

/// Offsets at which short names of `.` or `..` entries were written, in order, so that the
/// entries `fatfs` writes for a new directory can be found and corrected.
pub(super) type DotWrites = Rc<RefCell<Vec<(u64, &'static [u8; 11])>>>;

/// A cursor over a volume. Reads stop at the end of the volume; writes past it fail, because a
/// volume never grows.
pub(super) struct VolumeIo<V> {
    volume: Rc<RefCell<V>>,
    position: u64,
    dot_writes: DotWrites,
}

impl<V: VolumeMut> VolumeIo<V> {
    pub(super) fn new(volume: Rc<RefCell<V>>, dot_writes: DotWrites) -> Self {
        VolumeIo { volume, position: 0, dot_writes }
    }
}

impl<V: VolumeMut> Read for VolumeIo<V> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let volume = self.volume.borrow();
        let left = volume.len().saturating_sub(self.position);
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        volume.read_at(self.position, &mut buf[..len])?;
        self.position += len as u64;
        Ok(len)
    }
}

impl<V: VolumeMut> Write for VolumeIo<V> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.volume.borrow_mut().write_at(self.position, buf)?;
        for name in [DOT_NAME, DOT_DOT_NAME] {
            if buf == name {
                self.dot_writes.borrow_mut().push((self.position, name));
            }
        }
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<V: VolumeMut> Seek for VolumeIo<V> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.volume.borrow().len().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let position = position.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the FAT volume")
        })?;
        self.position = position;
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_and_writes_past_it_fail() {
        let volume = Rc::new(RefCell::new(vec![7u8; 10]));
        let mut io = VolumeIo::new(Rc::clone(&volume), DotWrites::default());
        let mut buf = [0u8; 8];

        io.seek(SeekFrom::Start(6)).unwrap();
        assert_eq!(io.read(&mut buf).unwrap(), 4);
        assert_eq!(io.read(&mut buf).unwrap(), 0);
        io.seek(SeekFrom::End(-2)).unwrap();
        assert!(io.write(&[1, 2, 3]).is_err());
        io.write_all(&[1, 2]).unwrap();

        assert_eq!(volume.borrow()[8..], [1, 2]);
        assert!(io.seek(SeekFrom::Current(-11)).is_err());
    }
}
