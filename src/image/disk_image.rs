//! An open disk image file: its partition table, a lock against concurrent modification, and
//! the final step of a modification, applying planned writes to this file or to a copy of it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::image::compressed::{
    CompressedImage, Compression, SparseDecompressError, compress_file, decompress_sparse,
};
use crate::image::partition_table::{Partition, PartitionTable, PartitionTableError, SectorSize};
use crate::image::sparse_copy::{CopyMethod, copy_sparse};
use crate::image::undo_log::{self, Recovery, UndoError};
use crate::image::volume::{FileRange, FileVolume, ReadAt};

/// Access mode of an opened image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only, with a shared lock: other readers may run, a modifying run may not.
    ReadOnly,
    /// Read and write in place, with an exclusive lock.
    ReadWrite,
}

/// The planned writes of one partition for [`DiskImage::apply_all_with_copies`]: byte ranges
/// held in memory and ranges copied from host files, keyed by offsets relative to the partition.
pub type PlannedChange<'a> = (Partition, &'a BTreeMap<u64, Vec<u8>>, &'a BTreeMap<u64, FileRange>);

/// Failure to open or write an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Table { path: PathBuf, source: PartitionTableError },
    #[error(
        "{path}: image is in use by another process (it holds a lock on the file); try again when it has finished"
    )]
    InUse { path: PathBuf },
    #[error("{path}: image is not writable; use --output NEW_IMAGE to write a provisioned copy instead")]
    ReadOnly { path: PathBuf },
    #[error("{path}: is a directory, not an image file")]
    IsDirectory { path: PathBuf },
    #[error("{path}: is not a regular file or a block device")]
    NotAFile { path: PathBuf },
    #[error("{path}: the undo log could not be written or removed: {source}")]
    UndoLog { path: PathBuf, source: io::Error },
    #[error("{path}: nothing was changed, because its undo log {log} could not be written: {source}")]
    UndoLogNotWritten { path: PathBuf, log: PathBuf, source: io::Error },
    #[error("{path}: writing the image failed, so it was rolled back and nothing was changed: {source}")]
    RolledBack { path: PathBuf, source: io::Error },
    #[error(
        "{path}: writing the image failed ({write_error}) and rolling it back failed too ({rollback_error}); \
         the image is half-written until the next mender-preauth run on it (such as `mender-preauth inspect \
         {path}`) restores it from the undo log {log}"
    )]
    HalfWritten { path: PathBuf, log: PathBuf, write_error: io::Error, rollback_error: UndoError },
    #[error("{path}: {source}")]
    Recovery { path: PathBuf, source: UndoError },
    #[error(
        "{path}: is compressed with {} and cannot be changed in place; use --output NEW_IMAGE to \
         write a changed copy (a NEW_IMAGE ending in .{} is compressed the same way)",
        compression.name(),
        compression.suffix()
    )]
    CompressedInPlace { path: PathBuf, compression: Compression },
}

/// A disk image opened for reading or for modification in place.
#[derive(Debug)]
pub struct DiskImage {
    path: PathBuf,
    file: File,
    /// The decompressed bytes of a compressed image file; `None` for an uncompressed one.
    compressed: Option<CompressedImage>,
    table: PartitionTable,
    access: Access,
}

impl DiskImage {
    /// Opens the image at `path`, takes the lock that `access` calls for and reads its partition
    /// table with the sector size it detects.
    pub fn open(path: &Path, access: Access) -> Result<Self, ImageError> {
        Self::open_with_sector_size(path, access, None)
    }

