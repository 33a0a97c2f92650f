//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_regressions.rs`, which
//! replays the inputs they found. Each function runs one target's operations on untrusted bytes
//! and returns what went wrong instead of stopping at the first error, so one input reaches as
//! many code paths as it can. Not part of the tool's interface.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::fs::ext::{Ext, ExtError, FileKind, InodeIndex, NewAttrs};
use crate::image::partition_table::{PartitionTable, PartitionTableError, SectorSize};
use crate::image::volume::{Volume, VolumeMut};
use crate::mender::device_key::{DevicePrivateKey, DevicePublicKey, KeyError};
use crate::mender::store::{self, Records, StoreError};
use crate::preauth::identity::{IdentityData, IdentityError};

/// Maximum number of directory entries one run visits, so that a hostile directory tree cannot
/// make a single input take seconds.
const MAX_VISITED_ENTRIES: usize = 256;

/// Maximum number of paths looked up again from the root, which walks hashed indexes.
const MAX_LOOKUPS: usize = 64;

/// Maximum size of a file read whole. Every regular file is also read in part with `read_at`,
/// whatever its size.
const MAX_READ_LEN: u64 = 256 * 1024;

/// Timestamp of everything the write target creates: 2026-01-01T00:00:00Z.
const WRITE_TIME: i64 = 1_767_225_600;

/// A file or directory found by walking the tree.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: String,
    pub inode: InodeIndex,
    pub kind: FileKind,
}

/// Result of [`ext_read`]: the files it found and every error the operations returned.
#[derive(Debug, Default)]
pub struct ReadRun {
    pub found: Vec<Found>,
    pub errors: Vec<ExtError>,
}

/// Opens `image` as an ext filesystem and reads everything reachable from the root, within the
/// bounds above: directory listings, metadata, file contents, symbolic links, extended
/// attributes, and lookups and resolutions of the paths found.
pub fn ext_read(image: &[u8]) -> ReadRun {
    match Ext::open(image.to_vec()) {
        Ok(ext) => read_tree(&ext),
        Err(error) => ReadRun { found: Vec::new(), errors: vec![error] },
    }
}

/// Walks the tree of `ext` breadth first and reads every file on the way.
pub fn read_tree<V: Volume>(ext: &Ext<V>) -> ReadRun {
    let mut run = ReadRun::default();
    let mut seen = BTreeSet::from([InodeIndex::ROOT]);
    let mut queue = vec![Found { path: String::new(), inode: InodeIndex::ROOT, kind: FileKind::Directory }];
    let mut visited = 0;

    while let Some(dir) = queue.pop() {
        let entries = match ext.read_dir(dir.inode) {
            Ok(entries) => entries,
            Err(error) => {
                run.errors.push(error);
                continue;
            }
        };
        for entry in entries {
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            visited += 1;
            if visited > MAX_VISITED_ENTRIES {
                return finish_read(ext, run);
            }
            let found = Found {
                path: format!("{}/{}", dir.path, String::from_utf8_lossy(&entry.name)),
                inode: entry.inode,
                kind: entry.kind,
            };
            read_entry(ext, &found, &mut run.errors);
            if found.kind == FileKind::Directory && seen.insert(found.inode) {
                queue.push(found.clone());
            }
            run.found.push(found);
        }
    }
    finish_read(ext, run)
}

/// Reads the metadata, contents and extended attributes of one entry.
fn read_entry<V: Volume>(ext: &Ext<V>, found: &Found, errors: &mut Vec<ExtError>) {
    let mut record = |result: Result<(), ExtError>| {
        if let Err(error) = result {
            errors.push(error);
        }
    };

    record(ext.metadata(found.inode).map(drop));
    record(ext.xattrs(found.inode).map(drop));
    match found.kind {
        FileKind::Regular => {
            record(ext.read_file(found.inode, MAX_READ_LEN).map(drop));
            let mut middle = [0u8; 4096];
            record(ext.read_at(found.inode, 4000, &mut middle).map(drop));
        }
        FileKind::Symlink => {
            record(ext.read_link(found.inode).map(drop));
            record(ext.resolve(&found.path, true).map(drop));
        }
        FileKind::Directory | FileKind::Other(_) => {}
    }
}

