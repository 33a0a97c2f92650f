//! The read-only file commands: `ls`, `cat` and `stat`.

use std::io::{BufWriter, Write};

use anyhow::Context;

use super::{image_files, in_image, open_image, parse_image_path};
use crate::commands::file_args::{CatArgs, LsArgs, StatArgs};
use crate::fs::ext::{FileKind, Metadata};
use crate::image::disk_image::Access;
use crate::mender::image_files::{CopyOutError, FilesError, ImageFiles, Listing, Node, Resolved};

/// Maximum number of directories `ls -R` lists, which bounds the walk of a damaged filesystem
/// whose directories form a cycle.
const MAX_LISTED_DIRECTORIES: usize = 1 << 20;

/// `ls [-l] [-R] IMAGE:/PATH`.
pub fn run_ls(args: &LsArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let image = open_image(&image_path, Access::ReadOnly, None)?;
    let mut files = image_files(&image, &image_path)?;
    let resolved = files.resolve_for_read(&image_path.path, true).map_err(in_image(&image_path))?;
    let metadata = files.metadata(&resolved).map_err(in_image(&image_path))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());

    if metadata.kind != FileKind::Directory {
        let line = if args.long {
            long_line(&files, &resolved, &metadata, &image_path.path)?
        } else {
            image_path.path.clone()
        };
        writeln!(out, "{line}").context("writing to stdout")?;
        return out.flush().context("writing to stdout");
    }

    let mut pending = vec![resolved];
    let mut listed = 0usize;
    while let Some(directory) = pending.pop() {
        listed += 1;
        if listed > MAX_LISTED_DIRECTORIES {
            anyhow::bail!("{image_path}: more than {MAX_LISTED_DIRECTORIES} directories; stopped listing");
        }
        let listing = files.list(&directory).map_err(in_image(&image_path))?;
        if args.recursive {
            if listed > 1 {
                writeln!(out).context("writing to stdout")?;
            }
            writeln!(out, "{}:", directory.device_path).context("writing to stdout")?;
        }
        print_listing(&mut out, &files, &listing, args.long, &image_path.path)?;
        if args.recursive {
            let mut subdirectories = Vec::new();
            for entry in listing.entries.iter().filter(|entry| entry.kind == FileKind::Directory) {
                match files.child(&listing, entry) {
                    Ok(child) => subdirectories.push(child),
                    Err(error @ FilesError::NoPartition { .. }) => {
                        log::warn!("{}: not listed: {error}", image_path.image.display());
                    }
                    Err(error) => return Err(in_image(&image_path)(error)),
                }
            }
            pending.extend(subdirectories.into_iter().rev());
        }
    }
    out.flush().context("writing to stdout")
}

/// Prints one directory's entries, one per line, or as `ls -l` does.
fn print_listing(
    out: &mut impl Write,
    files: &ImageFiles,
    listing: &Listing,
    long: bool,
    shown_path: &str,
) -> anyhow::Result<()> {
    if !long {
        for entry in &listing.entries {
            out.write_all(&entry.name).context("writing to stdout")?;
            out.write_all(b"\n").context("writing to stdout")?;
        }
        return Ok(());
    }
    let mut rows = Vec::with_capacity(listing.entries.len());
    for entry in &listing.entries {
        let metadata = files
            .entry_metadata(listing, entry)
            .with_context(|| format!("{shown_path}: reading an entry"))?;
        let target = if metadata.kind == FileKind::Symlink {
            Some(files.entry_link(listing, entry).with_context(|| format!("{shown_path}: reading a link"))?)
        } else {
            None
        };
        rows.push((metadata, String::from_utf8_lossy(&entry.name).into_owned(), target));
    }
    let width =
        |value: fn(&Metadata) -> String| rows.iter().map(|(m, _, _)| value(m).len()).max().unwrap_or(0);
    let links_width = width(|m| m.links.to_string());
    let uid_width = width(|m| m.uid.to_string());
    let gid_width = width(|m| m.gid.to_string());
    let size_width = width(|m| m.size.to_string());
    for (metadata, name, target) in &rows {
        let mut line = format!(
            "{} {:>links_width$} {:>uid_width$} {:>gid_width$} {:>size_width$} {} {name}",
            mode_string(metadata),
            metadata.links,
            metadata.uid,
            metadata.gid,
            metadata.size,
            format_time(metadata.mtime, false),
        );
        if let Some(target) = target {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(target));
        }
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    Ok(())
}

/// Formats the `ls -l` line of a path that is not a directory.
fn long_line(
    files: &ImageFiles,
    resolved: &Resolved,
    metadata: &Metadata,
    shown: &str,
) -> anyhow::Result<String> {
    let mut line = format!(
        "{} {} {} {} {} {} {shown}",
        mode_string(metadata),
        metadata.links,
        metadata.uid,
        metadata.gid,
        metadata.size,
        format_time(metadata.mtime, false)
    );
    if metadata.kind == FileKind::Symlink {
        let target = files.read_link(resolved).map_err(anyhow::Error::new)?;
        line.push_str(" -> ");
        line.push_str(&String::from_utf8_lossy(&target));
    }
    Ok(line)
}

