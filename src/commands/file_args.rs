//! Argument definitions of the file commands (`ls`, `cat`, `stat`, `cp`, `install`, `rm`,
//! `mkdir`, `ln`, `chmod`, `chown`). The doc comments are the `--help` text and the source of
//! their man pages.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use crate::commands::args::{BmapArgs, SectorSizeArg};

/// Output path and sector size options of the modifying file commands.
#[derive(Debug, Clone, Default, Args)]
pub struct ImageWriteArgs {
    /// Write the changed image to this path and leave IMAGE unchanged; holes stay holes.
    /// NEW_IMAGE is compressed when its name ends in .gz, .xz, .zst or .bz2 and uncompressed
    /// otherwise. Required for a compressed IMAGE. Without it IMAGE is changed in place.
    /// NEW_IMAGE keeps only the owner's permission bits of IMAGE, because an image may hold a
    /// device key.
    #[arg(long, value_name = "NEW_IMAGE")]
    pub output: Option<PathBuf>,

    /// Logical sector size of IMAGE in bytes, instead of detecting it from where the GPT header
    /// lies or at which size the MBR's partitions hold filesystems.
    #[arg(long, value_enum, value_name = "BYTES")]
    pub sector_size: Option<SectorSizeArg>,

    #[command(flatten)]
    pub bmap: BmapArgs,
}

/// Arguments of `ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Long listing: type and permissions, links, owner, group, size, modification time (UTC)
    /// and name, with the target of symbolic links.
    #[arg(short = 'l')]
    pub long: bool,

    /// List subdirectories recursively; symbolic links to directories are not followed, mount
    /// points (such as /data on the root filesystem) are.
    #[arg(short = 'R', long = "recursive")]
    pub recursive: bool,

    /// Directory or file to list, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,
}

/// Arguments of `cat`.
#[derive(Debug, Clone, Args)]
pub struct CatArgs {
    /// File to print, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,
}

/// Arguments of `stat`.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// Follow a symbolic link in the last component and show what it points to.
    #[arg(short = 'L', long = "dereference")]
    pub dereference: bool,

    /// File, directory or link to show, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,
}

/// Arguments of `cp`.
#[derive(Debug, Clone, Args)]
pub struct CpArgs {
    /// Copy directories with everything below them; symbolic links are copied as links.
    #[arg(short = 'r', short_alias = 'R', long = "recursive")]
    pub recursive: bool,

    /// Host file ("-" for standard input) or IMAGE:/PATH to copy from.
    #[arg(value_name = "SRC")]
    pub source: OsString,

    /// IMAGE:/PATH or host path to copy to. An existing directory, or a path ending in /,
    /// receives the source under its own name.
    #[arg(value_name = "DST")]
    pub destination: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Permission bits of the installed file, in octal (such as 0644); required for files, as
    /// in mender-artifact. With -d it sets the last directory's mode (default 0755); missing
    /// parents get 0755.
    #[arg(short = 'm', long = "mode", value_name = "MODE", required_unless_present = "directory")]
    pub mode: Option<String>,

    /// Owner of the installed file: a user ID, or a name from the image's /etc/passwd [default: 0].
    #[arg(short = 'o', long = "owner", value_name = "USER")]
    pub owner: Option<String>,

    /// Group of the installed file: a group ID, or a name from the image's /etc/group [default: 0].
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,

    /// Create the directory IMAGE:/DIR and every missing directory above it instead of
    /// installing a file.
    #[arg(short = 'd', long = "directory")]
    pub directory: bool,

    /// SRC IMAGE:/DST, or with -d IMAGE:/DIR.
    #[arg(value_name = "PATHS", num_args = 1..=2, required = true)]
    pub paths: Vec<OsString>,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `rm`.
#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// Remove directories and everything below them.
    #[arg(short = 'r', short_alias = 'R', long = "recursive")]
    pub recursive: bool,

    /// Succeed without changes when the path does not exist.
    #[arg(short = 'f', long = "force")]
    pub force: bool,

    /// File, link or directory to remove, as IMAGE:/PATH. A symbolic link is removed itself.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `mkdir`.
#[derive(Debug, Clone, Args)]
pub struct MkdirArgs {
    /// Create missing parent directories too, and succeed when the directory exists.
    #[arg(short = 'p', long = "parents")]
    pub parents: bool,

    /// Permission bits of the new directory, in octal; parents made by -p get 0755.
    #[arg(short = 'm', long = "mode", value_name = "MODE", default_value = "0755")]
    pub mode: String,

    /// Directory to create, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `ln`.
#[derive(Debug, Clone, Args)]
pub struct LnArgs {
    /// Make a symbolic link; required, because hard links are not supported by this command.
    #[arg(short = 's', long = "symbolic", required = true)]
    pub symbolic: bool,

    /// Replace an existing file or link at the link's path.
    #[arg(short = 'f', long = "force")]
    pub force: bool,

    /// Target stored in the link, as given: an absolute target is resolved on the device, so
    /// /data/mender names the data partition's /mender.
    #[arg(value_name = "TARGET")]
    pub target: OsString,

    /// Link to create, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/LINK")]
    pub link: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `chmod`.
#[derive(Debug, Clone, Args)]
pub struct ChmodArgs {
    /// Change everything below a directory too, without following symbolic links.
    #[arg(short = 'R', long = "recursive")]
    pub recursive: bool,

    /// New permission bits in octal (such as 0755), or symbolic changes as chmod(1) takes them
    /// (such as u+x,go-w or a=rX).
    #[arg(value_name = "MODE")]
    pub mode: String,

    /// File or directory to change, as IMAGE:/PATH; a symbolic link is followed.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}

/// Arguments of `chown`.
#[derive(Debug, Clone, Args)]
pub struct ChownArgs {
    /// Change everything below a directory too, without following symbolic links.
    #[arg(short = 'R', long = "recursive")]
    pub recursive: bool,

    /// Change a symbolic link itself instead of what it points to (-h of chown(1); -h here is
    /// --help).
    #[arg(long = "no-dereference")]
    pub no_dereference: bool,

    /// New owner as USER, USER:GROUP or :GROUP; IDs, or names from the image's /etc/passwd
    /// and /etc/group.
    #[arg(value_name = "OWNER[:GROUP]")]
    pub owner: String,

    /// File or directory to change, as IMAGE:/PATH.
    #[arg(value_name = "IMAGE:/PATH")]
    pub path: OsString,

    #[command(flatten)]
    pub write: ImageWriteArgs,
}