/// Looks up the first paths found again from the root, then adds a lookup of a missing name.
fn finish_read<V: Volume>(ext: &Ext<V>, mut run: ReadRun) -> ReadRun {
    for found in run.found.iter().take(MAX_LOOKUPS) {
        if let Err(error) = ext.lookup(&found.path) {
            run.errors.push(error);
        }
    }
    if let Err(error) = ext.lookup("/no-such-directory/no-such-file") {
        run.errors.push(error);
    }
    run
}

/// An in-memory volume that counts the calls to `write_at`, so that a failed operation can be
/// checked for writes without comparing whole images.
#[derive(Debug)]
struct CountingVolume {
    bytes: Vec<u8>,
    writes: u64,
}

impl Volume for CountingVolume {
    fn len(&self) -> u64 {
        Volume::len(&self.bytes)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.bytes.read_at(offset, buf)
    }
}

impl VolumeMut for CountingVolume {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.writes += 1;
        self.bytes.write_at(offset, data)
    }
}

/// Result of [`ext_write`].
#[derive(Debug, Default)]
pub struct WriteRun {
    /// Errors from opening the image and from the write operations.
    pub errors: Vec<ExtError>,
    /// Write operations that wrote to the volume and then failed. A failing operation must not
    /// write at all, because its plan is complete before its first write.
    pub wrote_on_error: Vec<&'static str>,
    /// Write operations that succeeded.
    pub succeeded: Vec<&'static str>,
    /// The volume after the writes, when the image opened.
    pub written: Option<Vec<u8>>,
    /// Result of reading the whole tree back after the writes.
    pub read_back: Option<ReadRun>,
}

/// Opens `image` in memory and runs a fixed sequence of writes on it, using paths found in the
/// image so that the writes touch its existing directories and files. Records every operation
/// that wrote to the volume and then failed.
pub fn ext_write(image: &[u8]) -> WriteRun {
    let mut run = WriteRun::default();
    let mut ext = match Ext::open(CountingVolume { bytes: image.to_vec(), writes: 0 }) {
        Ok(ext) => ext,
        Err(error) => {
            run.errors.push(error);
            return run;
        }
    };
    if let Err(error) = ext.check_writable() {
        run.errors.push(error);
        return run;
    }

    let tree = read_tree(&ext);
    let first_file =
        tree.found.iter().find(|found| found.kind == FileKind::Regular).map(|found| found.path.clone());
    // lost+found stays, because e2fsck reports a filesystem without it.
    let first_dir = tree
        .found
        .iter()
        .find(|found| found.kind == FileKind::Directory && found.path != "/lost+found")
        .map(|found| found.path.clone());
    let file = first_file.unwrap_or_else(|| "/missing-file".to_string());
    let dir = first_dir.unwrap_or_else(|| "/missing-dir".to_string());
    let attrs = NewAttrs { mode: 0o644, uid: 0, gid: 0, time: WRITE_TIME };
    let dir_attrs = NewAttrs { mode: 0o755, ..attrs };

    type Operation<'a> = (&'static str, Box<dyn Fn(&mut Ext<CountingVolume>) -> Result<(), ExtError> + 'a>);
    let operations: Vec<Operation> = vec![
        ("write_file new", Box::new(|ext| ext.write_file("/fuzz-new", &[0x5a; 5000], &attrs).map(drop))),
        ("write_file replace", Box::new(|ext| ext.write_file(&file, b"replaced\n", &attrs).map(drop))),
        (
            "write_file in dir",
            Box::new(|ext| ext.write_file(&format!("{dir}/fuzz-in-dir"), b"x", &attrs).map(drop)),
        ),
        ("create_dir", Box::new(|ext| ext.create_dir("/fuzz-dir", &dir_attrs).map(drop))),
        ("create_dir_all", Box::new(|ext| ext.create_dir_all(&format!("{dir}/a/b"), &dir_attrs).map(drop))),
        ("write_at", Box::new(|ext| ext.write_at(&file, 3000, &[0xa5; 2000], WRITE_TIME))),
        ("truncate", Box::new(|ext| ext.truncate(&file, 100, WRITE_TIME))),
        ("set_xattr", Box::new(|ext| ext.set_xattr(&file, "user.fuzz", b"value"))),
        ("symlink", Box::new(|ext| ext.symlink("/fuzz-link", file.as_bytes(), &attrs).map(drop))),
        ("link", Box::new(|ext| ext.link(&file, "/fuzz-hard-link", WRITE_TIME))),
        ("rename", Box::new(|ext| ext.rename(&file, "/fuzz-renamed", WRITE_TIME))),
        ("remove_file", Box::new(|ext| ext.remove_file("/fuzz-renamed", WRITE_TIME))),
        ("rename dir", Box::new(|ext| ext.rename(&dir, "/fuzz-dir/moved", WRITE_TIME))),
        ("remove_tree", Box::new(|ext| ext.remove_tree("/fuzz-dir", WRITE_TIME))),
    ];

    for (name, operation) in operations {
        let writes_before = ext.volume().writes;
        match operation(&mut ext) {
            Ok(()) => run.succeeded.push(name),
            Err(error) => {
                if ext.volume().writes != writes_before {
                    run.wrote_on_error.push(name);
                }
                run.errors.push(error);
            }
        }
    }

    let written = ext.into_volume().bytes;
    run.read_back = Some(ext_read(&written));
    run.written = Some(written);
    run
}

