//! `mender-preauth provision`: write the device key and mender-store onto an image's data
//! partition and print the preauthorization request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::commands::UsageError;
use crate::commands::args::{BmapArgs, ProvisionArgs, SectorSizeArg, TargetLayoutArg, XattrArg};
use crate::commands::output::{LineOutput, escape_control, key_type, load_private_key, write_time};
use crate::commands::provision_config as config;
use crate::commands::records::records_update;
use crate::fs::ext::Ext;
use crate::image::bmap;
use crate::image::compressed::Compression;
use crate::image::disk_image::{Access, DiskImage, reject_compressed, same_file};
use crate::image::partition_table::Partition;
use crate::image::sparse_copy::CopyMethod;
use crate::mender::data_partition::{
    self, DataPartitionChanges, KeyChange, StoreChange, StorePolicy, XattrChange, XattrPolicy,
};
use crate::mender::device_key::{DevicePrivateKey, write_key_pair};
use crate::mender::image_files::{ImageFiles, PartitionWrites};
use crate::mender::records::{ROOTFS_VERSION_PROVIDE, RecordsUpdate};
use crate::mender::roles::{self, ClassifiedPartition, Role, partition_name};
use crate::mender::rootfs::{DetectedTarget, detect_target};
use crate::mender::store::StoreLayout;

/// The device key and whether this run generated it.
struct DeviceKey {
    key: DevicePrivateKey,
    generated: bool,
}

/// Provisions the image and prints the preauthorization request. Without an identity but with
/// client configuration options, only writes the configuration (see [`config::run_config_only`]).
pub fn run(args: &ProvisionArgs) -> anyhow::Result<()> {
    let client_config = config::client_config(&args.config, &args.records)?;
    if !args.identity.is_given() && !client_config.is_empty() {
        return config::run_config_only(args, &client_config);
    }
    let identity = args.identity.load()?;
    let xattr_policy = xattr_policy(&args.xattrs)?;
    let time = write_time()?;
    check_output_path(args.output.as_deref(), &args.image)?;
    if access(args) == Access::ReadWrite {
        reject_compressed(&args.image)?;
    }
    let device_key = obtain_key(args)?;
    let request = args.request.request_json(&identity, &device_key.key.public_key())?;
    let key_files = generated_key_files(args, &device_key)?;

    let sector_size = args.sector_size.map(SectorSizeArg::sector_size);
    let image = DiskImage::open_with_sector_size(&args.image, access(args), sector_size)?;
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{}: reading partitions", args.image.display()))?;
    let data = roles::find_data_partition(&partitions, args.data_partition)
        .with_context(|| args.image.display().to_string())?;
    log::debug!("data partition: {}", describe(data));
    let store_policy = store_policy(&image, &partitions, args.target_layout)?;
    let records = records_update(&args.records, &image, &partitions)?;
    if let (false, StorePolicy::LeaveAlone { reason }) = (records.is_empty(), &store_policy) {
        bail!("{}: cannot write the Artifact records: {reason}", args.image.display());
    }

    let key_pem = device_key.key.to_device_pem()?;
    let mut files =
        ImageFiles::new(&image).with_context(|| format!("{}: reading partitions", args.image.display()))?;
    let changes =
        plan(&mut files, &image, data, key_pem.as_bytes(), &store_policy, &records, &xattr_policy, time)?;
    let config_files = config::plan_config(&mut files, &image, Some(data), &client_config, time)?;
    let (writes, changed) = files.into_writes().with_context(|| args.image.display().to_string())?;
    let path = args.image.display();
    if let (Some(version), Some(name)) = (&changes.stale_rootfs_version, &args.records.artifact_name) {
        log::warn!(
            "{path}: {ROOTFS_VERSION_PROVIDE} stays {version:?} although the Artifact name is now {name:?}; \
             add --bootstrap-provides or --provides {ROOTFS_VERSION_PROVIDE}:{name} to change it"
        );
    }
    if let StorePolicy::LeaveAlone { reason } = &store_policy {
        let verb = if args.dry_run { "would leave" } else { "left" };
        log::warn!("{path}: {verb} {} alone: {reason}", data_partition::STORE_PATH);
    }

    if args.dry_run {
        log::info!(
            "{path}: dry run, nothing was written: {}{}; {}",
            summarize(&changes, &device_key, Tense::Planned),
            config::summarize(&config_files, Tense::Planned),
            config::describe_bytes(&writes, &changed)
        );
        if device_key.generated {
            log::info!("{path}: dry run: no request printed, because the generated key is not kept");
            return Ok(());
        }
        return LineOutput::open(args.preauth_out.as_deref())?.write_line(&request);
    }

    let request_output = LineOutput::open(args.preauth_out.as_deref())?;
    let saved_key = match &key_files {
        Some(files) => Some(save_generated_key(&device_key.key, files)?),
        None => None,
    };
    let written = match commit_all(&image, &writes, args.output.as_deref(), &args.bmap) {
        Ok(written) => written,
        Err(error) => {
            request_output.discard();
            // The image does not carry the generated key, so a saved copy would only mislead.
            if let Some((private_path, public_path)) = &saved_key {
                let _ = std::fs::remove_file(private_path);
                let _ = std::fs::remove_file(public_path);
            }
            return Err(error);
        }
    };

    log::info!(
        "{}: {}{}",
        written.display(),
        summarize(&changes, &device_key, Tense::Done),
        config::summarize(&config_files, Tense::Done)
    );
    if let Some((private_path, public_path)) = &saved_key {
        log::info!(
            "saved the generated key pair as {} and {}",
            private_path.display(),
            public_path.display()
        );
    }
    request_output.write_line(&request).with_context(|| {
        let mut message = format!("{} was provisioned, but writing the request failed", written.display());
        if let Some((private_path, _)) = &saved_key {
            message.push_str(&format!(" (the generated key is saved as {})", private_path.display()));
        }
        message
    })
}

