//! The Mender client's database, `mender-store`: one LMDB file (opened with `MDB_NOSUBDIR`) whose
//! main database maps keys such as `artifact-name`, `artifact-provides` and `state` to values.
//!
//! The tool gets the file's bytes out of a disk image and hands new bytes back. Reading validates
//! the whole file in safe Rust first (see `walk`), because LMDB's C code trusts its file and a
//! corrupt or hostile store could crash the process instead of returning an error. Only then does
//! LMDB read a private copy, and both readings must agree.
//!
//! LMDB lays its file out in the word size and byte order of the machine that writes it, so
//! every function takes the target's [`StoreLayout`]. A store in another layout than the host's
//! is converted to the host's for LMDB (see `convert`), and the new store back to the target's.
//!
//! Editing never modifies the old file. The edited records are written into a new LMDB
//! environment in key order, so the result is compact, contains no stale pages (a removed auth token
//! leaves no bytes behind), and is the same byte for byte for the same records. This replaces
//! `mdb_env_copy2(MDB_CP_COMPACT)`, which lmdb-rkv offers only through unsafe FFI calls.

mod convert;
mod layout;
mod lmdb_env;
mod meta;
mod page;
mod walk;

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use convert::{from_host, to_host};
pub use layout::StoreLayout;

/// Records of the main database: key to value, in LMDB's key order (bytewise).
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// Keys that the Mender client 3.4 no longer uses (its `datastore/dbkeys.go` lists them as not in
/// use) but older clients left behind: a cached auth
/// token from before the device was preauthorized must not survive, so preauthorizing removes
/// them.
pub const STALE_AUTH_KEYS: [&str; 2] = ["authtoken", "auth-token-cache-invalidator"];

/// Every key the Mender client 3.4 reads or writes in mender-store (its `datastore/dbkeys.go`),
/// the keys no longer in use included.
pub const CLIENT_KEYS: [&str; 9] = [
    "artifact-name",
    "artifact-group",
    "artifact-provides",
    "standalone-state",
    "state",
    "state-uncommitted",
    "update-control-maps",
    "authtoken",
    "auth-token-cache-invalidator",
];

/// Changes to make to a store: `remove` is applied first, then `set`, so a key in both ends up
/// set. Removing an absent key is not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreEdit {
    /// Keys to delete.
    pub remove: Vec<Vec<u8>>,
    /// Keys to create or overwrite, with their values; a later entry wins over an earlier one.
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StoreEdit {
    /// Returns an edit that removes [`STALE_AUTH_KEYS`].
    pub fn remove_stale_auth_keys() -> Self {
        StoreEdit {
            remove: STALE_AUTH_KEYS.iter().map(|key| key.as_bytes().to_vec()).collect(),
            set: Vec::new(),
        }
    }
}

/// Result of [`apply_edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The complete new store file.
    pub bytes: Vec<u8>,
    /// True when there was no store, or an empty file, so a new one was created.
    pub created: bool,
    /// Keys that existed and were removed (and not set again), in key order.
    pub removed: Vec<Vec<u8>>,
    /// Keys that were set, in key order.
    pub set: Vec<Vec<u8>>,
    /// All records of the new store.
    pub records: Records,
}

