//! Which partition plays which part in a Mender image, decided by content rather than by number:
//! the boot partition, rootfs A and B, and the data partition that holds `/mender`.

use crate::fs::ext::{Ext, FileKind};
use crate::fs::fat::Fat;
use crate::image::partition_table::{EXT_MAGIC, EXT_MAGIC_OFFSET, Partition, PartitionTable};
use crate::image::volume::ReadAt;
use crate::image::volume::{FileVolume, Staged, Volume};

/// Bytes read from the start of a partition to tell an unformatted one from unknown content.
const EMPTY_PROBE_LEN: usize = 64 * 1024;

/// Offsets in a FAT boot sector of the filesystem type strings for FAT12/16 and for FAT32.
const FAT16_TYPE_OFFSET: usize = 0x36;
const FAT32_TYPE_OFFSET: usize = 0x52;
/// Start of the reason given for a FAT boot sector that was found but could not be opened.
const FAT_UNOPENED: &str = "FAT filesystem could not be opened";
/// Offsets of the 11-byte volume label for FAT12/16 and for FAT32.
const FAT16_LABEL_OFFSET: usize = 0x2B;
const FAT32_LABEL_OFFSET: usize = 0x47;

/// What a partition holds, as far as this tool can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filesystem {
    /// ext2, ext3 or ext4; the name is the most specific of the three its features allow.
    Ext { kind: &'static str, label: String },
    /// FAT12/16/32 (the boot partition); not opened further yet.
    Vfat { label: String },
    /// The first 64 KiB are zeros: an unformatted partition, usually the inactive rootfs.
    Empty,
    /// Something else, or an ext or FAT filesystem this tool could not open (the reason is kept).
    Unknown { reason: Option<String> },
}

impl Filesystem {
    /// Short name for listings: `ext4`, `vfat`, `none`, `unknown`.
    pub fn name(&self) -> &str {
        match self {
            Filesystem::Ext { kind, .. } => kind,
            Filesystem::Vfat { .. } => "vfat",
            Filesystem::Empty => "none",
            Filesystem::Unknown { .. } => "unknown",
        }
    }

    /// The filesystem label, empty when there is none.
    pub fn label(&self) -> &str {
        match self {
            Filesystem::Ext { label, .. } | Filesystem::Vfat { label } => label,
            Filesystem::Empty | Filesystem::Unknown { .. } => "",
        }
    }
}

/// The part a partition plays in a Mender image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Boot,
    RootfsA,
    RootfsB,
    Data,
}

impl Role {
    /// Name used in listings and JSON: `boot`, `rootfs-a`, `rootfs-b`, `data`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Boot => "boot",
            Role::RootfsA => "rootfs-a",
            Role::RootfsB => "rootfs-b",
            Role::Data => "data",
        }
    }
}

/// Names at the root of an ext boot partition that mark it as one: kernel images, U-Boot
/// scripts and binaries, and the directories of GRUB, systemd-boot, extlinux and UEFI loaders.
/// A name matches when it starts with one of these.
const BOOT_FILE_PREFIXES: [&str; 12] = [
    "vmlinuz", "vmlinux", "zImage", "bzImage", "Image", "uImage", "fitImage", "boot.scr", "u-boot", "grub",
    "extlinux", "EFI",
];

/// Facts found in an ext filesystem's root that decide its role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ExtMarkers {
    has_mender_dir: bool,
    has_etc_mender: bool,
    has_mender_binary: bool,
    /// The first name at the root that matches [`BOOT_FILE_PREFIXES`].
    boot_file: Option<String>,
}

/// One partition with what it holds and the role it was given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedPartition {
    pub partition: Partition,
    pub filesystem: Filesystem,
    pub role: Option<Role>,
    /// Why the role was chosen, for `inspect` (e.g. "has /mender", "label is data").
    pub reason: String,
    markers: ExtMarkers,
}

/// Why no single data partition could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataPartitionError {
    #[error(
        "no data partition found (an ext2/3/4 partition whose root holds mender/, or one labelled data); \
         found: {0}; choose one with --data-partition N (0 for a bare filesystem image)"
    )]
    NotFound(String),
    #[error(
        "several partitions could be the data partition ({candidates}); choose one with --data-partition"
    )]
    Ambiguous { candidates: String },
    #[error("partition {number} does not exist; partitions: {found}")]
    NoSuchPartition { number: u32, found: String },
    #[error("partition {number} {content}, but the data partition must be an ext2/3/4 filesystem")]
    NotExt { number: u32, content: String },
    #[error("partition {number} is the {role} partition ({reason}), not the data partition")]
    NotData { number: u32, role: &'static str, reason: String },
}

