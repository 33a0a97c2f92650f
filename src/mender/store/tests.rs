//! Tests of reading and editing mender-store files, judged by LMDB's own tools (`mdb_load`,
//! `mdb_dump`, `mdb_stat`) and by the Mender client. The corruption tests patch pages at offsets of
//! the 64-bit little-endian layout written out here, independently of the code under test.

use std::path::{Path, PathBuf};
use std::process::Command;

use lmdb::{Environment, EnvironmentFlags, Transaction, WriteFlags};

use super::*;
use crate::test_support::{require_tool, require_tools};

const PAGE_SIZE: usize = 4096;

/// Offsets in a page and in a meta page of the 64-bit little-endian layout.
const PAGE_FLAGS: usize = 10;
const PAGE_LOWER: usize = 12;
const PAGE_UPPER: usize = 14;
const PAGE_FIRST_NODE_POINTER: usize = 16;
const META_MAGIC: usize = 16;
const META_VERSION: usize = 20;
const META_MAIN_DB: usize = 88;
const DB_FLAGS: usize = 4;
const DB_DEPTH: usize = 6;
const DB_ROOT: usize = 40;
const META_LAST_PGNO: usize = 136;
const META_TXNID: usize = 144;
const NODE_FLAGS: usize = 4;

// ---- building stores with LMDB's tools ----

pub(super) fn record(key: &str, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), value.to_vec())
}

