//! Byte-addressed storage that a filesystem lives on, and a staging layer that keeps every write
//! in memory until the whole modification has been planned.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Read access to the bytes of one filesystem: a partition of an image file, or a whole file.
pub trait Volume {
    /// Length of the volume in bytes.
    fn len(&self) -> u64;

    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Returns true for a volume of zero bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shared reference reads the volume it points to, so callers can lend a window to a reader.
impl<V: Volume + ?Sized> Volume for &V {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// Write access to a volume. Writes past the end are `UnexpectedEof` errors: a volume never grows.
pub trait VolumeMut: Volume {
    /// Writes all of `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset`, handing over the buffer so that a volume that keeps
    /// writes in memory can keep it without a copy.
    fn write_owned(&mut self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.write_at(offset, &data)
    }

    /// Writes the bytes of `range` at `offset`. A volume that keeps writes in memory keeps
    /// only the reference and copies the bytes when its writes are applied.
    fn write_file_range(&mut self, offset: u64, range: FileRange) -> io::Result<()> {
        let data = range.read_all()?;
        self.write_owned(offset, data)
    }
}

/// `len` bytes at `offset` of a file outside the volume, such as the host file whose contents
/// a write copies into the filesystem. The file must not change until the write is applied.
#[derive(Clone, Debug)]
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

impl FileRange {
    /// Reads the range's bytes from `at` (counted from the range's start) into `buf`, which
    /// must lie inside the range.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(at, buf.len(), self.len)?;
        self.file.read_exact_at(buf, self.offset + at)
    }

    /// Reads the whole range into memory.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let mut data = vec![0u8; len];
        self.read_at(0, &mut data)?;
        Ok(data)
    }
}

/// Checks that `len` bytes at `offset` lie inside a volume of `volume_len` bytes.
fn check_range(offset: u64, len: usize, volume_len: u64) -> io::Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= volume_len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "range of {len} bytes at offset {offset} is past the end of the volume ({volume_len} bytes)"
            ),
        )),
    }
}

/// Positioned access to the bytes of a whole image: an image file, or the decompressed bytes of
/// a compressed image file.
pub trait ReadAt: std::fmt::Debug + Sync {
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_image_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Length of the image in bytes.
    fn image_len(&self) -> io::Result<u64>;

    /// Writes all of `data` at `offset`; an image that cannot be changed in place returns an error.
    fn write_image_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_image_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn image_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn write_image_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }
}

/// A window of `len` bytes starting at `start` inside an image: one partition of a disk image,
/// or the whole image for a bare filesystem image.
#[derive(Debug)]
pub struct FileVolume<'a> {
    file: &'a dyn ReadAt,
    start: u64,
    len: u64,
    bytes_read: AtomicU64,
}

impl<'a> FileVolume<'a> {
    /// Creates a window over `file`; the caller has checked that the window lies inside the file.
    pub fn new(file: &'a dyn ReadAt, start: u64, len: u64) -> Self {
        FileVolume { file, start, len, bytes_read: AtomicU64::new(0) }
    }

    /// Offset of the window's first byte in the file.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Number of bytes read through this window so far, for the benchmark's read budget.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

impl Volume for FileVolume<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.read_image_at(buf, self.start + offset)?;
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl VolumeMut for FileVolume<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.len)?;
        self.file.write_image_at(data, self.start + offset)
    }
}

/// A volume held in memory, for tests and for filesystems built from scratch.
impl Volume for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), Volume::len(self))?;
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

