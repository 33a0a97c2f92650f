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
