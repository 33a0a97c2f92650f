//! The file commands: `ls`, `cat`, `stat`, `cp`, `install`, `rm`, `mkdir`, `ln`, `chmod` and
//! `chown` on paths of the form IMAGE:/PATH, with mender-artifact's mapping of device paths to
//! partitions. Each modifying command plans all its writes in memory and applies them to every
//! changed partition in one all-or-nothing step.

mod copy;
mod listing;
mod mode;
mod owners;

use std::collections::BTreeMap;
use std::ffi::OsStr;

use anyhow::{Context, bail};

pub use copy::{run_cp, run_install};
pub use listing::{run_cat, run_ls, run_stat};

use crate::commands::UsageError;
use crate::commands::args::SectorSizeArg;
use crate::commands::file_args::{ChmodArgs, ChownArgs, ImageWriteArgs, LnArgs, MkdirArgs, RmArgs};
use crate::commands::output::write_time;
use crate::commands::provision::check_output_path;
use crate::fs::ext::{FileKind, Metadata, NewAttrs, SetAttrs};
use crate::image::bmap;
use crate::image::disk_image::{Access, DiskImage, PlannedChange};
use crate::image::partition_table::Partition;
use crate::mender::image_files::{FilesError, ImageFiles, Resolved};
use crate::mender::image_path::ImagePath;
use mode::ModeChange;

/// Parses an IMAGE:/PATH argument. A malformed one is a usage error.
fn parse_image_path(argument: &OsStr) -> anyhow::Result<ImagePath> {
    ImagePath::parse(argument).map_err(|error| UsageError(error.to_string()).into())
}

/// Opens the image of `image_path`, naming IMAGE:/PATH in any error.
fn open_image(
    image_path: &ImagePath,
    access: Access,
    sector_size: Option<SectorSizeArg>,
) -> anyhow::Result<DiskImage> {
    if !image_path.image.exists() {
        bail!("{image_path}: image {} does not exist", image_path.image.display());
    }
    let sector_size = sector_size.map(SectorSizeArg::sector_size);
    DiskImage::open_with_sector_size(&image_path.image, access, sector_size)
        .with_context(|| image_path.to_string())
}

/// Opens the image of `image_path` for a modifying command: for writing in place, or for
/// reading only when the change goes to a copy at --output.
fn open_for_change(image_path: &ImagePath, write: &ImageWriteArgs) -> anyhow::Result<DiskImage> {
    check_output_path(write.output.as_deref(), &image_path.image)?;
    let access = if write.output.is_some() { Access::ReadOnly } else { Access::ReadWrite };
    open_image(image_path, access, write.sector_size)
}

/// Finds the partitions of an opened image.
fn image_files<'a>(image: &'a DiskImage, image_path: &ImagePath) -> anyhow::Result<ImageFiles<'a>> {
    ImageFiles::new(image).with_context(|| format!("{image_path}: reading partitions"))
}

/// Writes every planned change to the image in one all-or-nothing step, or to a copy at
/// `--output` (written even when nothing changed), logs what changed, and then rewrites the
/// block map next to the written image unless `--no-bmap` is given.
fn commit(
    image: &DiskImage,
    files: ImageFiles,
    image_path: &ImagePath,
    done: &str,
    write: &ImageWriteArgs,
) -> anyhow::Result<()> {
    let bmap = &write.bmap;
    if let Some(output) = write.output.as_deref() {
        let (changes, _) = files.into_writes().with_context(|| image_path.to_string())?;
        let refs: Vec<(Partition, &BTreeMap<u64, Vec<u8>>)> =
            changes.iter().map(|(partition, writes)| (*partition, writes)).collect();
        let pending_map = bmap::prepare_unless(bmap.no_bmap, image.path(), output)?;
        image.apply_all_to_copy(&refs, output).with_context(|| image_path.to_string())?;
        log::info!("{image_path}: {done}, written to {}", output.display());
        return bmap::finish(pending_map, output);
    }
    let (changes, names) = files.into_writes_with_copies().with_context(|| image_path.to_string())?;
    if changes.is_empty() {
        log::info!("{image_path}: {done}; nothing needed to change");
        return Ok(());
    }
    let refs: Vec<PlannedChange<'_>> =
        changes.iter().map(|(partition, writes, copies)| (*partition, writes, copies)).collect();
    let pending_map = bmap::prepare_unless(bmap.no_bmap, image.path(), image.path())?;
    image.apply_all_with_copies(&refs).with_context(|| image_path.to_string())?;
    log::info!("{image_path}: {done} on {}", names.join(" and "));
    bmap::finish(pending_map, image.path())
}

/// Puts IMAGE:/PATH in front of an error from the namespace. The device path at the start of the
/// message is dropped when it is the path given, and kept when symbolic links led elsewhere.
fn in_image(image_path: &ImagePath) -> impl Fn(FilesError) -> anyhow::Error + '_ {
    move |error| {
        let message = error.to_string();
        let given = format!("{}: ", image_path.path);
        let cause = message.strip_prefix(&given).unwrap_or(&message);
        anyhow::anyhow!("{image_path}: {cause}")
    }
}