    /// Opens the image as [`DiskImage::open`] does, reading its partition table with
    /// `sector_size` when given. Logs each warning the table reader returns.
    pub fn open_with_sector_size(
        path: &Path,
        access: Access,
        sector_size: Option<SectorSize>,
    ) -> Result<Self, ImageError> {
        let io_error = |source| ImageError::Io { path: path.to_path_buf(), source };
        check_file_type(path)?;
        if access == Access::ReadWrite {
            reject_compressed(path)?;
        }
        recover_interrupted_run(path)?;
        let file = OpenOptions::new().read(true).write(access == Access::ReadWrite).open(path).map_err(
            |source| {
                if access == Access::ReadWrite && source.kind() == io::ErrorKind::PermissionDenied {
                    ImageError::ReadOnly { path: path.to_path_buf() }
                } else {
                    io_error(source)
                }
            },
        )?;

        let locked = match access {
            Access::ReadOnly => file.try_lock_shared(),
            Access::ReadWrite => file.try_lock(),
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(ImageError::InUse { path: path.to_path_buf() }),
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }

        let compressed = open_compressed(path, &file)?;
        let bytes: &dyn ReadAt = match &compressed {
            Some(compressed) => compressed,
            None => &file,
        };
        let table = PartitionTable::read(bytes, sector_size)
            .map_err(|source| ImageError::Table { path: path.to_path_buf(), source })?;
        for warning in &table.warnings {
            log::warn!("{}: {warning}", path.display());
        }
        Ok(DiskImage { path: path.to_path_buf(), file, compressed, table, access })
    }

    /// Path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The partition table read when the image was opened.
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// The bytes of the image, decompressed if the file is compressed, for layers that read
    /// whole partitions.
    pub fn file(&self) -> &dyn ReadAt {
        match &self.compressed {
            Some(compressed) => compressed,
            None => &self.file,
        }
    }

    /// The compression format of the image file, `None` for an uncompressed image.
    pub fn compression(&self) -> Option<Compression> {
        self.compressed.as_ref().map(CompressedImage::compression)
    }

    /// Size of the image in bytes, decompressed if the file is compressed.
    pub fn file_len(&self) -> io::Result<u64> {
        self.file().image_len()
    }

