//! `cp` into and out of an image, and `install`.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use walkdir::WalkDir;

use super::{
    commit, describe_targets, image_files, in_image, new_attrs, open_for_change, open_image, owners,
    parse_image_path, parse_mode,
};
use crate::commands::UsageError;
use crate::commands::file_args::{CpArgs, InstallArgs};
use crate::commands::output::escape_control;
use crate::fs::ext::{FileKind, NewAttrs};
use crate::image::disk_image::Access;
use crate::mender::image_files::{CopyOutError, FilesError, ImageFiles, Resolved};
use crate::mender::image_path::ImagePath;

/// Mode of a file copied from standard input. mender-artifact buffers standard input in a
/// temporary file (mode 0600) and debugfs copies that file's mode.
const STDIN_FILE_MODE: u16 = 0o600;

/// Smallest host file whose blocks are copied when the writes are applied instead of being read
/// into memory first. Reading a small file costs little, and pseudo-files such as those under
/// `/proc` and `/sys` report a size of 0 or 4096 that differs from what a read returns.
const MIN_LEN_BY_REFERENCE: u64 = 64 * 1024;

/// Mode of directories that `install -d` creates without -m.
const DEFAULT_DIR_MODE: u16 = 0o755;

/// `cp [-r] SRC DST`: one of SRC and DST is IMAGE:/PATH, the other a host path.
pub fn run_cp(args: &CpArgs) -> anyhow::Result<()> {
    let source_in_image = args.source != "-" && ImagePath::looks_like_image_path(&args.source);
    let destination_in_image = ImagePath::looks_like_image_path(&args.destination);
    match (source_in_image, destination_in_image) {
        (false, true) => copy_in(args),
        (true, false) => copy_out(args),
        (true, true) => Err(UsageError(format!(
            "{}: copying from one image path to another is not supported; copy through a host file",
            args.destination.to_string_lossy()
        ))
        .into()),
        (false, false) => Err(UsageError(format!(
            "{}: neither SRC nor DST is IMAGE:/PATH; one of them must be a path inside an image",
            args.destination.to_string_lossy()
        ))
        .into()),
    }
}

/// A host source file and its permission bits.
struct HostFile {
    contents: HostContents,
    mode: u16,
}

/// The source of a host file's bytes.
enum HostContents {
    /// Standard input, read into memory.
    Read(Vec<u8>),
    /// An open regular file of `len` bytes, whose whole blocks are copied when the writes are
    /// applied (with `copy_file_range`) instead of passing through memory.
    Open { file: Arc<File>, len: u64 },
}

impl HostFile {
    fn len(&self) -> u64 {
        match &self.contents {
            HostContents::Read(data) => data.len() as u64,
            HostContents::Open { len, .. } => *len,
        }
    }

    /// Writes this file as `destination` on every partition the path resolves to.
    fn write_to(
        &self,
        files: &mut ImageFiles,
        destination: &str,
        attrs: &NewAttrs,
    ) -> Result<Vec<Resolved>, FilesError> {
        match &self.contents {
            HostContents::Read(data) => files.write_file(destination, data, attrs),
            HostContents::Open { file, .. } => files.write_file_from(destination, file, attrs),
        }
    }
}

/// Opens a host source file, or reads standard input for "-". Small files are read into memory,
/// and so is the image file itself, because its bytes change while the writes are applied.
fn read_host_file(source: &OsStr, image: &Path) -> anyhow::Result<HostFile> {
    if source == "-" {
        let mut data = Vec::new();
        std::io::stdin().lock().read_to_end(&mut data).context("reading standard input")?;
        return Ok(HostFile { contents: HostContents::Read(data), mode: STDIN_FILE_MODE });
    }
    let path = Path::new(source);
    let metadata = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if metadata.is_dir() {
        bail!("{}: is a directory; use -r to copy it with everything below it", path.display());
    }
    if !metadata.is_file() {
        bail!("{}: is not a regular file", path.display());
    }
    let file = File::open(path).with_context(|| path.display().to_string())?;
    // The size and mode come from the opened file, in case the path was replaced meanwhile.
    let metadata = file.metadata().with_context(|| path.display().to_string())?;
    if !metadata.is_file() {
        bail!("{}: is not a regular file", path.display());
    }
    let mode = (metadata.permissions().mode() & 0o7777) as u16;
    let is_image = std::fs::metadata(image)
        .is_ok_and(|image| image.dev() == metadata.dev() && image.ino() == metadata.ino());
    if is_image || metadata.len() < MIN_LEN_BY_REFERENCE {
        let data = std::fs::read(path).with_context(|| path.display().to_string())?;
        return Ok(HostFile { contents: HostContents::Read(data), mode });
    }
    let contents = HostContents::Open { file: Arc::new(file), len: metadata.len() };
    Ok(HostFile { contents, mode })
}

