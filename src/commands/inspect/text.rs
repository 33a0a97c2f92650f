//! The text form of the `inspect` report: one line per fact, with every string read from the
//! image escaped so that it can neither split a line nor send terminal escape sequences.

use super::{PartitionReport, Report};
use crate::commands::output::escape_control;
use crate::mender::facts::{self, MenderFacts};

/// Renders the whole report for people.
pub(super) fn render_text(report: &Report) -> String {
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
                (_, _, Some(error)) => format!("unreadable: {}", escape_control(error)),
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
                Some(error) => format!("unreadable: {}", escape_control(error)),
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
    lines.extend(render_mender(&report.mender));
    for warning in &report.warnings {
        lines.push(format!("warning: {} [{}]", escape_control(&warning.message), warning.code));
    }
    lines.join("\n")
}

/// Describes the Mender client's configuration: the merged values, each `mender.conf`, and each
/// root filesystem's identity script and `/var/lib/mender`.
fn render_mender(mender: &MenderFacts) -> Vec<String> {
    let text = |value: &Option<String>| match value {
        Some(value) => escape_control(value),
        None => "none".to_string(),
    };
    let token = |token: &facts::TenantTokenFact| match token.set {
        true => format!("tenant token set ({} bytes)", token.length),
        false => "no tenant token".to_string(),
    };
    let device_type = match (&mender.device_type.value, &mender.device_type.error) {
        (Some(value), _) => escape_control(value),
        (None, Some(error)) => format!("unknown ({})", escape_control(error)),
        (None, None) => "unknown".to_string(),
    };

    let mut lines = vec![
        format!(
            "artifact name: {} (artifact_info), {} (mender-store)",
            text(&mender.artifact_name.artifact_info),
            text(&mender.artifact_name.store)
        ),
        format!("device type: {device_type}, from {}", escape_control(&mender.device_type.path)),
        format!(
            "mender.conf: server {}, {}, key file {}",
            text(&mender.server_url),
            token(&mender.tenant_token),
            escape_control(&mender.key_file)
        ),
    ];
    for file in &mender.config_files {
        let summary = match (&file.error, file.present) {
            (Some(error), _) => format!("unreadable: {}", escape_control(error)),
            (None, false) => "absent".to_string(),
            (None, true) => {
                let mut parts = vec![format!("server {}", text(&file.server_url)), token(&file.tenant_token)];
                if let Some(key) = &file.auth_private_key {
                    parts.push(format!("Security.AuthPrivateKey {}", escape_control(key)));
                }
                if let Some(key) = &file.https_client_key {
                    parts.push(format!("HttpsClient.Key {}", escape_control(key)));
                }
                parts.join(", ")
            }
        };
        lines.push(format!("  {} ({}): {summary}", escape_control(&file.path), file.location));
    }
    for rootfs in &mender.rootfs {
        let script = &rootfs.identity_script;
        let script = match (&script.mode, script.present) {
            (Some(mode), true) => format!("identity script mode {mode}"),
            _ => "no identity script".to_string(),
        };
        let state_dir = &rootfs.var_lib_mender;
        let link = match (&state_dir.link_target, &state_dir.resolved) {
            (Some(target), _) => format!("{} -> {}", facts::STATE_DIR, escape_control(target)),
            (None, Some(resolved)) => format!("{} at {}", facts::STATE_DIR, escape_control(resolved)),
            (None, None) => format!("{} unresolved", facts::STATE_DIR),
        };
        let leads = match state_dir.leads_to_data {
            true => "the data partition's mender/",
            false => "not the data partition's mender/",
        };
        lines.push(format!("rootfs {}: {script}, {link} ({leads})", rootfs.slot.to_uppercase()));
    }
    lines
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