    /// A read window onto `partition`.
    pub fn volume(&self, partition: &Partition) -> FileVolume<'_> {
        FileVolume::new(self.file(), partition.start, partition.len)
    }

    /// Writes `writes` (offsets relative to `partition`) into this image, all or nothing: the
    /// original bytes go to an undo log first (see [`undo_log`]), which is removed once the
    /// image is synced. Requires [`Access::ReadWrite`].
    pub fn apply(&self, partition: &Partition, writes: &BTreeMap<u64, Vec<u8>>) -> Result<(), ImageError> {
        self.apply_with_copies(partition, writes, &BTreeMap::new())
    }

    /// Writes `writes` and the bytes of the files in `copies` (both keyed by offsets relative to
    /// `partition`, all disjoint) into this image, all or nothing like [`DiskImage::apply`]. A
    /// source file shorter than its range is rejected before the image changes.
    pub fn apply_with_copies(
        &self,
        partition: &Partition,
        writes: &BTreeMap<u64, Vec<u8>>,
        copies: &BTreeMap<u64, FileRange>,
    ) -> Result<(), ImageError> {
        self.apply_changes(&[PartitionWrites { partition: *partition, writes, copies }])
    }

    /// Writes the planned writes of several partitions into this image as one all-or-nothing
    /// step, with one undo log for all of them, as [`DiskImage::apply`] does for one.
    pub fn apply_all(&self, changes: &[(Partition, &BTreeMap<u64, Vec<u8>>)]) -> Result<(), ImageError> {
        let no_copies = BTreeMap::new();
        let changes: Vec<PartitionWrites<'_>> = changes
            .iter()
            .map(|(partition, writes)| PartitionWrites { partition: *partition, writes, copies: &no_copies })
            .collect();
        self.apply_changes(&changes)
    }

    /// Writes the planned writes and the copies from host files of several partitions (offsets
    /// relative to each partition) as one all-or-nothing step, like [`DiskImage::apply_all`].
    pub fn apply_all_with_copies(&self, changes: &[PlannedChange<'_>]) -> Result<(), ImageError> {
        let changes: Vec<PartitionWrites<'_>> = changes
            .iter()
            .map(|&(partition, writes, copies)| PartitionWrites { partition, writes, copies })
            .collect();
        self.apply_changes(&changes)
    }

    /// Saves the original bytes of every range in `changes` to the undo log, then writes them
    /// all and removes the log.
    fn apply_changes(&self, changes: &[PartitionWrites<'_>]) -> Result<(), ImageError> {
        let io_error = |source| ImageError::Io { path: self.path.clone(), source };
        if self.access != Access::ReadWrite {
            return Err(io_error(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "image was opened read-only",
            )));
        }
        for change in changes {
            check_inside(&change.partition, change.writes).map_err(io_error)?;
            check_copies(&change.partition, change.copies).map_err(io_error)?;
        }

        let mut saved = Vec::new();
        for change in changes {
            let lens = change.writes.iter().map(|(&offset, data)| (offset, data.len() as u64));
            let copy_lens = change.copies.iter().map(|(&offset, range)| (offset, range.len));
            for (offset, len) in lens.chain(copy_lens) {
                let original = undo_log::save_file_range(&self.file, change.partition.start + offset, len)
                    .map_err(io_error)?;
                saved.extend(original);
            }
        }
        let log = undo_log::log_path(&self.path);
        let image_len = self.file.metadata().map_err(io_error)?.len();
        undo_log::write_log(&log, image_len, &saved).map_err(|source| ImageError::UndoLogNotWritten {
            path: self.path.clone(),
            log: log.clone(),
            source,
        })?;

        let mut chunks_written = 0;
        let written = changes
            .iter()
            .try_for_each(|change| write_ranges(&self.file, change, &mut chunks_written))
            .and_then(|()| self.file.sync_data());
        if let Err(write_error) = written {
            return Err(self.roll_back(&log, write_error));
        }
        undo_log::remove_log(&log).map_err(|source| ImageError::UndoLog { path: log, source })
    }

    /// Replays the undo log at `log` right after writing the image failed with `write_error`,
    /// so that the image is as it was and no log is left. Restoring holes punches them, which
    /// gives back the space a full disk is short of.
    fn roll_back(&self, log: &Path, write_error: io::Error) -> ImageError {
        match undo_log::recover(log, &self.file) {
            Ok(_) => ImageError::RolledBack { path: self.path.clone(), source: write_error },
            Err(rollback_error) => ImageError::HalfWritten {
                path: self.path.clone(),
                log: log.to_path_buf(),
                write_error,
                rollback_error,
            },
        }
    }

    /// Writes a copy of this image with `writes` applied to `destination`, keeping holes as
    /// holes. The copy is built under a temporary name in the destination's directory and
    /// renamed over `destination` only when complete, so a failure leaves no partial file. The
    /// copy gets the source's permission bits for its owner only, because it contains a private
    /// key. An existing destination must be a regular file that no other run has locked.
    ///
    /// The copy is compressed when the destination's name ends in `.gz`, `.xz`, `.zst` or
    /// `.bz2`, in that format, and uncompressed otherwise, whether or not this image is
    /// compressed. A compressed copy is built from an uncompressed temporary file in the same
    /// directory, which is removed afterwards.
    pub fn apply_to_copy(
        &self,
        partition: &Partition,
        writes: &BTreeMap<u64, Vec<u8>>,
        destination: &Path,
    ) -> Result<CopyMethod, ImageError> {
        self.apply_all_to_copy(&[(*partition, writes)], destination)
    }

    /// Writes a copy of this image with the planned writes of several partitions applied to
    /// `destination`, as [`DiskImage::apply_to_copy`] does for one.
    pub fn apply_all_to_copy(
        &self,
        changes: &[(Partition, &BTreeMap<u64, Vec<u8>>)],
        destination: &Path,
    ) -> Result<CopyMethod, ImageError> {
        let io_error = |source| ImageError::Io { path: destination.to_path_buf(), source };
        let _destination_lock = lock_existing_destination(destination)?;
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temporary_file =
            || tempfile::Builder::new().prefix(".mender-preauth-").suffix(".tmp").tempfile_in(directory);
        let temporary = temporary_file().map_err(io_error)?;

        let method = match &self.compressed {
            Some(compressed) => {
                decompress_sparse(&self.file, compressed.compression(), temporary.as_file()).map_err(
                    |error| match error {
                        SparseDecompressError::Input(source) => {
                            ImageError::Io { path: self.path.clone(), source }
                        }
                        SparseDecompressError::Output(source) => io_error(source),
                    },
                )?;
                CopyMethod::DataRanges
            }
            None => copy_sparse(&self.file, temporary.as_file()).map_err(io_error)?,
        };
        let no_copies = BTreeMap::new();
        for (partition, writes) in changes {
            let change = PartitionWrites { partition: *partition, writes, copies: &no_copies };
            write_ranges(temporary.as_file(), &change, &mut 0).map_err(io_error)?;
        }
        temporary.as_file().sync_data().map_err(io_error)?;

        let finished = match Compression::from_suffix(destination) {
            Some(compression) => {
                let compressed = temporary_file().map_err(io_error)?;
                compress_file(temporary.as_file(), compression, compressed.reopen().map_err(io_error)?)
                    .map_err(io_error)?;
                compressed
            }
            None => temporary,
        };
        // The copy contains a private key, so only the owner keeps the source's permission bits.
        let source_mode = self.file.metadata().map_err(io_error)?.permissions().mode();
        let mode = source_mode & 0o700;
        finished.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io_error)?;
        finished.persist(destination).map_err(|error| io_error(error.error))?;
        Ok(method)
    }
}

