//! `mender-preauth inspect`: show an image's partitions, their roles, the device key, the
//! mender-store records and the Mender client's configuration, with warnings about states that
//! make a preauthorized device show up as pending. Text is for people; the JSON object, whose
//! schema `docs/inspect-json.md` documents, is for scripts.

mod text;

use anyhow::Context;
use serde::Serialize;

use crate::commands::args::{InspectArgs, SectorSizeArg};
use crate::commands::output::print_line;
use crate::fs::ext::Ext;
use crate::image::compressed::Compression;
use crate::image::disk_image::{Access, DiskImage};
use crate::image::volume::Volume;
use crate::mender::data_partition::{DEVICE_KEY_PATH, STORE_PATH};
use crate::mender::device_key::DevicePrivateKey;
use crate::mender::facts::{self, MenderFacts, Warning};
use crate::mender::roles::{self, ClassifiedPartition, Filesystem, Role, partition_name};
use crate::mender::rootfs::detect_target;
use crate::mender::store::{self, StoreLayout};
use text::render_text;

/// Version of the JSON schema. It grows when a field changes meaning or goes away; new fields
/// keep it.
const SCHEMA_VERSION: u32 = 1;

/// Largest device key or store read for inspection.
const MAX_INSPECT_FILE_LEN: u64 = 64 << 20;
/// Maximum length of a record value shown in full; longer ones are shown by length only.
const MAX_SHOWN_VALUE_LEN: usize = 200;

/// Everything `inspect` reports. Field names are the JSON schema documented in
/// `docs/inspect-json.md`.
#[derive(Debug, Serialize)]
struct Report {
    schema_version: u32,
    image: String,
    /// Decompressed size for a compressed image.
    size: u64,
    /// Compression format of the image file (gzip, xz, zstd, bzip2); null when uncompressed.
    compression: Option<&'static str>,
    partition_table: &'static str,
    sector_size: u64,
    partitions: Vec<PartitionReport>,
    target: Option<TargetReport>,
    device_key: Option<KeyReport>,
    store: Option<StoreReport>,
    mender: MenderFacts,
    warnings: Vec<Warning>,
}

#[derive(Debug, Serialize)]
struct PartitionReport {
    number: u32,
    start: u64,
    size: u64,
    /// MBR type byte as `0x83`, or GPT type GUID.
    type_id: String,
    /// Common name of a well-known GPT type GUID.
    type_name: Option<&'static str>,
    /// GPT partition name; empty for MBR partitions.
    name: String,
    filesystem: String,
    label: String,
    /// UUID of an ext2/3/4 filesystem, `None` for other content.
    uuid: Option<String>,
    role: Option<&'static str>,
    role_reason: String,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    layout: &'static str,
    description: String,
    binary: &'static str,
    partition: u32,
}

#[derive(Debug, Serialize)]
struct KeyReport {
    path: &'static str,
    partition: u32,
    key_type: Option<String>,
    fingerprint_sha256: Option<String>,
    error: Option<String>,
    mode: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Serialize)]
struct StoreReport {
    path: &'static str,
    partition: u32,
    size: u64,
    /// LMDB layout the file is in ("32le", "64le", ...), or `None` when it has no meta page.
    layout: Option<&'static str>,
    /// The layout for people, for example "32-bit little-endian".
    layout_description: Option<String>,
    records: Vec<RecordReport>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RecordReport {
    key: String,
    size: usize,
    /// The value as text when it is short UTF-8 and not a secret; `None` otherwise.
    value: Option<String>,
    /// True for authentication records, whose values are never shown.
    secret: bool,
}

/// `inspect --check` found warnings. The binary exits with [`WarningsFound::EXIT_CODE`] for it.
#[derive(Debug, thiserror::Error)]
#[error("{count} warning(s) found")]
pub struct WarningsFound {
    pub count: usize,
}

impl WarningsFound {
    /// Exit status of `inspect --check` when the report has warnings, distinct from the 1 of an
    /// error and the 2 of a usage error.
    pub const EXIT_CODE: u8 = 3;
}

/// Inspects the image and prints the report. With `--check`, a report with warnings ends in
/// [`WarningsFound`] after it is printed.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let sector_size = args.sector_size.map(SectorSizeArg::sector_size);
    let image = DiskImage::open_with_sector_size(&args.image, Access::ReadOnly, sector_size)?;
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{}: reading partitions", args.image.display()))?;
    let report = build_report(&image, &partitions)?;

    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report as JSON")?;
        print_line(&json)?;
    } else {
        print_line(&render_text(&report))?;
    }
    match report.warnings.len() {
        count if args.check && count > 0 => Err(WarningsFound { count }.into()),
        _ => Ok(()),
    }
}

