//! Inputs that the fuzz targets in `fuzz/` found, replayed through the same entry points
//! (`mender_preauth::fuzzing`). A corrupt image must end in an error that names the corrupt
//! structure, and a write that fails must leave the image unchanged. The files live in
//! `tests/fuzz_inputs/TARGET/`; `fuzz/README.md` describes how to add one.

mod ext_support;

use std::path::PathBuf;

use ext_support::*;
use mender_preauth::fs::ext::ExtError;
use mender_preauth::fuzzing;

/// Reads the input `name` kept for fuzz target `target`.
fn input(target: &str, name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fuzz_inputs", target, name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Names of the structures in the corruption errors among `errors`.
fn corrupt_structures(errors: &[ExtError]) -> Vec<String> {
    errors
        .iter()
        .filter_map(|error| match error {
            ExtError::Corrupt { structure, .. } => Some(structure.clone()),
            _ => None,
        })
        .collect()
}

/// Asserts that reading the ext image `name` reports `structure` as corrupt.
fn assert_read_reports(name: &str, structure: &str) {
    let run = fuzzing::ext_read(&input("ext_read", name));
    let structures = corrupt_structures(&run.errors);
    assert!(
        structures.iter().any(|found| found.contains(structure)),
        "{name}: expected a corruption error naming {structure:?}, got {:?}",
        run.errors
    );
}

/// Asserts that the write sequence on the ext image `name` reports `structure` as corrupt and
/// that no failing operation wrote to the image.
fn assert_write_reports(name: &str, structure: &str) {
    let run = fuzzing::ext_write(&input("ext_write", name));
    assert_eq!(run.wrote_on_error, Vec::<&str>::new(), "{name}: operations wrote to the image and failed");
    let structures = corrupt_structures(&run.errors);
    assert!(
        structures.iter().any(|found| found.contains(structure)),
        "{name}: expected a corruption error naming {structure:?}, got {:?}",
        run.errors
    );
}

#[test]
fn write_sequence_succeeds_on_valid_image() {
    let Some(()) = tools("write_sequence_succeeds_on_valid_image") else { return };
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("mender")).unwrap();
    std::fs::write(source.path().join("mender/device_type"), b"device_type=test-board\n").unwrap();
    let image = make_image(1, NO_CSUM_1K, Some(source.path()));

    let run = fuzzing::ext_write(&std::fs::read(&image.path).unwrap());

    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.succeeded.len(), 14, "{:?}", run.succeeded);
    let read_back = run.read_back.expect("the image opened");
    assert!(read_back.errors.is_empty(), "{:?}", read_back.errors);
    let paths: Vec<&str> = read_back.found.iter().map(|found| found.path.as_str()).collect();
    assert!(paths.contains(&"/fuzz-new"), "{paths:?}");
    assert!(paths.contains(&"/fuzz-hard-link"), "{paths:?}");
    assert!(!paths.contains(&"/fuzz-dir"), "{paths:?}");
    std::fs::write(&image.path, run.written.expect("the image opened")).unwrap();
    assert_fsck_clean(&image.path);
}

// The campaigns recorded in fuzz/README.md found no panic, hang or write before an error. The
// inputs below are corpus entries kept as samples of the checks the fuzzer reached.

#[test]
fn superblock_cut_short_is_corrupt() {
    assert_read_reports("superblock-cut-short", "superblock");
}

#[test]
fn corrupt_directory_block_is_named() {
    assert_read_reports("directory-block-corrupt", "directory inode 13 block 0");
}

#[test]
fn corrupt_inode_stops_writes_unchanged() {
    assert_write_reports("inode-19-corrupt", "inode 19");
}