/// Detects a compressed image file and decompresses it once for reading (see
/// [`CompressedImage`]).
fn open_compressed(path: &Path, file: &File) -> Result<Option<CompressedImage>, ImageError> {
    let io_error = |source| ImageError::Io { path: path.to_path_buf(), source };
    let Some(compression) = Compression::detect_file(file).map_err(io_error)? else { return Ok(None) };
    CompressedImage::open(path, file, compression).map(Some).map_err(io_error)
}

/// Returns [`ImageError::CompressedInPlace`] for a compressed image file, so that a command
/// that would change it in place stops before it opens it or does any other work. A file that
/// cannot be read passes, for the open that follows to report.
pub fn reject_compressed(path: &Path) -> Result<(), ImageError> {
    let Ok(file) = File::open(path) else { return Ok(()) };
    match Compression::detect_file(&file) {
        Ok(Some(compression)) => Err(ImageError::CompressedInPlace { path: path.to_path_buf(), compression }),
        Ok(None) | Err(_) => Ok(()),
    }
}

/// Accepts a regular file or a block device. Anything else (a FIFO, a socket, a character
/// device) is refused before it is opened, because opening a FIFO blocks until a writer comes.
fn check_file_type(path: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::FileTypeExt;
    let file_type = std::fs::metadata(path)
        .map_err(|source| ImageError::Io { path: path.to_path_buf(), source })?
        .file_type();
    if file_type.is_dir() {
        return Err(ImageError::IsDirectory { path: path.to_path_buf() });
    }
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(ImageError::NotAFile { path: path.to_path_buf() });
    }
    Ok(())
}

/// Checks that every planned write lies inside `partition`.
fn check_inside(partition: &Partition, writes: &BTreeMap<u64, Vec<u8>>) -> io::Result<()> {
    let inside = |(offset, data): (&u64, &Vec<u8>)| {
        offset.checked_add(data.len() as u64).is_some_and(|end| end <= partition.len)
    };
    if !writes.iter().all(inside) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "planned write lies outside its partition"));
    }
    Ok(())
}

/// Checks that every copy lies inside `partition` and that its source file still contains it.
fn check_copies(partition: &Partition, copies: &BTreeMap<u64, FileRange>) -> io::Result<()> {
    for (&offset, range) in copies {
        if offset.checked_add(range.len).is_none_or(|end| end > partition.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "planned copy lies outside its partition",
            ));
        }
        let source_len = range.file.metadata()?.len();
        if range.offset.checked_add(range.len).is_none_or(|end| end > source_len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a file being copied into the image shrank to {source_len} bytes after the copy was planned"
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes copied per read and write where the kernel cannot copy between the files itself.
const COPY_BUFFER_LEN: usize = 1 << 20;

/// Copies `range` to byte `at` of `file`: with `copy_file_range`, which copies inside the
/// kernel, or by reading and writing through a buffer where that fails.
fn copy_range(file: &File, at: u64, range: &FileRange) -> io::Result<()> {
    let mut done = 0u64;
    while done < range.len {
        let mut source_offset = range.offset + done;
        let mut target_offset = at + done;
        let left = usize::try_from(range.len - done).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(
            &*range.file,
            Some(&mut source_offset),
            file,
            Some(&mut target_offset),
            left,
        ) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(copied) => done += copied as u64,
            Err(_) => break,
        }
    }

    let mut buffer = vec![0u8; COPY_BUFFER_LEN.min(usize::try_from(range.len - done).unwrap_or(usize::MAX))];
    while done < range.len {
        let chunk = buffer.len().min(usize::try_from(range.len - done).unwrap_or(usize::MAX));
        let piece = &mut buffer[..chunk];
        range.read_at(done, piece)?;
        file.write_all_at(piece, at + done)?;
        done += chunk as u64;
    }
    Ok(())
}

