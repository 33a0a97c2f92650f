//! Argument definitions of every subcommand. The doc comments are the `--help` text and the
//! source of the man pages in `man/`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::image::partition_table::SectorSize;
use crate::mender::device_key::{MAX_RSA_BITS, MIN_RSA_BITS};
use crate::mender::provides::parse_provide_argument;
use crate::preauth::identity::IdentityData;

/// Key algorithm for generated device keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    /// RSA with --bits bits (default 3072); written as PKCS#1 PEM.
    Rsa,
    /// ECDSA on NIST P-256; written as PKCS#8 PEM.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// Ed25519; written as PKCS#8 PEM.
    Ed25519,
}

/// Version of the server API that a request body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiArg {
    /// POST /api/management/v2/devauth/devices: {"identity_data":{..},"pubkey":".."}.
    V2,
    /// The legacy admission API: {"device_identity":"..","key":".."}.
    V1,
}

/// Word size and byte order of the device, which decide the mender-store file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetLayoutArg {
    /// 64-bit little-endian (x86_64, aarch64, riscv64).
    #[value(name = "64le")]
    Le64,
    /// 32-bit little-endian (armhf, armel, i386, riscv32).
    #[value(name = "32le")]
    Le32,
    /// 64-bit big-endian (s390x, powerpc64).
    #[value(name = "64be")]
    Be64,
    /// 32-bit big-endian (mips, powerpc); the store is left alone.
    #[value(name = "32be")]
    Be32,
}

/// Logical sector size of a disk image, for images whose partition table does not show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SectorSizeArg {
    /// 512-byte sectors, as on most disks and SD cards.
    #[value(name = "512")]
    Bytes512,
    /// 4096-byte sectors ("4Kn"), as on some UFS and NVMe storage.
    #[value(name = "4096")]
    Bytes4096,
}

impl SectorSizeArg {
    /// Converts the argument to the sector size the partition table reader takes.
    pub fn sector_size(self) -> SectorSize {
        match self {
            SectorSizeArg::Bytes512 => SectorSize::Bytes512,
            SectorSizeArg::Bytes4096 => SectorSize::Bytes4096,
        }
    }
}

/// Sources of the identity attributes.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Identity attribute as KEY=VALUE; repeat for more. A key given several times becomes a
    /// list of values, in the order given.
    #[arg(short, long = "identity", value_name = "KEY=VALUE", value_parser = identity_argument)]
    pub identity: Vec<String>,

    /// File of KEY=VALUE lines, as printed by the device's mender-device-identity script; blank
    /// lines are skipped; "-" reads standard input. Read before any --identity values.
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<PathBuf>,
}

impl IdentityArgs {
    /// Returns true when --identity or --identity-file is given.
    pub fn is_given(&self) -> bool {
        !self.identity.is_empty() || self.identity_file.is_some()
    }
}

/// Arguments of `keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Key algorithm.
    #[arg(short = 't', long = "type", value_enum, default_value = "rsa")]
    pub key_type: KeyTypeArg,

    /// RSA key length in bits, 2048 to 8192 [default: 3072]; only with --type rsa.
    #[arg(short, long, value_name = "N", value_parser = rsa_bits)]
    pub bits: Option<usize>,

    /// Directory for the key files; created when missing.
    #[arg(short = 'o', long, value_name = "DIR", default_value = "keys-client-generated")]
    pub out_dir: PathBuf,

    /// Text put before the file names: PREFIXprivate.key and PREFIXpublic.key. May not contain '/'.
    #[arg(short, long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,

    /// Replace existing key files. Without it keygen refuses, because a replaced private key
    /// may belong to a device that is already preauthorized.
    #[arg(short, long)]
    pub force: bool,
}