/// Returns the image path that a source named `name` is copied to: a path inside `destination`
/// when it ends in `/` or is an existing directory (on rootfs A), else `destination` itself.
fn destination_in_image(
    files: &mut ImageFiles,
    image_path: &ImagePath,
    name: Option<&OsStr>,
) -> anyhow::Result<String> {
    let path = &image_path.path;
    let into_directory = path.ends_with('/') || {
        let resolved = files.resolve_for_read(path, true).map_err(in_image(image_path))?;
        resolved.node.is_some()
            && files.metadata(&resolved).map_err(in_image(image_path))?.kind == FileKind::Directory
    };
    if !into_directory {
        return Ok(path.clone());
    }
    let Some(name) = name else {
        bail!("{image_path}: is a directory; standard input needs the name of the file to write");
    };
    let name =
        name.to_str().with_context(|| format!("{image_path}: the source's name is not valid UTF-8"))?;
    Ok(format!("{}/{name}", path.trim_end_matches('/')))
}

/// Copies a host file or tree into the image.
fn copy_in(args: &CpArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.destination)?;
    let source = Path::new(&args.source);
    let is_tree = args.source != "-" && source.is_dir();
    if is_tree && !args.recursive {
        bail!("{}: is a directory; use -r to copy it with everything below it", source.display());
    }
    let host_file = if is_tree { None } else { Some(read_host_file(&args.source, &image_path.image)?) };

    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let name = if args.source == "-" { None } else { source.file_name() };
    let destination = destination_in_image(&mut files, &image_path, name)?;
    let shown = ImagePath { image: image_path.image.clone(), path: destination.clone() };

    let done = match host_file {
        Some(host_file) => {
            let attrs = new_attrs(host_file.mode, 0, 0)?;
            let targets = host_file.write_to(&mut files, &destination, &attrs).map_err(in_image(&shown))?;
            format!("wrote {} ({} bytes)", describe_targets(&targets), host_file.len())
        }
        None => {
            let count = copy_tree_in(&mut files, source, &destination, &shown)?;
            format!("copied {count} entries to {destination}")
        }
    };
    commit(&image, files, &image_path, &done, &args.write)
}

/// Copies the host tree `source` to `destination` in the image, merging into existing
/// directories. Returns the number of entries copied.
fn copy_tree_in(
    files: &mut ImageFiles,
    source: &Path,
    destination: &str,
    image_path: &ImagePath,
) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in WalkDir::new(source).follow_links(false).sort_by_file_name() {
        let entry = entry.with_context(|| source.display().to_string())?;
        let relative = entry.path().strip_prefix(source).unwrap_or(entry.path());
        let relative = relative
            .to_str()
            .with_context(|| format!("{}: the name is not valid UTF-8", entry.path().display()))?;
        let target = if relative.is_empty() {
            destination.to_string()
        } else {
            format!("{}/{relative}", destination.trim_end_matches('/'))
        };
        let shown = ImagePath { image: image_path.image.clone(), path: target.clone() };
        let metadata = entry.path().symlink_metadata().with_context(|| entry.path().display().to_string())?;
        let mode = (metadata.permissions().mode() & 0o7777) as u16;
        let file_type = metadata.file_type();

        if file_type.is_dir() {
            let resolved = files.resolve_for_read(&target, true).map_err(in_image(&shown))?;
            let exists_as_dir = resolved.node.is_some()
                && files.metadata(&resolved).map_err(in_image(&shown))?.kind == FileKind::Directory;
            if !exists_as_dir {
                files.create_dir(&target, &new_attrs(mode, 0, 0)?, false).map_err(in_image(&shown))?;
            }
        } else if file_type.is_file() {
            let data = std::fs::read(entry.path()).with_context(|| entry.path().display().to_string())?;
            files.write_file(&target, &data, &new_attrs(mode, 0, 0)?).map_err(in_image(&shown))?;
        } else if file_type.is_symlink() {
            let link =
                std::fs::read_link(entry.path()).with_context(|| entry.path().display().to_string())?;
            let attrs = new_attrs(0o777, 0, 0)?;
            files.symlink(&target, link.as_os_str().as_bytes(), &attrs, true).map_err(in_image(&shown))?;
        } else {
            bail!(
                "{}: is a device, FIFO or socket; cp copies only regular files, directories and symbolic links",
                entry.path().display()
            );
        }
        count += 1;
    }
    Ok(count)
}