impl VolumeMut for Vec<u8> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), Volume::len(self))?;
        let start = offset as usize;
        self[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Largest write that [`Staged`] copies onto the end of a pending range that it continues.
/// A larger owned buffer becomes a range of its own, so it is never copied.
const MAX_APPENDED_LEN: usize = 64 * 1024;

/// Keeps every write to a volume in memory, so that a modification can be planned in full,
/// with reads seeing the planned writes, and then either committed or dropped. Dropping a
/// `Staged` without calling `commit` leaves the underlying volume untouched.
#[derive(Debug)]
pub struct Staged<V> {
    base: V,
    /// Pending writes as disjoint ranges keyed by offset. Ranges may touch: a write that
    /// continues a range is appended to it, unless it is a large owned buffer.
    pending: BTreeMap<u64, Vec<u8>>,
    /// Pending copies from files keyed by offset, disjoint from each other and from `pending`.
    /// A write that overlaps one reads it into `pending` first.
    copies: BTreeMap<u64, FileRange>,
}

impl<V: Volume> Staged<V> {
    /// Wraps `base` with no pending writes.
    pub fn new(base: V) -> Self {
        Staged { base, pending: BTreeMap::new(), copies: BTreeMap::new() }
    }

    /// The underlying volume, without the pending writes.
    pub fn base(&self) -> &V {
        &self.base
    }

    /// Total number of bytes waiting to be written, copies from files included.
    pub fn pending_bytes(&self) -> u64 {
        let in_memory: u64 = self.pending.values().map(|range| range.len() as u64).sum();
        in_memory + self.copies.values().map(|range| range.len).sum::<u64>()
    }

    /// The pending ranges held in memory in offset order, as (offset, bytes). Copies from
    /// files are not listed.
    pub fn pending_writes(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.pending.iter().map(|(&offset, range)| (offset, &range[..]))
    }

    /// Drops every pending write.
    pub fn discard(&mut self) {
        self.pending.clear();
        self.copies.clear();
    }

    /// Returns the underlying volume and the pending writes as disjoint ranges keyed by offset,
    /// leaving the caller to apply them. Copies from files are read into memory first.
    pub fn into_parts(mut self) -> io::Result<(V, BTreeMap<u64, Vec<u8>>)> {
        let end = self.base.len();
        self.read_copies(0, end)?;
        Ok((self.base, self.pending))
    }

    /// Returns the underlying volume, the pending writes held in memory and the pending copies
    /// from files, all disjoint and keyed by offset, leaving the caller to apply them.
    pub fn into_parts_with_copies(self) -> (V, BTreeMap<u64, Vec<u8>>, BTreeMap<u64, FileRange>) {
        (self.base, self.pending, self.copies)
    }

    /// Offsets of the pending copies that overlap `offset..end`, in order.
    fn overlapping_copies(&self, offset: u64, end: u64) -> Vec<u64> {
        let before = self.copies.range(..offset).next_back();
        let starts_before = before.filter(|(start, range)| **start + range.len > offset);
        let inside = self.copies.range(offset..end);
        starts_before.into_iter().chain(inside).map(|(&start, _)| start).collect()
    }

    /// Reads every pending copy that overlaps `offset..end` into `pending`, so that a write
    /// there can change its bytes.
    fn read_copies(&mut self, offset: u64, end: u64) -> io::Result<()> {
        for start in self.overlapping_copies(offset, end) {
            let Some(range) = self.copies.get(&start) else { continue };
            let data = range.read_all()?;
            self.copies.remove(&start);
            self.pending.insert(start, data);
        }
        Ok(())
    }

    /// Offsets of the pending ranges that overlap `offset..end`, in order.
    fn overlapping(&self, offset: u64, end: u64) -> Vec<u64> {
        let before = self.pending.range(..offset).next_back();
        let starts_before = before.filter(|(start, range)| **start + range.len() as u64 > offset);
        let inside = self.pending.range(offset..end);
        starts_before.into_iter().chain(inside).map(|(&start, _)| start).collect()
    }

    /// True when the pending ranges cover every byte of `offset..end`.
    fn covers(&self, offset: u64, end: u64) -> bool {
        let mut covered_to = offset;
        for start in self.overlapping(offset, end) {
            if start > covered_to {
                return false;
            }
            let range_end = start + self.pending.get(&start).map_or(0, |range| range.len() as u64);
            covered_to = covered_to.max(range_end);
        }
        covered_to >= end
    }

    /// Stores `data` at `offset..end`, a gap between pending ranges: appended to the range that
    /// ends at `offset`, if any, else as a new range.
    fn fill_gap(&mut self, offset: u64, data: &[u8]) {
        let previous = self.pending.range_mut(..offset).next_back();
        match previous {
            Some((&start, range)) if start + range.len() as u64 == offset => range.extend_from_slice(data),
            _ => {
                self.pending.insert(offset, data.to_vec());
            }
        }
    }
}

impl<V: VolumeMut> Staged<V> {
    /// Writes every pending range and copy to the underlying volume and returns it.
    pub fn commit(self) -> io::Result<V> {
        let (mut base, ranges, copies) = self.into_parts_with_copies();
        for (offset, data) in ranges {
            base.write_owned(offset, data)?;
        }
        for (offset, range) in copies {
            base.write_file_range(offset, range)?;
        }
        Ok(base)
    }
}

impl<V: Volume> Volume for Staged<V> {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.base.len())?;
        if buf.is_empty() {
            return Ok(());
        }

        // The base is read only when some byte of the request is not pending in memory.
        let end = offset + buf.len() as u64;
        let copies = self.overlapping_copies(offset, end);
        if !copies.is_empty() || !self.covers(offset, end) {
            self.base.read_at(offset, buf)?;
        }
        for start in self.overlapping(offset, end) {
            let Some(range) = self.pending.get(&start) else { continue };
            let from = start.max(offset);
            let to = (start + range.len() as u64).min(end);
            let src = &range[(from - start) as usize..(to - start) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
        for start in copies {
            let Some(range) = self.copies.get(&start) else { continue };
            let from = start.max(offset);
            let to = (start + range.len).min(end);
            range.read_at(from - start, &mut buf[(from - offset) as usize..(to - offset) as usize])?;
        }
        Ok(())
    }
}

impl<V: Volume> VolumeMut for Staged<V> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.base.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        self.read_copies(offset, end)?;

        // Bytes that land in pending ranges overwrite them in place; the gaps between those
        // ranges are filled in offset order, so a gap may continue the range before it.
        let mut cursor = offset;
        for start in self.overlapping(offset, end) {
            if start > cursor {
                self.fill_gap(cursor, &data[(cursor - offset) as usize..(start - offset) as usize]);
            }
            let Some(range) = self.pending.get_mut(&start) else { continue };
            let from = start.max(offset);
            let to = (start + range.len() as u64).min(end);
            let src = &data[(from - offset) as usize..(to - offset) as usize];
            range[(from - start) as usize..(to - start) as usize].copy_from_slice(src);
            cursor = to;
        }
        if cursor < end {
            self.fill_gap(cursor, &data[(cursor - offset) as usize..]);
        }
        Ok(())
    }

    fn write_owned(&mut self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        check_range(offset, data.len(), self.base.len())?;
        let end = offset + data.len() as u64;
        let continues_a_range = self
            .pending
            .range(..offset)
            .next_back()
            .is_some_and(|(start, range)| start + range.len() as u64 == offset);
        let small = data.len() <= MAX_APPENDED_LEN;
        let overlaps =
            !self.overlapping(offset, end).is_empty() || !self.overlapping_copies(offset, end).is_empty();
        if data.is_empty() || overlaps || (continues_a_range && small) {
            return self.write_at(offset, &data);
        }
        self.pending.insert(offset, data);
        Ok(())
    }

    fn write_file_range(&mut self, offset: u64, range: FileRange) -> io::Result<()> {
        let len = usize::try_from(range.len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        check_range(offset, len, self.base.len())?;
        let end = offset + range.len;
        let overlaps =
            !self.overlapping(offset, end).is_empty() || !self.overlapping_copies(offset, end).is_empty();
        if range.len == 0 || overlaps {
            let data = range.read_all()?;
            return self.write_owned(offset, data);
        }
        self.copies.insert(offset, range);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(volume: &impl Volume, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        volume.read_at(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn staged_reads_see_pending_writes() {
        let mut staged = Staged::new(vec![1u8; 64]);
        staged.write_at(10, &[7, 7, 7]).unwrap();
        staged.write_at(12, &[9, 9]).unwrap();

        assert_eq!(read(&staged, 8, 8), vec![1, 1, 7, 7, 9, 9, 1, 1]);
        assert_eq!(read(staged.base(), 8, 8), vec![1; 8]);
    }

    #[test]
    fn staged_writes_that_continue_a_range_join_it() {
        let mut staged = Staged::new(vec![0u8; 8 * 1024 + 100]);
        staged.write_at(1024, &[1; 2048]).unwrap();
        staged.write_at(3072, &[2; 10]).unwrap();
        staged.write_owned(3082, vec![4; 6]).unwrap();
        staged.write_at(8 * 1024 + 90, &[3; 10]).unwrap();

        let (_, ranges) = staged.into_parts().unwrap();

        let shape: Vec<(u64, usize)> = ranges.iter().map(|(offset, data)| (*offset, data.len())).collect();
        assert_eq!(shape, vec![(1024, 2064), (8 * 1024 + 90, 10)]);
        assert_eq!(&ranges[&1024][2048..2058], &[2; 10]);
        assert_eq!(&ranges[&1024][2058..], &[4; 6]);
        assert_eq!(&ranges[&(8 * 1024 + 90)][..], &[3; 10]);
    }

    #[test]
    fn staged_write_across_ranges_fills_the_gaps() {
        let base: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut staged = Staged::new(base.clone());
        staged.write_at(100, &[1; 10]).unwrap();
        staged.write_at(200, &[2; 10]).unwrap();
        staged.write_at(105, &[9; 100]).unwrap();

        let mut expected = base.clone();
        expected[100..105].fill(1);
        expected[105..205].fill(9);
        expected[205..210].fill(2);
        assert_eq!(read(&staged, 0, 4096), expected);
        assert_eq!(staged.pending_bytes(), 110, "the pending ranges overlap nowhere");
        assert_eq!(read(staged.base(), 0, 4096), base);
    }

    #[test]
    fn staged_keeps_a_large_owned_buffer_without_copying() {
        let mut staged = Staged::new(vec![0u8; 1 << 20]);
        staged.write_at(4096, &[1; 4096]).unwrap();
        let data = vec![7u8; 256 * 1024];
        let address = data.as_ptr();
        staged.write_owned(8192, data).unwrap();

        let kept =
            staged.pending_writes().find(|(offset, _)| *offset == 8192).map(|(_, bytes)| bytes.as_ptr());
        assert_eq!(kept, Some(address));
        assert_eq!(read(&staged, 8190, 4), vec![1, 1, 7, 7]);
    }

    #[test]
    fn staged_read_inside_pending_ranges_skips_the_base() {
        /// A base volume that fails every read.
        struct Unreadable;
        impl Volume for Unreadable {
            fn len(&self) -> u64 {
                1 << 16
            }
            fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<()> {
                Err(io::Error::other("base read"))
            }
        }
        let mut staged = Staged::new(Unreadable);
        staged.write_at(0, &[1; 4096]).unwrap();
        staged.write_owned(4096, vec![2; 4096]).unwrap();

        assert_eq!(read(&staged, 4000, 200), [vec![1; 96], vec![2; 104]].concat());
        let mut past = [0u8; 10];
        assert!(staged.read_at(8190, &mut past).is_err(), "byte 8192 is not pending");
    }

    /// Writes `bytes` to a host file and returns a range over all of them.
    fn file_range(dir: &std::path::Path, bytes: &[u8]) -> FileRange {
        let path = dir.join("source");
        std::fs::write(&path, bytes).unwrap();
        FileRange { file: Arc::new(File::open(&path).unwrap()), offset: 0, len: bytes.len() as u64 }
    }

    #[test]
    fn staged_copies_read_from_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Staged::new(vec![1u8; 64]);
        staged.write_file_range(8, file_range(dir.path(), &[5; 16])).unwrap();

        assert_eq!(read(&staged, 4, 24), [vec![1; 4], vec![5; 16], vec![1; 4]].concat());
        assert_eq!(staged.pending_bytes(), 16);
        assert_eq!(staged.pending_writes().count(), 0, "the copy stays a reference to its file");
    }

    #[test]
    fn staged_write_over_a_copy_reads_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Staged::new(vec![1u8; 64]);
        staged.write_file_range(8, file_range(dir.path(), &[5; 16])).unwrap();
        staged.write_at(20, &[9; 8]).unwrap();

        let expected = [vec![1; 8], vec![5; 12], vec![9; 8], vec![1; 36]].concat();
        assert_eq!(read(&staged, 0, 64), expected);
        assert_eq!(staged.pending_bytes(), 20);
        assert_eq!(staged.commit().unwrap(), expected);
    }

    #[test]
    fn staged_copies_are_read_by_into_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Staged::new(vec![0u8; 64]);
        staged.write_file_range(32, file_range(dir.path(), &[7; 8])).unwrap();

        let (_, ranges) = staged.into_parts().unwrap();

        assert_eq!(ranges.get(&32), Some(&vec![7; 8]));
    }

    #[test]
    fn staged_later_write_wins_over_earlier() {
        let mut staged = Staged::new(vec![0u8; 32]);
        staged.write_at(0, &[5; 16]).unwrap();
        staged.write_at(4, &[6; 4]).unwrap();

        assert_eq!(read(&staged, 0, 10), vec![5, 5, 5, 5, 6, 6, 6, 6, 5, 5]);
    }

    #[test]
    fn staged_commit_applies_and_drop_discards() {
        let mut staged = Staged::new(vec![0u8; 16]);
        staged.write_at(3, &[4, 4]).unwrap();
        let base = staged.commit().unwrap();
        assert_eq!(&base[2..6], &[0, 4, 4, 0]);

        let mut staged = Staged::new(base.clone());
        staged.write_at(0, &[9; 16]).unwrap();
        drop(staged);
        assert_eq!(&base[2..6], &[0, 4, 4, 0]);
    }

    #[test]
    fn writes_past_end_are_rejected() {
        let mut staged = Staged::new(vec![0u8; 16]);
        assert!(staged.write_at(10, &[0; 7]).is_err());
        assert!(staged.write_at(u64::MAX, &[0; 1]).is_err());
        assert_eq!(staged.pending_bytes(), 0);
    }
}
