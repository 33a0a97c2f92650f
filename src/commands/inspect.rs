//! `mender-preauth inspect`: show an image's partitions, their roles, the device key and the
//! mender-store records, as text for people or as one JSON object for scripts.

use anyhow::Context;
use serde::Serialize;

use crate::commands::args::{InspectArgs, SectorSizeArg};
use crate::commands::output::{escape_control, print_line};
use crate::fs::ext::Ext;
use crate::image::compressed::Compression;
use crate::image::disk_image::{Access, DiskImage};
use crate::image::volume::Volume;
use crate::mender::data_partition::{DEVICE_KEY_PATH, STORE_PATH};
use crate::mender::device_key::DevicePrivateKey;
use crate::mender::roles::{self, ClassifiedPartition, Role, partition_name};
use crate::mender::rootfs::detect_target;
use crate::mender::store::{self, StoreLayout};

/// Largest device key or store read for inspection.
const MAX_INSPECT_FILE_LEN: u64 = 64 << 20;
/// Maximum length of a record value shown in full; longer ones are shown by length only.
const MAX_SHOWN_VALUE_LEN: usize = 200;

/// Everything `inspect` reports. Field names are the JSON schema documented in man/.
#[derive(Debug, Serialize)]
struct Report {
    image: String,
    /// Decompressed size for a compressed image.
    size: u64,
    /// Compression format of the image file (gzip, xz, zstd, bzip2); absent when uncompressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<&'static str>,
    partition_table: &'static str,
    sector_size: u64,
    partitions: Vec<PartitionReport>,
    target: Option<TargetReport>,
    device_key: Option<KeyReport>,
    store: Option<StoreReport>,
    warnings: Vec<String>,
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

/// Inspects the image and prints the report.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let sector_size = args.sector_size.map(SectorSizeArg::sector_size);
    let image = DiskImage::open_with_sector_size(&args.image, Access::ReadOnly, sector_size)?;
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{}: reading partitions", args.image.display()))?;
    let report = build_report(&image, &partitions)?;

    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report as JSON")?;
        print_line(&json)
    } else {
        print_line(&render_text(&report))
    }
}

fn build_report(image: &DiskImage, partitions: &[ClassifiedPartition]) -> anyhow::Result<Report> {
    let path = image.path().display().to_string();
    let mut warnings = image.table().warnings.clone();

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
            warnings.push("no data partition found".to_string());
            (None, None)
        }
    };
    if data.is_some() {
        warnings.extend(key_warnings(device_key.as_ref()));
    }
    warnings.extend(store_layout_warning(target.as_ref(), store.as_ref()));

    Ok(Report {
        image: path,
        size: image.file_len().with_context(|| image.path().display().to_string())?,
        compression: image.compression().map(Compression::name),
        partition_table: image.table().kind.name(),
        sector_size: image.table().sector_size.bytes(),
        partitions: partitions.iter().map(partition_report).collect(),
        target,
        device_key,
        store,
        warnings,
    })
}