/// Copies a file or tree out of the image to the host.
fn copy_out(args: &CpArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.source)?;
    if let Some(output) = &args.write.output {
        return Err(UsageError(format!(
            "--output {}: applies only when copying into an image; copying out of {} changes no image, so leave --output out",
            output.display(),
            image_path.image.display()
        ))
        .into());
    }
    let image = open_image(&image_path, Access::ReadOnly, args.write.sector_size)?;
    let mut files = image_files(&image, &image_path)?;
    let resolved = files.resolve_for_read(&image_path.path, true).map_err(in_image(&image_path))?;
    let metadata = files.metadata(&resolved).map_err(in_image(&image_path))?;

    let mut destination = PathBuf::from(&args.destination);
    if destination.is_dir() {
        let name = resolved.device_path.rsplit('/').next().filter(|name| !name.is_empty()).unwrap_or("root");
        destination.push(name);
    }
    match metadata.kind {
        FileKind::Directory if !args.recursive => {
            bail!("{image_path}: is a directory; use -r to copy it with everything below it")
        }
        FileKind::Directory => {
            let count = copy_tree_out(&mut files, resolved, &destination, &image_path)?;
            log::info!("{image_path}: copied {count} entries to {}", destination.display());
        }
        _ => {
            let size = write_host_file(&files, &resolved, &destination, metadata.mode, &image_path, false)?;
            log::info!("{image_path}: copied {size} bytes to {}", destination.display());
        }
    }
    Ok(())
}

/// Writes the image file at `resolved` to the host path `destination` with `mode`, as
/// mender-artifact gives a copied-out file the mode it has in the image.
///
/// Inside a copied tree (`in_tree`), a symbolic link at `destination` is never followed: the
/// link may have been made by this copy from the image, and must not lead a write out of the
/// destination.
fn write_host_file(
    files: &ImageFiles,
    resolved: &Resolved,
    destination: &Path,
    mode: u16,
    image_path: &ImagePath,
    in_tree: bool,
) -> anyhow::Result<u64> {
    let no_follow = if in_tree { rustix::fs::OFlags::NOFOLLOW.bits() as i32 } else { 0 };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(u32::from(mode))
        .custom_flags(no_follow)
        .open(destination)
        .with_context(|| destination.display().to_string())?;
    let mut out = BufWriter::new(file);
    let size = match files.copy_out(resolved, &mut out) {
        Ok(size) => size,
        Err(CopyOutError::Files(error)) => return Err(in_image(image_path)(error)),
        Err(error) => return Err(anyhow::Error::new(error).context(destination.display().to_string())),
    };
    let file: File = out
        .into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| destination.display().to_string())?;
    file.set_permissions(std::fs::Permissions::from_mode(u32::from(mode)))
        .with_context(|| destination.display().to_string())?;
    Ok(size)
}

/// Checks that an entry name read from the image names one entry in a host directory: not
/// empty, not `.` or `..`, and without `/` or NUL. A damaged or hostile image can hold any of
/// these, and joined to a host path they would lead the copy out of its destination.
fn check_entry_name(name: &[u8], directory: &Resolved, image_path: &ImagePath) -> anyhow::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        bail!(
            "{}: {}: directory entry {} has an invalid file name, so the filesystem is damaged; nothing more was copied",
            image_path.image.display(),
            directory.device_path,
            escape_control(&String::from_utf8_lossy(name)),
        );
    }
    Ok(())
}