/// `cat IMAGE:/PATH`.
pub fn run_cat(args: &CatArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let image = open_image(&image_path, Access::ReadOnly, None)?;
    let mut files = image_files(&image, &image_path)?;
    let resolved = files.resolve_for_read(&image_path.path, true).map_err(in_image(&image_path))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match files.copy_out(&resolved, &mut out) {
        Ok(_) => out.flush().context("writing to stdout"),
        Err(CopyOutError::Files(error)) => Err(in_image(&image_path)(error)),
        Err(error) => Err(anyhow::Error::new(error).context(image_path.to_string())),
    }
}

/// `stat [-L] IMAGE:/PATH`.
pub fn run_stat(args: &StatArgs) -> anyhow::Result<()> {
    let image_path = parse_image_path(&args.path)?;
    let image = open_image(&image_path, Access::ReadOnly, None)?;
    let mut files = image_files(&image, &image_path)?;
    let resolved =
        files.resolve_for_read(&image_path.path, args.dereference).map_err(in_image(&image_path))?;
    let metadata = files.metadata(&resolved).map_err(in_image(&image_path))?;
    // FAT has no inodes; stat(1) on a mounted FAT shows numbers the kernel makes up.
    let inode = match &resolved.node {
        Some(Node::Inode(ino)) => ino.get().to_string(),
        _ => "-".to_string(),
    };
    let sectors = metadata.blocks * u64::from(files.block_size(&resolved)) / 512;

    let mut text = format!("  File: {}", image_path.path);
    if metadata.kind == FileKind::Symlink {
        let target = files.read_link(&resolved).map_err(in_image(&image_path))?;
        text.push_str(&format!(" -> {}", String::from_utf8_lossy(&target)));
    }
    text.push('\n');
    if resolved.device_path != image_path.path {
        text.push_str(&format!(" Found: {}\n", resolved.device_path));
    }
    text.push_str(&format!(
        "  Size: {:<15} Blocks: {:<10} {}\n",
        metadata.size,
        sectors,
        kind_name(metadata.kind)
    ));
    text.push_str(&format!(
        "Partition: {}   Path: {}   Inode: {inode}   Links: {}\n",
        resolved.partition_label, resolved.inner, metadata.links
    ));
    text.push_str(&format!(
        "Access: ({:04o}/{})  Uid: {}  Gid: {}\n",
        metadata.mode,
        mode_string(&metadata),
        metadata.uid,
        metadata.gid
    ));
    text.push_str(&format!("Access: {}\n", format_time(metadata.atime, true)));
    text.push_str(&format!("Modify: {}\n", format_time(metadata.mtime, true)));
    text.push_str(&format!("Change: {}\n", format_time(metadata.ctime, true)));
    let birth = metadata.crtime.map_or_else(|| "-".to_string(), |time| format_time(time, true));
    text.push_str(&format!(" Birth: {birth}\n"));
    print!("{text}");
    Ok(())
}

/// Names a file type as stat(1) does.
fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular => "regular file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symbolic link",
        FileKind::Other(0o020000) => "character special file",
        FileKind::Other(0o060000) => "block special file",
        FileKind::Other(0o010000) => "fifo",
        FileKind::Other(0o140000) => "socket",
        FileKind::Other(_) => "unknown type",
    }
}

/// Formats the type and permission column of `ls -l`, such as `-rw-r--r--` or `drwxr-xr-x`.
pub(super) fn mode_string(metadata: &Metadata) -> String {
    let type_char = match metadata.kind {
        FileKind::Regular => '-',
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::Other(0o020000) => 'c',
        FileKind::Other(0o060000) => 'b',
        FileKind::Other(0o010000) => 'p',
        FileKind::Other(0o140000) => 's',
        FileKind::Other(_) => '?',
    };
    let mode = metadata.mode;
    let mut text = String::with_capacity(10);
    text.push(type_char);
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (index, (special_bit, with_exec, without_exec)) in special.into_iter().enumerate() {
        let shift = 6 - 3 * index;
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        text.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        let exec = bits & 0o1 != 0;
        text.push(match (mode & special_bit != 0, exec) {
            (true, true) => with_exec,
            (true, false) => without_exec,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// Formats seconds since the epoch as a UTC date and time: `2023-11-14 22:13`, or with
/// `seconds` as `2023-11-14 22:13:20 UTC`.
pub(super) fn format_time(time: i64, seconds: bool) -> String {
    let days = time.div_euclid(86_400);
    let second_of_day = time.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    if seconds {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
    } else {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day), counting in eras
/// of 400 years, which repeat exactly.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_ERA: i64 = 146_097;
    // Shift the epoch to 0000-03-01, so that leap days fall at the end of a counted year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0, true), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000, true), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time(951_782_400, false), "2000-02-29 00:00");
        assert_eq!(format_time(-86_400, false), "1969-12-31 00:00");
    }

    #[test]
    fn mode_string_shows_special_bits() {
        let metadata = |kind, mode| Metadata {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            links: 1,
            atime: 0,
            ctime: 0,
            mtime: 0,
            crtime: None,
            blocks: 0,
        };
        assert_eq!(mode_string(&metadata(FileKind::Regular, 0o644)), "-rw-r--r--");
        assert_eq!(mode_string(&metadata(FileKind::Directory, 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&metadata(FileKind::Regular, 0o4750)), "-rwsr-x---");
        assert_eq!(mode_string(&metadata(FileKind::Symlink, 0o2644)), "lrw-r-Sr--");
    }
}