/// Checks --output before any work: its directory must exist, and it must not name `image`.
pub(super) fn check_output_path(output: Option<&Path>, image: &Path) -> anyhow::Result<()> {
    let Some(output) = output else { return Ok(()) };
    if same_file(output, image) {
        let compressed =
            std::fs::File::open(image).ok().and_then(|file| Compression::detect_file(&file).ok().flatten());
        let hint = match compressed {
            Some(_) => "give another path, because a compressed image cannot be changed in place",
            None => "leave --output out to change IMAGE in place",
        };
        bail!("{}: --output names the input image itself; {hint}", output.display());
    }
    if let Ok(metadata) = std::fs::metadata(output)
        && !metadata.is_file()
        && !metadata.is_dir()
    {
        bail!("{}: is not a regular file; --output writes a new image file there", output.display());
    }
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        bail!("{}: directory {} does not exist", output.display(), directory.display());
    }
    if output.is_dir() {
        bail!("{}: is a directory; give the path of the image file to write", output.display());
    }
    Ok(())
}

/// In-place runs open the image for writing; dry runs and runs with --output only read it.
fn access(args: &ProvisionArgs) -> Access {
    if args.output.is_none() && !args.dry_run { Access::ReadWrite } else { Access::ReadOnly }
}

fn obtain_key(args: &ProvisionArgs) -> anyhow::Result<DeviceKey> {
    match &args.key {
        Some(path) => Ok(DeviceKey { key: load_private_key(path)?, generated: false }),
        None => {
            let key = DevicePrivateKey::generate(key_type(args.key_type, args.bits)?)?;
            Ok(DeviceKey { key, generated: true })
        }
    }
}

/// Location of a generated key pair: `DIR/PREFIXprivate.key` and `DIR/PREFIXpublic.key`.
struct KeyFiles {
    dir: PathBuf,
    prefix: String,
}

impl KeyFiles {
    fn paths(&self) -> [PathBuf; 2] {
        [
            self.dir.join(format!("{}private.key", self.prefix)),
            self.dir.join(format!("{}public.key", self.prefix)),
        ]
    }
}

