//! The Mender files on the data partition: the device key and the client's database, which the
//! device reaches through `/var/lib/mender -> /data/mender`.

use std::collections::BTreeMap;

use crate::fs::ext::{Ext, ExtError, FileKind, InodeIndex, NewAttrs};
use crate::image::volume::{Volume, VolumeMut};
use crate::mender::records::{RecordsError, RecordsPlan, RecordsUpdate};
use crate::mender::store::{self, Records, StoreEdit, StoreError, StoreLayout};

/// Directory of the client's files, relative to the data partition's root.
pub const MENDER_DIR: &str = "/mender";
/// The device's private key, read by the client as `/var/lib/mender/mender-agent.pem`.
pub const DEVICE_KEY_PATH: &str = "/mender/mender-agent.pem";
/// The client's LMDB database (a single file, opened with MDB_NOSUBDIR).
pub const STORE_PATH: &str = "/mender/mender-store";

/// Largest mender-store read from an image. The 3.x client never grows its store past LMDB's
/// default map size of 10 MiB, so anything far larger is not a store it wrote.
const MAX_STORE_LEN: u64 = 64 << 20;

/// The extended attribute that stores a file's SELinux security context.
pub const SELINUX_XATTR: &str = "security.selinux";

const MENDER_DIR_MODE: u16 = 0o755;
const PRIVATE_FILE_MODE: u16 = 0o600;

/// Action to take on mender-store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePolicy {
    /// Create the store when absent; otherwise remove the records tied to a previous key. The
    /// store is read and written in `layout`, the target's.
    Reconcile { layout: StoreLayout },
    /// Leave the store as it is, for the stated reason (e.g. a target layout not written yet).
    LeaveAlone { reason: String },
}

/// Change made to the device key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Created,
    Replaced,
}

/// Change made to mender-store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// No store existed; one was created, holding the records set.
    Created { set: Vec<String> },
    /// The store existed; these records were removed and these set, and the rest kept.
    Updated { removed: Vec<String>, set: Vec<String> },
    /// The store existed and needed no change.
    Unchanged,
    /// The store was not touched, for this reason.
    LeftAlone { reason: String },
}

/// Extended attributes to give the files written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrPolicy {
    /// Give each new file the `security.selinux` label that most entries of `/mender` carry, or
    /// `/mender`'s own label when none does, so that an SELinux policy in enforcing mode lets the
    /// client read it. Replaced files keep the attributes they had.
    InheritLabel,
    /// Set these attributes (name with prefix, value) on every file written, new or replaced.
    Set(Vec<(String, Vec<u8>)>),
}

/// Extended attributes given to the files written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrChange {
    /// No attribute was set: there was no label to copy, or no new file to give it to.
    Unchanged,
    /// New files got this `security.selinux` label from `/mender`.
    InheritedLabel(Vec<u8>),
    /// The attributes of [`XattrPolicy::Set`] were set. Contains their names.
    Set(Vec<String>),
}

/// The changes planned on the data partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPartitionChanges {
    pub created_mender_dir: bool,
    pub key: KeyChange,
    pub store: StoreChange,
    pub xattrs: XattrChange,
    /// A stored `rootfs-image.version` left as it was although it differs from the new Artifact
    /// name (see [`RecordsPlan::stale_rootfs_version`]).
    pub stale_rootfs_version: Option<String>,
}

/// Failure to provision the data partition.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the data filesystem cannot be written: {source}")]
    NotWritable { source: ExtError },
    #[error("{path} on the data partition: {source}")]
    Ext { path: &'static str, source: ExtError },
    #[error("{path} on the data partition exists but is not a {expected}")]
    WrongKind { path: &'static str, expected: &'static str },
    #[error("{STORE_PATH} on the data partition: {source}")]
    Store { source: StoreError },
    #[error("{STORE_PATH} on the data partition: {source}")]
    Records { source: RecordsError },
    #[error(
        "{STORE_PATH} on the data partition is in the {found} LMDB layout, but the target is {expected}, \
         so its Mender client could not open it (LMDB rejects a file of another layout as invalid); \
         check --target-layout, or delete the store to have an empty one created"
    )]
    StoreLayout { found: StoreLayout, expected: StoreLayout },
}