/// Arguments of `preauth`.
#[derive(Debug, Clone, Args)]
#[group(id = "device_key", required = true, multiple = false)]
pub struct PreauthArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Device public key (PEM, "PUBLIC KEY" or "RSA PUBLIC KEY").
    #[arg(long, value_name = "FILE", group = "device_key")]
    pub pubkey: Option<PathBuf>,

    /// Device private key (PEM); only its public half is printed.
    #[arg(short, long, value_name = "FILE", group = "device_key")]
    pub key: Option<PathBuf>,

    #[command(flatten)]
    pub request: RequestArgs,
}

/// Shape of the printed preauthorization request.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// API version the request body is for.
    #[arg(long, value_enum, default_value = "v2")]
    pub api: ApiArg,

    /// Add "force":true (v2 only): preauthorize even if the device already has auth sets.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// Disk image (.sdimg, .biosimg: MBR; .uefiimg, .gptimg: GPT) or bare ext2/3/4 data
    /// filesystem (.dataimg, .ext4), possibly compressed with gzip, xz, zstd or bzip2.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Device private key to install (PEM: PKCS#1 or PKCS#8 RSA, PKCS#8 or SEC1 ECDSA P-256,
    /// PKCS#8 Ed25519). Without it a new key is generated as `keygen` would.
    #[arg(short, long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Algorithm of a generated key.
    #[arg(short = 't', long = "type", value_enum, default_value = "rsa", conflicts_with = "key")]
    pub key_type: KeyTypeArg,

    /// RSA length in bits of a generated key, 2048 to 8192 [default: 3072]; only with --type rsa.
    #[arg(short, long, value_name = "N", value_parser = rsa_bits, conflicts_with = "key")]
    pub bits: Option<usize>,

    /// Directory where a generated key pair is saved, as IMAGE-NAME-private.key and
    /// IMAGE-NAME-public.key after the output image's file name. Existing files are never
    /// overwritten.
    #[arg(long, value_name = "DIR", default_value = "keys-client-generated", conflicts_with = "key")]
    pub keys_dir: PathBuf,

    /// Write the provisioned image to this path and leave IMAGE unchanged; holes stay holes.
    /// NEW_IMAGE gets IMAGE's permission bits for its owner only (0600 for a 0644 image),
    /// because it contains the private key. NEW_IMAGE is compressed when its name ends in .gz,
    /// .xz, .zst or .bz2 and uncompressed otherwise. Required for a compressed IMAGE. Without
    /// --output IMAGE is changed in place.
    #[arg(short, long, value_name = "NEW_IMAGE")]
    pub output: Option<PathBuf>,

    /// Write the preauthorization JSON to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub preauth_out: Option<PathBuf>,

    /// Number of the data partition (as in p4), instead of finding it by content; 0 is the
    /// whole file of a bare filesystem image.
    #[arg(long, value_name = "N")]
    pub data_partition: Option<u32>,

    /// Logical sector size of IMAGE in bytes, instead of detecting it from where the GPT header
    /// lies or at which size the MBR's partitions hold filesystems. Ignored for a bare filesystem.
    #[arg(long, value_enum, value_name = "BYTES")]
    pub sector_size: Option<SectorSizeArg>,

    /// Device word size and byte order, which set the LMDB layout of mender-store, instead of
    /// reading them from the ELF header of /usr/bin/mender-update, /usr/bin/mender, /bin/busybox
    /// or /bin/sh on rootfs A. Needed for a bare data filesystem image. The store is converted
    /// to and from this layout; an existing store in another layout is an error. The 32-bit
    /// big-endian layout leaves the store alone, with a warning.
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub target_layout: Option<TargetLayoutArg>,

    /// Extended attribute to set on the key and store files written, as NAME=VALUE; repeat for
    /// more. NAME starts with user., trusted. or security. (for example security.selinux). VALUE
    /// is stored as the text given, without a trailing NUL, or as bytes when written as 0x and hex
    /// digits (0x0a00 is a newline and a NUL). Without --xattr, new files get the
    /// security.selinux label that most files in /mender carry (or that of /mender itself). With
    /// it, only the given attributes are set. Replaced files keep their other attributes.
    #[arg(long = "xattr", value_name = "NAME=VALUE", value_parser = xattr_argument)]
    pub xattrs: Vec<XattrArg>,

    /// Report what would change and write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub bmap: BmapArgs,

    #[command(flatten)]
    pub request: RequestArgs,

    // Last, because their help headings apply to every argument after them.
    #[command(flatten)]
    pub records: RecordsArgs,

    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The client configuration to write, as `mender-artifact modify` writes it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client configuration")]
