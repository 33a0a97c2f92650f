//! Damaged images, broken with debugfs the way a bit flip or a bad tool would break them. Every
//! case must end in a corruption error that names the damaged structure, quickly, with nothing
//! staged and the image unchanged. e2fsck confirms that each damage is real.

mod ext_support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use ext_support::*;
use mender_preauth::fs::ext::{Ext, ExtError};
use mender_preauth::image::volume::{FileVolume, Staged};

/// Maximum time any operation on a damaged image may take. The loops these tests guard against
/// ran for hours.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Builds a 4 KiB-block ext4 image with `/mender/device_type` and `/mender/mender-agent.pem`.
fn mender_image(size_mib: u64, args: &[&str]) -> Image {
    let source = tempfile::tempdir().unwrap();
    let mender = source.path().join("mender");
    std::fs::create_dir(&mender).unwrap();
    std::fs::write(mender.join("device_type"), b"device_type=test-board\n").unwrap();
    std::fs::write(mender.join("mender-agent.pem"), pattern(1679, 3)).unwrap();
    make_image(size_mib, args, Some(source.path()))
}

/// Runs debugfs commands from a script with `-w -f`, for changes that need several commands.
fn debugfs_script(image: &Path, commands: &str) {
    let script = image.with_extension("debugfs");
    std::fs::write(&script, commands).unwrap();
    let output = Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(image).output().unwrap();
    assert!(output.status.success(), "debugfs -f failed: {output:?}");
}

/// Returns the first number that debugfs prints for `request`, such as a block of `blocks PATH`.
fn debugfs_number(image: &Path, request: &str) -> u64 {
    let output = debugfs(image, request);
    let word = output.split_whitespace().find(|word| word.parse::<u64>().is_ok());
    word.unwrap_or_else(|| panic!("no number in `{request}` output: {output:?}")).parse().unwrap()
}

/// Block of the inode table that holds inode `ino`, from `debugfs imap`.
fn inode_table_block(image: &Path, ino: u32) -> u64 {
    let output = debugfs(image, &format!("imap <{ino}>"));
    let after = output.split("located at block ").nth(1).unwrap_or_else(|| panic!("imap output: {output:?}"));
    after.split(',').next().unwrap().trim().parse().unwrap()
}

/// Block bitmap of group 0, from the group lines of `debugfs stats`.
fn group_0_block_bitmap(image: &Path) -> u64 {
    let output = debugfs(image, "stats");
    let after = output.split("block bitmap at ").nth(1).unwrap_or_else(|| panic!("stats output: {output:?}"));
    after.split(',').next().unwrap().trim().parse().unwrap()
}

/// Marks `block` of group 0 free in the block bitmap and counts it in the group's free blocks,
/// so that the bitmap and the counts agree while the file that owns the block still maps it.
fn mark_free_in_group_0(image: &Path, block: u64) {
    let stats = debugfs(image, "stats");
    let group_0 = stats.split("Group  0:").nth(1).unwrap_or_else(|| panic!("stats output: {stats:?}"));
    let free: u64 =
        group_0.split(" free blocks").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    debugfs_script(image, &format!("freeb {block}\nset_bg 0 free_blocks_count {}\n", free + 1));
}

/// Exit code and output of `e2fsck -fn`.
fn e2fsck(image: &Path) -> (i32, String) {
    let output = Command::new("e2fsck").arg("-fn").arg(image).output().expect("run e2fsck");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// Asserts that e2fsck finds a problem in the damaged input and reports `expected`.
fn assert_fsck_reports(image: &Path, expected: &str) {
    let (code, report) = e2fsck(image);
    assert_ne!(code, 0, "e2fsck found no damage:\n{report}");
    assert!(report.contains(expected), "e2fsck did not report {expected:?}:\n{report}");
}

/// Runs `operation` on the image in a thread and fails the test when it takes longer than
/// [`TIME_LIMIT`]. Returns what the operation returned.
fn within_time_limit<T: Send + 'static>(
    image: &Path,
    operation: impl FnOnce(&mut Ext<Staged<FileVolume<'_>>>) -> T + Send + 'static,
) -> T {
    let path: PathBuf = image.to_path_buf();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut ext = Ext::open(Staged::new(FileVolume::new(&file, 0, len))).expect("open filesystem");
        let result = operation(&mut ext);
        let _ = sender.send(result);
    });
    receiver.recv_timeout(TIME_LIMIT).unwrap_or_else(|_| panic!("operation ran longer than {TIME_LIMIT:?}"))
}

