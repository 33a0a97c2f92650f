//! Writing files and directories onto images made by mkfs.ext4, judged by e2fsck and debugfs.

mod ext_support;

use ext_support::*;
use mender_preauth::fs::ext::{ExtError, FileKind};

#[test]
fn new_files_pass_fsck_on_every_feature_set() {
    if tools("new_files_pass_fsck_on_every_feature_set").is_none() {
        return;
    }
    let key = pattern(1679, 1);
    let store = pattern(300 * 1024, 2);
    for (name, args) in FEATURE_SETS {
        let image = make_image(64, args, None);
        let free_before = free_blocks(&image.path);

        modify(&image.path, |ext| {
            ext.create_dir("/mender", &DIR_ATTRS)?;
            ext.write_file("/mender/mender-agent.pem", &key, &ATTRS)?;
            ext.write_file("/mender/mender-store", &store, &ATTRS)?;
            ext.write_file("/mender/empty", b"", &ATTRS)
        });

        assert_fsck_clean(&image.path);
        assert_stat(
            &image.path,
            "/mender",
            "directory",
            0o755,
            u64::from(inspect(&image.path, |ext| ext.block_size())),
        );
        assert_stat(&image.path, "/mender/mender-agent.pem", "regular", 0o600, key.len() as u64);
        assert_stat(&image.path, "/mender/mender-store", "regular", 0o600, store.len() as u64);
        assert_stat(&image.path, "/mender/empty", "regular", 0o600, 0);
        assert_eq!(debugfs_cat(&image.path, "/mender/mender-agent.pem"), key, "{name}");
        assert_eq!(debugfs_cat(&image.path, "/mender/mender-store"), store, "{name}");
        assert!(free_blocks(&image.path) < free_before, "{name}: free block count did not drop");

        inspect(&image.path, |ext| {
            let ino = ext.lookup("/mender/mender-store").unwrap().expect("file found");
            assert_eq!(ext.read_file(ino, 1 << 20).unwrap(), store, "{name}");
            let meta = ext.metadata(ino).unwrap();
            assert_eq!(
                (meta.kind, meta.mode, meta.uid, meta.gid),
                (FileKind::Regular, 0o600, 0, 0),
                "{name}"
            );
            assert_eq!(meta.mtime, ATTRS.time, "{name}");
        });
    }
}

#[test]
fn creating_existing_directory_is_rejected() {
    if tools("creating_existing_directory_is_rejected").is_none() {
        return;
    }
    let image = make_image(16, SMALL_1K, None);
    modify(&image.path, |ext| ext.create_dir("/mender", &DIR_ATTRS));
    let error = modify(&image.path, |ext| Ok(ext.create_dir("/mender", &DIR_ATTRS).unwrap_err()));
    assert!(matches!(error, ExtError::AlreadyExists(ref path) if path == "/mender"), "{error}");
    let missing = modify(&image.path, |ext| Ok(ext.write_file("/nowhere/key", b"x", &ATTRS).unwrap_err()));
    assert!(matches!(missing, ExtError::NotFound(_)), "{missing}");
    assert_fsck_clean(&image.path);
}

#[test]
fn replacing_file_frees_old_blocks() {
    if tools("replacing_file_frees_old_blocks").is_none() {
        return;
    }
    for (name, args) in [("ext4 1k", SMALL_1K), ("ext4 4k", DEFAULT_4K), ("ext3", EXT3)] {
        let image = make_image(64, args, None);
        let free_at_start = free_blocks(&image.path);
        let big = pattern(1 << 20, 3);
        let first = modify(&image.path, |ext| ext.write_file("/store", &big, &ATTRS));
        let free_with_big = free_blocks(&image.path);

        let small = pattern(10_000, 4);
        let replaced = modify(&image.path, |ext| ext.write_file("/store", &small, &ATTRS));
        assert_eq!(replaced, first, "{name}: replacing must keep the inode");
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/store"), small, "{name}");
        assert!(free_blocks(&image.path) > free_with_big, "{name}: old blocks were not freed");

        modify(&image.path, |ext| ext.write_file("/store", &big, &ATTRS));
        assert_eq!(free_blocks(&image.path), free_with_big, "{name}: same contents, same block count");
        modify(&image.path, |ext| ext.remove_file("/store", ATTRS.time));
        assert_eq!(free_blocks(&image.path), free_at_start, "{name}: removing frees everything");
        assert_fsck_clean(&image.path);
    }
}

#[test]
fn removing_files_frees_inode_and_blocks() {
    if tools("removing_files_frees_inode_and_blocks").is_none() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir(source.path().join("etc")).unwrap();
    std::fs::write(source.path().join("etc/old.conf"), pattern(5000, 5)).unwrap();
    std::fs::write(source.path().join("etc/keep.conf"), b"keep").unwrap();
    std::os::unix::fs::symlink("/etc/keep.conf", source.path().join("etc/link")).unwrap();
    for (name, args) in FEATURE_SETS {
        let image = make_image(32, args, Some(source.path()));
        let free_at_start = free_blocks(&image.path);
        modify(&image.path, |ext| {
            ext.remove_file("/etc/old.conf", ATTRS.time)?;
            ext.remove_file("/etc/link", ATTRS.time)?;
            ext.write_file("/etc/new.conf", &pattern(3000, 6), &ATTRS)
        });
        assert_fsck_clean(&image.path);
        let listing = debugfs(&image.path, "ls -l /etc");
        assert!(!listing.contains("old.conf"), "{name}: {listing}");
        assert!(!listing.contains("link"), "{name}: {listing}");
        assert!(listing.contains("keep.conf"), "{name}: {listing}");
        assert!(listing.contains("new.conf"), "{name}: {listing}");

        let error = modify(&image.path, |ext| Ok(ext.remove_file("/etc", ATTRS.time).unwrap_err()));
        assert!(matches!(error, ExtError::IsADirectory(_)), "{name}: {error}");
        modify(&image.path, |ext| ext.remove_file("/etc/new.conf", ATTRS.time));
        assert!(free_blocks(&image.path) > free_at_start, "{name}: removed data was not freed");
        assert_fsck_clean(&image.path);
    }
}

