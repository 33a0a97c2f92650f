//! The undo log that makes an in-place modification all-or-nothing. Before the first byte of an
//! image is changed, the original bytes of every range about to be written are saved to a file
//! beside the image and synced. When the run finishes, the log is removed. A run that dies in
//! between leaves the log behind, and the next run that opens the image writes the original
//! bytes back before anything else, so the image is again exactly as it was.
//!
//! Layout of the log, all integers little-endian:
//! `MAGIC` (8 bytes), image length (u64), number of ranges (u64), then per range its offset
//! (u64), length (u64), a kind byte and, for kind 0, the original bytes; kind 1 means the range
//! held only zeros (a hole in a sparse image, usually), so a 64 MiB file written into free space
//! costs 17 bytes of log. Last comes the SHA-256 of everything before it. A log
//! whose hash does not match was cut short while being written; the image was not touched yet,
//! because writing starts only after the whole log is synced, so such a log is simply removed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// First bytes of an undo log, with the format version in the last two.
const MAGIC: &[u8; 8] = b"MPUNDO01";
const HASH_LEN: usize = 32;
const HEADER_LEN: usize = 8 + 8 + 8;
const RANGE_HEADER_LEN: usize = 8 + 8 + 1;
const KIND_BYTES: u8 = 0;
const KIND_ZEROS: u8 = 1;

/// Largest undo log read back. The ranges of one provisioning run add up to well under 1 MiB;
/// this bound only keeps a stray huge file from being read into memory.
const MAX_LOG_LEN: u64 = 1 << 30;

/// One saved range: where it is in the image and what it contained before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRange {
    pub offset: u64,
    pub original: Original,
}

/// The original content of a saved range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    Bytes(Vec<u8>),
    /// `len` zero bytes, restored by punching a hole where the filesystem allows it.
    Zeros {
        len: u64,
    },
}

/// Granularity at which [`save_range`] looks for runs of zeros.
const ZERO_RUN_GRANULE: usize = 4096;

/// Splits the original bytes of the range at `offset` into saved ranges, with every run of
/// all-zero 4 KiB pieces noted as zeros rather than stored: a file written into free space next
/// to a directory block then costs a few bytes of log, not its size.
pub fn save_range(offset: u64, bytes: &[u8]) -> Vec<SavedRange> {
    let mut saved: Vec<SavedRange> = Vec::new();
    for (index, piece) in bytes.chunks(ZERO_RUN_GRANULE).enumerate() {
        let piece_offset = offset + (index * ZERO_RUN_GRANULE) as u64;
        // OR-ing every byte, without an early exit, compiles to wide vector instructions.
        let is_zero = piece.iter().fold(0u8, |any, &byte| any | byte) == 0;
        match (saved.last_mut(), is_zero) {
            (Some(SavedRange { original: Original::Zeros { len }, .. }), true) => *len += piece.len() as u64,
            (Some(SavedRange { original: Original::Bytes(kept), .. }), false) => {
                kept.extend_from_slice(piece)
            }
            (_, true) => saved.push(SavedRange {
                offset: piece_offset,
                original: Original::Zeros { len: piece.len() as u64 },
            }),
            (_, false) => {
                saved.push(SavedRange { offset: piece_offset, original: Original::Bytes(piece.to_vec()) })
            }
        }
    }
    saved
}

