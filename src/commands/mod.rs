//! The subcommands of the `mender-preauth` binary: argument definitions (clap derive) and one
//! module per subcommand that runs the job as a short sequence of calls into the library.

mod args;
mod file_args;
mod files;
mod inspect;
mod keygen;
mod output;
mod preauth;
mod progress;
mod provision;
mod provision_config;
mod records;
mod store;

use clap::{Parser, Subcommand};

pub use args::{IdentityArgs, InspectArgs, KeygenArgs, PreauthArgs, ProvisionArgs, StoreArgs};
pub use file_args::{
    CatArgs, ChmodArgs, ChownArgs, CpArgs, InstallArgs, LnArgs, LsArgs, MkdirArgs, RmArgs, StatArgs,
};
pub use inspect::WarningsFound;

/// Help heading of the options every subcommand takes, so that they are listed apart from the
/// subcommand's own options instead of among them.
const GLOBAL_HEADING: &str = "Global options";

/// Preauthorize Mender devices offline.
///
/// Writes the device key and the Mender client's database (mender-store) onto the data
/// partition of disk images, in place and unprivileged, and prints the identity and public key
/// as the JSON body of the Mender server's preauthorization API.
#[derive(Debug, Parser)]
#[command(name = "mender-preauth", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print each step on stderr; repeat (-vv) for more detail.
    #[arg(
        short,
        long,
        action = clap::ArgAction::Count,
        global = true,
        conflicts_with = "quiet",
        help_heading = GLOBAL_HEADING
    )]
    pub verbose: u8,

    /// Print only warnings and errors on stderr, for batch runs.
    #[arg(short, long, global = true, help_heading = GLOBAL_HEADING)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// A combination of arguments that clap does not check, such as --bits with a key type other
/// than RSA. The binary exits with status 2 for it, as for the usage errors clap finds.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Tells whether `error` comes from a combination of arguments that cannot work, for exit
/// status 2: a [`UsageError`], or a compressed image to be changed in place without --output.
pub fn is_usage_error(error: &anyhow::Error) -> bool {
    use crate::image::disk_image::ImageError;
    error.chain().any(|cause| {
        cause.is::<UsageError>()
            || matches!(cause.downcast_ref::<ImageError>(), Some(ImageError::CompressedInPlace { .. }))
    })
}

/// One subcommand and its arguments. One value exists per run, so its size does not matter.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Generate a device key pair, as Mender's keygen-client script does.
    Keygen(KeygenArgs),
    /// Print the identity data as the JSON string the Mender client sends.
    Identity(IdentityArgs),
    /// Print the preauthorization request body for an identity and a key.
    Preauth(PreauthArgs),
    /// Write the device key and mender-store into an image and print the preauthorization request.
    #[command(visible_alias = "modify", after_long_help = PROVISION_EXAMPLES)]
    Provision(ProvisionArgs),
    /// Show an image's partitions and roles, device key, mender-store and Mender configuration.
    #[command(after_long_help = INSPECT_JSON_SCHEMA)]
    Inspect(InspectArgs),
    /// List, read and change the records of mender-store on an image's data partition.
    #[command(after_long_help = STORE_HELP)]
    Store(StoreArgs),
    /// List a directory of an image (IMAGE:/PATH).
    #[command(after_long_help = FILE_PATHS_HELP)]
    Ls(LsArgs),
    /// Print a file of an image to stdout.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Cat(CatArgs),
    /// Show the type, size, mode, owner, times and partition of a path in an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Stat(StatArgs),
    /// Copy a file or tree into an image or out of it.
    #[command(after_long_help = CP_HELP)]
    Cp(CpArgs),
    /// Install a file into an image with the given mode and owner, or create a directory.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Install(InstallArgs),
    /// Remove a file, link or directory tree from an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Rm(RmArgs),
    /// Create a directory in an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Mkdir(MkdirArgs),
    /// Create a symbolic link in an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Ln(LnArgs),
    /// Change the permission bits of a path in an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Chmod(ChmodArgs),
    /// Change the owner and group of a path in an image.
    #[command(after_long_help = FILE_PATHS_HELP)]
    Chown(ChownArgs),
}

/// How the file commands map paths, shown at the end of their --help and man pages.
const FILE_PATHS_HELP: &str = "\
Paths are IMAGE:/PATH, as in mender-artifact, and name files as the running device sees them:
/data/... is on the data partition; /uboot/..., /boot/efi/... and /boot/grub/... are on the
boot partition; every other path is on the root filesystem. Writes to the root filesystem go to
rootfs A and also to rootfs B when it holds a filesystem, in one step; reads come from rootfs A.
A bare filesystem image has no mapping: the path names a file of that filesystem. Symbolic
links are followed inside the image: /var/lib/mender -> /data/mender leads to the data
partition. `..` never leaves the partition it is in. A FAT boot partition (FAT12/16/32, long
names) is read and written too; FAT stores no symbolic links, modes or owners, so ln -s, chmod,
chown and install -o/-g fail there, install -m and mkdir -m drop the mode, and ls -l shows 0755
and owner 0:0 (0555 for read-only files). FAT times are stored as UTC.