/// Names the files for a generated key pair after the image written. Existing files are an
/// error found before anything is written: a saved key may already be preauthorized, and
/// overwriting it would lose it.
fn generated_key_files(args: &ProvisionArgs, device_key: &DeviceKey) -> anyhow::Result<Option<KeyFiles>> {
    if !device_key.generated || args.dry_run {
        return Ok(None);
    }
    let written = args.output.as_deref().unwrap_or(&args.image);
    let name = written.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let prefix = if stem.is_empty() { String::new() } else { format!("{stem}-") };

    let files = KeyFiles { dir: args.keys_dir.clone(), prefix };
    for path in files.paths() {
        if path.exists() {
            bail!(
                "{}: key file already exists; move it away, or pass the key to install with --key",
                path.display()
            );
        }
    }
    Ok(Some(files))
}

/// Saves a generated key pair and returns the paths of its private and public halves.
fn save_generated_key(key: &DevicePrivateKey, files: &KeyFiles) -> anyhow::Result<(PathBuf, PathBuf)> {
    write_key_pair(&files.dir, &files.prefix, key).with_context(|| files.dir.display().to_string())
}

/// Chooses what to do with mender-store from the target's word size and byte order: given by
/// --target-layout, else read from a binary on rootfs A. A --target-layout that contradicts the
/// binary found is followed, with a warning.
pub(super) fn store_policy(
    image: &DiskImage,
    partitions: &[ClassifiedPartition],
    requested: Option<TargetLayoutArg>,
) -> anyhow::Result<StorePolicy> {
    if let Some(layout) = requested {
        let layout = requested_store_layout(layout);
        log::debug!("target: {layout}, from --target-layout");
        // The option is there to override detection, so a rootfs that cannot be read is no error.
        if let Ok(Ok(found)) = find_target(image, partitions) {
            let detected = StoreLayout::of_target(&found.target.layout);
            if detected != layout {
                log::warn!(
                    "{}: --target-layout gives {layout}, but {} on {} is {}; following --target-layout",
                    image.path().display(),
                    found.target.binary,
                    found.partition,
                    found.target.layout.describe()
                );
            }
        }
        return Ok(policy_for_layout(layout, &format!("the target is {layout} (--target-layout)")));
    }

    let found = match find_target(image, partitions)? {
        Ok(found) => found,
        Err(reason) => return Ok(StorePolicy::LeaveAlone { reason }),
    };
    log::debug!(
        "target: {}, from {} on {}",
        found.target.layout.describe(),
        found.target.binary,
        found.partition
    );
    let layout = StoreLayout::of_target(&found.target.layout);
    Ok(policy_for_layout(layout, &format!("the target is {}", found.target.layout.describe())))
}

/// The target's layout as read from a binary on rootfs A.
pub(super) struct FoundTarget {
    pub target: DetectedTarget,
    /// The partition it was read from, as listings name it.
    pub partition: String,
}

/// Reads the target's layout from a binary on rootfs A. Returns why there is none as the inner
/// error, and fails only when rootfs A cannot be read.
pub(super) fn find_target(
    image: &DiskImage,
    partitions: &[ClassifiedPartition],
) -> anyhow::Result<Result<FoundTarget, String>> {
    let Some(rootfs) = roles::find_role(partitions, Role::RootfsA) else {
        return Ok(Err(format!(
            "the image has no root filesystem to read the target's word size from{}; \
             give --target-layout to write it",
            roles::describe_unopened_ext(partitions)
        )));
    };
    let partition = partition_name(&rootfs.partition);
    let context = || format!("{}: {partition}", image.path().display());
    let ext = Ext::open(image.volume(&rootfs.partition)).with_context(context)?;
    match detect_target(&ext).with_context(context)? {
        Some(target) => Ok(Ok(FoundTarget { target, partition })),
        None => Ok(Err(format!(
            "no ELF binary found on the root filesystem ({partition}) to read the target's word size from; \
             give --target-layout to write it"
        ))),
    }
}

fn requested_store_layout(layout: TargetLayoutArg) -> StoreLayout {
    match layout {
        TargetLayoutArg::Le64 => StoreLayout::LE64,
        TargetLayoutArg::Le32 => StoreLayout::LE32,
        TargetLayoutArg::Be64 => StoreLayout::BE64,
        TargetLayoutArg::Be32 => StoreLayout::BE32,
    }
}