/// Bytes written per call while the failpoint is set: the unit the crash tests count in.
const WRITE_CHUNK_LEN: usize = 4096;

/// Environment variable for the crash tests: `write:N` ends the process with
/// [`FAILPOINT_EXIT_CODE`] right after the Nth chunk of an image write, as a crash would.
pub const FAILPOINT_VAR: &str = "MENDER_PREAUTH_FAILPOINT";
/// Exit status of a process stopped at the failpoint.
pub const FAILPOINT_EXIT_CODE: i32 = 86;

/// The planned writes of one partition: byte ranges held in memory and ranges copied from host
/// files, keyed by offsets relative to the partition.
struct PartitionWrites<'a> {
    partition: Partition,
    writes: &'a BTreeMap<u64, Vec<u8>>,
    copies: &'a BTreeMap<u64, FileRange>,
}

/// Writes every range, then every copy, of `change`, after checking that all of them lie inside
/// its partition. With the failpoint set, both are written in chunks of [`WRITE_CHUNK_LEN`] bytes
/// so that a test can stop the run between any two of them. Otherwise each range is written in
/// one call and each copy by [`copy_range`]. `chunks_written` counts on across the calls of one
/// modification that spans several partitions.
fn write_ranges(file: &File, change: &PartitionWrites<'_>, chunks_written: &mut u64) -> io::Result<()> {
    let partition = &change.partition;
    check_inside(partition, change.writes)?;
    check_copies(partition, change.copies)?;
    let stop_after = failpoint_chunks();
    let chunk_len = if stop_after.is_some() { WRITE_CHUNK_LEN } else { usize::MAX };
    let mut count_chunk = || {
        *chunks_written += 1;
        if stop_after == Some(*chunks_written) {
            std::process::exit(FAILPOINT_EXIT_CODE);
        }
    };
    for (offset, data) in change.writes {
        for (index, chunk) in data.chunks(chunk_len).enumerate() {
            let at = partition.start + offset + (index * chunk_len) as u64;
            file.write_all_at(chunk, at)?;
            count_chunk();
        }
    }
    // tests/crash_safety.rs stops `cp` runs inside these copies too.
    for (offset, range) in change.copies {
        if stop_after.is_none() {
            copy_range(file, partition.start + offset, range)?;
            continue;
        }
        let mut piece = vec![0u8; WRITE_CHUNK_LEN];
        let mut done = 0u64;
        while done < range.len {
            let chunk = &mut piece[..WRITE_CHUNK_LEN.min((range.len - done) as usize)];
            range.read_at(done, chunk)?;
            file.write_all_at(chunk, partition.start + offset + done)?;
            done += chunk.len() as u64;
            count_chunk();
        }
    }
    Ok(())
}

/// Reads [`FAILPOINT_VAR`]; `None` when unset or not of the form `write:N`.
fn failpoint_chunks() -> Option<u64> {
    std::env::var(FAILPOINT_VAR).ok()?.strip_prefix("write:")?.parse().ok()
}

/// Rolls back a modification of the image at `path` that a previous run left half done, if its
/// undo log is there. Needs write access and the exclusive lock for that.
fn recover_interrupted_run(path: &Path) -> Result<(), ImageError> {
    let log = undo_log::log_path(path);
    if !log.exists() {
        return Ok(());
    }
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(
            source.kind(),
            format!(
                "an interrupted run left the undo log {}, and rolling it back needs write access: {source}",
                log.display()
            ),
        ),
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(ImageError::InUse { path: path.to_path_buf() }),
        Err(TryLockError::Error(source)) => return Err(ImageError::Io { path: path.to_path_buf(), source }),
    }

    let recovery = undo_log::recover(&log, &file)
        .map_err(|source| ImageError::Recovery { path: path.to_path_buf(), source })?;
    match recovery {
        Recovery::RolledBack { ranges } => log::warn!(
            "{}: a previous run was interrupted while writing; rolled back its {ranges} changed ranges, \
             so the image is as it was before that run",
            path.display()
        ),
        Recovery::DiscardedIncomplete => log::debug!("{}: removed an incomplete undo log", path.display()),
        Recovery::Clean => {}
    }
    Ok(())
}

