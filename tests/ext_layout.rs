//! Allocation across fragmented free space: files that need many extents, an extent tree deeper
//! than the inode, and running out of blocks or inodes.

mod ext_support;

use ext_support::*;
use mender_preauth::fs::ext::{Ext, ExtError};
use mender_preauth::image::volume::{FileVolume, Staged};

/// Creates a source tree with `dirs` directories of `per_dir` files of 4 KiB each.
fn small_files(dirs: usize, per_dir: usize) -> tempfile::TempDir {
    let source = tempfile::tempdir().unwrap();
    for dir in 0..dirs {
        let path = source.path().join(format!("d{dir}"));
        std::fs::create_dir(&path).unwrap();
        for index in 0..per_dir {
            std::fs::write(path.join(format!("f{index:04}")), pattern(4096, (dir * per_dir + index) as u64))
                .unwrap();
        }
    }
    source
}

#[test]
fn fragmented_file_gets_two_level_extent_tree() {
    if tools("fragmented_file_gets_two_level_extent_tree").is_none() {
        return;
    }
    let source = small_files(4, 500);
    let image = make_image(32, SMALL_1K, Some(source.path()));

    // Fill all free space but a few blocks, then free every other 4-block file: what is left
    // free is about 1000 holes of 4 blocks.
    let block_size = 1024u64;
    modify(&image.path, |ext| {
        let free = ext.free_bytes() / block_size;
        ext.write_file("/filler", &vec![0xAA; ((free - 40) * block_size) as usize], &ATTRS)?;
        for dir in 0..4 {
            for index in (0..500).step_by(2) {
                ext.remove_file(&format!("/d{dir}/f{index:04}"), ATTRS.time)?;
            }
        }
        Ok(())
    });
    assert_fsck_clean(&image.path);
    let free_before = free_blocks(&image.path);

    let data = pattern(3500 * 1024, 99);
    modify(&image.path, |ext| ext.write_file("/scattered", &data, &ATTRS));
    assert_fsck_clean(&image.path);
    assert_eq!(debugfs_cat(&image.path, "/scattered"), data);
    let extents = debugfs(&image.path, "ex /scattered");
    assert!(
        extents.contains(" 2/ 2 "),
        "expected leaves at depth 2 of 2:\n{}",
        &extents[..600.min(extents.len())]
    );
    let leaf_lines = extents.lines().filter(|line| line.trim_start().starts_with("2/ 2")).count();
    assert!(leaf_lines > 4 * 84, "only {leaf_lines} extents");

    modify(&image.path, |ext| ext.remove_file("/scattered", ATTRS.time));
    assert_eq!(free_blocks(&image.path), free_before, "tree and data blocks all come back");
    assert_fsck_clean(&image.path);
}

#[test]
fn file_with_five_extents_gets_one_leaf_block() {
    if tools("file_with_five_extents_gets_one_leaf_block").is_none() {
        return;
    }
    for (name, args) in [("ext4 4k", DEFAULT_4K), ("ext4 1k uninit_bg", UNINIT_BG_1K)] {
        let image = make_image(64, args, None);
        // Five 64-block holes between kept files force a file of 300 blocks into five extents.
        let block_size = inspect(&image.path, |ext| u64::from(ext.block_size()));
        let chunk = (64 * block_size) as usize;
        modify(&image.path, |ext| {
            let free = ext.free_bytes() / block_size;
            for index in 0..10 {
                ext.write_file(&format!("/part{index}"), &vec![index as u8; chunk], &ATTRS)?;
            }
            let left = ext.free_bytes() / block_size;
            ext.write_file("/filler", &vec![0xEE; ((left - 2) * block_size) as usize], &ATTRS)?;
            assert!(free > left);
            for index in (0..10).step_by(2) {
                ext.remove_file(&format!("/part{index}"), ATTRS.time)?;
            }
            Ok(())
        });
        let data = pattern(300 * block_size as usize, 5);
        modify(&image.path, |ext| ext.write_file("/five", &data, &ATTRS));
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/five"), data, "{name}");
        let extents = debugfs(&image.path, "ex /five");
        assert!(extents.contains(" 1/ 1 "), "{name}: expected a leaf block:\n{extents}");
    }
}

#[test]
fn no_space_leaves_image_unchanged() {
    if tools("no_space_leaves_image_unchanged").is_none() {
        return;
    }
    for (name, args) in [("ext4 1k", SMALL_1K), ("ext2", EXT2)] {
        let image = make_image(8, args, None);
        let before = sha256_file(&image.path);
        let file = std::fs::File::options().read(true).write(true).open(&image.path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut ext = Ext::open(Staged::new(FileVolume::new(&file, 0, len))).unwrap();
        ext.create_dir("/mender", &DIR_ATTRS).unwrap();
        let pending = ext.volume().pending_bytes();

        let too_big = vec![1u8; (ext.free_bytes() + 4096) as usize];
        let error = ext.write_file("/mender/too-big", &too_big, &ATTRS).unwrap_err();
        assert!(matches!(error, ExtError::NoSpace { what: "blocks", .. }), "{name}: {error}");
        assert_eq!(ext.volume().pending_bytes(), pending, "{name}: the failed write staged bytes");
        drop(ext);
        assert_eq!(sha256_file(&image.path), before, "{name}: image changed without commit");
    }
}

#[test]
fn running_out_of_inodes_is_no_space() {
    if tools("running_out_of_inodes_is_no_space").is_none() {
        return;
    }
    // Four groups of 16 inodes: the later groups start out uninitialized.
    let image = make_image(32, &["-b", "1024", "-N", "64"], None);
    assert!(debugfs(&image.path, "stats").contains("Inode not init"), "no uninitialized inode table");
    let (created, error) = modify(&image.path, |ext| {
        for index in 0..1000 {
            if let Err(error) = ext.write_file(&format!("/f{index}"), b"", &ATTRS) {
                return Ok((index, error));
            }
        }
        panic!("1000 files fitted in 64 inodes");
    });
    assert!(matches!(error, ExtError::NoSpace { what: "inodes", .. }), "{error}");
    assert!(created > 40, "only {created} files were created");
    assert_fsck_clean(&image.path);
    let stats = debugfs(&image.path, "stats");
    assert_eq!(field(&stats, "Free inodes:").as_deref(), Some("0"), "{stats}");
}