/// Writes the store in `layout`, except in the 32-bit big-endian layout, which the conversion
/// supports but no 32-bit big-endian LMDB has checked yet (Debian 12 has no such port to test
/// with). `target` describes the target for the warning.
fn policy_for_layout(layout: StoreLayout, target: &str) -> StorePolicy {
    if layout == StoreLayout::BE32 {
        return StorePolicy::LeaveAlone {
            reason: format!(
                "{target}, and mender-store is not written in the 32-bit big-endian layout yet, because no \
                 32-bit big-endian LMDB has checked it"
            ),
        };
    }
    StorePolicy::Reconcile { layout }
}

/// Plans every change on the data partition in memory, in `files`, which hands back the writes.
#[allow(clippy::too_many_arguments)]
fn plan(
    files: &mut ImageFiles,
    image: &DiskImage,
    data: &ClassifiedPartition,
    key_pem: &[u8],
    store_policy: &StorePolicy,
    records: &RecordsUpdate,
    xattr_policy: &XattrPolicy,
    time: i64,
) -> anyhow::Result<DataPartitionChanges> {
    let context = || data_context(image, data);
    let ext = files.partition_ext(&data.partition).with_context(context)?;
    data_partition::provision(ext, key_pem, store_policy, records, xattr_policy, time).with_context(context)
}

/// Names the data partition in messages. A bare filesystem image is the data partition
/// itself, so only its path is named.
pub(super) fn data_context(image: &DiskImage, data: &ClassifiedPartition) -> String {
    match data.partition.number {
        0 => image.path().display().to_string(),
        _ => format!("{}: {}", image.path().display(), partition_name(&data.partition)),
    }
}

/// Whether a summary describes changes about to be made or made already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tense {
    Planned,
    Done,
}

impl Tense {
    /// Picks the form of a verb: "would create" or "created".
    pub(super) fn verb(self, planned: &'static str, done: &'static str) -> &'static str {
        match self {
            Tense::Planned => planned,
            Tense::Done => done,
        }
    }
}

/// Describes the changes in one phrase, for the line printed when the run ends.
fn summarize(changes: &DataPartitionChanges, device_key: &DeviceKey, tense: Tense) -> String {
    let mut parts = Vec::new();
    if changes.created_mender_dir {
        parts.push(format!("{} {}", tense.verb("would create", "created"), data_partition::MENDER_DIR));
    }
    let key_verb = match changes.key {
        KeyChange::Created => tense.verb("would write", "wrote"),
        KeyChange::Replaced => tense.verb("would replace", "replaced"),
    };
    parts.push(format!(
        "{key_verb} {} ({}, SHA-256 {})",
        data_partition::DEVICE_KEY_PATH,
        device_key.key.description(),
        device_key.key.public_key().fingerprint_sha256()
    ));
    parts.push(describe_store_change(&changes.store, tense));
    match &changes.xattrs {
        XattrChange::Unchanged => {}
        XattrChange::InheritedLabel(label) => parts.push(format!(
            "{} the new files {}={:?} as in {}",
            tense.verb("would label", "labelled"),
            data_partition::SELINUX_XATTR,
            String::from_utf8_lossy(label.strip_suffix(b"\0").unwrap_or(label)),
            data_partition::MENDER_DIR
        )),
        XattrChange::Set(names) => parts.push(format!(
            "{} {} on the files written",
            tense.verb("would set", "set"),
            names.join(", ")
        )),
    }
    parts.join(", ")
}