#[test]
fn directory_grows_by_a_block() {
    if tools("directory_grows_by_a_block").is_none() {
        return;
    }
    for (name, args) in [("ext4 1k", SMALL_1K), ("ext2", EXT2), ("ext4 1k no csum", NO_CSUM_1K)] {
        let image = make_image(16, args, None);
        // 60 entries of 24 bytes need more than one 1 KiB block.
        modify(&image.path, |ext| {
            ext.create_dir("/many", &DIR_ATTRS)?;
            for index in 0..60 {
                ext.write_file(&format!("/many/file-{index:04}"), format!("{index}").as_bytes(), &ATTRS)?;
            }
            Ok(())
        });
        assert_fsck_clean(&image.path);
        let stat = debugfs(&image.path, "stat /many");
        let size: u64 = field(&stat, "Size:").unwrap().parse().unwrap();
        assert_eq!(size, 2048, "{name}: {stat}");
        assert_eq!(debugfs_cat(&image.path, "/many/file-0059"), b"59", "{name}");
        inspect(&image.path, |ext| {
            let dir = ext.lookup("/many").unwrap().unwrap();
            assert_eq!(ext.read_dir(dir).unwrap().len(), 62, "{name}");
        });
    }
}

#[test]
fn block_mapped_files_use_double_indirect_blocks() {
    if tools("block_mapped_files_use_double_indirect_blocks").is_none() {
        return;
    }
    // With 1 KiB blocks, 12 direct and 256 single indirect blocks cover 268 KiB.
    let data = pattern(700 * 1024, 7);
    for (name, args) in [("ext2", EXT2), ("ext3", EXT3)] {
        let image = make_image(32, args, None);
        modify(&image.path, |ext| ext.write_file("/big", &data, &ATTRS));
        assert_fsck_clean(&image.path);
        let stat = debugfs(&image.path, "stat /big");
        assert!(stat.contains("(IND)"), "{name}: {stat}");
        assert!(stat.contains("(DIND)"), "{name}: {stat}");
        assert_eq!(debugfs_cat(&image.path, "/big"), data, "{name}");
        inspect(&image.path, |ext| {
            let ino = ext.lookup("/big").unwrap().unwrap();
            let mut middle = vec![0u8; 5000];
            assert_eq!(ext.read_at(ino, 300_000, &mut middle).unwrap(), 5000);
            assert_eq!(middle, data[300_000..305_000], "{name}");
        });
    }
}

#[test]
fn meta_bg_and_sparse_super2_are_written() {
    if tools("meta_bg_and_sparse_super2_are_written").is_none() {
        return;
    }
    // Groups of 1024 blocks of 1 KiB: 64 groups, so meta_bg places descriptor blocks in
    // several meta groups and sparse_super2 keeps backups in two groups only.
    let cases: [(&str, &[&str]); 3] = [
        ("meta_bg", &["-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"]),
        ("meta_bg 64bit", &["-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode,64bit"]),
        ("sparse_super2", &["-b", "1024", "-g", "1024", "-O", "sparse_super2,^resize_inode"]),
    ];
    let data = pattern(6 << 20, 11);
    for (name, args) in cases {
        let image = make_image(64, args, None);
        let free_before = free_blocks(&image.path);
        modify(&image.path, |ext| {
            ext.create_dir_all("/a/b", &DIR_ATTRS)?;
            ext.write_file("/a/b/big", &data, &ATTRS)?;
            ext.write_file("/a/small", b"small", &ATTRS)
        });
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/a/b/big"), data, "{name}");
        assert!(free_blocks(&image.path) + 6144 <= free_before, "{name}: free count did not drop");

        modify(&image.path, |ext| ext.remove_tree("/a", ATTRS.time));
        assert_fsck_clean(&image.path);
        assert_eq!(free_blocks(&image.path), free_before, "{name}: removal did not free every block");
    }
}

#[test]
fn files_copied_from_host_files_match_them() {
    if tools("files_copied_from_host_files_match_them").is_none() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let cases =
        [("big", pattern(3 * 1024 * 1024 + 123, 3)), ("blocks", pattern(8192, 4)), ("tiny", pattern(10, 5))];
    for (name, contents) in &cases {
        std::fs::write(host.path().join(name), contents).unwrap();
    }
    for (set, args) in FEATURE_SETS {
        let image = make_image(64, args, None);

        modify(&image.path, |ext| {
            ext.create_dir("/copied", &DIR_ATTRS)?;
            for (name, _) in &cases {
                let source = std::sync::Arc::new(std::fs::File::open(host.path().join(name)).unwrap());
                ext.write_file_from(&format!("/copied/{name}"), source, &ATTRS)?;
            }
            Ok(())
        });

        assert_fsck_clean(&image.path);
        for (name, contents) in &cases {
            assert_eq!(debugfs_cat(&image.path, &format!("/copied/{name}")), *contents, "{set}: {name}");
        }
    }
}