Every change is planned in memory and then written to every changed partition in one
all-or-nothing step, as provision does, or with --output NEW_IMAGE to a copy. A block map for
bmaptool next to the image (IMAGE.bmap) is then rewritten to match, or written as
NEW_IMAGE.bmap, unless --no-bmap is given. IMAGE may be compressed with gzip, xz, zstd or bzip2
(found by content); it is then read without being decompressed to disk, and changing it needs
--output. Exit status: 0 on success, 1 on any error (the image is then unchanged, unless the
message says it was written and only its block map was not), 2 on a usage error.";

/// The --help epilogue of `cp`.
const CP_HELP: &str = "\
Copying in: the new file gets the source's permission bits (0600 from standard input) and owner
0:0, as with mender-artifact cp. A file that exists is replaced in place, keeping its inode,
hard links and extended attributes; a symbolic link at the destination is replaced by the file.
Copying out: the host file gets the mode the file has in the image.

Examples:
  mender-preauth cp server.crt core-image.sdimg:/etc/mender/server.crt
  mender-preauth cp core-image.sdimg:/etc/mender/mender.conf .
  mender-preauth cp -r overlay/etc core-image.sdimg:/

Paths are IMAGE:/PATH, as in mender-artifact: /data/... is on the data partition; /uboot/...,
/boot/efi/... and /boot/grub/... are on the boot partition (ext2/3/4 only for now); every other
path is on the root filesystem, written to rootfs A and to rootfs B when it holds a filesystem.
Symbolic links are followed inside the image, and `..` never leaves a partition. IMAGE.bmap, a
block map for bmaptool, is rewritten after a copy into the image unless --no-bmap is given. Exit
status: 0 on success, 1 on any error (the image is then unchanged, unless the message says it was
written and only its block map was not), 2 on a usage error.";

/// Examples shown at the end of `provision --help` and in its man page.
const PROVISION_EXAMPLES: &str = "\
The data partition is the ext2/3/4 partition whose root holds mender/, else the one labelled
data. The device key is written to /mender/mender-agent.pem (mode 0600, owner 0:0), which the
client reads as /var/lib/mender/mender-agent.pem. In /mender/mender-store the records tied to a
previous key (authtoken, auth-token-cache-invalidator) are removed and all others kept. The
store is read and written in the LMDB layout of the target (32- or 64-bit little-endian, or
64-bit big-endian), read from an ELF binary on rootfs A or given with --target-layout; a store
in another layout is an error. The Artifact record options write artifact-name and
artifact-provides as the Mender client 3.x commits them after an install: stored provides
matching --clears-provides go, the new ones are added, and the name is written with them.

The client configuration options edit /etc/mender/mender.conf on rootfs A and on rootfs B when
it holds a filesystem, each file on its own: only the keys named change, every other key keeps
its value and place, and the file keeps its indentation. The file is written with mode 0600 and
owner 0:0; a file that is not valid JSON is an error. The Mender client 3.4 reads
/var/lib/mender/mender.conf (/data/mender/mender.conf) first and /etc/mender/mender.conf over
it. Without --identity and --identity-file, provision writes only the configuration and the
Artifact records: no key, no request. Every log line goes to stderr; stdout holds only the JSON
line.

Examples:
  Provision a copy of an image with a new key and preauthorize it once the run succeeded
  (curl runs only then, so a failed run posts no empty request):
    mender-preauth provision core-image.sdimg --output device-0001.sdimg \\
        --identity mac=02:12:61:13:6c:42 --preauth-out device-0001.json \\
      && curl --fail -X POST -H \"Authorization: Bearer $TOKEN\" \\
          -H \"Content-Type: application/json\" --data-binary @device-0001.json \\
          https://hosted.mender.io/api/management/v2/devauth/devices

  Install an existing key in place, identity from a file:
    mender-preauth provision core-image.sdimg --key device.pem --identity-file identity.txt

  Also record what a bootstrap Artifact would install, so the first update can be a delta:
    mender-preauth provision core-image.sdimg --key device.pem --identity-file identity.txt \\
        --bootstrap-provides

  Point the device at a hosted Mender organization as well:
    mender-preauth provision core-image.sdimg --key device.pem --identity-file identity.txt \\
        --server-url https://hosted.mender.io --tenant-token \"$TENANT_TOKEN\"

  Without an identity, only the client configuration is written, as mender-artifact modify does:
    mender-preauth modify core-image.sdimg --server-url https://mender.example.com \\
        --server-cert server.crt --verification-key artifact-verify-key.pem