/// Copies the image directory `top` to the host directory `destination`. Directory modes are
/// set last, so that a read-only directory still receives its entries. Below `destination`,
/// only real directories are entered, never symbolic links, whether they were there before or
/// made by this copy.
fn copy_tree_out(
    files: &mut ImageFiles,
    top: Resolved,
    destination: &Path,
    image_path: &ImagePath,
) -> anyhow::Result<usize> {
    let mut pending = vec![(top, destination.to_path_buf())];
    let mut directory_modes = Vec::new();
    let mut count = 0;
    while let Some((directory, host_directory)) = pending.pop() {
        let is_top = host_directory == destination;
        let is_real_directory = |path: &Path| match is_top {
            true => path.is_dir(),
            false => path.symlink_metadata().is_ok_and(|metadata| metadata.is_dir()),
        };
        match std::fs::create_dir(&host_directory) {
            Ok(()) => {}
            Err(error)
                if error.kind() == std::io::ErrorKind::AlreadyExists
                    && is_real_directory(&host_directory) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{}: exists and is not a directory", host_directory.display())
            }
            Err(error) => return Err(error).with_context(|| host_directory.display().to_string()),
        }
        let mode = files.metadata(&directory).map_err(in_image(image_path))?.mode;
        directory_modes.push((host_directory.clone(), mode));
        count += 1;

        let listing = files.list(&directory).map_err(in_image(image_path))?;
        for entry in &listing.entries {
            check_entry_name(&entry.name, &directory, image_path)?;
            let child = files.child(&listing, entry).map_err(in_image(image_path))?;
            let host_path = host_directory.join(OsStr::from_bytes(&entry.name));
            match entry.kind {
                FileKind::Directory => pending.push((child, host_path)),
                FileKind::Regular => {
                    let mode = files.metadata(&child).map_err(in_image(image_path))?.mode;
                    write_host_file(files, &child, &host_path, mode, image_path, true)?;
                    count += 1;
                }
                FileKind::Symlink => {
                    let target = files.read_link(&child).map_err(in_image(image_path))?;
                    if host_path.symlink_metadata().is_ok() {
                        std::fs::remove_file(&host_path).with_context(|| host_path.display().to_string())?;
                    }
                    std::os::unix::fs::symlink(OsStr::from_bytes(&target), &host_path)
                        .with_context(|| host_path.display().to_string())?;
                    count += 1;
                }
                FileKind::Other(_) => {
                    log::warn!("{}: skipped a device, FIFO or socket", child.device_path);
                }
            }
        }
    }
    for (path, mode) in directory_modes.into_iter().rev() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(u32::from(mode)))
            .with_context(|| path.display().to_string())?;
    }
    Ok(count)
}

/// `install -m MODE [-o USER] [-g GROUP] SRC IMAGE:/DST`, or `install -d [-m MODE] IMAGE:/DIR`.
pub fn run_install(args: &InstallArgs) -> anyhow::Result<()> {
    let expected = if args.directory { 1 } else { 2 };
    if args.paths.len() != expected {
        let expected_paths = if args.directory { "-d IMAGE:/DIR" } else { "SRC IMAGE:/DST" };
        let message = format!("install takes {expected_paths} but got {} paths", args.paths.len());
        return Err(UsageError(message).into());
    }
    let image_argument = args.paths.last().map(|path| path.as_os_str()).unwrap_or_default();
    let image_path = parse_image_path(image_argument)?;
    let mode = match &args.mode {
        Some(text) => parse_mode(text)?,
        None => DEFAULT_DIR_MODE,
    };
    let host_file =
        if args.directory { None } else { Some(read_host_file(&args.paths[0], &image_path.image)?) };

    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let destination = match &host_file {
        None => image_path.path.clone(),
        Some(_) => destination_in_image(&mut files, &image_path, Path::new(&args.paths[0]).file_name())?,
    };
    let shown = ImagePath { image: image_path.image.clone(), path: destination.clone() };
    if args.owner.is_some() || args.group.is_some() {
        files.reject_on_fat(&destination, "owners").map_err(in_image(&shown))?;
    }
    if args.mode.is_some() && files.is_on_fat(&destination).map_err(in_image(&shown))? {
        log::info!("{shown}: the mode is not stored, because FAT has no permission bits");
    }
    let uid = match &args.owner {
        Some(user) => owners::user_id(&mut files, user).with_context(|| image_path.to_string())?,
        None => 0,
    };
    let gid = match &args.group {
        Some(group) => owners::group_id(&mut files, group).with_context(|| image_path.to_string())?,
        None => 0,
    };
    let attrs: NewAttrs = new_attrs(mode, uid, gid)?;

    let done = match host_file {
        None => {
            let targets = files.create_dir(&image_path.path, &attrs, true).map_err(in_image(&image_path))?;
            format!("created {}", describe_targets(&targets))
        }
        Some(host_file) => {
            let targets = host_file.write_to(&mut files, &destination, &attrs).map_err(in_image(&shown))?;
            format!("installed {} (mode {mode:04o}, owner {uid}:{gid})", describe_targets(&targets))
        }
    };
    commit(&image, files, &image_path, &done, &args.write)
}