/// Records like those the Mender client keeps, plus an auth token left by an older client.
pub(super) fn mender_records() -> Records {
    Records::from([
        record("artifact-name", b"release-7"),
        record("artifact-provides", br#"{"rootfs-image.version":"release-7"}"#),
        record("authtoken", b"eyJhbGciOiJSUzI1NiJ9.stale-token-from-an-old-client"),
        record("auth-token-cache-invalidator", b""),
        record("state", br#"{"Version":2,"Name":"idle"}"#),
    ])
}

/// Mender records, a value larger than a page (stored on overflow pages) and enough filler
/// records for a two-level tree.
pub(super) fn multi_level_records() -> Records {
    let mut records = mender_records();
    let large_value: Vec<u8> = (0..3 * PAGE_SIZE + 123).map(|index| (index % 251) as u8).collect();
    records.insert(b"update-control-maps".to_vec(), large_value);
    for index in 0..400 {
        records
            .insert(format!("filler-{index:04}").into_bytes(), format!("value number {index}").into_bytes());
    }
    records
}

/// Records with long keys, so branch pages hold few keys and the tree has at least three levels.
pub(super) fn deep_records() -> Records {
    let mut records = mender_records();
    for index in 0..1200 {
        let key = format!("{index:05}-{}", "k".repeat(300));
        records.insert(key.into_bytes(), format!("v{index}").into_bytes());
    }
    records.insert(vec![b'x'; super::walk::MAX_KEY_SIZE], b"the longest key LMDB accepts".to_vec());
    records
}

/// Formats `records` as `mdb_dump` writes them in its default byte-value format.
pub(super) fn dump_text(records: &Records) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    let mut text = String::from("VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=16777216\nHEADER=END\n");
    for (key, value) in records {
        text.push_str(&format!(" {}\n {}\n", hex(key), hex(value)));
    }
    text.push_str("DATA=END\n");
    text
}

/// An LMDB tool to run: a program of this host, or an i386 build with its library.
pub(super) trait LmdbTool {
    fn command(&self) -> Command;
}

impl LmdbTool for Path {
    fn command(&self) -> Command {
        Command::new(self)
    }
}

impl LmdbTool for PathBuf {
    fn command(&self) -> Command {
        Command::new(self)
    }
}

impl LmdbTool for crate::test_support::ForeignLmdbTool {
    fn command(&self) -> Command {
        crate::test_support::ForeignLmdbTool::command(self)
    }
}

pub(super) fn run(program: &(impl LmdbTool + ?Sized), args: &[&std::ffi::OsStr]) -> String {
    let mut command = program.command();
    let output = command.args(args).output().unwrap();
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Creates a store file holding `records` with the real `mdb_load`.
pub(super) fn load_store(mdb_load: &(impl LmdbTool + ?Sized), records: &Records) -> Vec<u8> {
    load_store_with_options(mdb_load, records, &[])
}

/// Creates a store file holding `records` with the real `mdb_load` and extra `options`.
pub(super) fn load_store_with_options(
    mdb_load: &(impl LmdbTool + ?Sized),
    records: &Records,
    options: &[&str],
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    let store = dir.path().join("mender-store");
    std::fs::write(&dump, dump_text(records)).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = options.iter().map(|option| option.as_ref()).collect();
    args.extend(["-n".as_ref(), "-f".as_ref(), dump.as_os_str(), store.as_os_str()]);
    run(mdb_load, &args);
    std::fs::read(&store).unwrap()
}

pub(super) fn write_store(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("mender-store");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn parse_hex(line: &str) -> Vec<u8> {
    let digits = line.trim_start_matches(' ').as_bytes();
    assert!(digits.len().is_multiple_of(2), "odd hex line {line:?}");
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// Reads the records of a store file with the real `mdb_dump`.
pub(super) fn dump_records(mdb_dump: &(impl LmdbTool + ?Sized), bytes: &[u8]) -> Records {
    let dir = tempfile::tempdir().unwrap();
    let path = write_store(dir.path(), bytes);
    let text = run(mdb_dump, &["-n".as_ref(), path.as_os_str()]);

    let mut lines = text.lines().skip_while(|line| *line != "HEADER=END").skip(1);
    let mut records = Records::new();
    loop {
        let key = lines.next().expect("mdb_dump output ends with DATA=END");
        if key == "DATA=END" {
            break;
        }
        let value = lines.next().expect("every key has a value line");
        records.insert(parse_hex(key), parse_hex(value));
    }
    records
}

/// Runs `mdb_stat -n -e -f` on a store file and returns the number after `field` in `section`.
pub(super) fn stat_field(
    mdb_stat: &(impl LmdbTool + ?Sized),
    bytes: &[u8],
    section: &str,
    field: &str,
) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = write_store(dir.path(), bytes);
    let text = run(mdb_stat, &["-n".as_ref(), "-e".as_ref(), "-f".as_ref(), path.as_os_str()]);

    let section_lines = text.lines().skip_while(|line| !line.starts_with(section)).skip(1);
    let line = section_lines
        .take_while(|line| line.starts_with("  "))
        .find(|line| line.trim_start().starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in section {section} of mdb_stat output:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Creates a store whose free database has records, by committing several transactions with
/// the real LMDB: inserts, then deletes and overwrites that free pages.
pub(super) fn store_with_free_pages(records: &Records) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mender-store");
    {
        let env = Environment::new()
            .set_flags(EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_LOCK)
            .set_map_size(16 << 20)
            .open(&path)
            .unwrap();
        let db = env.open_db(None).unwrap();

        let mut txn = env.begin_rw_txn().unwrap();
        for (key, value) in records {
            txn.put(db, key, value, WriteFlags::empty()).unwrap();
        }
        for index in 0..300 {
            txn.put(db, &format!("doomed-{index:04}"), &[7u8; 100], WriteFlags::empty()).unwrap();
        }
        txn.commit().unwrap();

        for round in 0..2 {
            let mut txn = env.begin_rw_txn().unwrap();
            for index in (round..300).step_by(3) {
                txn.del(db, &format!("doomed-{index:04}"), None).unwrap();
            }
            txn.put(db, b"state", &format!("round {round}"), WriteFlags::empty()).unwrap();
            txn.commit().unwrap();
        }
    }
    std::fs::read(&path).unwrap()
}

pub(super) fn without_stale_auth_keys(records: &Records) -> Records {
    let mut expected = records.clone();
    for key in STALE_AUTH_KEYS {
        expected.remove(key.as_bytes());
    }
    expected
}

// ---- reading and editing real stores ----

#[test]
fn stale_auth_keys_are_removed() {
    let test = "stale_auth_keys_are_removed";
    let Some(tools) = require_tools(&["mdb_load", "mdb_dump", "mdb_stat"], test) else { return };
    let (mdb_load, mdb_dump, mdb_stat) = (&tools[0], &tools[1], &tools[2]);
    let original = multi_level_records();
    let store = load_store(mdb_load, &original);
    assert!(stat_field(mdb_stat, &store, "Status of Main DB", "Tree depth:") >= 2);
    assert!(stat_field(mdb_stat, &store, "Status of Main DB", "Overflow pages:") >= 4);

    let outcome =
        apply_edit(Some(&store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::host()).unwrap();

    let expected = without_stale_auth_keys(&original);
    assert_eq!(dump_records(mdb_dump, &outcome.bytes), expected);
    assert_eq!(outcome.records, expected);
    assert_eq!(outcome.removed, vec![b"auth-token-cache-invalidator".to_vec(), b"authtoken".to_vec()]);
    assert!(outcome.set.is_empty());
    assert!(!outcome.created);
    assert_eq!(stat_field(mdb_stat, &outcome.bytes, "Status of Main DB", "Entries:"), expected.len() as u64);
    assert_eq!(stat_field(mdb_stat, &outcome.bytes, "Status of Main DB", "Overflow pages:"), 4);
    assert_eq!(stat_field(mdb_stat, &outcome.bytes, "Freelist Status", "Free pages:"), 0);
    assert_eq!(read_records(&outcome.bytes, StoreLayout::host()).unwrap(), expected);
}

#[test]
fn deep_tree_is_read_like_mdb_dump() {
    let test = "deep_tree_is_read_like_mdb_dump";
    let Some(tools) = require_tools(&["mdb_load", "mdb_dump", "mdb_stat"], test) else { return };
    let (mdb_load, mdb_dump, mdb_stat) = (&tools[0], &tools[1], &tools[2]);
    let original = deep_records();
    let store = load_store(mdb_load, &original);
    assert!(stat_field(mdb_stat, &store, "Status of Main DB", "Tree depth:") >= 3);

    let records = read_records(&store, StoreLayout::host()).unwrap();

    assert_eq!(records, original);
    assert_eq!(dump_records(mdb_dump, &store), original);
}

#[test]
fn deep_tree_edit_keeps_other_records() {
    let test = "deep_tree_edit_keeps_other_records";
    let Some(tools) = require_tools(&["mdb_load", "mdb_dump"], test) else { return };
    let original = deep_records();
    let store = load_store(&tools[0], &original);
    let edit = StoreEdit {
        remove: vec![b"authtoken".to_vec(), b"00042-".iter().chain(&[b'k'; 300]).copied().collect()],
        set: vec![record("artifact-name", b"release-8")],
    };

    let outcome = apply_edit(Some(&store), &edit, StoreLayout::host()).unwrap();

    let mut expected = original.clone();
    expected.remove(b"authtoken".as_slice());
    expected.remove(&edit.remove[1]);
    expected.insert(b"artifact-name".to_vec(), b"release-8".to_vec());
    assert_eq!(dump_records(&tools[1], &outcome.bytes), expected);
    assert_eq!(outcome.removed.len(), 2);
    assert_eq!(outcome.set, vec![b"artifact-name".to_vec()]);
}

#[test]
fn store_with_free_pages_is_read_and_compacted() {
    let test = "store_with_free_pages_is_read_and_compacted";
    let Some(tools) = require_tools(&["mdb_dump", "mdb_stat"], test) else { return };
    let (mdb_dump, mdb_stat) = (&tools[0], &tools[1]);
    let store = store_with_free_pages(&multi_level_records());
    assert!(stat_field(mdb_stat, &store, "Freelist Status", "Free pages:") > 0);
    let expected_before = dump_records(mdb_dump, &store);
    assert!(expected_before.contains_key(b"doomed-0299".as_slice()));

    assert_eq!(read_records(&store, StoreLayout::host()).unwrap(), expected_before);
    let outcome =
        apply_edit(Some(&store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::host()).unwrap();

    assert_eq!(dump_records(mdb_dump, &outcome.bytes), without_stale_auth_keys(&expected_before));
    assert_eq!(stat_field(mdb_stat, &outcome.bytes, "Freelist Status", "Free pages:"), 0);
    assert!(outcome.bytes.len() < store.len());
}

#[test]
fn new_store_holds_set_records() {
    let test = "new_store_holds_set_records";
    let Some(tools) = require_tools(&["mdb_dump", "mdb_stat"], test) else { return };
    let edit = StoreEdit {
        remove: vec![b"authtoken".to_vec()],
        set: vec![
            record("artifact-name", b"first"),
            record("state", b"{}"),
            record("artifact-name", b"second"),
        ],
    };

    let outcome = apply_edit(None, &edit, StoreLayout::host()).unwrap();

    let expected = Records::from([record("artifact-name", b"second"), record("state", b"{}")]);
    assert_eq!(dump_records(&tools[0], &outcome.bytes), expected);
    assert_eq!(outcome.records, expected);
    assert!(outcome.created);
    assert!(outcome.removed.is_empty());
    assert_eq!(outcome.set, vec![b"artifact-name".to_vec(), b"state".to_vec()]);
    assert_eq!(stat_field(&tools[1], &outcome.bytes, "Status of Main DB", "Entries:"), 2);
}

#[test]
fn empty_new_store_is_valid_lmdb() {
    let test = "empty_new_store_is_valid_lmdb";
    let Some(tools) = require_tools(&["mdb_dump", "mdb_stat"], test) else { return };

    let outcome = apply_edit(None, &StoreEdit::default(), StoreLayout::host()).unwrap();

    assert_eq!(outcome.bytes.len(), 2 * PAGE_SIZE);
    assert_eq!(dump_records(&tools[0], &outcome.bytes), Records::new());
    assert_eq!(stat_field(&tools[1], &outcome.bytes, "Status of Main DB", "Entries:"), 0);
    assert_eq!(stat_field(&tools[1], &outcome.bytes, "Environment Info", "Map size:"), 1 << 20);
    assert_eq!(read_records(&outcome.bytes, StoreLayout::host()).unwrap(), Records::new());
}

#[test]
fn empty_existing_file_is_an_empty_store() {
    let edit = StoreEdit { remove: Vec::new(), set: vec![record("artifact-name", b"release-1")] };

    let outcome = apply_edit(Some(&[]), &edit, StoreLayout::host()).unwrap();

    assert!(outcome.created);
    assert_eq!(outcome.records, Records::from([record("artifact-name", b"release-1")]));
    assert_eq!(read_records(&[], StoreLayout::host()).unwrap(), Records::new());
}

#[test]
fn output_is_deterministic() {
    let Some(mdb_load) = require_tool("mdb_load", "output_is_deterministic") else { return };
    let store = load_store(&mdb_load, &multi_level_records());
    let edit = StoreEdit::remove_stale_auth_keys();

    let first = apply_edit(Some(&store), &edit, StoreLayout::host()).unwrap();
    let second = apply_edit(Some(&store), &edit, StoreLayout::host()).unwrap();
    let from_free_pages = apply_edit(
        Some(&store_with_free_pages(&Records::new())),
        &StoreEdit {
            remove: (0..300).map(|index| format!("doomed-{index:04}").into_bytes()).collect(),
            set: without_stale_auth_keys(&multi_level_records()).into_iter().collect(),
        },
        StoreLayout::host(),
    )
    .unwrap();

    assert!(first.bytes == second.bytes, "two runs of the same edit differ");
    assert_eq!(from_free_pages.records, first.records);
    assert!(first.bytes == from_free_pages.bytes, "the same records from another store differ");
}

#[test]
fn removed_token_leaves_no_bytes_behind() {
    let Some(mdb_load) = require_tool("mdb_load", "removed_token_leaves_no_bytes_behind") else { return };
    let token = b"stale-token-from-an-old-client";
    let store = load_store(&mdb_load, &multi_level_records());
    assert!(store.windows(token.len()).any(|window| window == token));

    let outcome =
        apply_edit(Some(&store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::host()).unwrap();

    assert!(!outcome.bytes.windows(token.len()).any(|window| window == token));
}

#[test]
fn mender_client_reads_edited_store() {
    let test = "mender_client_reads_edited_store";
    let Some(tools) = require_tools(&["mdb_load", "mender"], test) else { return };
    let (mdb_load, mender) = (&tools[0], &tools[1]);
    let store = load_store(mdb_load, &multi_level_records());
    let edit = StoreEdit {
        remove: STALE_AUTH_KEYS.iter().map(|key| key.as_bytes().to_vec()).collect(),
        set: vec![record("artifact-name", b"preauthorized-9")],
    };
    let outcome = apply_edit(Some(&store), &edit, StoreLayout::host()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), &outcome.bytes);
    let mender_output = |command: &str| mender_stdout(mender, dir.path(), command);

    assert_eq!(mender_output("show-artifact").trim(), "preauthorized-9");
    let provides = mender_output("show-provides");
    assert!(provides.lines().any(|line| line == "artifact_name=preauthorized-9"), "{provides}");
    assert!(provides.lines().any(|line| line == "rootfs-image.version=release-7"), "{provides}");
}

/// Runs the Mender client with an empty configuration and `dir` as its data directory.
fn run_mender(mender: &Path, dir: &Path, command: &str) -> std::process::Output {
    let config = dir.join("mender.conf");
    std::fs::write(&config, "{}").unwrap();
    Command::new(mender)
        .args(["--no-syslog", "--log-level", "fatal", "--config"])
        .arg(&config)
        .arg("--fallback-config")
        .arg(&config)
        .arg("--data")
        .arg(dir)
        .arg(command)
        .output()
        .unwrap()
}

/// Runs the Mender client as [`run_mender`] does and returns its output, which must be a success.
fn mender_stdout(mender: &Path, dir: &Path, command: &str) -> String {
    let output = run_mender(mender, dir, command);
    assert!(output.status.success(), "mender {command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn mender_client_store_is_edited() {
    let Some(mender) = require_tool("mender", "mender_client_store_is_edited") else { return };
    let dir = tempfile::tempdir().unwrap();
    // Without a store, artifact_info or artifact name this fails, after creating an empty store.
    let first_run = run_mender(&mender, dir.path(), "show-artifact");
    assert!(!first_run.status.success());
    let created_by_client = std::fs::read(dir.path().join("mender-store")).unwrap();

    assert_eq!(read_records(&created_by_client, StoreLayout::host()).unwrap(), Records::new());
    let empty = apply_edit(None, &StoreEdit::default(), StoreLayout::host()).unwrap();
    assert!(empty.bytes == created_by_client, "a new empty store differs from the one the client creates");

    let edit = StoreEdit { remove: Vec::new(), set: vec![record("artifact-name", b"from-the-tool")] };
    let outcome = apply_edit(Some(&created_by_client), &edit, StoreLayout::host()).unwrap();
    write_store(dir.path(), &outcome.bytes);
    std::fs::remove_file(dir.path().join("mender-store-lock")).unwrap();

    assert_eq!(mender_stdout(&mender, dir.path(), "show-artifact").trim(), "from-the-tool");
}

#[test]
fn large_value_grows_the_map() {
    let Some(mdb_dump) = require_tool("mdb_dump", "large_value_grows_the_map") else { return };
    let large_value: Vec<u8> = (0..3_000_000u32).map(|index| (index % 253) as u8).collect();
    let edit = StoreEdit { remove: Vec::new(), set: vec![(b"state".to_vec(), large_value.clone())] };

    let outcome = apply_edit(None, &edit, StoreLayout::host()).unwrap();

    assert_eq!(dump_records(&mdb_dump, &outcome.bytes), Records::from([(b"state".to_vec(), large_value)]));
}

#[test]
fn mismatch_names_the_key_but_not_the_value() {
    let walked = Records::from([record("artifact-name", b"a"), record("authtoken", b"secret-token-value")]);
    let read_by_lmdb =
        Records::from([record("artifact-name", b"a"), record("authtoken", b"other-token-value")]);

    let error = check_same_records(&walked, &read_by_lmdb).unwrap_err().to_string();

    assert!(error.contains("\"authtoken\""), "{error}");
    assert!(!error.contains("token-value"), "{error}");
}

#[test]
fn invalid_keys_are_rejected() {
    let too_long = StoreEdit { remove: Vec::new(), set: vec![(vec![b'k'; 512], b"value".to_vec())] };
    let empty = StoreEdit { remove: Vec::new(), set: vec![(Vec::new(), b"value".to_vec())] };

    assert!(matches!(apply_edit(None, &too_long, StoreLayout::host()), Err(StoreError::InvalidKey { .. })));
    assert!(matches!(apply_edit(None, &empty, StoreLayout::host()), Err(StoreError::InvalidKey { .. })));
}

// ---- rejecting corrupt and unsupported stores ----

/// Creates a valid two-level store with an overflow value with `mdb_load`.
fn valid_store(test: &str) -> Option<Vec<u8>> {
    let mdb_load = require_tool("mdb_load", test)?;
    Some(load_store(&mdb_load, &multi_level_records()))
}

fn read_u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

fn write_u16_at(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn write_u64_at(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Offset of the meta page LMDB uses: the one with the higher transaction ID.
fn current_meta_offset(bytes: &[u8]) -> usize {
    if read_u64_at(bytes, META_TXNID) < read_u64_at(bytes, PAGE_SIZE + META_TXNID) { PAGE_SIZE } else { 0 }
}

fn main_root(bytes: &[u8]) -> u64 {
    read_u64_at(bytes, current_meta_offset(bytes) + META_MAIN_DB + DB_ROOT)
}

/// Page number of the first leaf page: the first child of the (branch) root.
fn first_leaf(bytes: &[u8]) -> usize {
    let root = main_root(bytes) as usize * PAGE_SIZE;
    assert_eq!(bytes[root + PAGE_FLAGS], 0x01, "the root is a branch page");
    let node = root + u16::from_le_bytes([bytes[root + 16], bytes[root + 17]]) as usize;
    let child = u64::from(u16::from_le_bytes([bytes[node], bytes[node + 1]]))
        | u64::from(u16::from_le_bytes([bytes[node + 2], bytes[node + 3]])) << 16;
    child as usize
}

fn assert_corrupt(result: Result<Records, StoreError>, damage: &str) {
    match result {
        Err(StoreError::Corrupt { detail }) => assert!(!detail.is_empty()),
        other => panic!("{damage}: expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn truncated_store_is_corrupt() {
    let Some(store) = valid_store("truncated_store_is_corrupt") else { return };

    for len in [1, 15, 100, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 200, 2 * PAGE_SIZE, store.len() - PAGE_SIZE]
    {
        assert_corrupt(
            read_records(&store[..len], StoreLayout::host()),
            &format!("store cut to {len} bytes"),
        );
    }
}

#[test]
fn damaged_meta_page_is_corrupt() {
    let Some(store) = valid_store("damaged_meta_page_is_corrupt") else { return };

    let mut bad_magic = store.clone();
    bad_magic[PAGE_SIZE + META_MAGIC] ^= 0x01;
    assert_corrupt(read_records(&bad_magic, StoreLayout::host()), "flipped magic in meta page 1");

    let mut bad_flags = store.clone();
    bad_flags[PAGE_FLAGS] = 0x02;
    assert_corrupt(read_records(&bad_flags, StoreLayout::host()), "meta page 0 flagged as a leaf");

    let mut bad_page_size = store.clone();
    write_u16_at(&mut bad_page_size, PAGE_SIZE + 40, 3000);
    assert_corrupt(read_records(&bad_page_size, StoreLayout::host()), "page size 3000 in meta page 1");

    let mut bad_version = store.clone();
    bad_version[META_VERSION] = 2;
    assert!(matches!(read_records(&bad_version, StoreLayout::host()), Err(StoreError::Version { found: 2 })));
}

#[test]
fn unmappable_map_size_is_corrupt() {
    let Some(store) = valid_store("unmappable_map_size_is_corrupt") else { return };
    // mm_mapsize follows the magic, the version and mm_address in the 64-bit layout.
    let map_size_offset = META_VERSION + 4 + 8;

    for map_size in [1u64 << 62, (256 << 30) + 1, u64::MAX] {
        let mut huge_map = store.clone();
        write_u64_at(&mut huge_map, PAGE_SIZE + map_size_offset, map_size);

        match read_records(&huge_map, StoreLayout::host()) {
            Err(StoreError::Corrupt { detail }) => assert!(detail.contains("mm_mapsize"), "{detail}"),
            other => panic!("map size {map_size}: expected a Corrupt error, got {other:?}"),
        }
    }

    let mut large_map = store.clone();
    write_u64_at(&mut large_map, PAGE_SIZE + map_size_offset, 1 << 30);
    assert!(read_records(&large_map, StoreLayout::host()).is_ok());
}

#[test]
fn page_number_past_end_is_corrupt() {
    let Some(store) = valid_store("page_number_past_end_is_corrupt") else { return };
    let meta = current_meta_offset(&store);
    let page_count = (store.len() / PAGE_SIZE) as u64;

    for root in [page_count, page_count + 1, u64::MAX - 1, 0, 1] {
        let mut bad_root = store.clone();
        write_u64_at(&mut bad_root, meta + META_MAIN_DB + DB_ROOT, root);
        assert_corrupt(read_records(&bad_root, StoreLayout::host()), &format!("main root {root}"));
    }

    let mut bad_last_pgno = store.clone();
    write_u64_at(&mut bad_last_pgno, meta + META_LAST_PGNO, page_count + 50);
    assert_corrupt(
        read_records(&bad_last_pgno, StoreLayout::host()),
        "last page number past the file without free pages",
    );
}

#[test]
fn garbage_node_offsets_are_corrupt() {
    let Some(store) = valid_store("garbage_node_offsets_are_corrupt") else { return };
    let leaf = first_leaf(&store) * PAGE_SIZE;

    for pointer in [0u16, 8, 17, 4095, 0xffff] {
        let mut bad_pointer = store.clone();
        write_u16_at(&mut bad_pointer, leaf + PAGE_FIRST_NODE_POINTER, pointer);
        assert_corrupt(
            read_records(&bad_pointer, StoreLayout::host()),
            &format!("leaf node pointer {pointer}"),
        );
    }

    let mut bad_lower = store.clone();
    write_u16_at(&mut bad_lower, leaf + PAGE_LOWER, 0xfff0);
    assert_corrupt(read_records(&bad_lower, StoreLayout::host()), "lower bound past the page");

    let mut bad_upper = store.clone();
    write_u16_at(&mut bad_upper, leaf + PAGE_UPPER, 20);
    assert_corrupt(read_records(&bad_upper, StoreLayout::host()), "upper bound inside the node pointers");

    let mut bad_key_size = store.clone();
    let node = leaf + u16::from_le_bytes([store[leaf + 16], store[leaf + 17]]) as usize;
    write_u16_at(&mut bad_key_size, node + 6, 0xffff);
    assert_corrupt(read_records(&bad_key_size, StoreLayout::host()), "key size past the page");
}

#[test]
fn tree_loops_are_corrupt() {
    let Some(store) = valid_store("tree_loops_are_corrupt") else { return };
    let root = main_root(&store);
    let root_offset = root as usize * PAGE_SIZE;
    let first_node =
        root_offset + u16::from_le_bytes([store[root_offset + 16], store[root_offset + 17]]) as usize;

    let mut child_is_root = store.clone();
    write_u16_at(&mut child_is_root, first_node, root as u16);
    write_u16_at(&mut child_is_root, first_node + 2, 0);
    assert_corrupt(read_records(&child_is_root, StoreLayout::host()), "branch pointing at itself");

    let second_node =
        root_offset + u16::from_le_bytes([store[root_offset + 18], store[root_offset + 19]]) as usize;
    let mut shared_child = store.clone();
    shared_child.copy_within(first_node..first_node + 4, second_node);
    assert_corrupt(read_records(&shared_child, StoreLayout::host()), "two branch nodes pointing at one page");

    let mut deeper = store.clone();
    let meta = current_meta_offset(&store);
    write_u16_at(&mut deeper, meta + META_MAIN_DB + DB_DEPTH, 3);
    assert_corrupt(read_records(&deeper, StoreLayout::host()), "depth larger than the tree");
}

#[test]
fn overflow_run_past_end_is_corrupt() {
    let Some(store) = valid_store("overflow_run_past_end_is_corrupt") else { return };
    let page_count = store.len() / PAGE_SIZE;
    let overflow_page = (2..page_count)
        .find(|pgno| store[pgno * PAGE_SIZE + PAGE_FLAGS] == 0x04)
        .expect("the store has an overflow run");

    let mut long_run = store.clone();
    let count_offset = overflow_page * PAGE_SIZE + 12;
    long_run[count_offset..count_offset + 4].copy_from_slice(&(page_count as u32).to_le_bytes());
    assert_corrupt(read_records(&long_run, StoreLayout::host()), "overflow run longer than the file");

    let mut short_run = store.clone();
    short_run[count_offset..count_offset + 4].copy_from_slice(&1u32.to_le_bytes());
    assert_corrupt(read_records(&short_run, StoreLayout::host()), "overflow run shorter than its value");
}

#[test]
fn sub_databases_and_duplicates_are_unsupported() {
    let Some(store) = valid_store("sub_databases_and_duplicates_are_unsupported") else { return };
    let meta = current_meta_offset(&store);

    let mut dupsort = store.clone();
    write_u16_at(&mut dupsort, meta + META_MAIN_DB + DB_FLAGS, 0x04);
    assert!(matches!(read_records(&dupsort, StoreLayout::host()), Err(StoreError::Unsupported { .. })));

    let leaf = first_leaf(&store) * PAGE_SIZE;
    let node = leaf + u16::from_le_bytes([store[leaf + 16], store[leaf + 17]]) as usize;
    let mut sub_database = store.clone();
    write_u16_at(&mut sub_database, node + NODE_FLAGS, 0x02);
    assert!(matches!(read_records(&sub_database, StoreLayout::host()), Err(StoreError::Unsupported { .. })));
}

#[test]
fn store_in_another_layout_is_rejected_as_layout() {
    let mut big_endian_64 = vec![0u8; 2 * PAGE_SIZE];
    big_endian_64[16..20].copy_from_slice(&0xBEEF_C0DEu32.to_be_bytes());
    let mut little_endian_32 = vec![0u8; 2 * PAGE_SIZE];
    little_endian_32[12..16].copy_from_slice(&0xBEEF_C0DEu32.to_le_bytes());
    let mut big_endian_32 = vec![0u8; 2 * PAGE_SIZE];
    big_endian_32[12..16].copy_from_slice(&0xBEEF_C0DEu32.to_be_bytes());

    let cases = [
        (big_endian_64, StoreLayout::BE64),
        (little_endian_32, StoreLayout::LE32),
        (big_endian_32, StoreLayout::BE32),
    ];
    for (store, expected) in cases {
        assert_eq!(detect_layout(&store).unwrap(), expected);
        match read_records(&store, StoreLayout::LE64) {
            Err(StoreError::Layout { found, expected: target }) => {
                assert_eq!(found, expected);
                assert_eq!(target, StoreLayout::LE64);
            }
            other => panic!("expected a Layout error for {expected}, got {other:?}"),
        }
    }
    assert_corrupt(
        read_records(b"not an LMDB file at all, just some text", StoreLayout::host()),
        "text file",
    );
}

/// xorshift64*: a small deterministic generator, so a failing mutation can be replayed.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// Picks an offset, mostly in page headers, node pointers, node headers and meta fields,
    /// where damage reaches the walk's checks rather than only a value's bytes.
    fn offset(&mut self, store: &[u8]) -> usize {
        let page = self.below(store.len() / PAGE_SIZE) * PAGE_SIZE;
        match self.below(4) {
            0 => page + self.below(48),
            1 => self.below(2) * PAGE_SIZE + self.below(152),
            2 => self.node_header_offset(store, page).unwrap_or(page),
            _ => self.below(store.len()),
        }
    }

    /// Picks a byte in the header of a random node of the branch or leaf page at `page`.
    fn node_header_offset(&mut self, store: &[u8], page: usize) -> Option<usize> {
        let flags = store[page + PAGE_FLAGS];
        if flags != 0x01 && flags != 0x02 {
            return None;
        }
        let lower = u16::from_le_bytes([store[page + PAGE_LOWER], store[page + PAGE_LOWER + 1]]) as usize;
        let node_count = lower.checked_sub(PAGE_FIRST_NODE_POINTER)? / 2;
        if node_count == 0 {
            return None;
        }
        let pointer = page + PAGE_FIRST_NODE_POINTER + 2 * self.below(node_count);
        let node = u16::from_le_bytes([store[pointer], store[pointer + 1]]) as usize;
        Some(page + node + self.below(8))
    }

    fn interesting_word(&mut self, len: usize) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => (len / PAGE_SIZE) as u64 + self.below(3) as u64 - 1,
            3 => self.below(len / PAGE_SIZE) as u64,
            4 => 0x1_0000_0000 + self.below(4) as u64,
            _ => self.next(),
        }
    }
}

/// Applies one to three random byte, bit or word mutations to a copy of `store`.
fn mutate(mutator: &mut Mutator, store: &[u8]) -> Vec<u8> {
    let mut mutated = store.to_vec();
    for _ in 0..1 + mutator.below(3) {
        let offset = mutator.offset(store);
        match mutator.below(3) {
            0 => mutated[offset] = mutator.next() as u8,
            1 => mutated[offset] ^= 1 << mutator.below(8),
            _ => {
                let start = offset.min(store.len() - 8) & !1;
                let word = mutator.interesting_word(store.len());
                mutated[start..start + 8].copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    mutated
}

#[test]
fn random_mutations_never_crash() {
    let Some(mdb_load) = require_tool("mdb_load", "random_mutations_never_crash") else { return };
    let stores = [
        load_store(&mdb_load, &multi_level_records()),
        store_with_free_pages(&multi_level_records()),
        load_store(&mdb_load, &deep_records()),
    ];
    let mut mutator = Mutator(0x5eed_0f1a_7e20_2024);
    let rounds = 450;
    let (mut rejected, mut accepted) = (0, 0);

    for round in 0..rounds {
        let mutated = mutate(&mut mutator, &stores[round % stores.len()]);

        match read_records(&mutated, StoreLayout::host()) {
            Ok(_) => accepted += 1,
            Err(StoreError::Corrupt { .. } | StoreError::Unsupported { .. } | StoreError::Version { .. }) => {
                rejected += 1;
                continue;
            }
            Err(other) => panic!("round {round}: a mutation the walk accepted made LMDB fail: {other}"),
        }
        if round % 20 == 0 {
            let edited =
                apply_edit(Some(&mutated), &StoreEdit::remove_stale_auth_keys(), StoreLayout::host());
            assert!(edited.is_ok(), "round {round}: editing a readable store failed: {edited:?}");
        }
    }

    assert!(rejected >= rounds / 4, "only {rejected} of {rounds} mutations were rejected");
    assert!(accepted > 0, "no mutation was accepted, so none reached LMDB");
}