/// Result of [`partition_table`]: the table read with the detected sector size, then with 512
/// and 4096 bytes given.
pub type PartitionTableRun = [Result<PartitionTable, PartitionTableError>; 3];

/// Reads the partition table of a file that contains `image`, once with the sector size
/// detected and once with each size given, as `--sector-size` does.
pub fn partition_table(image: &[u8]) -> std::io::Result<PartitionTableRun> {
    let mut file = tempfile::tempfile()?;
    file.write_all(image)?;
    Ok([
        PartitionTable::read(&file, None),
        PartitionTable::read(&file, Some(SectorSize::Bytes512)),
        PartitionTable::read(&file, Some(SectorSize::Bytes4096)),
    ])
}

/// Validates and reads a mender-store file in the LMDB layout its meta page shows.
pub fn store(store_file: &[u8]) -> Result<Records, StoreError> {
    let layout = store::detect_layout(store_file)?;
    store::read_records(store_file, layout)
}

/// Result of [`keys_identity`].
#[derive(Debug)]
pub struct KeysIdentityRun {
    pub private_key: Result<String, KeyError>,
    /// For a private key that parsed: whether writing it as the device's PEM and reading that
    /// back gives the same public key, or the error of either step.
    pub private_key_round_trip: Option<Result<bool, KeyError>>,
    pub public_key: Result<String, KeyError>,
    pub identity_text: Result<String, IdentityError>,
    pub identity_args: Result<String, IdentityError>,
}

/// Parses `input` as a device private key, a public key, an identity script's output, and
/// `--identity` arguments (one per line), and encodes whatever parsed back out. A private key
/// is also written as the device's PEM and read back.
pub fn keys_identity(input: &[u8]) -> KeysIdentityRun {
    let parsed = DevicePrivateKey::from_pem(input);
    let private_key_round_trip = parsed.as_ref().ok().map(|key| {
        let pem = key.to_device_pem()?;
        let reread = DevicePrivateKey::from_pem(pem.as_bytes())?;
        Ok(reread.public_key().spki_der() == key.public_key().spki_der())
    });
    let private_key = parsed.map(|key| {
        let public = key.public_key();
        format!("{} {} {}", key.description(), public.to_pem(), public.fingerprint_sha256())
    });
    let public_key =
        DevicePublicKey::from_pem(input).map(|key| format!("{} {}", key.description(), key.to_pem()));
    let identity_text =
        IdentityData::from_key_value_text(input, "fuzz input").map(|identity| identity.to_json());
    let args: Vec<&std::ffi::OsStr> =
        input.split(|&byte| byte == b'\n').map(std::ffi::OsStr::from_bytes).collect();
    let identity_args = IdentityData::from_args(&args).map(|identity| identity.to_json());
    KeysIdentityRun { private_key, private_key_round_trip, public_key, identity_text, identity_args }
}