fn build_report(image: &DiskImage, partitions: &[ClassifiedPartition]) -> anyhow::Result<Report> {
    let path = image.path().display().to_string();
    let mut warnings: Vec<Warning> = image
        .table()
        .warnings
        .iter()
        .map(|warning| Warning::new("partition-table", warning.clone()))
        .collect();
    warnings.extend(boot_warning(partitions));

    let target = match roles::find_role(partitions, Role::RootfsA) {
        Some(rootfs) => {
            let ext = Ext::open(image.volume(&rootfs.partition))
                .with_context(|| format!("{path}: {}", partition_name(&rootfs.partition)))?;
            detect_target(&ext)
                .with_context(|| format!("{path}: {}", partition_name(&rootfs.partition)))?
                .map(|found| TargetReport {
                    layout: found.layout.short_name(),
                    description: found.layout.describe(),
                    binary: found.binary,
                    partition: rootfs.partition.number,
                })
        }
        None => None,
    };

    let data = roles::find_data_partition(partitions, None).ok();
    let (device_key, store) = match data {
        Some(data) => {
            let ext = Ext::open(image.volume(&data.partition))
                .with_context(|| format!("{path}: {}", partition_name(&data.partition)))?;
            let number = data.partition.number;
            (inspect_key(&ext, number)?, inspect_store(&ext, number)?)
        }
        None => {
            warnings.push(Warning::new("no-data-partition", "no data partition found"));
            (None, None)
        }
    };
    if data.is_some() {
        warnings.extend(key_warnings(device_key.as_ref()));
    }
    warnings.extend(store_layout_warning(target.as_ref(), store.as_ref()));

    let (mut mender, mender_warnings) =
        facts::gather(image).with_context(|| format!("{path}: reading the Mender configuration"))?;
    mender.artifact_name.store = store.as_ref().and_then(stored_artifact_name);
    warnings.extend(mender_warnings);

    Ok(Report {
        schema_version: SCHEMA_VERSION,
        image: path,
        size: image.file_len().with_context(|| image.path().display().to_string())?,
        compression: image.compression().map(Compression::name),
        partition_table: image.table().kind.name(),
        sector_size: image.table().sector_size.bytes(),
        partitions: partitions.iter().map(|partition| partition_report(image, partition)).collect(),
        target,
        device_key,
        store,
        mender,
        warnings,
    })
}

/// Warns when the boot partition was found but its filesystem cannot be opened, such as a FAT
/// boot sector with a zero sector size or no FATs.
fn boot_warning(partitions: &[ClassifiedPartition]) -> Option<Warning> {
    let boot = roles::find_role(partitions, Role::Boot)?;
    let Filesystem::Unknown { reason: Some(reason) } = &boot.filesystem else { return None };
    Some(Warning::new(
        "boot-unreadable",
        format!("{}, the boot partition: {reason}", partition_name(&boot.partition)),
    ))
}

fn partition_report(image: &DiskImage, classified: &ClassifiedPartition) -> PartitionReport {
    let uuid = match classified.filesystem {
        Filesystem::Ext { .. } => {
            Ext::open(image.volume(&classified.partition)).ok().map(|ext| format_uuid(ext.uuid()))
        }
        _ => None,
    };
    PartitionReport {
        number: classified.partition.number,
        start: classified.partition.start,
        size: classified.partition.len,
        type_id: classified.partition.partition_type.to_string(),
        type_name: classified.partition.partition_type.common_name(),
        name: classified.partition.name.to_string(),
        filesystem: classified.filesystem.name().to_string(),
        label: classified.filesystem.label().to_string(),
        uuid,
        role: classified.role.map(Role::name),
        role_reason: classified.reason.clone(),
    }
}