/// Writes the device key and reconciles mender-store on the data partition `ext`, with the
/// Artifact records changed by `records`. Every file written is owned by root with mode 0600 and
/// gets extended attributes by `xattr_policy`. `/mender` is created with mode 0755 if missing.
pub fn provision<V: VolumeMut>(
    ext: &mut Ext<V>,
    key_pem: &[u8],
    store_policy: &StorePolicy,
    records: &RecordsUpdate,
    xattr_policy: &XattrPolicy,
    time: i64,
) -> Result<DataPartitionChanges, ProvisionError> {
    ext.check_writable().map_err(|source| ProvisionError::NotWritable { source })?;
    let created_mender_dir = ensure_mender_dir(ext, time)?;
    let label = match xattr_policy {
        XattrPolicy::InheritLabel => common_label(ext)?,
        XattrPolicy::Set(_) => None,
    };

    let key = write_device_key(ext, key_pem, time)?;

    let (store, stale_rootfs_version) = match store_policy {
        StorePolicy::Reconcile { layout } => reconcile_store(ext, records, *layout, time)?,
        StorePolicy::LeaveAlone { reason } => (StoreChange::LeftAlone { reason: reason.clone() }, None),
    };

    let mut written = vec![(DEVICE_KEY_PATH, key == KeyChange::Created)];
    written.extend(store_written(&store));
    let xattrs = set_xattrs(ext, xattr_policy, label, &written)?;

    Ok(DataPartitionChanges { created_mender_dir, key, store, xattrs, stale_rootfs_version })
}

/// Changes to mender-store alone, made by [`edit_store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEditChanges {
    pub created_mender_dir: bool,
    pub store: StoreChange,
    pub xattrs: XattrChange,
}

/// Reads the records of mender-store on the data partition, in the LMDB layout the file itself
/// is in, and returns them with that layout, or `None` when there is no store.
pub fn read_store<V: Volume>(ext: &Ext<V>) -> Result<Option<(Records, StoreLayout)>, ProvisionError> {
    let Some(bytes) = read_store_file(ext)? else {
        return Ok(None);
    };
    let layout = store::detect_layout(&bytes).map_err(store_error)?;
    Ok(Some((parse_store(Some(&bytes), layout)?, layout)))
}