/// Saves the original bytes of the `len` bytes at `offset` of `image`, like [`save_range`], but
/// without reading the holes of a sparse file: the filesystem reports them (`SEEK_DATA` and
/// `SEEK_HOLE`), and they are noted as zeros at once. Where the filesystem cannot report holes
/// (a block device, an older filesystem), every byte is read.
pub fn save_file_range(image: &File, offset: u64, len: u64) -> io::Result<Vec<SavedRange>> {
    let end = offset.checked_add(len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut saved = Vec::new();
    let mut at = offset;
    while at < end {
        let (data_start, data_end) = next_data(image, at, end);
        if data_start > at {
            push_saved(
                &mut saved,
                SavedRange { offset: at, original: Original::Zeros { len: data_start - at } },
            );
        }
        if data_start >= end {
            break;
        }
        let mut original = vec![0u8; (data_end - data_start) as usize];
        image.read_exact_at(&mut original, data_start)?;
        for range in save_range(data_start, &original) {
            push_saved(&mut saved, range);
        }
        at = data_end;
    }
    Ok(saved)
}

/// The first stretch of data in `at..end` of `image`, as (start, end); `start` is `end` when
/// only a hole is left. Without hole reporting, the whole of `at..end` counts as data.
fn next_data(image: &File, at: u64, end: u64) -> (u64, u64) {
    use rustix::fs::{SeekFrom, seek};
    let data_start = match seek(image, SeekFrom::Data(at)) {
        Ok(position) if position >= at => position.min(end),
        // ENXIO: no data from `at` to the end of the file.
        Err(rustix::io::Errno::NXIO) => end,
        _ => return (at, end),
    };
    if data_start >= end {
        return (end, end);
    }
    match seek(image, SeekFrom::Hole(data_start)) {
        Ok(position) if position > data_start => (data_start, position.min(end)),
        _ => (data_start, end),
    }
}

/// Appends `range` to `saved`, joining it to the last range when both are zeros and touch.
fn push_saved(saved: &mut Vec<SavedRange>, range: SavedRange) {
    if let (Some(last), Original::Zeros { len }) = (saved.last_mut(), &range.original)
        && let Original::Zeros { len: last_len } = &mut last.original
        && last.offset + *last_len == range.offset
    {
        *last_len += len;
        return;
    }
    saved.push(range);
}

impl Original {
    fn len(&self) -> u64 {
        match self {
            Original::Bytes(bytes) => bytes.len() as u64,
            Original::Zeros { len } => *len,
        }
    }
}

/// Path of the undo log of `image`: a hidden file beside it, so that it moves with the image's
/// directory and the next run finds it whatever its working directory.
pub fn log_path(image: &Path) -> PathBuf {
    let name = image.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let directory = image.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    directory.join(format!(".{name}.mender-preauth-undo"))
}

/// Writes the undo log for `ranges` of an image of `image_len` bytes and syncs it and its
/// directory, so that it survives a crash. Fails if a log exists already.
pub fn write_log(path: &Path, image_len: u64, ranges: &[SavedRange]) -> io::Result<()> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&image_len.to_le_bytes());
    bytes.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
    for range in ranges {
        bytes.extend_from_slice(&range.offset.to_le_bytes());
        bytes.extend_from_slice(&range.original.len().to_le_bytes());
        match &range.original {
            Original::Bytes(original) => {
                bytes.push(KIND_BYTES);
                bytes.extend_from_slice(original);
            }
            Original::Zeros { .. } => bytes.push(KIND_ZEROS),
        }
    }
    let hash = Sha256::digest(&bytes);
    bytes.extend_from_slice(&hash);

    // The log holds bytes of the image, which may include a private key: owner only.
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all()).and_then(|()| sync_directory(path));
    if written.is_err() {
        // A log cut short (a full disk, say) must not stay: the image is untouched, and the next
        // run would only have to discard it.
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Removes the undo log once the modification is complete and synced.
pub fn remove_log(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    sync_directory(path)
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No undo log: the last run finished or never began writing.
    Clean,
    /// A complete log was replayed: the image is back as it was before the interrupted run.
    RolledBack { ranges: usize },
    /// The log was cut short while being written, before the image was touched; it was removed.
    DiscardedIncomplete,
}

/// Why an undo log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("undo log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "undo log {path} is complete but does not fit the image: {detail}; move the image and the log aside and check both"
    )]
    Mismatch { path: PathBuf, detail: String },
}

