//! The LMDB library (through lmdb-rkv) on private temporary copies: reading a store the page walk
//! has validated, and writing a new store from a set of records.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use lmdb::{Cursor, Environment, EnvironmentFlags, Transaction, WriteFlags};
use tempfile::TempDir;

use super::{Records, StoreError};

/// Name of the store file inside the temporary directory, as on the device.
const STORE_FILE_NAME: &str = "mender-store";

/// `DEFAULT_MAPSIZE` of LMDB 0.9 (1 MiB). The Mender client 3.4 sets no map size, so on the device
/// it maps the size stored in the file. A new store therefore gets at least this default, which
/// the client gives a store it creates.
const DEFAULT_MAP_SIZE: usize = 1 << 20;

/// Largest page size LMDB 0.9 uses, for sizing the map before the page size is known.
const MAX_PAGE_SIZE: usize = 0x8000;

/// Bytes counted for the two meta pages and the first pages of the tree, in the largest page size.
const META_AND_ROOT_BYTES: usize = 4 * MAX_PAGE_SIZE;

/// Bytes a leaf node takes besides its key and value: the 8-byte node header, the 2-byte pointer
/// to it, and padding to an even offset, rounded up.
const NODE_OVERHEAD: usize = 16;

/// Smallest key and value length that may go to an overflow run: about half of the smallest
/// usual page (4096 bytes), because LMDB keeps at least two nodes on a leaf page.
const MIN_OVERFLOW_RECORD_LEN: usize = 2000;

/// How many times writing a new store is retried with a doubled map size after `MDB_MAP_FULL`.
const MAP_FULL_RETRIES: u32 = 4;

/// Flags for every environment opened here: one file rather than a directory, as the Mender
/// client opens it, and no lock file, because nothing else opens the private copy.
fn base_flags() -> EnvironmentFlags {
    EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_LOCK
}

/// Creates a temporary directory that only this user can enter (mode 0700).
fn private_temp_dir() -> Result<TempDir, StoreError> {
    tempfile::Builder::new()
        .prefix("mender-store.")
        .permissions(Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|source| StoreError::Io { operation: "create a private temporary directory", source })
}

/// Reads every record of `store_file` with LMDB. The caller must have validated the file with the
/// page walk first, because LMDB trusts the file and a hostile one can crash the process.
pub(super) fn read_validated_store(store_file: &[u8]) -> Result<Records, StoreError> {
    let dir = private_temp_dir()?;
    let path = dir.path().join(STORE_FILE_NAME);
    write_private_file(&path, store_file)?;

    // LMDB raises the map size to cover the meta page's last page number when that is larger.
    let map_size = store_file.len().max(DEFAULT_MAP_SIZE);
    let env = Environment::new()
        .set_flags(base_flags() | EnvironmentFlags::READ_ONLY)
        .set_map_size(map_size)
        .open(&path)
        .map_err(|source| StoreError::Lmdb { operation: "open the store read-only", source })?;
    let db = env
        .open_db(None)
        .map_err(|source| StoreError::Lmdb { operation: "open the main database", source })?;
    let txn = env
        .begin_ro_txn()
        .map_err(|source| StoreError::Lmdb { operation: "begin a read transaction", source })?;
    let mut cursor =
        txn.open_ro_cursor(db).map_err(|source| StoreError::Lmdb { operation: "open a cursor", source })?;

    let mut records = Records::new();
    for entry in cursor.iter_start() {
        let (key, value) = entry.map_err(|source| StoreError::Lmdb { operation: "read a record", source })?;
        records.insert(key.to_vec(), value.to_vec());
    }
    Ok(records)
}

/// Writes `records` into a new LMDB environment and returns the file's bytes. The records go in
/// key order with `MDB_APPEND`, so LMDB fills every leaf page, uses no free pages, and lays out
/// the same records the same way byte for byte.
pub(super) fn write_new_store(records: &Records) -> Result<Vec<u8>, StoreError> {
    write_new_store_growing_map(records, estimate_map_size(records)?)
}

