//! Tests of stores in the 32-bit layout and of converting stores between layouts. The judges are
//! Debian's i386 build of LMDB's tools (`mdb_load`, `mdb_dump`, `mdb_stat`, `mdb_copy`), which
//! read and write the 32-bit little-endian layout natively, and this host's 64-bit build. Offsets
//! of the 32-bit layout are written out here, independently of the code under test.

use super::tests::{
    deep_records, dump_records, dump_text, load_store, mender_records, multi_level_records, record, run,
    stat_field, store_with_free_pages, without_stale_auth_keys, write_store,
};
use super::*;
use crate::test_support::{
    ForeignLmdb, ForeignLmdbTool, require_foreign_lmdb_tools, require_i386_lmdb_tools, require_tools,
};

const PAGE_SIZE: usize = 4096;

/// Offsets in a page and a meta page of the 32-bit little-endian layout.
const PAGE_FLAGS_32: usize = 6;
const PAGE_LOWER_32: usize = 8;
const PAGE_UPPER_32: usize = 10;
const META_MAGIC_32: usize = 12;
const META_VERSION_32: usize = 16;
const META_MAIN_DB_32: usize = 56;
const DB_ROOT_32: usize = 24;
const META_TXNID_32: usize = 88;

/// Offset of the page size (`md_pad` of the free database) in a 64-bit meta page.
const META_PAGE_SIZE_64: usize = 40;

const P_LEAF: u16 = 0x02;

/// The i386 LMDB tools.
struct I386Tools {
    load: ForeignLmdbTool,
    dump: ForeignLmdbTool,
    stat: ForeignLmdbTool,
    copy: ForeignLmdbTool,
}

fn i386_tools(test: &str) -> Option<I386Tools> {
    let mut tools = require_i386_lmdb_tools(&["mdb_load", "mdb_dump", "mdb_stat", "mdb_copy"], test)?;
    let copy = tools.pop()?;
    let stat = tools.pop()?;
    let dump = tools.pop()?;
    let load = tools.pop()?;
    Some(I386Tools { load, dump, stat, copy })
}

/// Compacts a store with `mdb_copy -c`, as LMDB itself compacts.
fn compact(mdb_copy: &(impl super::tests::LmdbTool + ?Sized), bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let source = write_store(dir.path(), bytes);
    let target = dir.path().join("compacted");
    run(mdb_copy, &["-n".as_ref(), "-c".as_ref(), source.as_os_str(), target.as_os_str()]);
    std::fs::read(&target).unwrap()
}

/// Loads `records` into an existing store file with `mdb_load`, in a second transaction.
fn load_more(mdb_load: &ForeignLmdbTool, bytes: &[u8], records: &Records) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_store(dir.path(), bytes);
    let dump_path = dir.path().join("more.dump");
    std::fs::write(&dump_path, dump_text(records)).unwrap();
    run(mdb_load, &["-n".as_ref(), "-f".as_ref(), dump_path.as_os_str(), path.as_os_str()]);
    std::fs::read(&path).unwrap()
}

fn read_u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
}