/// Classifies every partition of `table` in `file`. Reading errors inside one partition make
/// that partition `Unknown` rather than failing the whole image.
pub fn classify(file: &dyn ReadAt, table: &PartitionTable) -> std::io::Result<Vec<ClassifiedPartition>> {
    let mut classified = Vec::with_capacity(table.partitions.len());
    for partition in &table.partitions {
        let volume = FileVolume::new(file, partition.start, partition.len);
        let (filesystem, markers) = probe(&volume)?;
        classified.push(ClassifiedPartition {
            partition: *partition,
            filesystem,
            role: None,
            reason: String::new(),
            markers,
        });
    }
    assign_roles(&mut classified);
    Ok(classified)
}

fn probe(volume: &FileVolume) -> std::io::Result<(Filesystem, ExtMarkers)> {
    if has_ext_magic(volume)? {
        return Ok(match Ext::open(volume) {
            Ok(ext) => (Filesystem::Ext { kind: ext_kind(&ext), label: ext.label() }, read_markers(&ext)),
            Err(error) => {
                let reason = Some(format!("ext filesystem could not be opened: {error}"));
                (Filesystem::Unknown { reason }, ExtMarkers::default())
            }
        });
    }

    let probe_len = usize::try_from(volume.len()).unwrap_or(usize::MAX).min(EMPTY_PROBE_LEN);
    let mut start = vec![0u8; probe_len];
    volume.read_at(0, &mut start)?;
    if let Some(label) = fat_label(&start) {
        // Staging keeps anything the FAT library writes while opening in memory.
        let filesystem = match Fat::open(Staged::new(volume)) {
            Ok(_) => Filesystem::Vfat { label },
            Err(error) => Filesystem::Unknown { reason: Some(format!("{FAT_UNOPENED}: {error}")) },
        };
        return Ok((filesystem, ExtMarkers::default()));
    }
    if start.iter().all(|&byte| byte == 0) {
        return Ok((Filesystem::Empty, ExtMarkers::default()));
    }
    Ok((Filesystem::Unknown { reason: None }, ExtMarkers::default()))
}

/// Names the filesystem after its features, as `blkid` does.
fn ext_kind<V: Volume>(ext: &Ext<V>) -> &'static str {
    let features = ext.features();
    let has = |name: &str| features.iter().any(|feature| *feature == name);
    if has("extent") || has("64bit") || has("flex_bg") || has("metadata_csum") || has("huge_file") {
        "ext4"
    } else if has("has_journal") {
        "ext3"
    } else {
        "ext2"
    }
}

/// Reads the markers that decide a role, stopping at the first one found: a data partition
/// needs no look at `/etc`, a rootfs with `/etc/mender` needs no scan of `/usr/bin`, which
/// can hold thousands of entries, and only a filesystem that is neither gets its root scanned
/// for boot files.
fn read_markers<V: Volume>(ext: &Ext<V>) -> ExtMarkers {
    let is_dir = |path: &str| matches!(ext.lookup(path), Ok(Some(ino)) if matches!(ext.metadata(ino), Ok(meta) if meta.kind == FileKind::Directory));
    let has_mender_binary = || match ext.lookup("/usr/bin") {
        Ok(Some(ino)) => ext
            .read_dir(ino)
            .map(|entries| entries.iter().any(|entry| entry.name.starts_with(b"mender")))
            .unwrap_or(false),
        _ => false,
    };

    let mut markers = ExtMarkers { has_mender_dir: is_dir("/mender"), ..ExtMarkers::default() };
    if markers.has_mender_dir {
        return markers;
    }
    markers.has_etc_mender = is_dir("/etc/mender");
    if !markers.has_etc_mender {
        markers.has_mender_binary = has_mender_binary();
    }
    if !markers.has_etc_mender && !markers.has_mender_binary {
        markers.boot_file = find_boot_file(ext);
    }
    markers
}