/// Parses permission bits written in octal, such as `644` or `0755`.
fn parse_mode(text: &str) -> anyhow::Result<u16> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
        _ => Err(UsageError(format!(
            "invalid mode {text:?}: expected octal permission bits from 0 to 7777, such as 0644"
        ))
        .into()),
    }
}

/// Attributes of files and directories the commands create, owned by root as mender-artifact
/// (through debugfs) creates them.
fn new_attrs(mode: u16, uid: u32, gid: u32) -> anyhow::Result<NewAttrs> {
    Ok(NewAttrs { mode, uid, gid, time: write_time()? })
}

/// Describes where a write landed: `/etc/x` or `/etc/x (through /var/lib/x)`.
fn describe_targets(targets: &[Resolved]) -> String {
    let mut paths: Vec<&str> = targets.iter().map(|target| target.device_path.as_str()).collect();
    paths.dedup();
    paths.join(", ")
}

/// `rm [-r] [-f] IMAGE:/PATH`.
pub fn run_rm(args: &RmArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let time = write_time()?;
    let targets = match files.remove(&image_path.path, args.recursive, time) {
        Ok(targets) => targets,
        Err(FilesError::NotFound(_)) if args.force && args.write.output.is_none() => return Ok(()),
        Err(FilesError::NotFound(_)) if args.force => {
            return commit(&image, files, &image_path, "nothing to remove", &args.write);
        }
        Err(error) => return Err(in_image(&image_path)(error)),
    };
    commit(&image, files, &image_path, &format!("removed {}", describe_targets(&targets)), &args.write)
}

/// `mkdir [-p] [-m MODE] IMAGE:/PATH`.
pub fn run_mkdir(args: &MkdirArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let mode = parse_mode(&args.mode)?;
    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let attrs = new_attrs(mode, 0, 0)?;
    let targets = files.create_dir(&image_path.path, &attrs, args.parents).map_err(in_image(&image_path))?;
    let done = format!("created {}", describe_targets(&targets));
    commit(&image, files, &image_path, &done, &args.write)
}

/// `ln -s [-f] TARGET IMAGE:/LINK`.
pub fn run_ln(args: &LnArgs) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let image_path = parse_image_path(&args.link)?;
    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let attrs = new_attrs(0o777, 0, 0)?;
    let target = args.target.as_bytes();
    let targets =
        files.symlink(&image_path.path, target, &attrs, args.force).map_err(in_image(&image_path))?;
    let shown = String::from_utf8_lossy(target);
    let done = format!("linked {} to {shown}", describe_targets(&targets));
    commit(&image, files, &image_path, &done, &args.write)
}

/// `chmod [-R] MODE IMAGE:/PATH`.
pub fn run_chmod(args: &ChmodArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let change = ModeChange::parse(&args.mode).map_err(|error| UsageError(error.to_string()))?;
    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let time = write_time()?;
    // Symbolic links found by -R keep their mode, as with chmod(1), which never changes links.
    let update = |metadata: &Metadata| match metadata.kind {
        FileKind::Symlink => SetAttrs::default(),
        kind => SetAttrs {
            mode: Some(change.apply(metadata.mode, kind == FileKind::Directory)),
            ctime: Some(time),
            ..SetAttrs::default()
        },
    };
    let targets =
        files.update_attrs(&image_path.path, true, args.recursive, &update).map_err(in_image(&image_path))?;
    let done = format!("changed the mode of {} ({})", describe_targets(&targets), args.mode);
    commit(&image, files, &image_path, &done, &args.write)
}

/// `chown [--no-dereference] OWNER[:GROUP] IMAGE:/PATH`.
pub fn run_chown(args: &ChownArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let image = open_for_change(&image_path, &args.write)?;
    let mut files = image_files(&image, &image_path)?;
    let (user, group) = match args.owner.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (args.owner.as_str(), None),
    };
    let uid = if user.is_empty() { None } else { Some(owners::user_id(&mut files, user)?) };
    let gid = match group {
        Some(group) if !group.is_empty() => Some(owners::group_id(&mut files, group)?),
        _ => None,
    };
    if uid.is_none() && gid.is_none() {
        let message = format!("invalid owner {:?}: expected USER, USER:GROUP or :GROUP", args.owner);
        return Err(UsageError(message).into());
    }
    let attrs = SetAttrs { uid, gid, ctime: Some(write_time()?), ..SetAttrs::default() };
    let targets = files
        .update_attrs(&image_path.path, !args.no_dereference, args.recursive, &|_| attrs)
        .map_err(in_image(&image_path))?;
    let done = format!("changed the owner of {} to {}", describe_targets(&targets), args.owner);
    commit(&image, files, &image_path, &done, &args.write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_octal_and_bounded() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("4755").unwrap(), 0o4755);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("u+x").is_err());
    }
}
