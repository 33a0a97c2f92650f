//! Byte-addressed storage that a filesystem lives on, and a staging layer that keeps every write
//! in memory until the whole modification has been planned.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
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

/// A window of `len` bytes starting at `start` inside a file: one partition of a disk image, or
/// the whole file for a bare filesystem image.
#[derive(Debug)]
pub struct FileVolume<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    bytes_read: AtomicU64,
}

impl<'a> FileVolume<'a> {
    /// Creates a window over `file`; the caller has checked that the window lies inside the file.
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
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
        self.file.read_exact_at(buf, self.start + offset)?;
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl VolumeMut for FileVolume<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.len)?;
        self.file.write_all_at(data, self.start + offset)
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

/// Size of the pages in which [`Staged`] keeps pending writes. Every ext structure is written in
/// whole multiples of 1 KiB at 1 KiB boundaries, so such writes never need the old bytes of a
/// page; other writes read them from the base first.
const STAGE_PAGE_LEN: u64 = 1024;

/// Keeps every write to a volume in memory, so that a modification can be planned in full,
/// with reads seeing the planned writes, and then either committed or dropped. Dropping a
/// `Staged` without calling `commit` leaves the underlying volume untouched.
#[derive(Debug)]
pub struct Staged<V> {
    base: V,
    /// Pending pages keyed by page index; the last page of the volume may be shorter.
    pending: BTreeMap<u64, Box<[u8]>>,
}

impl<V: Volume> Staged<V> {
    /// Wraps `base` with no pending writes.
    pub fn new(base: V) -> Self {
        Staged { base, pending: BTreeMap::new() }
    }

    /// The underlying volume, without the pending writes.
    pub fn base(&self) -> &V {
        &self.base
    }

    /// Total number of bytes waiting to be written, counted in whole pages.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.values().map(|page| page.len() as u64).sum()
    }

    /// The pending pages in offset order, as (offset, bytes).
    pub fn pending_writes(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.pending.iter().map(|(index, page)| (index * STAGE_PAGE_LEN, &page[..]))
    }

    /// Drops every pending write.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Returns the underlying volume and the pending writes as contiguous ranges keyed by offset,
    /// leaving the caller to apply them.
    pub fn into_parts(self) -> (V, BTreeMap<u64, Vec<u8>>) {
        let mut ranges: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut current: Option<(u64, Vec<u8>)> = None;
        for (index, page) in self.pending {
            let offset = index * STAGE_PAGE_LEN;
            match &mut current {
                Some((start, bytes)) if *start + bytes.len() as u64 == offset => {
                    bytes.extend_from_slice(&page)
                }
                _ => {
                    if let Some((start, bytes)) = current.take() {
                        ranges.insert(start, bytes);
                    }
                    current = Some((offset, page.into_vec()));
                }
            }
        }
        if let Some((start, bytes)) = current {
            ranges.insert(start, bytes);
        }
        (self.base, ranges)
    }

    /// Length of the page at `index`: a full page, or what remains of the volume.
    fn page_len(&self, index: u64) -> usize {
        (self.base.len() - index * STAGE_PAGE_LEN).min(STAGE_PAGE_LEN) as usize
    }
}

impl<V: VolumeMut> Staged<V> {
    /// Writes every pending range to the underlying volume in offset order and returns it.
    pub fn commit(self) -> io::Result<V> {
        let (mut base, ranges) = self.into_parts();
        for (offset, data) in ranges {
            base.write_at(offset, &data)?;
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
        self.base.read_at(offset, buf)?;
        if buf.is_empty() {
            return Ok(());
        }

        let end = offset + buf.len() as u64;
        let first_page = offset / STAGE_PAGE_LEN;
        let last_page = (end - 1) / STAGE_PAGE_LEN;
        for (&index, page) in self.pending.range(first_page..=last_page) {
            let page_start = index * STAGE_PAGE_LEN;
            let from = page_start.max(offset);
            let to = (page_start + page.len() as u64).min(end);
            let src = &page[(from - page_start) as usize..(to - page_start) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
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
        for index in offset / STAGE_PAGE_LEN..=(end - 1) / STAGE_PAGE_LEN {
            let page_start = index * STAGE_PAGE_LEN;
            let page_len = self.page_len(index);
            let from = page_start.max(offset);
            let to = (page_start + page_len as u64).min(end);
            let covers_page = from == page_start && to == page_start + page_len as u64;

            if !self.pending.contains_key(&index) {
                let mut page = vec![0u8; page_len].into_boxed_slice();
                if !covers_page {
                    self.base.read_at(page_start, &mut page)?;
                }
                self.pending.insert(index, page);
            }
            if let Some(page) = self.pending.get_mut(&index) {
                let src = &data[(from - offset) as usize..(to - offset) as usize];
                page[(from - page_start) as usize..(to - page_start) as usize].copy_from_slice(src);
            }
        }
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
    fn staged_pages_coalesce_into_ranges() {
        let mut staged = Staged::new(vec![0u8; 8 * 1024 + 100]);
        staged.write_at(1024, &[1; 2048]).unwrap();
        staged.write_at(3072, &[2; 10]).unwrap();
        staged.write_at(8 * 1024 + 90, &[3; 10]).unwrap();

        let (_, ranges) = staged.into_parts();

        let shape: Vec<(u64, usize)> = ranges.iter().map(|(offset, data)| (*offset, data.len())).collect();
        assert_eq!(shape, vec![(1024, 3072), (8 * 1024, 100)]);
        assert_eq!(&ranges[&1024][2048..2058], &[2; 10]);
        assert_eq!(&ranges[&(8 * 1024)][90..], &[3; 10]);
    }

    #[test]
    fn staged_partial_page_keeps_base_bytes() {
        let base: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
        let mut staged = Staged::new(base.clone());
        staged.write_at(1030, &[0xEE; 4]).unwrap();

        let (_, ranges) = staged.into_parts();

        let page = &ranges[&1024];
        assert_eq!(page.len(), 1024);
        assert_eq!(&page[..6], &base[1024..1030]);
        assert_eq!(&page[6..10], &[0xEE; 4]);
        assert_eq!(&page[10..], &base[1034..2048]);
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