/// Writes a new store as [`write_new_store`] does, starting with `map_size` and doubling it
/// after each `MDB_MAP_FULL`, so a low estimate costs time but not the result.
fn write_new_store_growing_map(records: &Records, mut map_size: usize) -> Result<Vec<u8>, StoreError> {
    for _ in 0..MAP_FULL_RETRIES {
        match write_new_store_with_map_size(records, map_size) {
            Err(StoreError::Lmdb { source: lmdb::Error::MapFull, .. }) => {
                log::debug!("map size {map_size} is too small for the new mender-store, doubling it");
                map_size = map_size.checked_mul(2).ok_or(StoreError::TooLarge { bytes: map_size })?;
            }
            result => return result,
        }
    }
    write_new_store_with_map_size(records, map_size)
}

/// Estimates a map size with room for `records`, at least LMDB's default. A record on a leaf page
/// takes its key, value, node header and pointer. A larger one goes to an overflow run, which
/// wastes less than a page. Doubling leaves room for branch pages and partly filled pages.
fn estimate_map_size(records: &Records) -> Result<usize, StoreError> {
    let record_bytes = records.iter().try_fold(META_AND_ROOT_BYTES, |total: usize, (key, value)| {
        let record_len = key.len().checked_add(value.len())?;
        let slack = if record_len < MIN_OVERFLOW_RECORD_LEN { NODE_OVERHEAD } else { MAX_PAGE_SIZE };
        total.checked_add(record_len)?.checked_add(slack)
    });
    let bytes = record_bytes
        .and_then(|bytes| bytes.checked_mul(2))
        .ok_or(StoreError::TooLarge { bytes: usize::MAX })?;
    let rounded = bytes.checked_next_multiple_of(DEFAULT_MAP_SIZE).ok_or(StoreError::TooLarge { bytes })?;
    Ok(rounded.max(DEFAULT_MAP_SIZE))
}

fn write_new_store_with_map_size(records: &Records, map_size: usize) -> Result<Vec<u8>, StoreError> {
    let dir = private_temp_dir()?;
    let path = dir.path().join(STORE_FILE_NAME);

    {
        // The file is read back and deleted at once, so flushing it to disk would only cost time:
        // durability comes from the undo log when the image is written.
        let env = Environment::new()
            .set_flags(base_flags() | EnvironmentFlags::NO_SYNC | EnvironmentFlags::NO_META_SYNC)
            .set_map_size(map_size)
            .open_with_permissions(&path, 0o600)
            .map_err(|source| StoreError::Lmdb { operation: "create a new store", source })?;
        if !records.is_empty() {
            put_all(&env, records)?;
        }
    }

    fs::read(&path).map_err(|source| StoreError::Io { operation: "read back the new store", source })
}

/// Stores `records` in the main database in one write transaction.
fn put_all(env: &Environment, records: &Records) -> Result<(), StoreError> {
    let db = env
        .open_db(None)
        .map_err(|source| StoreError::Lmdb { operation: "open the main database", source })?;
    let mut txn = env
        .begin_rw_txn()
        .map_err(|source| StoreError::Lmdb { operation: "begin a write transaction", source })?;
    for (key, value) in records {
        txn.put(db, key, value, WriteFlags::APPEND)
            .map_err(|source| StoreError::Lmdb { operation: "store a record", source })?;
    }
    txn.commit().map_err(|source| StoreError::Lmdb { operation: "commit the new store", source })
}

/// Writes `bytes` to a new file at `path` that only this user can read (mode 0600).
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Io { operation: "create a private copy of the store", source })?;
    file.write_all(bytes)
        .map_err(|source| StoreError::Io { operation: "write a private copy of the store", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_map_grows_until_records_fit() {
        let large_value = vec![0x5a; 3 * DEFAULT_MAP_SIZE];
        let records = Records::from([(b"state".to_vec(), large_value)]);

        let bytes = write_new_store_growing_map(&records, DEFAULT_MAP_SIZE).unwrap();

        assert_eq!(read_validated_store(&bytes).unwrap(), records);
        assert!(estimate_map_size(&records).unwrap() > 3 * DEFAULT_MAP_SIZE);
    }

    #[test]
    fn few_small_records_get_default_map_size() {
        let records: Records =
            (0..500).map(|index| (format!("key-{index}").into_bytes(), vec![1; 100])).collect();

        assert_eq!(estimate_map_size(&records).unwrap(), DEFAULT_MAP_SIZE);
    }
}