/// Formats a filesystem UUID as `blkid` prints it: lowercase hex in groups of 8-4-4-4-12.
fn format_uuid(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Returns the `artifact-name` record of the store, when it is shown text.
fn stored_artifact_name(store: &StoreReport) -> Option<String> {
    store.records.iter().find(|record| record.key == "artifact-name").and_then(|record| record.value.clone())
}

fn inspect_key<V: Volume>(ext: &Ext<V>, partition: u32) -> anyhow::Result<Option<KeyReport>> {
    let Some(ino) = ext.lookup(DEVICE_KEY_PATH)? else { return Ok(None) };
    let metadata = ext.metadata(ino)?;
    let pem = ext.read_file(ino, MAX_INSPECT_FILE_LEN)?;

    let (key_type, fingerprint_sha256, error) = match DevicePrivateKey::from_pem(&pem) {
        Ok(key) => (Some(key.description()), Some(key.public_key().fingerprint_sha256()), None),
        Err(error) => (None, None, Some(error.to_string())),
    };
    Ok(Some(KeyReport {
        path: DEVICE_KEY_PATH,
        partition,
        key_type,
        fingerprint_sha256,
        error,
        mode: format!("{:04o}", metadata.mode),
        uid: metadata.uid,
        gid: metadata.gid,
    }))
}

fn inspect_store<V: Volume>(ext: &Ext<V>, partition: u32) -> anyhow::Result<Option<StoreReport>> {
    let Some(ino) = ext.lookup(STORE_PATH)? else { return Ok(None) };
    let bytes = ext.read_file(ino, MAX_INSPECT_FILE_LEN)?;

    let layout = if bytes.is_empty() { None } else { store::detect_layout(&bytes).ok() };
    let read = match layout {
        Some(layout) => store::read_records(&bytes, layout),
        None => store::read_records(&bytes, StoreLayout::host()),
    };
    let (records, error) = match read {
        Ok(records) => (records.iter().map(|(key, value)| record_report(key, value)).collect(), None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    Ok(Some(StoreReport {
        path: STORE_PATH,
        partition,
        size: bytes.len() as u64,
        layout: layout.map(StoreLayout::short_name),
        layout_description: layout.map(|layout| layout.to_string()),
        records,
        error,
    }))
}

/// Warns when the store is in another layout than the target's, because the Mender client on
/// the target cannot open such a store.
fn store_layout_warning(target: Option<&TargetReport>, store: Option<&StoreReport>) -> Option<Warning> {
    let (target, store) = (target?, store?);
    let store_layout = store.layout?;
    (store_layout != target.layout).then(|| {
        let message = format!(
            "mender-store is in the {} LMDB layout, but the target is {}: its Mender client cannot open it",
            store.layout_description.as_deref().unwrap_or(store_layout),
            target.description
        );
        Warning::new("store-layout", message)
    })
}

fn record_report(key: &[u8], value: &[u8]) -> RecordReport {
    let secret = store::STALE_AUTH_KEYS.iter().any(|auth_key| auth_key.as_bytes() == key);
    let printable = std::str::from_utf8(value)
        .ok()
        .filter(|text| !secret && text.len() <= MAX_SHOWN_VALUE_LEN && !text.chars().any(char::is_control))
        .map(str::to_string);
    RecordReport {
        key: String::from_utf8_lossy(key).into_owned(),
        size: value.len(),
        value: printable,
        secret,
    }
}

/// States of the device key that make a preauthorized device show up as pending.
fn key_warnings(key: Option<&KeyReport>) -> Vec<Warning> {
    let Some(key) = key else {
        return vec![Warning::new(
            "key-missing",
            format!(
                "no device key at {DEVICE_KEY_PATH}: the device will generate its own and show up as pending"
            ),
        )];
    };
    let mut warnings = Vec::new();
    if let Some(error) = &key.error {
        warnings.push(Warning::new(
            "key-unparsable",
            format!("the device key cannot be parsed ({error}): the client will not load it"),
        ));
    }
    if key.mode != "0600" {
        warnings
            .push(Warning::new("key-mode", format!("the device key has mode {}, expected 0600", key.mode)));
    }
    if key.uid != 0 || key.gid != 0 {
        warnings.push(Warning::new(
            "key-owner",
            format!("the device key is owned by {}:{}, expected 0:0", key.uid, key.gid),
        ));
    }
    warnings
}
