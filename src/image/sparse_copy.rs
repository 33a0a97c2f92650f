//! Copying an image file to a new path while keeping its holes, so that a 4 GiB sparse image
//! stays a few MiB on disk after `--output`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

/// Size of the buffer used when the kernel cannot copy a data range by itself.
const COPY_BUFFER_LEN: usize = 1 << 20;

/// How [`copy_sparse`] made the copy, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// The filesystem shares the blocks of the source (reflink); nothing was copied.
    Reflink,
    /// Only the data ranges were copied; holes were skipped.
    DataRanges,
}

/// Copies all of `input` into the empty file `output`, keeping holes as holes, and syncs it.
pub fn copy_sparse(input: &File, output: &File) -> io::Result<CopyMethod> {
    let len = input.metadata()?.len();
    let method = copy_into(input, output, len)?;
    output.sync_all()?;
    Ok(method)
}

fn copy_into(input: &File, output: &File, len: u64) -> io::Result<CopyMethod> {
    if rustix::fs::ioctl_ficlone(output, input).is_ok() {
        return Ok(CopyMethod::Reflink);
    }

    output.set_len(len)?;
    let mut offset = 0;
    while offset < len {
        let Some(data_start) = next_data(input, offset)? else { break };
        let data_end = next_hole(input, data_start)?.min(len);
        copy_range(input, output, data_start, data_end)?;
        offset = data_end;
    }
    Ok(CopyMethod::DataRanges)
}

/// Returns the start of the next data range at or after `offset`, or `None` when only a hole follows.
pub(crate) fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match rustix::fs::seek(file, SeekFrom::Data(offset)) {
        Ok(start) => Ok(Some(start)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        // A filesystem without SEEK_DATA support reports everything as data.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(Some(offset)),
        Err(error) => Err(error.into()),
    }
}

pub(crate) fn next_hole(file: &File, offset: u64) -> io::Result<u64> {
    match rustix::fs::seek(file, SeekFrom::Hole(offset)) {
        Ok(end) => Ok(end),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(u64::MAX),
        Err(error) => Err(error.into()),
    }
}

/// Copies `[start, end)` with `copy_file_range`, falling back to reads and writes that skip
/// all-zero chunks, which the destination then keeps as holes.
fn copy_range(input: &File, output: &File, start: u64, end: u64) -> io::Result<()> {
    let mut offset = start;
    while offset < end {
        let chunk = usize::try_from(end - offset).unwrap_or(usize::MAX).min(1 << 30);
        let mut in_offset = offset;
        let mut out_offset = offset;
        match rustix::fs::copy_file_range(input, Some(&mut in_offset), output, Some(&mut out_offset), chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source image shrank while copying",
                ));
            }
            Ok(copied) => offset += copied as u64,
            Err(_) => return copy_range_by_reading(input, output, offset, end),
        }
    }
    Ok(())
}

fn copy_range_by_reading(input: &File, output: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_BUFFER_LEN];
    let mut offset = start;
    while offset < end {
        let len = usize::try_from(end - offset).unwrap_or(usize::MAX).min(COPY_BUFFER_LEN);
        let chunk = &mut buffer[..len];
        input.read_exact_at(chunk, offset)?;
        if chunk.iter().any(|&byte| byte != 0) {
            output.write_all_at(chunk, offset)?;
        }
        offset += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("source.img");
        let source = File::create(&source_path).unwrap();
        let len = 64 << 20;
        source.set_len(len).unwrap();
        source.write_all_at(b"first", 4096).unwrap();
        source.write_all_at(b"last", len - 4).unwrap();
        drop(source);

        let copy_path = dir.path().join("copy.img");
        let copy = File::create(&copy_path).unwrap();
        copy_sparse(&File::open(&source_path).unwrap(), &copy).unwrap();

        assert_eq!(std::fs::read(&copy_path).unwrap(), std::fs::read(&source_path).unwrap());
        let allocated = std::fs::metadata(&copy_path).unwrap().blocks() * 512;
        assert!(allocated < 4 << 20, "copy allocated {allocated} bytes for 9 bytes of data");
    }
}