fn partition_report(classified: &ClassifiedPartition) -> PartitionReport {
    PartitionReport {
        number: classified.partition.number,
        start: classified.partition.start,
        size: classified.partition.len,
        type_id: classified.partition.partition_type.to_string(),
        type_name: classified.partition.partition_type.common_name(),
        name: classified.partition.name.to_string(),
        filesystem: classified.filesystem.name().to_string(),
        label: classified.filesystem.label().to_string(),
        role: classified.role.map(Role::name),
        role_reason: classified.reason.clone(),
    }
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
fn store_layout_warning(target: Option<&TargetReport>, store: Option<&StoreReport>) -> Option<String> {
    let (target, store) = (target?, store?);
    let store_layout = store.layout?;
    (store_layout != target.layout).then(|| {
        format!(
            "mender-store is in the {} LMDB layout, but the target is {}: its Mender client cannot open it",
            store.layout_description.as_deref().unwrap_or(store_layout),
            target.description
        )
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
fn key_warnings(key: Option<&KeyReport>) -> Vec<String> {
    let Some(key) = key else {
        return vec![format!(
            "no device key at {DEVICE_KEY_PATH}: the device will generate its own and show up as pending"
        )];
    };
    let mut warnings = Vec::new();
    if let Some(error) = &key.error {
        warnings.push(format!("the device key cannot be parsed ({error}): the client will not load it"));
    }
    if key.mode != "0600" {
        warnings.push(format!("the device key has mode {}, expected 0600", key.mode));
    }
    if key.uid != 0 || key.gid != 0 {
        warnings.push(format!("the device key is owned by {}:{}, expected 0:0", key.uid, key.gid));
    }
    warnings
}

fn render_text(report: &Report) -> String {
    // A bare filesystem image has no sectors to speak of.
    let table = match report.partition_table {
        "none" => "none".to_string(),
        kind => format!("{kind}, {}-byte sectors", report.sector_size),
    };
    let size = match report.compression {
        Some(compression) => format!("{compression}-compressed, {} bytes decompressed", report.size),
        None => format!("{} bytes", report.size),
    };
    let mut lines = vec![format!("image: {} ({size}, partition table: {table})", report.image)];
    lines.extend(render_partitions(&report.partitions));

    match &report.target {
        Some(target) => lines.push(format!(
            "target: {} ({}), from {} on partition {}",
            target.description, target.layout, target.binary, target.partition
        )),
        None => lines.push("target: unknown (no root filesystem with an ELF binary found)".to_string()),
    }
    match &report.device_key {
        Some(key) => {
            let kind = match (&key.key_type, &key.fingerprint_sha256, &key.error) {
                (Some(kind), Some(fingerprint), _) => format!("{kind}, SHA-256 {fingerprint}"),
                (_, _, Some(error)) => format!("unreadable: {error}"),
                _ => "unreadable".to_string(),
            };
            lines.push(format!(
                "device key: {} on partition {}: {kind}, mode {}, owner {}:{}",
                key.path, key.partition, key.mode, key.uid, key.gid
            ));
        }
        None => lines.push("device key: none".to_string()),
    }
    match &report.store {
        Some(store) => {
            let summary = match &store.error {
                Some(error) => format!("unreadable: {error}"),
                None => format!("{} records", store.records.len()),
            };
            let layout = match &store.layout_description {
                Some(layout) => format!(", {layout} LMDB"),
                None => String::new(),
            };
            lines.push(format!(
                "mender-store: {} on partition {} ({} bytes{layout}): {summary}",
                store.path, store.partition, store.size
            ));
            for record in &store.records {
                let key = escape_control(&record.key);
                match &record.value {
                    Some(value) => lines.push(format!("  {key} = {value}")),
                    None if record.secret => {
                        lines.push(format!("  {key} ({} bytes, not shown)", record.size))
                    }
                    None => lines.push(format!("  {key} ({} bytes)", record.size)),
                }
            }
        }
        None => lines.push("mender-store: none".to_string()),
    }
    for warning in &report.warnings {
        lines.push(format!("warning: {warning}"));
    }
    lines.join("\n")
}

/// Headers of the partition listing's columns.
const PARTITION_COLUMNS: [&str; 8] = ["part", "start", "size", "type", "name", "fs", "label", "role"];
/// Positions in [`PARTITION_COLUMNS`] of the numbers (aligned right), the GPT name and the role.
const START_COLUMN: usize = 1;
const SIZE_COLUMN: usize = 2;
const NAME_COLUMN: usize = 4;
const ROLE_COLUMN: usize = 7;

/// Lays the partitions out as a table with a header line, each column as wide as its widest cell.
/// The name column appears only when some partition has a GPT name.
fn render_partitions(partitions: &[PartitionReport]) -> Vec<String> {
    let mut rows = vec![PARTITION_COLUMNS.map(str::to_string)];
    for partition in partitions {
        let role = match partition.role {
            Some(role) => format!("{role} ({})", escape_control(&partition.role_reason)),
            None if !partition.role_reason.is_empty() => {
                format!("- ({})", escape_control(&partition.role_reason))
            }
            None => "-".to_string(),
        };
        rows.push([
            partition.number.to_string(),
            partition.start.to_string(),
            partition.size.to_string(),
            partition.type_id.clone(),
            escape_control(&partition.name),
            partition.filesystem.clone(),
            escape_control(&partition.label),
            role,
        ]);
    }

    let show_names = partitions.iter().any(|partition| !partition.name.is_empty());
    let columns: Vec<usize> =
        (0..PARTITION_COLUMNS.len()).filter(|&column| column != NAME_COLUMN || show_names).collect();
    let width = |column: usize| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = columns.iter().map(|&column| width(column)).collect();

    let render_row = |row: &[String; 8]| {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(&column, &width)| match column {
                START_COLUMN | SIZE_COLUMN => format!("{:>width$}", row[column]),
                // The last column is not padded, so lines carry no trailing spaces.
                ROLE_COLUMN => row[column].clone(),
                _ => format!("{:<width$}", row[column]),
            })
            .collect();
        cells.join(" ")
    };
    rows.iter().map(render_row).collect()
}