/// Returns the first name at the root of `ext` that marks a boot partition.
fn find_boot_file<V: Volume>(ext: &Ext<V>) -> Option<String> {
    let root = ext.lookup("/").ok()??;
    let entries = ext.read_dir(root).ok()?;
    entries.iter().find_map(|entry| {
        let name = String::from_utf8_lossy(&entry.name);
        BOOT_FILE_PREFIXES.iter().any(|prefix| name.starts_with(prefix)).then(|| name.into_owned())
    })
}

fn has_ext_magic(volume: &FileVolume) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    if volume.len() < EXT_MAGIC_OFFSET + 2 {
        return Ok(false);
    }
    volume.read_at(EXT_MAGIC_OFFSET, &mut magic)?;
    Ok(magic == EXT_MAGIC)
}

/// Returns the volume label of a FAT boot sector, or `None` when `sector` is not one.
fn fat_label(sector: &[u8]) -> Option<String> {
    let signature = sector.get(510..512)?;
    if signature != [0x55, 0xAA] {
        return None;
    }
    let label_offset = if sector.get(FAT32_TYPE_OFFSET..FAT32_TYPE_OFFSET + 5)? == b"FAT32" {
        FAT32_LABEL_OFFSET
    } else if sector.get(FAT16_TYPE_OFFSET..FAT16_TYPE_OFFSET + 3)? == b"FAT" {
        FAT16_LABEL_OFFSET
    } else {
        return None;
    };
    let label = sector.get(label_offset..label_offset + 11)?;
    let label = String::from_utf8_lossy(label).trim_end().to_string();
    Some(if label == "NO NAME" { String::new() } else { label })
}

/// Gives each partition its role from its markers: data first (a root holding `mender/`, else
/// the label `data`), then rootfs A and B, then the first boot partition.
fn assign_roles(partitions: &mut [ClassifiedPartition]) {
    for partition in partitions.iter_mut() {
        let is_ext = matches!(partition.filesystem, Filesystem::Ext { .. });
        let markers = &partition.markers;
        if is_ext && markers.has_mender_dir {
            partition.role = Some(Role::Data);
            partition.reason = "holds /mender".into();
        } else if is_ext && (markers.has_etc_mender || markers.has_mender_binary) {
            partition.role = Some(Role::RootfsA);
            partition.reason =
                if markers.has_etc_mender { "holds /etc/mender" } else { "holds /usr/bin/mender*" }.into();
        }
    }

    let has_data = partitions.iter().any(|partition| partition.role == Some(Role::Data));
    if !has_data {
        for partition in partitions.iter_mut() {
            if partition.role.is_none()
                && partition.filesystem.label() == "data"
                && let Filesystem::Ext { .. } = partition.filesystem
            {
                partition.role = Some(Role::Data);
                partition.reason = "labelled data".into();
            }
        }
    }

    assign_rootfs_b(partitions);
    assign_boot(partitions);

    for partition in partitions.iter_mut().filter(|partition| partition.role.is_none()) {
        if let Filesystem::Unknown { reason: Some(reason) } = &partition.filesystem {
            partition.reason = reason.clone();
        }
    }
}

/// Describes the partitions whose ext superblock was found but could not be opened, such as one
/// claiming more blocks than its partition contains. Such a partition may be the rootfs or data
/// partition that a command could not find, so errors name them; empty when there are none.
pub fn describe_unopened_ext(partitions: &[ClassifiedPartition]) -> String {
    partitions
        .iter()
        .filter_map(|classified| match &classified.filesystem {
            Filesystem::Unknown { reason: Some(reason) } if !reason.starts_with(FAT_UNOPENED) => {
                Some(format!("; {}: {reason}", partition_name(&classified.partition)))
            }
            _ => None,
        })
        .collect()
}

/// Marks a second rootfs as rootfs B, or else an unformatted partition right after rootfs A,
/// because that is the inactive rootfs that the first update will fill.
fn assign_rootfs_b(partitions: &mut [ClassifiedPartition]) {
    let mut rootfs_seen = 0;
    let mut after_rootfs_a = false;
    for partition in partitions.iter_mut() {
        if partition.role == Some(Role::RootfsA) {
            rootfs_seen += 1;
            if rootfs_seen == 2 {
                partition.role = Some(Role::RootfsB);
                partition.reason.push_str(", after rootfs A");
            }
            after_rootfs_a = rootfs_seen == 1;
            continue;
        }
        if after_rootfs_a && rootfs_seen == 1 && partition.filesystem == Filesystem::Empty {
            partition.role = Some(Role::RootfsB);
            partition.reason = "unformatted, after rootfs A".into();
            rootfs_seen += 1;
        }
        after_rootfs_a = false;
    }
}