pub struct ConfigArgs {
    /// Set ServerURL in /etc/mender/mender.conf on rootfs A and B, keeping every other key; the
    /// file is created when missing. --server-uri is accepted too, as in mender-artifact modify.
    #[arg(long, value_name = "URL", alias = "server-uri", value_parser = non_empty)]
    pub server_url: Option<String>,

    /// Set TenantToken in /etc/mender/mender.conf, the token of a hosted Mender organization.
    #[arg(long, value_name = "TOKEN", value_parser = non_empty)]
    pub tenant_token: Option<String>,

    /// Install FILE as /etc/mender/server.crt (mode 0644) and set ServerCertificate to it: the
    /// certificate the client checks the server's TLS certificate against.
    #[arg(long, value_name = "FILE")]
    pub server_cert: Option<PathBuf>,

    /// Install FILE as /etc/mender/artifact-verify-key.pem (mode 0644) and set
    /// ArtifactVerifyKey to it: the public key that signed Artifacts must verify with.
    #[arg(long, value_name = "FILE")]
    pub verification_key: Option<PathBuf>,

    /// Write the server settings (ServerURL, TenantToken, ServerCertificate) to
    /// /data/mender/mender.conf instead, which the client reads as /var/lib/mender/mender.conf,
    /// and the certificate to /data/mender/server.crt. Both survive rootfs updates. The same
    /// keys are removed from /etc/mender/mender.conf, which the client reads over that file.
    /// The verification key and artifact_info stay on the root filesystem.
    #[arg(long)]
    pub config_on_data: bool,
}

impl ConfigArgs {
    /// Returns true when any option requests a change to the client configuration.
    pub fn requested(&self) -> bool {
        self.server_url.is_some()
            || self.tenant_token.is_some()
            || self.server_cert.is_some()
            || self.verification_key.is_some()
    }
}

/// Rejects an Artifact name with a line break, which would end its line in artifact_info. An
/// empty name is rejected later, with the other checks of the Artifact records.
fn artifact_name_argument(argument: &str) -> Result<String, String> {
    if argument.contains(['\n', '\r']) {
        return Err("the name contains a line break, which artifact_info cannot hold".to_string());
    }
    Ok(argument.to_string())
}

/// Rejects an empty value, which the client would take as not set.
fn non_empty(argument: &str) -> Result<String, String> {
    if argument.is_empty() {
        return Err("the value is empty".to_string());
    }
    Ok(argument.to_string())
}

/// Artifact records to write into mender-store, as the Mender client stores them after
/// installing an Artifact.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Artifact records")]
pub struct RecordsArgs {
    /// Store NAME as the installed Artifact's name (the artifact-name record), and write
    /// /etc/mender/artifact_info (artifact_name=NAME) on rootfs A and B, as mender-artifact
    /// modify does; a bare data filesystem image gets only the record. With any of the options below and no --artifact-name, the stored name is
    /// kept, or when there is none, the artifact_name of /etc/mender/artifact_info on rootfs A
    /// is stored.
    #[arg(long, value_name = "NAME", value_parser = artifact_name_argument)]
    pub artifact_name: Option<String>,

    /// Add a provide to the artifact-provides record, as KEY:VALUE split at the first colon;
    /// repeat for more. Stored provides are kept unless --clears-provides matches them.
    #[arg(long = "provides", value_name = "KEY:VALUE", value_parser = provide_argument)]
    pub provides: Vec<String>,