/// Errors from reading or editing a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a well-formed LMDB file; `detail` names the structure and value.
    #[error("mender-store is corrupt: {detail}")]
    Corrupt {
        /// Description of the damage, naming the page or field.
        detail: String,
    },

    /// The file was written by a machine with another word size or byte order than expected.
    #[error(
        "mender-store is in the {found} LMDB layout, but the target reads the {expected} layout, so its \
         Mender client would not open it"
    )]
    Layout {
        /// Layout the file was written in.
        found: StoreLayout,
        /// Layout of the target device.
        expected: StoreLayout,
    },

    /// The meta page has a data version other than LMDB 0.9's.
    #[error("mender-store has LMDB data version {found}, expected 1 (LMDB 0.9)")]
    Version {
        /// Version number found.
        found: u32,
    },

    /// The file uses an LMDB feature the Mender client never uses, so editing it is not safe.
    #[error("mender-store uses {feature}, which the Mender client never writes; not editing it")]
    Unsupported {
        /// The feature found, with where it was found.
        feature: String,
    },

    /// LMDB and the page walk read different records from a file that passed validation.
    #[error("LMDB and the page walk read different records from mender-store: {detail}")]
    Mismatch {
        /// The first difference, by key.
        detail: String,
    },

    /// A key in the edit cannot be stored in LMDB.
    #[error("invalid mender-store key \"{key}\": {reason}")]
    InvalidKey {
        /// The key, with non-printable bytes escaped.
        key: String,
        /// Reason the key is invalid.
        reason: String,
    },

    /// A value in the edit is larger than LMDB can store.
    #[error("value of mender-store key \"{key}\" is {len} bytes, more than LMDB's maximum of {max}", max = u32::MAX)]
    ValueTooLarge {
        /// The key, with non-printable bytes escaped.
        key: String,
        /// Length of the value in bytes.
        len: usize,
    },

    /// The records do not fit in a memory map on this host.
    #[error("records of {bytes} bytes are too large for a mender-store")]
    TooLarge {
        /// Size estimate that overflowed.
        bytes: usize,
    },

    /// The LMDB library returned an error.
    #[error("LMDB failed to {operation}: {source}")]
    Lmdb {
        /// Operation that failed, as a verb phrase.
        operation: &'static str,
        /// The LMDB error.
        source: lmdb::Error,
    },

    /// A temporary file or directory operation failed.
    #[error("failed to {operation}: {source}")]
    Io {
        /// Operation that failed, as a verb phrase.
        operation: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl StoreError {
    fn corrupt(detail: impl Into<String>) -> Self {
        StoreError::Corrupt { detail: detail.into() }
    }
}

/// Returns the layout a store file was written in, read from where and how its first meta
/// page stores LMDB's magic number. Nothing else is validated.
pub fn detect_layout(store_file: &[u8]) -> Result<StoreLayout, StoreError> {
    meta::detect_layout(store_file)
}

/// Reads every record of a store file in `layout`. The whole file is validated before LMDB
/// reads it: in its own layout by the page walk, then converted to this host's layout and
/// walked again. LMDB's reading of the converted file must match both walks. An empty file is
/// an empty store, as LMDB treats it.
pub fn read_records(store_file: &[u8], layout: StoreLayout) -> Result<Records, StoreError> {
    if store_file.is_empty() {
        return Ok(Records::new());
    }

    let walked = walk::walk_store(store_file, layout)?;
    log::debug!(
        "mender-store is valid in the {layout} layout: {} records, page size {}, map size {}, transaction {}",
        walked.records.len(),
        walked.meta.page_size,
        walked.meta.map_size,
        walked.meta.txnid
    );

    let host_file = convert::to_host(store_file, layout)?;
    if layout != StoreLayout::host() {
        let converted = walk::walk_store(&host_file, StoreLayout::host())?;
        check_same_records(&walked.records, &converted.records)?;
    }

    let read_by_lmdb = lmdb_env::read_validated_store(&host_file)?;
    check_same_records(&walked.records, &read_by_lmdb)?;
    Ok(walked.records)
}

/// Applies `edit` to the store in `existing` (`None` when the file does not exist), which is in
/// `layout`, and returns the new file in `layout`. LMDB writes the new store in this host's
/// layout, compacted, and it is then converted. The old bytes are never modified.
pub fn apply_edit(
    existing: Option<&[u8]>,
    edit: &StoreEdit,
    layout: StoreLayout,
) -> Result<StoreOutcome, StoreError> {
    check_edit(edit)?;

    let existing = existing.filter(|bytes| !bytes.is_empty());
    let old_records = match existing {
        Some(bytes) => read_records(bytes, layout)?,
        None => Records::new(),
    };

    let mut records = old_records.clone();
    for key in &edit.remove {
        records.remove(key);
    }
    for (key, value) in &edit.set {
        records.insert(key.clone(), value.clone());
    }

    let set: BTreeSet<Vec<u8>> = edit.set.iter().map(|(key, _)| key.clone()).collect();
    let removed: BTreeSet<Vec<u8>> = edit
        .remove
        .iter()
        .filter(|key| old_records.contains_key(*key) && !set.contains(*key))
        .cloned()
        .collect();

    let host_bytes = lmdb_env::write_new_store(&records)?;
    let written = walk::walk_store(&host_bytes, StoreLayout::host())?;
    check_same_records(&records, &written.records)?;
    let bytes = convert_new_store(&host_bytes, &records, layout)?;

    for key in &removed {
        log::debug!("removed mender-store key {}", key.escape_ascii());
    }
    for key in &set {
        log::debug!("set mender-store key {}", key.escape_ascii());
    }

    Ok(StoreOutcome {
        bytes,
        created: existing.is_none(),
        removed: removed.into_iter().collect(),
        set: set.into_iter().collect(),
        records,
    })
}

/// Converts a store that LMDB wrote on this host to `layout`, and checks the result: it contains
/// `records` when walked in `layout`, and converting it back gives the same bytes, except for
/// the free space that LMDB leaves unzeroed.
fn convert_new_store(
    host_bytes: &[u8],
    records: &Records,
    layout: StoreLayout,
) -> Result<Vec<u8>, StoreError> {
    if layout == StoreLayout::host() {
        return Ok(host_bytes.to_vec());
    }

    let bytes = convert::from_host(host_bytes, layout)?;
    let converted = walk::walk_store(&bytes, layout)?;
    check_same_records(records, &converted.records)?;
    if convert::to_host(&bytes, layout)? != convert::normalize(host_bytes, StoreLayout::host())? {
        return Err(StoreError::Mismatch {
            detail: format!("converting the new store to the {layout} layout and back changed its bytes"),
        });
    }
    Ok(bytes)
}

/// Rejects keys LMDB cannot store (empty or longer than 511 bytes) and values of 4 GiB or more.
fn check_edit(edit: &StoreEdit) -> Result<(), StoreError> {
    for (key, value) in &edit.set {
        if key.is_empty() || key.len() > walk::MAX_KEY_SIZE {
            return Err(StoreError::InvalidKey {
                key: key.escape_ascii().to_string(),
                reason: format!("{} bytes long, LMDB keys are 1 to {} bytes", key.len(), walk::MAX_KEY_SIZE),
            });
        }
        if u32::try_from(value.len()).is_err() {
            return Err(StoreError::ValueTooLarge { key: key.escape_ascii().to_string(), len: value.len() });
        }
    }
    Ok(())
}

/// Compares two readings of the same store, naming the first differing key but no value, since
/// values may be secrets such as auth tokens.
fn check_same_records(expected: &Records, found: &Records) -> Result<(), StoreError> {
    if expected == found {
        return Ok(());
    }

    let first_difference = expected
        .keys()
        .chain(found.keys())
        .filter(|key| expected.get(*key) != found.get(*key))
        .min()
        .map(|key| key.escape_ascii().to_string())
        .unwrap_or_default();
    Err(StoreError::Mismatch {
        detail: format!(
            "{} records against {}, first difference at key \"{first_difference}\"",
            expected.len(),
            found.len()
        ),
    })
}