/// Gives the boot role to the first partition left without a role that contains a FAT
/// filesystem (one that could not be opened too, so commands name why), or an ext filesystem
/// with kernel or boot loader files at its root.
fn assign_boot(partitions: &mut [ClassifiedPartition]) {
    let boot = partitions.iter_mut().filter(|partition| partition.role.is_none()).find_map(|partition| {
        let reason = match (&partition.filesystem, &partition.markers.boot_file) {
            (Filesystem::Vfat { .. }, _) => "vfat filesystem".to_string(),
            (Filesystem::Unknown { reason: Some(reason) }, _) if reason.starts_with(FAT_UNOPENED) => {
                reason.clone()
            }
            (Filesystem::Ext { .. }, Some(file)) => format!("holds /{file}"),
            _ => return None,
        };
        Some((partition, reason))
    });
    if let Some((partition, reason)) = boot {
        partition.role = Some(Role::Boot);
        partition.reason = reason;
    }
}

/// Describes each partition in one phrase, for error messages that list what was found.
pub fn describe_found(partitions: &[ClassifiedPartition]) -> String {
    if partitions.is_empty() {
        return "no partitions".into();
    }
    partitions
        .iter()
        .map(|classified| {
            let mut text = format!(
                "{} {}",
                partition_name(&classified.partition),
                describe_filesystem(&classified.filesystem)
            );
            let label = classified.filesystem.label();
            if !label.is_empty() {
                text.push_str(&format!(" labelled {label:?}"));
            }
            if let Some(role) = classified.role {
                text.push_str(&format!(" ({})", role.name()));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names the filesystem, with the reason when an ext filesystem could not be opened.
fn describe_filesystem(filesystem: &Filesystem) -> String {
    match filesystem {
        Filesystem::Unknown { reason: Some(reason) } => format!("unknown ({reason})"),
        other => other.name().to_string(),
    }
}

/// Describes what a partition that is not ext2/3/4 contains, after "partition N".
fn describe_content(filesystem: &Filesystem) -> String {
    match filesystem {
        Filesystem::Empty => "is not formatted (it contains no filesystem)".to_string(),
        Filesystem::Unknown { reason: Some(reason) } => {
            format!("contains no filesystem this tool reads ({reason})")
        }
        Filesystem::Unknown { reason: None } => "contains no filesystem this tool reads".to_string(),
        other => format!("contains a {} filesystem", other.name()),
    }
}

/// Names a partition as listings do: `partition 4`, or `whole image` for a bare filesystem.
pub fn partition_name(partition: &Partition) -> String {
    if partition.number == 0 { "whole image".into() } else { format!("partition {}", partition.number) }
}

/// Chooses the data partition: `requested` when given, else the single partition that
/// [`classify`] gave the data role.
pub fn find_data_partition(
    partitions: &[ClassifiedPartition],
    requested: Option<u32>,
) -> Result<&ClassifiedPartition, DataPartitionError> {
    if let Some(number) = requested {
        let found =
            partitions.iter().find(|classified| classified.partition.number == number).ok_or_else(|| {
                DataPartitionError::NoSuchPartition { number, found: describe_found(partitions) }
            })?;
        if !matches!(found.filesystem, Filesystem::Ext { .. }) {
            return Err(DataPartitionError::NotExt { number, content: describe_content(&found.filesystem) });
        }
        if let Some(role @ (Role::Boot | Role::RootfsA | Role::RootfsB)) = found.role {
            return Err(DataPartitionError::NotData {
                number,
                role: role.name(),
                reason: found.reason.clone(),
            });
        }
        return Ok(found);
    }

    let candidates: Vec<&ClassifiedPartition> =
        partitions.iter().filter(|classified| classified.role == Some(Role::Data)).collect();
    match candidates.as_slice() {
        [only] => Ok(only),
        [] => Err(DataPartitionError::NotFound(describe_found(partitions))),
        several => Err(DataPartitionError::Ambiguous {
            candidates: several
                .iter()
                .map(|classified| format!("{} {}", partition_name(&classified.partition), classified.reason))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Returns the first partition with `role`.
pub fn find_role(partitions: &[ClassifiedPartition], role: Role) -> Option<&ClassifiedPartition> {
    partitions.iter().find(|classified| classified.role == Some(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat16_sector(label: &[u8; 11]) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        sector[FAT16_LABEL_OFFSET..FAT16_LABEL_OFFSET + 11].copy_from_slice(label);
        sector[FAT16_TYPE_OFFSET..FAT16_TYPE_OFFSET + 8].copy_from_slice(b"FAT16   ");
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector
    }

    #[test]
    fn fat_label_is_read_and_trimmed() {
        assert_eq!(fat_label(&fat16_sector(b"BOOT       ")), Some("BOOT".to_string()));
        assert_eq!(fat_label(&fat16_sector(b"NO NAME    ")), Some(String::new()));
    }

    #[test]
    fn sector_without_fat_type_is_not_fat() {
        let mut sector = fat16_sector(b"BOOT       ");
        sector[FAT16_TYPE_OFFSET] = b'X';
        assert_eq!(fat_label(&sector), None);
        assert_eq!(fat_label(&[0u8; 100]), None);
    }

    fn classified(number: u32, filesystem: Filesystem, markers: ExtMarkers) -> ClassifiedPartition {
        let partition = Partition {
            number,
            start: u64::from(number) << 20,
            len: 1 << 20,
            partition_type: crate::image::partition_table::PartitionType::Mbr(0x83),
            bootable: false,
            name: Default::default(),
        };
        ClassifiedPartition { partition, filesystem, role: None, reason: String::new(), markers }
    }

    fn ext(label: &str) -> Filesystem {
        Filesystem::Ext { kind: "ext4", label: label.to_string() }
    }

    fn rootfs_markers() -> ExtMarkers {
        ExtMarkers { has_etc_mender: true, ..ExtMarkers::default() }
    }

    fn roles_and_reasons(partitions: &[ClassifiedPartition]) -> Vec<(Option<&'static str>, &str)> {
        partitions
            .iter()
            .map(|partition| (partition.role.map(Role::name), partition.reason.as_str()))
            .collect()
    }

    #[test]
    fn ext_with_kernel_at_root_is_boot() {
        let boot_markers = ExtMarkers { boot_file: Some("zImage".into()), ..ExtMarkers::default() };
        let mut partitions = vec![
            classified(1, ext("boot"), boot_markers),
            classified(2, ext("root"), rootfs_markers()),
            classified(3, Filesystem::Empty, ExtMarkers::default()),
            classified(4, ext("data"), ExtMarkers { has_mender_dir: true, ..ExtMarkers::default() }),
        ];

        assign_roles(&mut partitions);

        assert_eq!(
            roles_and_reasons(&partitions),
            vec![
                (Some("boot"), "holds /zImage"),
                (Some("rootfs-a"), "holds /etc/mender"),
                (Some("rootfs-b"), "unformatted, after rootfs A"),
                (Some("data"), "holds /mender"),
            ]
        );
    }

    #[test]
    fn second_rootfs_is_b_and_says_so() {
        let mut partitions = vec![
            classified(1, Filesystem::Vfat { label: "boot".into() }, ExtMarkers::default()),
            classified(2, ext("root"), rootfs_markers()),
            classified(3, ext("root"), ExtMarkers { has_mender_binary: true, ..ExtMarkers::default() }),
            classified(4, ext("data"), ExtMarkers::default()),
        ];

        assign_roles(&mut partitions);

        assert_eq!(
            roles_and_reasons(&partitions),
            vec![
                (Some("boot"), "vfat filesystem"),
                (Some("rootfs-a"), "holds /etc/mender"),
                (Some("rootfs-b"), "holds /usr/bin/mender*, after rootfs A"),
                (Some("data"), "labelled data"),
            ]
        );
    }

    #[test]
    fn image_without_boot_partition_has_no_boot_role() {
        let mut partitions = vec![
            classified(1, ext("root"), rootfs_markers()),
            classified(2, Filesystem::Empty, ExtMarkers::default()),
            classified(3, ext("data"), ExtMarkers { has_mender_dir: true, ..ExtMarkers::default() }),
            classified(4, ext("scratch"), ExtMarkers::default()),
        ];

        assign_roles(&mut partitions);

        assert_eq!(
            roles_and_reasons(&partitions),
            vec![
                (Some("rootfs-a"), "holds /etc/mender"),
                (Some("rootfs-b"), "unformatted, after rootfs A"),
                (Some("data"), "holds /mender"),
                (None, ""),
            ]
        );
    }
}