/// Describes a change to mender-store in one phrase.
pub(super) fn describe_store_change(change: &StoreChange, tense: Tense) -> String {
    let store = data_partition::STORE_PATH;
    let keys = |keys: &[String]| keys.iter().map(|key| escape_control(key)).collect::<Vec<_>>();
    match change {
        StoreChange::Created { set } if set.is_empty() => {
            format!("{} an empty {store}", tense.verb("would create", "created"))
        }
        StoreChange::Created { set } => {
            format!("{} {store} with {}", tense.verb("would create", "created"), keys(set).join(", "))
        }
        StoreChange::Updated { removed, set } => {
            let mut changes = Vec::new();
            if !removed.is_empty() {
                let verb = tense.verb("would remove", "removed");
                changes.push(format!("{verb} {} from {store}", keys(removed).join(" and ")));
            }
            if !set.is_empty() {
                changes.push(format!(
                    "{} {} in {store}",
                    tense.verb("would set", "set"),
                    keys(set).join(", ")
                ));
            }
            changes.join(", ")
        }
        StoreChange::Unchanged => format!("{} {store} as it was", tense.verb("would keep", "kept")),
        StoreChange::LeftAlone { .. } => format!("{} {store} alone", tense.verb("would leave", "left")),
    }
}

/// Turns the --xattr arguments into the attributes to set. Without any, new files inherit the
/// SELinux label of /mender's files.
pub(super) fn xattr_policy(arguments: &[XattrArg]) -> anyhow::Result<XattrPolicy> {
    if arguments.is_empty() {
        return Ok(XattrPolicy::InheritLabel);
    }
    let mut attributes: Vec<(String, Vec<u8>)> = Vec::new();
    for XattrArg { name, value } in arguments {
        if attributes.iter().any(|(existing, _)| existing == name) {
            return Err(UsageError(format!("--xattr {name} is given more than once")).into());
        }
        attributes.push((name.clone(), value.clone()));
    }
    Ok(XattrPolicy::Set(attributes))
}

/// Applies the planned writes in place, or to a copy at `output`, then rewrites the block map
/// next to the image unless `bmap` turns it off, and returns the path written.
pub(super) fn commit(
    image: &DiskImage,
    partition: &Partition,
    writes: &BTreeMap<u64, Vec<u8>>,
    output: Option<&Path>,
    bmap: &BmapArgs,
) -> anyhow::Result<PathBuf> {
    commit_refs(image, &[(*partition, writes)], output, bmap)
}

/// Applies the planned writes of several partitions in place, or to a copy at `output`, in one
/// all-or-nothing step, then rewrites the block map next to the image unless `bmap` says not
/// to, and returns the path written.
pub(super) fn commit_all(
    image: &DiskImage,
    changes: &[PartitionWrites],
    output: Option<&Path>,
    bmap: &BmapArgs,
) -> anyhow::Result<PathBuf> {
    let changes: Vec<(Partition, &BTreeMap<u64, Vec<u8>>)> =
        changes.iter().map(|(partition, writes)| (*partition, writes)).collect();
    commit_refs(image, &changes, output, bmap)
}

fn commit_refs(
    image: &DiskImage,
    changes: &[(Partition, &BTreeMap<u64, Vec<u8>>)],
    output: Option<&Path>,
    bmap: &BmapArgs,
) -> anyhow::Result<PathBuf> {
    let written = output.unwrap_or(image.path());
    let pending_map = bmap::prepare_unless(bmap.no_bmap, image.path(), written)?;
    let written = write_all_partitions(image, changes, output)?;
    bmap::finish(pending_map, &written)?;
    Ok(written)
}

fn write_all_partitions(
    image: &DiskImage,
    changes: &[(Partition, &BTreeMap<u64, Vec<u8>>)],
    output: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    match output {
        Some(output) if !same_file(output, image.path()) => {
            let method = image.apply_all_to_copy(changes, output)?;
            let how = match method {
                CopyMethod::Reflink => "sharing its blocks (reflink)",
                CopyMethod::DataRanges => "copying its data and keeping holes as holes",
            };
            log::debug!("copied {} to {} by {how}", image.path().display(), output.display());
            Ok(output.to_path_buf())
        }
        _ => {
            image.apply_all(changes)?;
            Ok(image.path().to_path_buf())
        }
    }
}

fn describe(data: &ClassifiedPartition) -> String {
    let mut text = format!("{} ({}", partition_name(&data.partition), data.filesystem.name());
    let label = data.filesystem.label();
    if !label.is_empty() {
        text.push_str(&format!(", label {label:?}"));
    }
    text.push(')');
    if !data.reason.is_empty() {
        text.push_str(&format!(", chosen by content: {}", data.reason));
    }
    text
}