/// Asserts that `result` is a corruption error of a structure containing `structure` whose
/// message contains every one of `words`.
fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, ExtError>, structure: &str, words: &[&str]) {
    let error = match result {
        Err(error @ ExtError::Corrupt { .. }) => error,
        other => panic!("expected a corruption error of {structure:?}, got {other:?}"),
    };
    let ExtError::Corrupt { structure: named, .. } = &error else { unreachable!() };
    assert!(named.contains(structure), "error names {named:?}, not {structure:?}: {error}");
    let message = error.to_string();
    for word in words {
        assert!(message.contains(word), "{word:?} missing from: {message}");
    }
}

/// Runs the write `change` on the image and asserts that it fails as [`assert_corrupt`] checks,
/// within the time limit, with nothing staged and the image file unchanged.
fn assert_write_rejected(
    image: &Path,
    structure: &str,
    words: &[&str],
    change: impl FnOnce(&mut Ext<Staged<FileVolume<'_>>>) -> Result<(), ExtError> + Send + 'static,
) {
    let before = sha256_file(image);
    let (result, pending) = within_time_limit(image, move |ext| {
        let result = change(ext);
        (result, ext.volume().pending_bytes())
    });
    assert_corrupt(result, structure, words);
    assert_eq!(pending, 0, "a rejected write staged bytes");
    assert_eq!(sha256_file(image), before, "the image changed");
}

/// Replaces the device key, as provisioning does.
fn replace_key(ext: &mut Ext<Staged<FileVolume<'_>>>) -> Result<(), ExtError> {
    ext.write_file("/mender/mender-agent.pem", &pattern(2484, 9), &ATTRS).map(|_| ())
}

/// Asserts that opening the image fails with a corruption error as [`assert_corrupt`] checks.
fn assert_open_rejected(image: &Path, structure: &str, words: &[&str]) {
    let file = File::open(image).unwrap();
    let len = file.metadata().unwrap().len();
    assert_corrupt(Ext::open(FileVolume::new(&file, 0, len)).map(|_| ()), structure, words);
}

#[test]
fn huge_directory_size_fails_fast() {
    if tools("huge_directory_size_fails_fast").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    let stats = debugfs(&image.path, "stats");
    let blocks_count: u64 = field(&stats, "Block count:").unwrap().parse().unwrap();
    let cases = [
        (format!("{:#x}", 1u64 << 56), "larger than the filesystem"),
        // A size the filesystem could hold, so only the map shows that it is wrong.
        ((blocks_count * 4096).to_string(), "logical block 1 is a hole"),
    ];
    for (size, detail) in cases {
        let image = mender_image(16, DEFAULT_4K);
        debugfs_write(&image.path, &format!("sif /mender size {size}"));
        assert_fsck_reports(&image.path, "i_size is");

        let lookup = within_time_limit(&image.path, |ext| ext.lookup("/mender/device_type").map(|_| ()));
        assert_corrupt(lookup, "directory inode 12", &[detail]);
        assert_write_rejected(&image.path, "directory inode 12", &[detail], replace_key);
    }
}

#[test]
fn huge_sparse_file_reads_fast() {
    if tools("huge_sparse_file_reads_fast").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    debugfs_write(&image.path, "sif /mender/device_type size 0x100000000000000");

    let (whole, tail) = within_time_limit(&image.path, |ext| {
        let ino = ext.lookup("/mender/device_type").unwrap().unwrap();
        let mut tail = [1u8; 16];
        let read = ext.read_at(ino, (1 << 56) - 8, &mut tail).unwrap();
        (ext.read_file(ino, 1 << 20), (read, tail))
    });
    assert!(matches!(whole, Err(ExtError::FileTooLarge { size, .. }) if size == 1 << 56), "{whole:?}");
    assert_eq!(tail.0, 8, "read stops at the end of the file");
    assert_eq!(tail.1[..8], [0; 8], "a hole reads as zeros");
}

#[test]
fn inode_storage_beyond_filesystem_is_corrupt() {
    if tools("inode_storage_beyond_filesystem_is_corrupt").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    debugfs_write(&image.path, "sif /mender/device_type blocks 0xfffffff0");
    assert_fsck_reports(&image.path, "i_blocks is");

    let metadata = within_time_limit(&image.path, |ext| {
        let ino = ext.lookup("/mender/device_type").unwrap().unwrap();
        ext.metadata(ino).map(|_| ())
    });
    assert_corrupt(metadata, "inode 13", &["i_blocks counts", "more than the filesystem's"]);
}

#[test]
fn root_directory_hole_is_rejected() {
    if tools("root_directory_hole_is_rejected").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    // An extent header with no entries: block 0 of / is a hole although its size is one block.
    debugfs_write(&image.path, "sif / block[0] 0x0000f30a");
    assert_fsck_reports(&image.path, "Inode 2 is a zero-length directory");

    assert_write_rejected(&image.path, "directory inode 2", &["logical block 0 is a hole"], |ext| {
        ext.create_dir("/mender", &DIR_ATTRS).map(|_| ())
    });
    assert_write_rejected(&image.path, "directory inode 2", &["logical block 0 is a hole"], replace_key);
}

#[test]
fn key_sharing_a_directory_block_is_not_replaced() {
    if tools("key_sharing_a_directory_block_is_not_replaced").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    let directory_block = debugfs_number(&image.path, "blocks /mender");
    // i_block word 5 is the low half of the first extent's start block.
    debugfs_write(&image.path, &format!("sif /mender/mender-agent.pem block[5] {directory_block}"));
    assert_fsck_reports(&image.path, "Multiply-claimed block");

    let words = ["claimed by both inode 12 and inode 14"];
    assert_write_rejected(&image.path, &format!("block {directory_block}"), &words, replace_key);
    assert_write_rejected(&image.path, &format!("block {directory_block}"), &words, |ext| {
        ext.remove_file("/mender/mender-agent.pem", ATTRS.time)
    });
}

#[test]
fn key_sharing_the_journal_is_not_replaced() {
    if tools("key_sharing_the_journal_is_not_replaced").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    let journal_superblock = debugfs_number(&image.path, "bmap <8> 0");
    debugfs_write(&image.path, &format!("sif /mender/mender-agent.pem block[5] {journal_superblock}"));
    assert_fsck_reports(&image.path, "Multiply-claimed block");

    let words = ["the journal (inode 8)", "inode 14"];
    assert_write_rejected(&image.path, &format!("block {journal_superblock}"), &words, replace_key);
}

#[test]
fn key_on_metadata_or_twice_is_not_replaced() {
    if tools("key_on_metadata_or_twice_is_not_replaced").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    let inode_table = inode_table_block(&image.path, 14);
    debugfs_write(&image.path, &format!("sif /mender/mender-agent.pem block[5] {inode_table}"));
    assert_fsck_reports(&image.path, "Multiply-claimed block");
    let words = ["the inode table of group 0", "inode 14"];
    assert_write_rejected(&image.path, &format!("block {inode_table}"), &words, replace_key);

    // A second extent over the same block as the first: the file lists one block twice.
    let image = mender_image(16, DEFAULT_4K);
    let key_block = debugfs_number(&image.path, "blocks /mender/mender-agent.pem");
    debugfs_script(
        &image.path,
        &format!(
            "sif /mender/mender-agent.pem block[0] 0x0002f30a\n\
             sif /mender/mender-agent.pem block[6] 1\n\
             sif /mender/mender-agent.pem block[7] 1\n\
             sif /mender/mender-agent.pem block[8] {key_block}\n\
             sif /mender/mender-agent.pem size 8192\n\
             sif /mender/mender-agent.pem blocks 16\n"
        ),
    );
    assert_fsck_reports(&image.path, "Multiply-claimed block");
    assert_write_rejected(
        &image.path,
        &format!("block {key_block}"),
        &["claimed twice by inode 14"],
        replace_key,
    );
}

#[test]
fn sibling_blocks_marked_free_are_not_allocated() {
    if tools("sibling_blocks_marked_free_are_not_allocated").is_none() {
        return;
    }
    // The bitmap marks the block free while the sibling's extent maps it, so the allocator would
    // hand the block to the new key.
    let image = mender_image(16, DEFAULT_4K);
    let sibling_block = debugfs_number(&image.path, "blocks /mender/device_type");
    mark_free_in_group_0(&image.path, sibling_block);
    assert_eq!(debugfs_number(&image.path, "ffb 1"), sibling_block, "the freed block is the first free one");
    assert_fsck_reports(&image.path, "Block bitmap differences");

    let words = ["marked free in the block bitmap but claimed by inode 13"];
    assert_write_rejected(&image.path, &format!("block {sibling_block}"), &words, |ext| {
        ext.write_file("/mender/new-file", &pattern(100, 4), &ATTRS).map(|_| ())
    });

    // One bit flipped in the extent length: the sibling claims 257 blocks, 256 of them free.
    let image = mender_image(16, DEFAULT_4K);
    debugfs_write(&image.path, "sif /mender/device_type block[4] 257");
    assert_fsck_reports(&image.path, "i_blocks is");
    let words = ["maps more blocks than the 1 that i_blocks counts"];
    assert_write_rejected(&image.path, "inode 13 extent root", &words, replace_key);
}

#[test]
fn freeing_a_block_marked_free_is_rejected() {
    if tools("freeing_a_block_marked_free_is_rejected").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    let key_block = debugfs_number(&image.path, "blocks /mender/mender-agent.pem");
    mark_free_in_group_0(&image.path, key_block);
    assert_fsck_reports(&image.path, "Block bitmap differences");

    assert_write_rejected(
        &image.path,
        &format!("block {key_block}"),
        &["a file claims a block marked free"],
        replace_key,
    );
}

#[test]
fn bad_xattr_block_blocks_replacing() {
    if tools("bad_xattr_block_blocks_replacing").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    debugfs_write(&image.path, "sif /mender/mender-agent.pem file_acl 0x7fffffff");
    assert_fsck_reports(&image.path, "Extended attribute block for inode 14");
    let words = ["extended attribute block 2147483647 is outside the filesystem"];
    assert_write_rejected(&image.path, "inode 14", &words, replace_key);

    let image = mender_image(16, DEFAULT_4K);
    let block_bitmap = group_0_block_bitmap(&image.path);
    debugfs_write(&image.path, &format!("sif /mender/mender-agent.pem file_acl {block_bitmap}"));
    assert_fsck_reports(&image.path, "extended attribute block");
    let words = ["the block bitmap of group 0", "the extended attribute block of inode 14"];
    assert_write_rejected(&image.path, &format!("block {block_bitmap}"), &words, replace_key);
}

#[test]
fn zero_link_count_blocks_writes() {
    if tools("zero_link_count_blocks_writes").is_none() {
        return;
    }
    let image = mender_image(16, DEFAULT_4K);
    debugfs_write(&image.path, "sif /mender/mender-agent.pem links_count 0");
    assert_fsck_reports(&image.path, "has deleted/unused inode 14");

    let words = ["link count is 0"];
    assert_write_rejected(&image.path, "inode 14", &words, replace_key);
    assert_write_rejected(&image.path, "inode 14", &words, |ext| {
        ext.remove_file("/mender/mender-agent.pem", ATTRS.time)
    });
}

/// Builds a 1 KiB-block image whose `/mender` has an htree index over 150 entries.
fn indexed_mender_image() -> Image {
    let source = tempfile::tempdir().unwrap();
    let mender = source.path().join("mender");
    std::fs::create_dir(&mender).unwrap();
    for index in 0..150 {
        std::fs::write(mender.join(format!("file-{index}-padding-name")), format!("{index}")).unwrap();
    }
    let image = make_image(16, NO_CSUM_1K, Some(source.path()));
    index_directories(&image.path);
    image
}

/// Sets the block of every index entry in `/mender`'s htree root to `block`.
fn point_htree_root_at(image: &Path, block: u32) {
    let root = debugfs_number(image, "bmap /mender 0");
    let mut bytes = std::fs::read(image).unwrap();
    let start = root as usize * 1024;
    let count = u16::from_le_bytes([bytes[start + 0x22], bytes[start + 0x23]]) as usize;
    assert!(count > 1, "the htree root has {count} entries");
    for index in 0..count {
        // Entry 0 keeps its block after the count and limit; entry i has (hash, block).
        let at = start + if index == 0 { 0x24 } else { 0x20 + 8 * index + 4 };
        bytes[at..at + 4].copy_from_slice(&block.to_le_bytes());
    }
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn htree_leaf_at_root_is_rejected() {
    if tools("htree_leaf_at_root_is_rejected").is_none() {
        return;
    }
    let image = indexed_mender_image();
    point_htree_root_at(&image.path, 0);
    assert_fsck_reports(&image.path, "block #0 referenced twice");

    let words = ["the leaf for this name is block 0, which is the index root"];
    assert_write_rejected(&image.path, "inode 12 htree root", &words, replace_key);
}

#[test]
fn htree_leaf_past_end_is_rejected() {
    if tools("htree_leaf_past_end_is_rejected").is_none() {
        return;
    }
    let image = indexed_mender_image();
    point_htree_root_at(&image.path, 1000);
    assert_fsck_reports(&image.path, "HTREE");

    let words = ["index points to block 1000 past the end of the directory"];
    assert_write_rejected(&image.path, "directory inode 12", &words, replace_key);
}

/// Builds a 1 KiB-block image of 16 MiB: two block groups of 8192 blocks, with flex_bg.
fn two_group_image() -> Image {
    let image = mender_image(16, NO_CSUM_1K);
    let groups = debugfs(&image.path, "stats");
    assert_eq!(field(&groups, "Block count:").as_deref(), Some("16384"), "{groups}");
    image
}

#[test]
fn inode_bitmap_inside_inode_table_fails_open() {
    if tools("inode_bitmap_inside_inode_table_fails_open").is_none() {
        return;
    }
    let image = two_group_image();
    let table = inode_table_block(&image.path, 2049);
    debugfs_write(&image.path, &format!("set_bg 1 inode_bitmap {table}"));
    let (_, report) = e2fsck(&image.path);
    assert!(report.contains("Group descriptors look bad"), "{report}");

    let words = ["the inode table of group 1", "overlaps the inode bitmap of group 1"];
    assert_open_rejected(&image.path, "group descriptor 1", &words);
}

#[test]
fn layouts_e2fsck_repairs_silently_fail_open() {
    if tools("layouts_e2fsck_repairs_silently_fail_open").is_none() {
        return;
    }
    // e2fsck exits 0 on both, because it quietly reads the backup descriptors instead. Writing
    // through the primary ones would leave them disagreeing with what e2fsck reads.
    let cases = [
        (
            "ssv reserved_gdt_blocks 255",
            "group descriptor 0",
            "overlaps the superblock, group descriptors and reserved GDT blocks of group 0",
        ),
        ("feature -flex_bg", "group descriptor 1", "lies outside its group (blocks 8193-16383)"),
    ];
    for (change, structure, detail) in cases {
        let image = two_group_image();
        debugfs_write(&image.path, change);
        let (code, report) = e2fsck(&image.path);
        assert_eq!(code, 0, "{change}: {report}");
        assert!(report.contains("Group descriptors look bad"), "{change}: {report}");

        assert_open_rejected(&image.path, structure, &[detail]);
    }
}

#[test]
fn checked_writes_pass_fsck_everywhere() {
    if tools("checked_writes_pass_fsck_everywhere").is_none() {
        return;
    }
    let extra: [(&str, &[&str]); 4] = [
        ("orphan_file", &["-b", "1024", "-O", "orphan_file"]),
        ("no flex_bg", &["-b", "1024", "-O", "^flex_bg"]),
        ("no resize_inode", &["-b", "1024", "-O", "^resize_inode"]),
        ("no sparse_super", &["-b", "1024", "-O", "^sparse_super,^resize_inode"]),
    ];
    for (name, args) in FEATURE_SETS.into_iter().chain(extra) {
        let image = mender_image(64, args);
        modify(&image.path, |ext| {
            ext.write_file("/mender/mender-agent.pem", &pattern(2484, 5), &ATTRS)?;
            ext.write_file("/mender/mender-store", &pattern(40_000, 6), &ATTRS)?;
            ext.remove_file("/mender/device_type", ATTRS.time)
        });
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/mender/mender-store"), pattern(40_000, 6), "{name}");
    }
}

#[test]
fn provisioning_a_32_gib_image_reads_little() {
    if tools("provisioning_a_32_gib_image_reads_little").is_none() {
        return;
    }
    let image = mender_image(
        32 << 10,
        &["-b", "4096", "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1"],
    );
    let key = pattern(2484, 7);
    let store = pattern(12 * 1024, 8);
    for round in 0..2 {
        let file = File::options().read(true).write(true).open(&image.path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut ext = Ext::open(Staged::new(FileVolume::new(&file, 0, len))).unwrap();
        ext.write_file("/mender/mender-agent.pem", &key, &ATTRS).unwrap();
        ext.write_file("/mender/mender-store", &store, &ATTRS).unwrap();
        let bytes_read = ext.volume().base().bytes_read();
        ext.into_volume().commit().unwrap();
        assert!(bytes_read < 1 << 20, "round {round}: read {bytes_read} bytes");
    }
    assert_fsck_clean(&image.path);
    assert_eq!(debugfs_cat(&image.path, "/mender/mender-agent.pem"), key);
}