    /// Remove the stored provides whose names match PATTERN before adding new ones. As in an
    /// Artifact's clears_artifact_provides, `*` matches any run of characters and `\*` a literal
    /// star. Repeat for more patterns; `*` alone clears all provides.
    #[arg(long = "clears-provides", value_name = "PATTERN")]
    pub clears_provides: Vec<String>,

    /// Add the provides a bootstrap Artifact of this image would install: rootfs-image.version
    /// (the Artifact name) and rootfs-image.checksum (SHA-256 of rootfs A's filesystem, the
    /// first block-count x block-size bytes of its partition, which equals the .ext4 file of a
    /// Yocto build). Clears rootfs-image.* and rootfs_image_checksum first. --provides values
    /// win over these.
    #[arg(long)]
    pub bootstrap_provides: bool,
}

impl RecordsArgs {
    /// Returns true when any option requests a change to the Artifact records.
    pub fn requested(&self) -> bool {
        self.artifact_name.is_some()
            || !self.provides.is_empty()
            || !self.clears_provides.is_empty()
            || self.bootstrap_provides
    }
}

/// Arguments of `inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Disk image (MBR or GPT) or bare ext2/3/4 filesystem image, possibly compressed with gzip,
    /// xz, zstd or bzip2 (found by content, read without decompressing to disk).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Print one JSON object instead of text (schema in docs/inspect-json.md).
    #[arg(long)]
    pub json: bool,

    /// Exit with status 3 after printing the report when it has warnings, so that a pipeline can
    /// stop on an image that would not come up preauthorized.
    #[arg(long)]
    pub check: bool,

    /// Logical sector size of IMAGE in bytes, instead of detecting it from where the GPT header
    /// lies or at which size the MBR's partitions hold filesystems. Ignored for a bare filesystem.
    #[arg(long, value_enum, value_name = "BYTES")]
    pub sector_size: Option<SectorSizeArg>,
}

/// Arguments of `store`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// One operation on mender-store.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Print every record as KEY=VALUE, in key order. Values of authentication records are not
    /// shown, and values that are not printable text are shown by size.
    List(StoreListArgs),
    /// Print the value of one record, followed by a newline.
    Get(StoreGetArgs),
    /// Create or replace one record; the store is created when missing.
    Set(StoreSetArgs),
    /// Remove records; naming a record that does not exist is an error.
    Delete(StoreDeleteArgs),
}

/// How to find the data partition of an image.
#[derive(Debug, Clone, Args)]
pub struct StoreImageArgs {
    /// Disk image or bare ext2/3/4 data filesystem image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Number of the data partition (as in p4), instead of finding it by content; 0 is the
    /// whole file of a bare filesystem image.
    #[arg(long, value_name = "N")]
    pub data_partition: Option<u32>,

    /// Logical sector size of IMAGE in bytes, instead of detecting it from where the GPT header
    /// lies or at which size the MBR's partitions hold filesystems. Ignored for a bare filesystem.
    #[arg(long, value_enum, value_name = "BYTES")]
    pub sector_size: Option<SectorSizeArg>,
}

/// How to write a changed store.
#[derive(Debug, Clone, Args)]
pub struct StoreWriteArgs {
    /// Write the changed image to this path and leave IMAGE unchanged; holes stay holes.
    /// NEW_IMAGE is compressed when its name ends in .gz, .xz, .zst or .bz2 and uncompressed
    /// otherwise. Required for a compressed IMAGE. Without it IMAGE is changed in place.
    #[arg(short, long, value_name = "NEW_IMAGE")]
    pub output: Option<PathBuf>,

    /// Device word size and byte order for mender-store, instead of reading them from the ELF
    /// header of a binary on the root filesystem.
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub target_layout: Option<TargetLayoutArg>,

    /// Report what would change and write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub bmap: BmapArgs,
}

/// Whether to rewrite bmaptool's block map next to a changed image.
#[derive(Debug, Clone, Default, Args)]
pub struct BmapArgs {
    /// Leave IMAGE.bmap, bmaptool's block map, as it is. Without this option the map of a changed
    /// image is rewritten from the image after it was written (with --output, as NEW_IMAGE.bmap),
    /// so that `bmaptool copy` checks the new contents.
    #[arg(long)]
    pub no_bmap: bool,
}