/// Replays the undo log at `log` onto `image` (opened for writing, under an exclusive lock),
/// syncs the image and removes the log.
pub fn recover(log: &Path, image: &File) -> Result<Recovery, UndoError> {
    let io_error = |source| UndoError::Io { path: log.to_path_buf(), source };
    let bytes = match read_bounded(log) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Recovery::Clean),
        Err(error) => return Err(io_error(error)),
    };

    let Some((image_len, ranges)) = parse_log(&bytes) else {
        remove_log(log).map_err(io_error)?;
        return Ok(Recovery::DiscardedIncomplete);
    };
    let mismatch = |detail: String| UndoError::Mismatch { path: log.to_path_buf(), detail };
    let actual_len = image.metadata().map_err(io_error)?.len();
    if actual_len != image_len {
        return Err(mismatch(format!(
            "the log is for a {image_len}-byte image, this one has {actual_len} bytes"
        )));
    }
    for range in &ranges {
        let end = range.offset.checked_add(range.original.len());
        if end.is_none_or(|end| end > image_len) {
            return Err(mismatch(format!("a range at byte {} lies past the end of the image", range.offset)));
        }
    }

    // Holes first: punching them frees the space that writing the original bytes back may need
    // when the disk is full.
    for range in &ranges {
        if let Original::Zeros { len } = &range.original {
            restore_zeros(image, range.offset, *len).map_err(io_error)?;
        }
    }
    for range in &ranges {
        if let Original::Bytes(original) = &range.original {
            image.write_all_at(original, range.offset).map_err(io_error)?;
        }
    }
    image.sync_all().map_err(io_error)?;
    remove_log(log).map_err(io_error)?;
    Ok(Recovery::RolledBack { ranges: ranges.len() })
}

/// Makes `len` bytes at `offset` zero again: a punched hole where the filesystem supports it,
/// which also gives back the space the interrupted run allocated, else written zeros.
fn restore_zeros(image: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    let punched = fallocate(image, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len);
    if punched.is_ok() {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let chunk = (end - at).min(zeros.len() as u64) as usize;
        image.write_all_at(&zeros[..chunk], at)?;
        at += chunk as u64;
    }
    Ok(())
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_LOG_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes is too large for an undo log"),
        ));
    }
    std::fs::read(path)
}