/// Locks an existing `destination` exclusively until the copy replaces it, so that a run
/// modifying that image in place is not silently overwritten. Returns `None` when it does not
/// exist. Refuses anything but a regular file: a device node must not become a file.
fn lock_existing_destination(destination: &Path) -> Result<Option<File>, ImageError> {
    let io_error = |source| ImageError::Io { path: destination.to_path_buf(), source };
    let metadata = match std::fs::symlink_metadata(destination) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    if !metadata.file_type().is_file() {
        return Err(ImageError::NotAFile { path: destination.to_path_buf() });
    }
    let file = File::open(destination).map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(ImageError::InUse { path: destination.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(io_error(source)),
    }
}

/// Returns true when `first` and `second` name the same file (same device and inode).
pub fn same_file(first: &Path, second: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (first.metadata(), second.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Writes `bytes` to a host file and returns a range over all of them.
    fn source_range(dir: &Path, bytes: &[u8]) -> FileRange {
        let path = dir.join("source");
        std::fs::write(&path, bytes).unwrap();
        FileRange { file: Arc::new(File::open(&path).unwrap()), offset: 0, len: bytes.len() as u64 }
    }

    #[test]
    fn copies_are_applied_with_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let image = DiskImage::open(&path, Access::ReadWrite).unwrap();
        let partition = image.table().partitions[0];
        let source: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 251) as u8).collect();
        let copies = BTreeMap::from([(8192u64, source_range(dir.path(), &source))]);
        let writes = BTreeMap::from([(4096u64, vec![3u8; 100])]);

        image.apply_with_copies(&partition, &writes, &copies).unwrap();

        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[4096..4196], &[3; 100]);
        assert_eq!(&written[8192..8192 + source.len()], &source[..]);
        assert!(!undo_log::log_path(&path).exists());
    }

    #[test]
    fn copy_the_kernel_rejects_is_read_and_written() {
        // copy_file_range rejects overlapping ranges of one file, so the buffer does the copy.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let original: Vec<u8> = (0..16_384u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path).unwrap());
        let range = FileRange { file: Arc::clone(&file), offset: 0, len: 8192 };

        copy_range(&file, 4096, &range).unwrap();

        let copied = std::fs::read(&path).unwrap();
        assert_eq!(&copied[..4096], &original[..4096]);
        assert_eq!(&copied[4096..12_288], &original[..8192]);
        assert_eq!(&copied[12_288..], &original[12_288..]);
    }

    #[test]
    fn shrunk_copy_source_leaves_image_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let before = std::fs::read(&path).unwrap();
        let image = DiskImage::open(&path, Access::ReadWrite).unwrap();
        let partition = image.table().partitions[0];
        let mut range = source_range(dir.path(), &[7; 4096]);
        range.len = 8192;
        let copies = BTreeMap::from([(8192u64, range)]);
        let writes = BTreeMap::from([(4096u64, vec![3u8; 100])]);

        let error = image.apply_with_copies(&partition, &writes, &copies).unwrap_err();

        assert!(error.to_string().contains("shrank"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!undo_log::log_path(&path).exists());
    }

    fn bare_image(dir: &Path) -> PathBuf {
        let path = dir.join("bare.ext4");
        let mut start = vec![0u8; 4096];
        start[1024 + 0x38] = 0x53;
        start[1024 + 0x39] = 0xEF;
        std::fs::write(&path, &start).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(1 << 20).unwrap();
        path
    }

    #[test]
    fn second_writer_gets_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let _first = DiskImage::open(&path, Access::ReadWrite).unwrap();

        let second = DiskImage::open(&path, Access::ReadWrite);

        assert!(matches!(second, Err(ImageError::InUse { .. })), "{second:?}");
        assert!(matches!(DiskImage::open(&path, Access::ReadOnly), Err(ImageError::InUse { .. })));
    }

    #[test]
    fn readers_share_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let _first = DiskImage::open(&path, Access::ReadOnly).unwrap();

        assert!(DiskImage::open(&path, Access::ReadOnly).is_ok());
        assert!(matches!(DiskImage::open(&path, Access::ReadWrite), Err(ImageError::InUse { .. })));
    }

    #[test]
    fn copy_gets_writes_and_source_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let original = std::fs::read(&path).unwrap();
        let image = DiskImage::open(&path, Access::ReadOnly).unwrap();
        let whole = image.table().partitions[0];
        let writes = BTreeMap::from([(8192u64, b"written".to_vec())]);

        let destination = dir.path().join("out.ext4");
        image.apply_to_copy(&whole, &writes, &destination).unwrap();

        let copy = std::fs::read(&destination).unwrap();
        assert_eq!(&copy[8192..8199], b"written");
        assert_eq!(copy.len(), original.len());
        assert_eq!(std::fs::read(&path).unwrap(), original);
    }

    #[test]
    fn copy_refuses_a_destination_locked_by_another_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let destination = dir.path().join("busy.ext4");
        std::fs::copy(&path, &destination).unwrap();
        let _busy = DiskImage::open(&destination, Access::ReadWrite).unwrap();
        let image = DiskImage::open(&path, Access::ReadOnly).unwrap();
        let whole = image.table().partitions[0];

        let result = image.apply_to_copy(&whole, &BTreeMap::new(), &destination);

        assert!(matches!(result, Err(ImageError::InUse { .. })), "{result:?}");
    }

    #[test]
    fn copy_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let image = DiskImage::open(&path, Access::ReadOnly).unwrap();
        let whole = image.table().partitions[0];
        let destination = dir.path().join("out.ext4");

        image.apply_to_copy(&whole, &BTreeMap::new(), &destination).unwrap();

        assert_eq!(std::fs::metadata(&destination).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());

        let result = DiskImage::open(&fifo, Access::ReadOnly);

        assert!(matches!(result, Err(ImageError::NotAFile { .. })), "{result:?}");
    }

    #[test]
    fn apply_all_writes_every_partition_and_removes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let image = DiskImage::open(&path, Access::ReadWrite).unwrap();
        let whole = image.table().partitions[0];
        let first = Partition { number: 1, start: 64 * 1024, len: 64 * 1024, ..whole };
        let second = Partition { number: 2, start: 256 * 1024, len: 64 * 1024, ..whole };
        let first_writes = BTreeMap::from([(100u64, b"first".to_vec())]);
        let second_writes = BTreeMap::from([(200u64, b"second".to_vec())]);

        image.apply_all(&[(first, &first_writes), (second, &second_writes)]).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[64 * 1024 + 100..64 * 1024 + 105], b"first");
        assert_eq!(&bytes[256 * 1024 + 200..256 * 1024 + 206], b"second");
        assert!(!undo_log::log_path(&path).exists());
    }

    #[test]
    fn apply_all_checks_every_partition_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let original = std::fs::read(&path).unwrap();
        let image = DiskImage::open(&path, Access::ReadWrite).unwrap();
        let whole = image.table().partitions[0];
        let first = Partition { number: 1, start: 64 * 1024, len: 64 * 1024, ..whole };
        let inside = BTreeMap::from([(0u64, vec![1u8; 16])]);
        let outside = BTreeMap::from([(64 * 1024 - 2, vec![1u8; 4])]);

        assert!(image.apply_all(&[(first, &inside), (first, &outside)]).is_err());

        assert_eq!(std::fs::read(&path).unwrap(), original);
    }

    #[test]
    fn write_outside_partition_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = bare_image(dir.path());
        let image = DiskImage::open(&path, Access::ReadWrite).unwrap();
        let whole = image.table().partitions[0];
        let writes = BTreeMap::from([(whole.len - 2, vec![1u8; 4])]);

        assert!(image.apply(&whole, &writes).is_err());
    }
}