/// Arguments of `store list`.
#[derive(Debug, Clone, Args)]
pub struct StoreListArgs {
    #[command(flatten)]
    pub image: StoreImageArgs,

    /// Print one JSON array of {key, size, value, secret} instead of text; value is null for
    /// authentication records and for values that are not UTF-8 text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `store get`.
#[derive(Debug, Clone, Args)]
pub struct StoreGetArgs {
    #[command(flatten)]
    pub image: StoreImageArgs,

    /// Key of the record, e.g. artifact-name or artifact-provides.
    #[arg(value_name = "KEY")]
    pub key: String,
}

/// Arguments of `store set`.
#[derive(Debug, Clone, Args)]
pub struct StoreSetArgs {
    #[command(flatten)]
    pub image: StoreImageArgs,

    /// Key of the record. artifact-name must not be empty and artifact-provides must be a JSON
    /// object of strings, because the Mender client fails on anything else.
    #[arg(value_name = "KEY")]
    pub key: String,

    /// Value to store, as the bytes of the argument.
    #[arg(value_name = "VALUE")]
    pub value: String,

    #[command(flatten)]
    pub write: StoreWriteArgs,
}

/// Arguments of `store delete`.
#[derive(Debug, Clone, Args)]
pub struct StoreDeleteArgs {
    #[command(flatten)]
    pub image: StoreImageArgs,

    /// Keys of the records to remove.
    #[arg(value_name = "KEY", required = true)]
    pub keys: Vec<String>,

    #[command(flatten)]
    pub write: StoreWriteArgs,
}

/// Checks one --identity value as the identity parser does, so that a malformed one is a usage
/// error.
fn identity_argument(argument: &str) -> Result<String, String> {
    IdentityData::from_args(&[argument]).map_err(|error| error.to_string())?;
    Ok(argument.to_string())
}

/// Parses --bits: an RSA key length the key generator accepts.
fn rsa_bits(argument: &str) -> Result<usize, String> {
    let bits: usize = argument.parse().map_err(|_| format!("{argument:?} is not a number of bits"))?;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!("RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported"));
    }
    Ok(bits)
}

/// Checks one --provides value as the provides parser does, so that a malformed one is a usage
/// error.
fn provide_argument(argument: &str) -> Result<String, String> {
    parse_provide_argument(argument).map_err(|error| error.to_string())?;
    Ok(argument.to_string())
}

/// One extended attribute given with --xattr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrArg {
    pub name: String,
    pub value: Vec<u8>,
}

/// Prefixes of the attribute names --xattr accepts, the namespaces the ext layer writes.
const XATTR_PREFIXES: [&str; 3] = ["user.", "trusted.", "security."];

/// Parses --xattr NAME=VALUE, with VALUE as text or as 0x and hex digits.
fn xattr_argument(argument: &str) -> Result<XattrArg, String> {
    let Some((name, text)) = argument.split_once('=') else {
        return Err("expected NAME=VALUE".to_string());
    };
    if !XATTR_PREFIXES.iter().any(|prefix| name.len() > prefix.len() && name.starts_with(prefix)) {
        return Err(format!("the name {name:?} must start with user., trusted. or security."));
    }
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => decode_hex(hex)?,
        None => text.as_bytes().to_vec(),
    };
    Ok(XattrArg { name: name.to_string(), value })
}

/// Decodes pairs of hex digits into bytes.
fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("the hex value after 0x has an odd number of digits ({})", hex.len()));
    }
    let digits: Vec<u32> = hex
        .chars()
        .map(|digit| digit.to_digit(16).ok_or_else(|| format!("{digit:?} is not a hex digit")))
        .collect::<Result<_, _>>()?;
    Ok(digits.chunks(2).map(|pair| pair.iter().fold(0u8, |byte, &digit| byte << 4 | digit as u8)).collect())
}
