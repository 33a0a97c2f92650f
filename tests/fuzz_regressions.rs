//! What the fuzz targets in `fuzz/` found, replayed through the same entry points
//! (`mender_preauth::fuzzing`): corpus inputs kept in `tests/fuzz_inputs/TARGET/`, and findings
//! too large to keep, rebuilt on fresh images. A corrupt image must end in an error that names
//! the corrupt structure, and a write operation that fails must not write at all.
//! `fuzz/README.md` describes how to add a case.

mod ext_support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

// The inputs below are corpus entries kept as samples of the checks the fuzzer reached.

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

// ext_write found images whose journal superblock was corrupt, or whose superblock named no
// journal inode, and wrote to them: the writer only looked at the superblock's recovery flag.
// These inputs are 3 MiB each, so the tests rebuild the damage on a fresh image instead.

/// Builds a 4 MiB ext4 image with 1 KiB blocks, a journal of 1024 blocks, and
/// `/mender/device_type`, so that the write sequence has a file and a directory to work on.
fn journaled_image() -> Image {
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("mender")).unwrap();
    std::fs::write(source.path().join("mender/device_type"), b"device_type=test-board\n").unwrap();
    make_image(4, &["-b", "1024", "-J", "size=1"], Some(source.path()))
}

/// Byte offset of the journal superblock: the first block of the journal inode.
fn journal_superblock_offset(image: &Path) -> u64 {
    let block: u64 = debugfs(image, "bmap <8> 0").trim().parse().expect("debugfs bmap prints a block");
    block * 1024
}

/// Overwrites `bytes` at `offset` of the image file.
fn patch(image: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Runs the write sequence on the image and returns its errors, after checking that no failing
/// operation wrote to it.
fn write_errors(image: &Path) -> Vec<ExtError> {
    let run = fuzzing::ext_write(&std::fs::read(image).unwrap());
    assert_eq!(run.wrote_on_error, Vec::<&str>::new(), "operations wrote to the image and failed");
    assert!(run.succeeded.is_empty(), "{:?}", run.succeeded);
    run.errors
}

#[test]
fn corrupt_journal_superblock_stops_writes() {
    let Some(()) = tools("corrupt_journal_superblock_stops_writes") else { return };
    let image = journaled_image();
    let offset = journal_superblock_offset(&image.path);
    patch(&image.path, offset, &[0xde, 0xad, 0xbe, 0xef]);

    let errors = write_errors(&image.path);

    assert_eq!(corrupt_structures(&errors), vec!["journal superblock (inode 8)".to_string()], "{errors:?}");
    let message = errors[0].to_string();
    assert!(message.contains("magic 0xdeadbeef, expected 0xc03b3998"), "{message}");
}

#[test]
fn journal_with_log_needs_recovery() {
    let Some(()) = tools("journal_with_log_needs_recovery") else { return };
    let image = journaled_image();
    let offset = journal_superblock_offset(&image.path);
    // s_start, the first block of the log, at 0x1C: nonzero means transactions wait for replay.
    patch(&image.path, offset + 0x1C, &1u32.to_be_bytes());

    let errors = write_errors(&image.path);

    assert!(
        matches!(errors.as_slice(), [ExtError::NeedsRecovery { reason }] if reason.contains("not yet replayed")),
        "{errors:?}"
    );
}

#[test]
fn journal_too_short_is_corrupt() {
    let Some(()) = tools("journal_too_short_is_corrupt") else { return };
    let image = journaled_image();
    let offset = journal_superblock_offset(&image.path);
    // s_maxlen at 0x10: fewer blocks than any journal mke2fs or the kernel accepts.
    patch(&image.path, offset + 0x10, &16u32.to_be_bytes());

    let errors = write_errors(&image.path);

    assert_eq!(corrupt_structures(&errors), vec!["journal superblock (inode 8)".to_string()], "{errors:?}");
}

#[test]
fn journal_with_hole_is_corrupt() {
    let Some(()) = tools("journal_with_hole_is_corrupt") else { return };
    let image = make_image(4, &["-t", "ext3", "-b", "1024", "-J", "size=1"], None);
    // The second block pointer of the journal's block map: a hole right after the superblock.
    debugfs_write(&image.path, "sif <8> block[1] 0");

    let errors = write_errors(&image.path);

    assert_eq!(corrupt_structures(&errors), vec!["journal (inode 8)".to_string()], "{errors:?}");
    let message = errors[0].to_string();
    assert!(message.contains("only the first 1 of its 1024 blocks are mapped"), "{message}");
}

#[test]
fn missing_journal_inode_is_unsupported() {
    let Some(()) = tools("missing_journal_inode_is_unsupported") else { return };
    let image = journaled_image();
    debugfs_write(&image.path, "ssv journal_inum 0");

    let errors = write_errors(&image.path);

    assert!(
        matches!(errors.as_slice(), [ExtError::Unsupported { feature, .. }] if feature == "external journal"),
        "{errors:?}"
    );
}

#[test]
fn clean_journal_allows_writes() {
    let Some(()) = tools("clean_journal_allows_writes") else { return };
    let image = journaled_image();

    let run = fuzzing::ext_write(&std::fs::read(&image.path).unwrap());

    assert!(run.errors.is_empty(), "{:?}", run.errors);
    std::fs::write(&image.path, run.written.expect("the image opened")).unwrap();
    assert_fsck_clean(&image.path);
}

// ext_write found images where a directory entry names an inode that the inode bitmap marks
// free. The allocator handed that inode out again, so two files shared one inode.

#[test]
fn free_marked_inode_in_use_is_corrupt() {
    let Some(()) = tools("free_marked_inode_in_use_is_corrupt") else { return };
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("mender")).unwrap();
    std::fs::write(source.path().join("mender/device_type"), b"device_type=test-board\n").unwrap();
    let image = make_image(1, NO_CSUM_1K, Some(source.path()));
    let ino: u32 = debugfs(&image.path, "stat /mender")
        .split("Inode: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // freei clears the bit only; the counts follow, so that only the inode table disagrees.
    let free_inodes: u32 = field(&debugfs(&image.path, "stats"), "Free inodes:").unwrap().parse().unwrap();
    debugfs_write(&image.path, &format!("freei <{ino}>"));
    debugfs_write(&image.path, &format!("ssv free_inodes_count {}", free_inodes + 1));
    debugfs_write(&image.path, &format!("set_bg 0 free_inodes_count {}", free_inodes + 1));
    debugfs_write(&image.path, "set_bg 0 checksum calc");
    let before = std::fs::read(&image.path).unwrap();

    let run = fuzzing::ext_write(&before);

    assert_eq!(run.wrote_on_error, Vec::<&str>::new(), "operations wrote to the image and failed");
    let structures = corrupt_structures(&run.errors);
    assert!(structures.contains(&"inode bitmap of group 0".to_string()), "{:?}", run.errors);
    let message = run.errors.iter().map(ToString::to_string).find(|message| message.contains("inode bitmap"));
    let expected = format!("inode {ino} is marked free but has 2 links");
    assert!(message.as_deref().is_some_and(|message| message.contains(&expected)), "{message:?}");
}