fn read_u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn write_u32_at(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Offset of the 32-bit meta page LMDB uses: the one with the higher transaction ID.
fn current_meta_offset_32(bytes: &[u8]) -> usize {
    if read_u32_at(bytes, META_TXNID_32) < read_u32_at(bytes, PAGE_SIZE + META_TXNID_32) {
        PAGE_SIZE
    } else {
        0
    }
}

/// Deep records with values on overflow pages: three levels of branch and leaf pages.
fn layered_records() -> Records {
    let mut records = deep_records();
    let large_value: Vec<u8> = (0..3 * PAGE_SIZE + 123).map(|index| (index % 251) as u8).collect();
    records.insert(b"update-control-maps".to_vec(), large_value);
    records.insert(b"zz-large".to_vec(), vec![0xa5; 10 * PAGE_SIZE]);
    records
}

// ---- reading and editing stores the i386 LMDB wrote ----

#[test]
fn i386_store_is_read_like_i386_mdb_dump() {
    let Some(i386) = i386_tools("i386_store_is_read_like_i386_mdb_dump") else { return };
    let Some(host) = require_tools(&["mdb_dump", "mdb_stat"], "i386_store_is_read_like_i386_mdb_dump") else {
        return;
    };
    let records = layered_records();
    let store = load_store(&i386.load, &records);
    assert!(stat_field(&i386.stat, &store, "Status of Main DB", "Tree depth:") >= 3);
    assert!(stat_field(&i386.stat, &store, "Status of Main DB", "Overflow pages:") >= 14);

    assert_eq!(detect_layout(&store).unwrap(), StoreLayout::LE32);
    assert_eq!(dump_records(&i386.dump, &store), records);
    assert!(
        read_records(&store, StoreLayout::LE32).unwrap() == records,
        "records differ from mdb_load's input"
    );

    let host_store = to_host(&store, StoreLayout::LE32).unwrap();
    assert_eq!(detect_layout(&host_store).unwrap(), StoreLayout::host());
    assert!(dump_records(&host[0], &host_store) == records, "64-bit mdb_dump reads other records");
    for field in ["Tree depth:", "Branch pages:", "Leaf pages:", "Overflow pages:", "Entries:"] {
        assert_eq!(
            stat_field(&host[1], &host_store, "Status of Main DB", field),
            stat_field(&i386.stat, &store, "Status of Main DB", field),
            "{field}"
        );
    }
}

#[test]
fn i386_store_edit_keeps_other_records() {
    let Some(i386) = i386_tools("i386_store_edit_keeps_other_records") else { return };
    let original = layered_records();
    let store = load_store(&i386.load, &original);
    let new_value: Vec<u8> = (0..2 * PAGE_SIZE).map(|index| (index % 13) as u8).collect();
    let mut edit = StoreEdit::remove_stale_auth_keys();
    edit.set.push(record("artifact-name", b"release-8"));
    edit.set.push(record("inventory-cache", &new_value));

    let outcome = apply_edit(Some(&store), &edit, StoreLayout::LE32).unwrap();

    let mut expected = without_stale_auth_keys(&original);
    expected.insert(b"artifact-name".to_vec(), b"release-8".to_vec());
    expected.insert(b"inventory-cache".to_vec(), new_value);
    assert_eq!(outcome.removed, vec![b"auth-token-cache-invalidator".to_vec(), b"authtoken".to_vec()]);
    assert_eq!(detect_layout(&outcome.bytes).unwrap(), StoreLayout::LE32);
    assert!(dump_records(&i386.dump, &outcome.bytes) == expected, "i386 mdb_dump lists other records");
    assert_eq!(
        stat_field(&i386.stat, &outcome.bytes, "Status of Main DB", "Entries:"),
        expected.len() as u64
    );
    assert!(stat_field(&i386.stat, &outcome.bytes, "Status of Main DB", "Tree depth:") >= 3);
    assert!(read_records(&outcome.bytes, StoreLayout::LE32).unwrap() == expected);
}

#[test]
fn i386_lmdb_writes_to_converted_store() {
    let Some(i386) = i386_tools("i386_lmdb_writes_to_converted_store") else { return };
    let outcome = apply_edit(
        None,
        &StoreEdit { remove: Vec::new(), set: multi_level_records().into_iter().collect() },
        StoreLayout::LE32,
    )
    .unwrap();
    let added = Records::from([record("added-by-i386-lmdb", b"yes"), record("state", b"overwritten")]);

    let extended = load_more(&i386.load, &outcome.bytes, &added);

    let mut expected = multi_level_records();
    expected.extend(added);
    assert!(dump_records(&i386.dump, &extended) == expected, "i386 mdb_dump after i386 mdb_load differs");
    assert!(read_records(&extended, StoreLayout::LE32).unwrap() == expected);
}

#[test]
fn new_32_bit_store_is_listed_by_i386_tools() {
    let Some(i386) = i386_tools("new_32_bit_store_is_listed_by_i386_tools") else { return };
    let cases = [Records::new(), mender_records(), multi_level_records(), layered_records()];

    for records in cases {
        let edit = StoreEdit { remove: Vec::new(), set: records.clone().into_iter().collect() };

        let outcome = apply_edit(None, &edit, StoreLayout::LE32).unwrap();

        assert!(outcome.created);
        assert_eq!(detect_layout(&outcome.bytes).unwrap(), StoreLayout::LE32);
        assert!(dump_records(&i386.dump, &outcome.bytes) == records, "{} records", records.len());
        assert_eq!(
            stat_field(&i386.stat, &outcome.bytes, "Status of Main DB", "Entries:"),
            records.len() as u64
        );
        assert_eq!(stat_field(&i386.stat, &outcome.bytes, "Freelist Status", "Entries:"), 0);
    }
}

#[test]
fn store_with_free_pages_converts_its_free_list() {
    let Some(i386) = i386_tools("store_with_free_pages_converts_its_free_list") else { return };
    let Some(host) = require_tools(&["mdb_stat"], "store_with_free_pages_converts_its_free_list") else {
        return;
    };
    let first = multi_level_records();
    let second: Records = (0..150).map(|index| record(&format!("filler-{index:04}"), b"changed")).collect();
    let store = load_more(&i386.load, &load_store(&i386.load, &first), &second);
    let free_pages = stat_field(&i386.stat, &store, "Freelist Status", "Free pages:");
    assert!(free_pages > 0, "the second transaction freed no pages");

    let host_store = to_host(&store, StoreLayout::LE32).unwrap();

    let mut expected = first;
    expected.extend(second);
    assert!(read_records(&store, StoreLayout::LE32).unwrap() == expected);
    assert_eq!(stat_field(&host[0], &host_store, "Freelist Status", "Free pages:"), free_pages);
    assert_eq!(
        stat_field(&host[0], &host_store, "Freelist Status", "Entries:"),
        stat_field(&i386.stat, &store, "Freelist Status", "Entries:")
    );
    assert_eq!(from_host(&host_store, StoreLayout::LE32).unwrap().len(), store.len());
}

// ---- the 64-bit big-endian layout, judged by the s390x LMDB ----

/// Finds the s390x LMDB tools (`mdb_load`, `mdb_dump`, `mdb_stat`), which run under qemu.
fn s390x_tools(test: &str) -> Option<Vec<ForeignLmdbTool>> {
    require_foreign_lmdb_tools(ForeignLmdb::S390x, &["mdb_load", "mdb_dump", "mdb_stat"], test)
}

#[test]
fn new_big_endian_store_is_listed_by_s390x_tools() {
    let Some(s390x) = s390x_tools("new_big_endian_store_is_listed_by_s390x_tools") else { return };
    let (dump, stat) = (&s390x[1], &s390x[2]);

    for records in [Records::new(), mender_records(), multi_level_records(), layered_records()] {
        let edit = StoreEdit { remove: Vec::new(), set: records.clone().into_iter().collect() };

        let outcome = apply_edit(None, &edit, StoreLayout::BE64).unwrap();

        assert_eq!(detect_layout(&outcome.bytes).unwrap(), StoreLayout::BE64);
        assert!(dump_records(dump, &outcome.bytes) == records, "{} records", records.len());
        assert_eq!(stat_field(stat, &outcome.bytes, "Status of Main DB", "Entries:"), records.len() as u64);
    }
}

#[test]
fn s390x_store_edit_keeps_other_records() {
    let test = "s390x_store_edit_keeps_other_records";
    let Some(s390x) = s390x_tools(test) else { return };
    let Some(host) = require_tools(&["mdb_dump"], test) else { return };
    let (load, dump, stat) = (&s390x[0], &s390x[1], &s390x[2]);
    let original = layered_records();
    let store = load_store(load, &original);
    assert!(stat_field(stat, &store, "Status of Main DB", "Tree depth:") >= 3);
    let mut edit = StoreEdit::remove_stale_auth_keys();
    edit.set.push(record("artifact-name", b"release-8"));

    let outcome = apply_edit(Some(&store), &edit, StoreLayout::BE64).unwrap();

    assert_eq!(detect_layout(&store).unwrap(), StoreLayout::BE64);
    assert!(read_records(&store, StoreLayout::BE64).unwrap() == original);
    assert!(dump_records(&host[0], &to_host(&store, StoreLayout::BE64).unwrap()) == original);
    let mut expected = without_stale_auth_keys(&original);
    expected.insert(b"artifact-name".to_vec(), b"release-8".to_vec());
    assert!(dump_records(dump, &outcome.bytes) == expected, "s390x mdb_dump lists other records");
    let added = Records::from([record("added-by-s390x-lmdb", b"yes")]);
    let extended = load_more(load, &outcome.bytes, &added);
    expected.extend(added);
    assert!(dump_records(dump, &extended) == expected, "s390x mdb_dump after s390x mdb_load differs");
    assert!(read_records(&extended, StoreLayout::BE64).unwrap() == expected);
}

// ---- conversions ----

#[test]
fn round_trip_through_64_bit_is_byte_stable() {
    let test = "round_trip_through_64_bit_is_byte_stable";
    let Some(i386) = i386_tools(test) else { return };
    let Some(host) = require_tools(&["mdb_load", "mdb_dump", "mdb_copy"], test) else { return };

    for records in [Records::new(), mender_records(), multi_level_records(), layered_records()] {
        let compacted_32 = compact(&i386.copy, &load_store(&i386.load, &records));
        let as_64 = to_host(&compacted_32, StoreLayout::LE32).unwrap();
        assert!(dump_records(&host[1], &as_64) == records, "{} records read by mdb_dump", records.len());
        // LMDB leaves old bytes in the free space of some pages, which a conversion zeroes.
        let normalized_32 = convert::normalize(&compacted_32, StoreLayout::LE32).unwrap();
        assert!(dump_records(&i386.dump, &normalized_32) == records, "{} records normalized", records.len());
        assert!(from_host(&as_64, StoreLayout::LE32).unwrap() == normalized_32, "{} records", records.len());
        let normalized_64 = to_host(&normalized_32, StoreLayout::LE32).unwrap();
        assert!(
            from_host(&normalized_64, StoreLayout::LE32).unwrap() == normalized_32,
            "{} records",
            records.len()
        );

        let written_32 = apply_edit(
            None,
            &StoreEdit { remove: Vec::new(), set: records.clone().into_iter().collect() },
            StoreLayout::LE32,
        )
        .unwrap()
        .bytes;
        let back = from_host(&to_host(&written_32, StoreLayout::LE32).unwrap(), StoreLayout::LE32).unwrap();
        assert!(back == written_32, "{} records written here", records.len());

        let compacted_64 = compact(&host[2], &load_store(&host[0], &records));
        let as_32 = from_host(&compacted_64, StoreLayout::LE32).unwrap();
        assert!(
            dump_records(&i386.dump, &as_32) == records,
            "{} records read by i386 mdb_dump",
            records.len()
        );
        let normalized_64 = convert::normalize(&compacted_64, StoreLayout::LE64).unwrap();
        assert!(to_host(&as_32, StoreLayout::LE32).unwrap() == normalized_64, "{} records", records.len());
    }
}

#[test]
fn full_32_bit_pages_convert_with_larger_pages() {
    let test = "full_32_bit_pages_convert_with_larger_pages";
    let Some(i386) = i386_tools(test) else { return };
    let Some(host) = require_tools(&["mdb_dump"], test) else { return };
    // In the 32-bit layout a leaf node of 8 + 10 + 2022 bytes is the largest that LMDB keeps on
    // the leaf page, and two of them with their pointers fill the 4084 bytes after the header.
    let full_leaf: Records =
        (0..2).map(|index| (format!("full-{index:05}").into_bytes(), vec![index; 2022])).collect();
    // A value of 4084 bytes fills one overflow page after its header, but takes two in the
    // 64-bit layout.
    let full_overflow = Records::from([record("one-full-overflow-page", &[0x3c; PAGE_SIZE - 12])]);

    for records in [full_leaf, full_overflow] {
        let store = load_store(&i386.load, &records);
        let root =
            read_u32_at(&store, current_meta_offset_32(&store) + META_MAIN_DB_32 + DB_ROOT_32) as usize;
        let root_page = &store[root * PAGE_SIZE..];
        let free_space = read_u16_at(root_page, PAGE_UPPER_32) - read_u16_at(root_page, PAGE_LOWER_32);
        assert_eq!(read_u16_at(root_page, PAGE_FLAGS_32), P_LEAF);

        let host_store = to_host(&store, StoreLayout::LE32).unwrap();

        assert!(free_space == 0 || records.len() == 1, "the leaf page of two records is not full");
        assert_eq!(read_u32_at(&host_store, META_PAGE_SIZE_64), 2 * PAGE_SIZE as u32);
        assert!(
            dump_records(&host[0], &host_store) == records,
            "64-bit mdb_dump of the larger pages differs"
        );
        assert!(read_records(&store, StoreLayout::LE32).unwrap() == records);
        let outcome =
            apply_edit(Some(&store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::LE32).unwrap();
        assert!(
            dump_records(&i386.dump, &outcome.bytes) == records,
            "i386 mdb_dump of the new store differs"
        );
    }
}

#[test]
fn layouts_convert_there_and_back() {
    let records = multi_level_records();
    let host_store = apply_edit(
        None,
        &StoreEdit { remove: Vec::new(), set: records.clone().into_iter().collect() },
        StoreLayout::host(),
    )
    .unwrap()
    .bytes;

    let normalized = convert::normalize(&host_store, StoreLayout::host()).unwrap();

    for layout in [StoreLayout::LE32, StoreLayout::BE32, StoreLayout::BE64, StoreLayout::LE64] {
        let converted = from_host(&host_store, layout).unwrap();

        assert_eq!(detect_layout(&converted).unwrap(), layout);
        assert!(read_records(&converted, layout).unwrap() == records, "{layout}");
        let back = to_host(&converted, layout).unwrap();
        assert!(convert::normalize(&back, StoreLayout::host()).unwrap() == normalized, "{layout}");
    }
}

#[test]
fn big_endian_fields_are_big_endian() {
    let host_store = apply_edit(
        None,
        &StoreEdit { remove: Vec::new(), set: vec![record("k", b"v")] },
        StoreLayout::host(),
    )
    .unwrap()
    .bytes;

    let big_32 = from_host(&host_store, StoreLayout::BE32).unwrap();

    assert_eq!(big_32[META_MAGIC_32..META_MAGIC_32 + 4], 0xBEEF_C0DEu32.to_be_bytes());
    assert_eq!(big_32[META_VERSION_32..META_VERSION_32 + 4], 1u32.to_be_bytes());
    assert_eq!(big_32[PAGE_SIZE..PAGE_SIZE + 4], 1u32.to_be_bytes(), "page number of meta page 1");
}

// ---- rejecting corrupt 32-bit stores ----

fn assert_rejected(store: &[u8], damage: &str) {
    match read_records(store, StoreLayout::LE32) {
        Err(StoreError::Corrupt { detail }) => assert!(!detail.is_empty(), "{damage}"),
        Err(StoreError::Version { .. }) => {}
        other => panic!("{damage}: expected a Corrupt error, got {other:?}"),
    }
    assert!(
        apply_edit(Some(store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::LE32).is_err(),
        "{damage}"
    );
}

#[test]
fn corrupt_32_bit_stores_are_rejected() {
    let Some(i386) = i386_tools("corrupt_32_bit_stores_are_rejected") else { return };
    let store = load_store(&i386.load, &multi_level_records());
    let meta = current_meta_offset_32(&store);

    for len in
        [1, 12, 91, PAGE_SIZE, PAGE_SIZE + 1, 2 * PAGE_SIZE - 1, store.len() - PAGE_SIZE, store.len() - 1]
    {
        assert_rejected(&store[..len], &format!("store cut to {len} bytes"));
    }

    let mut bad_magic = store.clone();
    bad_magic[PAGE_SIZE + META_MAGIC_32] ^= 0xff;
    assert_rejected(&bad_magic, "flipped magic in meta page 1");

    let mut bad_version = store.clone();
    write_u32_at(&mut bad_version, META_VERSION_32, 2);
    assert_rejected(&bad_version, "version 2 in meta page 0");

    let mut bad_root = store.clone();
    write_u32_at(&mut bad_root, meta + META_MAIN_DB_32 + DB_ROOT_32, 100_000);
    assert_rejected(&bad_root, "main root past the file");

    let root = read_u32_at(&store, meta + META_MAIN_DB_32 + DB_ROOT_32) as usize * PAGE_SIZE;
    let mut bad_upper = store.clone();
    bad_upper[root + PAGE_UPPER_32..root + PAGE_UPPER_32 + 2].copy_from_slice(&4u16.to_le_bytes());
    assert_rejected(&bad_upper, "upper bound inside the page header");

    let mut as_64_bit = store.clone();
    as_64_bit[META_MAGIC_32..META_MAGIC_32 + 4].fill(0);
    as_64_bit[16..20].copy_from_slice(&0xBEEF_C0DEu32.to_le_bytes());
    assert!(matches!(
        read_records(&as_64_bit, StoreLayout::LE32),
        Err(StoreError::Layout { found: StoreLayout::LE64, expected: StoreLayout::LE32 })
    ));
}

#[test]
fn damaged_32_bit_stores_never_crash() {
    let Some(i386) = i386_tools("damaged_32_bit_stores_never_crash") else { return };
    let records = multi_level_records();
    let store = load_store(&i386.load, &records);
    let mut judged = 0;

    // Every 5th byte of the meta pages and the page headers and node areas of the first pages,
    // set to values that reach past bounds.
    let offsets = (0..6 * PAGE_SIZE).step_by(5).filter(|offset| offset % PAGE_SIZE < 200 || offset % 97 == 0);
    for (round, offset) in offsets.enumerate() {
        let mut damaged = store.clone();
        damaged[offset] = [0xff, 0x00, 0x80, 0x7f][round % 4] ^ damaged[offset].rotate_left(round as u32 % 8);

        let Ok(read) = read_records(&damaged, StoreLayout::LE32) else { continue };
        let outcome =
            apply_edit(Some(&damaged), &StoreEdit::remove_stale_auth_keys(), StoreLayout::LE32).unwrap();
        assert!(outcome.records == without_stale_auth_keys(&read), "byte {offset}");
        if judged < 10 {
            assert!(dump_records(&i386.dump, &outcome.bytes) == outcome.records, "byte {offset}");
            judged += 1;
        }
    }
}

#[test]
fn store_in_64_bit_layout_is_rejected_for_32_bit() {
    let host_store = store_with_free_pages(&mender_records());

    let result = apply_edit(Some(&host_store), &StoreEdit::remove_stale_auth_keys(), StoreLayout::LE32);

    match result {
        Err(error @ StoreError::Layout { .. }) => assert_eq!(
            error.to_string(),
            "mender-store is in the 64-bit little-endian LMDB layout, but the target reads the 32-bit \
             little-endian layout, so its Mender client would not open it"
        ),
        other => panic!("expected a Layout error, got {other:?}"),
    }
}

#[test]
fn damaged_big_endian_stores_never_crash() {
    let records = multi_level_records();
    let host_store = apply_edit(
        None,
        &StoreEdit { remove: Vec::new(), set: records.into_iter().collect() },
        StoreLayout::host(),
    )
    .unwrap()
    .bytes;

    for layout in [StoreLayout::BE32, StoreLayout::BE64] {
        let store = from_host(&host_store, layout).unwrap();
        let offsets =
            (0..store.len()).step_by(7).filter(|offset| offset % PAGE_SIZE < 160 || offset % 89 == 0);
        for (round, offset) in offsets.enumerate() {
            let mut damaged = store.clone();
            damaged[offset] ^= [0xff, 0x01, 0x80, 0x10][round % 4];

            let Ok(read) = read_records(&damaged, layout) else { continue };
            let outcome = apply_edit(Some(&damaged), &StoreEdit::remove_stale_auth_keys(), layout).unwrap();
            assert!(outcome.records == without_stale_auth_keys(&read), "{layout}, byte {offset}");
            assert!(
                read_records(&outcome.bytes, layout).unwrap() == outcome.records,
                "{layout}, byte {offset}"
            );
        }
    }
}