A block map for bmaptool next to the image (IMAGE.bmap) is rewritten after the image, or written
as NEW_IMAGE.bmap with --output, unless --no-bmap is given.

Exit status: 0 on success, 1 on any error (the image is then unchanged, unless the message says
it was provisioned and only printing the request or writing the block map failed), 2 on a usage
error.";

/// The JSON form, the warning codes and the exit status of `inspect`, shown at the end of
/// `inspect --help` and in its man page.
const INSPECT_JSON_SCHEMA: &str = "\
With --json, one object, whose fields docs/inspect-json.md documents with their types and an
example (schema_version 1): the partition table and the partitions (number, start and size in
bytes, type, filesystem, label, UUID, role and what chose it), the target, the device key (type,
SHA-256 fingerprint of the public key, mode, owner), mender-store and its records, and the
Mender configuration: the Artifact name, the device type, the server URL and whether a tenant
token is set (merged from /etc/mender/mender.conf and /var/lib/mender/mender.conf as the Mender
client 3.4 merges them), the key file the client signs with, each mender.conf, and on each
rootfs the identity script and where /var/lib/mender leads. Neither the private key nor the
tenant token's value is printed.

Warnings, in the text form as \"warning: MESSAGE [CODE]\" and in JSON as {code, message}:
  partition-table    damaged partition table worked around
  boot-unreadable    a boot partition whose filesystem cannot be opened (a damaged FAT boot sector)
  no-data-partition  no data partition found
  key-missing        no device key on the data partition
  key-unparsable     a device key the client cannot parse
  key-mode           device key mode is not 0600
  key-owner          device key is not owned by 0:0
  store-layout       mender-store in another LMDB layout than the target's
  conf-invalid       a mender.conf the client cannot load (invalid JSON, wrong field type,
                     Servers beside ServerURL, a directory or symlink loop in its place)
  conf-key-path      mender.conf names another key file (Security.AuthPrivateKey, HttpsClient.Key)
  var-lib-mender     a rootfs whose /var/lib/mender does not lead to the data partition's mender/
  identity-script    a rootfs without an executable identity script
  rootfs-mismatch    rootfs A and B differ in server URL, tenant token, key file, /var/lib/mender
                     or identity script

Exit status: 0 on success, 1 on any error, 2 on a usage error. With --check, 3 when the report
has warnings, after printing it.";

/// Notes and examples shown at the end of `store --help` and in its man page.
const STORE_HELP: &str = "\
The store is /mender/mender-store on the data partition, which the device reads as
/var/lib/mender/mender-store. The Mender client 3.x keeps the installed Artifact's name in
artifact-name and its provides in artifact-provides (a JSON object of strings); without
artifact-name it reports the artifact_name of /etc/mender/artifact_info. Changes are written with
mode 0600 and owner 0:0, all or nothing, in the target's LMDB layout (not yet for 32-bit
big-endian targets); set and delete take --output, --dry-run and --target-layout as provision does.
set rejects keys containing '=' or control characters, and warns about keys the Mender client
3.4 does not use (artifact_name for artifact-name, say).

Examples:
  mender-preauth store list core-image.sdimg
  mender-preauth store get core-image.sdimg artifact-provides
  mender-preauth store set core-image.sdimg artifact-name release-2
  mender-preauth store delete core-image.sdimg authtoken --output device-0001.sdimg

set and delete rewrite IMAGE.bmap, a block map for bmaptool, as provision does.
Exit status: 0 on success, 1 on any error (the image is then unchanged, unless the message says
it was written and only its block map was not), 2 on a usage error.";

/// Runs the subcommand that `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Identity(args) => preauth::run_identity(&args),
        Command::Preauth(args) => preauth::run_preauth(&args),
        Command::Provision(args) => provision::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Store(args) => store::run(&args),
        Command::Ls(args) => files::run_ls(&args),
        Command::Cat(args) => files::run_cat(&args),
        Command::Stat(args) => files::run_stat(&args),
        Command::Cp(args) => files::run_cp(&args),
        Command::Install(args) => files::run_install(&args),
        Command::Rm(args) => files::run_rm(&args),
        Command::Mkdir(args) => files::run_mkdir(&args),
        Command::Ln(args) => files::run_ln(&args),
        Command::Chmod(args) => files::run_chmod(&args),
        Command::Chown(args) => files::run_chown(&args),
    }
}