/// Parses a complete log; returns `None` for a log that is cut short or damaged.
fn parse_log(bytes: &[u8]) -> Option<(u64, Vec<SavedRange>)> {
    let body_len = bytes.len().checked_sub(HASH_LEN)?;
    let (body, hash) = bytes.split_at(body_len);
    if body.len() < HEADER_LEN || &body[..MAGIC.len()] != MAGIC || Sha256::digest(body).as_slice() != hash {
        return None;
    }

    let image_len = read_u64(body, 8)?;
    let count = read_u64(body, 16)?;
    let mut ranges = Vec::new();
    let mut at = HEADER_LEN;
    for _ in 0..count {
        let offset = read_u64(body, at)?;
        let len = read_u64(body, at + 8)?;
        let kind = *body.get(at + 16)?;
        let start = at.checked_add(RANGE_HEADER_LEN)?;
        let (original, end) = match kind {
            KIND_BYTES => {
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                (Original::Bytes(body.get(start..end)?.to_vec()), end)
            }
            KIND_ZEROS => (Original::Zeros { len }, start),
            _ => return None,
        };
        ranges.push(SavedRange { offset, original });
        at = end;
    }
    (at == body.len()).then_some((image_len, ranges))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Syncs the directory that contains `path`, so that a created or removed name is durable.
fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, content: &[u8]) -> (PathBuf, File) {
        let path = dir.join("disk.img");
        std::fs::write(&path, content).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        (path, file)
    }

    #[test]
    fn complete_log_rolls_the_image_back() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), &[1u8; 64]);
        let log = log_path(&path);
        write_log(
            &log,
            64,
            &[
                SavedRange { offset: 8, original: Original::Bytes(vec![1; 4]) },
                SavedRange { offset: 40, original: Original::Bytes(vec![1; 2]) },
            ],
        )
        .unwrap();
        file.write_all_at(&[9; 4], 8).unwrap();
        file.write_all_at(&[9; 2], 40).unwrap();

        let recovery = recover(&log, &file).unwrap();

        assert_eq!(recovery, Recovery::RolledBack { ranges: 2 });
        assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; 64]);
        assert!(!log.exists());
    }

    #[test]
    fn log_cut_short_is_discarded_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), &[7u8; 64]);
        let log = log_path(&path);
        write_log(&log, 64, &[SavedRange { offset: 0, original: Original::Bytes(vec![5; 16]) }]).unwrap();
        let full = std::fs::read(&log).unwrap();

        for cut in [0, 7, HEADER_LEN, full.len() - 1] {
            std::fs::write(&log, &full[..cut]).unwrap();

            assert_eq!(recover(&log, &file).unwrap(), Recovery::DiscardedIncomplete, "cut at {cut}");
            assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 64], "cut at {cut}");
            assert!(!log.exists());
        }
    }

    #[test]
    fn log_for_another_image_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), &[7u8; 64]);
        let log = log_path(&path);
        write_log(&log, 128, &[SavedRange { offset: 0, original: Original::Bytes(vec![5; 16]) }]).unwrap();

        let error = recover(&log, &file).unwrap_err();

        assert!(matches!(error, UndoError::Mismatch { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 64]);
        assert!(log.exists(), "a log that does not fit is kept for inspection");
    }

    #[test]
    fn zero_range_is_logged_small_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), &[0u8; 1 << 16]);
        let log = log_path(&path);
        let mut original = vec![0u8; 1 << 15];
        original[..10].fill(3);
        file.write_all_at(&original, 4096).unwrap();
        let saved = save_range(4096, &original);
        assert_eq!(
            saved,
            vec![
                SavedRange { offset: 4096, original: Original::Bytes(original[..4096].to_vec()) },
                SavedRange { offset: 8192, original: Original::Zeros { len: (1 << 15) - 4096 } },
            ]
        );
        write_log(&log, 1 << 16, &saved).unwrap();
        assert!(std::fs::metadata(&log).unwrap().len() < 4096 + 100);
        file.write_all_at(&[0xAB; 1 << 15], 4096).unwrap();

        assert_eq!(recover(&log, &file).unwrap(), Recovery::RolledBack { ranges: 2 });

        let mut expected = vec![0u8; 1 << 16];
        expected[4096..4106].fill(3);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn holes_are_saved_as_zeros_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let (_, file) = image(dir.path(), &[]);
        file.set_len(1 << 24).unwrap();
        file.write_all_at(&[5; 100], 1 << 20).unwrap();

        let saved = save_file_range(&file, 4096, (1 << 24) - 8192).unwrap();

        let bytes: Vec<&SavedRange> =
            saved.iter().filter(|range| matches!(range.original, Original::Bytes(_))).collect();
        assert_eq!(bytes.len(), 1, "{saved:?}");
        let Original::Bytes(kept) = &bytes[0].original else { unreachable!() };
        let at = usize::try_from((1 << 20) - bytes[0].offset).unwrap();
        assert_eq!(&kept[at..at + 100], &[5; 100]);
        let reports_holes =
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0)).is_ok_and(|hole| hole == 0);
        if reports_holes {
            assert!(kept.len() <= 1 << 16, "only the data around the write is read: {}", kept.len());
        }
        let total: u64 = saved.iter().map(|range| range.original.len()).sum();
        assert_eq!(total, (1 << 24) - 8192);
        assert_eq!(saved.first().map(|range| range.offset), Some(4096));
        assert!(saved.windows(2).all(|pair| pair[0].offset + pair[0].original.len() == pair[1].offset));
    }

    #[test]
    fn no_log_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), &[7u8; 8]);

        assert_eq!(recover(&log_path(&path), &file).unwrap(), Recovery::Clean);
    }

    #[test]
    fn log_is_private_and_beside_the_image() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = log_path(&dir.path().join("device.sdimg"));

        write_log(&log, 8, &[]).unwrap();

        assert_eq!(log, dir.path().join(".device.sdimg.mender-preauth-undo"));
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