/// Changes mender-store on the data partition `ext` by the edit that `plan` makes from the
/// current records (none when there is no store yet). A new store is created, with `/mender`
/// when missing. The store is written with mode 0600, owner 0:0 and attributes by
/// `xattr_policy`; it is not written when the edit changes no record.
pub fn edit_store<V: VolumeMut, E: From<ProvisionError>>(
    ext: &mut Ext<V>,
    layout: StoreLayout,
    plan: impl FnOnce(&Records) -> Result<StoreEdit, E>,
    xattr_policy: &XattrPolicy,
    time: i64,
) -> Result<StoreEditChanges, E> {
    ext.check_writable().map_err(|source| ProvisionError::NotWritable { source })?;
    let created_mender_dir = ensure_mender_dir(ext, time)?;
    let label = match xattr_policy {
        XattrPolicy::InheritLabel => common_label(ext)?,
        XattrPolicy::Set(_) => None,
    };

    let existing = read_store_file(ext)?;
    let current = parse_store(existing.as_deref(), layout)?;
    let edit = plan(&current)?;
    let store = write_store_edit(ext, existing.as_deref(), &current, &edit, layout, time)?;

    let written: Vec<(&'static str, bool)> = store_written(&store).into_iter().collect();
    let xattrs = set_xattrs(ext, xattr_policy, label, &written)?;
    Ok(StoreEditChanges { created_mender_dir, store, xattrs })
}

/// Turns a store error into the provisioning error that explains it; a store in another layout
/// than the target's gets its own message.
fn store_error(source: StoreError) -> ProvisionError {
    match source {
        StoreError::Layout { found, expected } => ProvisionError::StoreLayout { found, expected },
        source => ProvisionError::Store { source },
    }
}

/// Returns the store file as a file written by this run (path, whether it is new), if it was
/// written.
fn store_written(change: &StoreChange) -> Option<(&'static str, bool)> {
    match change {
        StoreChange::Created { .. } => Some((STORE_PATH, true)),
        StoreChange::Updated { .. } => Some((STORE_PATH, false)),
        StoreChange::Unchanged | StoreChange::LeftAlone { .. } => None,
    }
}

/// Gives the files `written` (path, whether it is new) their attributes by `policy`, with
/// `label` as the inherited `security.selinux` label.
fn set_xattrs<V: VolumeMut>(
    ext: &mut Ext<V>,
    policy: &XattrPolicy,
    label: Option<Vec<u8>>,
    written: &[(&'static str, bool)],
) -> Result<XattrChange, ProvisionError> {
    let (attributes, change) = match (policy, label) {
        (XattrPolicy::Set(attributes), _) => {
            let names = attributes.iter().map(|(name, _)| name.clone()).collect();
            (attributes.clone(), XattrChange::Set(names))
        }
        (XattrPolicy::InheritLabel, Some(label)) if written.iter().any(|&(_, new)| new) => {
            (vec![(SELINUX_XATTR.to_string(), label.clone())], XattrChange::InheritedLabel(label))
        }
        (XattrPolicy::InheritLabel, _) => return Ok(XattrChange::Unchanged),
    };

    let inherit_only = matches!(policy, XattrPolicy::InheritLabel);
    for &(path, new) in written {
        if inherit_only && !new {
            continue;
        }
        for (name, value) in &attributes {
            ext.set_xattr(path, name, value).map_err(|source| ProvisionError::Ext { path, source })?;
        }
    }
    Ok(change)
}

/// Finds the `security.selinux` label that most entries of `/mender` carry, the smallest value
/// among equally common ones, or `/mender`'s own label when no entry has one.
fn common_label<V: VolumeMut>(ext: &Ext<V>) -> Result<Option<Vec<u8>>, ProvisionError> {
    let ext_error = |source| ProvisionError::Ext { path: MENDER_DIR, source };
    let Some(dir) = ext.lookup(MENDER_DIR).map_err(ext_error)? else {
        return Ok(None);
    };
    let label_of = |ino| -> Result<Option<Vec<u8>>, ProvisionError> {
        let xattrs = ext.xattrs(ino).map_err(ext_error)?;
        Ok(xattrs.into_iter().find(|(name, _)| name == SELINUX_XATTR).map(|(_, value)| value))
    };

    let mut counts: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for entry in ext.read_dir(dir).map_err(ext_error)? {
        if entry.name == b"." || entry.name == b".." {
            continue;
        }
        if let Some(label) = label_of(entry.inode)? {
            *counts.entry(label).or_default() += 1;
        }
    }
    // `max_by_key` keeps the last of equal maxima, so walking the sorted labels backwards ends
    // on the smallest of them.
    let most_common = counts.into_iter().rev().max_by_key(|&(_, count)| count).map(|(label, _)| label);
    match most_common {
        Some(label) => Ok(Some(label)),
        None => label_of(dir),
    }
}

fn private_file_attrs(time: i64) -> NewAttrs {
    NewAttrs { mode: PRIVATE_FILE_MODE, uid: 0, gid: 0, time }
}

/// Returns the inode and kind of the file at `path`, or `None` when absent.
fn find<V: VolumeMut>(
    ext: &Ext<V>,
    path: &'static str,
) -> Result<Option<(InodeIndex, FileKind)>, ProvisionError> {
    let ext_error = |source| ProvisionError::Ext { path, source };
    match ext.lookup(path).map_err(ext_error)? {
        Some(ino) => Ok(Some((ino, ext.metadata(ino).map_err(ext_error)?.kind))),
        None => Ok(None),
    }
}

fn ensure_mender_dir<V: VolumeMut>(ext: &mut Ext<V>, time: i64) -> Result<bool, ProvisionError> {
    match find(ext, MENDER_DIR)? {
        Some((_, FileKind::Directory)) => Ok(false),
        Some(_) => Err(ProvisionError::WrongKind { path: MENDER_DIR, expected: "directory" }),
        None => {
            let attrs = NewAttrs { mode: MENDER_DIR_MODE, uid: 0, gid: 0, time };
            ext.create_dir(MENDER_DIR, &attrs)
                .map_err(|source| ProvisionError::Ext { path: MENDER_DIR, source })?;
            Ok(true)
        }
    }
}

fn write_device_key<V: VolumeMut>(
    ext: &mut Ext<V>,
    key_pem: &[u8],
    time: i64,
) -> Result<KeyChange, ProvisionError> {
    let change = match find(ext, DEVICE_KEY_PATH)? {
        Some((_, FileKind::Regular)) => KeyChange::Replaced,
        Some(_) => return Err(ProvisionError::WrongKind { path: DEVICE_KEY_PATH, expected: "regular file" }),
        None => KeyChange::Created,
    };
    ext.write_file(DEVICE_KEY_PATH, key_pem, &private_file_attrs(time))
        .map_err(|source| ProvisionError::Ext { path: DEVICE_KEY_PATH, source })?;
    Ok(change)
}

/// Removes the records tied to a previous key and applies the Artifact records of `records`.
/// Returns the change and the stale `rootfs-image.version` the plan found, if any.
fn reconcile_store<V: VolumeMut>(
    ext: &mut Ext<V>,
    records: &RecordsUpdate,
    layout: StoreLayout,
    time: i64,
) -> Result<(StoreChange, Option<String>), ProvisionError> {
    let existing = read_store_file(ext)?;
    let current = parse_store(existing.as_deref(), layout)?;

    let mut edit = StoreEdit::remove_stale_auth_keys();
    let mut stale_rootfs_version = None;
    if !records.is_empty() {
        let plan: RecordsPlan =
            records.plan(&current).map_err(|source| ProvisionError::Records { source })?;
        edit.set = plan.edit.set;
        stale_rootfs_version = plan.stale_rootfs_version;
    }
    let change = write_store_edit(ext, existing.as_deref(), &current, &edit, layout, time)?;
    Ok((change, stale_rootfs_version))
}

/// Returns the bytes of the store file, or `None` when there is none.
fn read_store_file<V: Volume>(ext: &Ext<V>) -> Result<Option<Vec<u8>>, ProvisionError> {
    let ext_error = |source| ProvisionError::Ext { path: STORE_PATH, source };
    let ino = match ext.lookup(STORE_PATH).map_err(ext_error)? {
        Some(ino) => ino,
        None => return Ok(None),
    };
    if ext.metadata(ino).map_err(ext_error)?.kind != FileKind::Regular {
        return Err(ProvisionError::WrongKind { path: STORE_PATH, expected: "regular file" });
    }
    Ok(Some(ext.read_file(ino, MAX_STORE_LEN).map_err(ext_error)?))
}

/// Reads the records of a store file in `layout`; no file is an empty store.
fn parse_store(existing: Option<&[u8]>, layout: StoreLayout) -> Result<Records, ProvisionError> {
    match existing {
        Some(bytes) => store::read_records(bytes, layout).map_err(store_error),
        None => Ok(Records::new()),
    }
}

/// Applies `edit` to the store whose file is `existing` and whose records are `current`, and
/// writes the result unless it contains the same records as before.
fn write_store_edit<V: VolumeMut>(
    ext: &mut Ext<V>,
    existing: Option<&[u8]>,
    current: &Records,
    edit: &StoreEdit,
    layout: StoreLayout,
    time: i64,
) -> Result<StoreChange, ProvisionError> {
    let outcome = store::apply_edit(existing, edit, layout).map_err(store_error)?;
    if existing.is_some() && outcome.records == *current {
        return Ok(StoreChange::Unchanged);
    }
    ext.write_file(STORE_PATH, &outcome.bytes, &private_file_attrs(time))
        .map_err(|source| ProvisionError::Ext { path: STORE_PATH, source })?;

    let names = |keys: &[Vec<u8>]| keys.iter().map(|key| String::from_utf8_lossy(key).into_owned()).collect();
    Ok(match existing {
        None => StoreChange::Created { set: names(&outcome.set) },
        Some(_) => StoreChange::Updated { removed: names(&outcome.removed), set: names(&outcome.set) },
    })
}
