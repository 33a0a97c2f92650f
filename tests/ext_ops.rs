//! The operations beyond writing whole files, judged by e2fsck and debugfs: images that this
//! writer and `debugfs -w` change in turn, and nearly full filesystems, where running out of
//! blocks or inodes must fail before anything is written.

mod ext_support;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use ext_support::*;
use mender_preauth::fs::ext::{Ext, ExtError, SetAttrs};
use mender_preauth::image::volume::{Staged, VolumeMut};

/// Runs the writer's part of the interplay tests: a tree with every kind of change.
fn writer_changes<V: VolumeMut>(ext: &mut Ext<V>, prefix: &str) -> Result<(), ExtError> {
    let time = ATTRS.time;
    ext.create_dir_all(&format!("{prefix}/etc/mender/conf.d"), &DIR_ATTRS)?;
    ext.write_file(&format!("{prefix}/etc/mender/mender.conf"), &pattern(3000, 1), &ATTRS)?;
    ext.write_file(&format!("{prefix}/etc/mender/big"), &pattern(700_000, 2), &ATTRS)?;
    ext.write_at(&format!("{prefix}/etc/mender/big"), 2_000_000, b"tail", time)?;
    ext.truncate(&format!("{prefix}/etc/mender/big"), 100_000, time)?;
    ext.symlink(&format!("{prefix}/etc/short"), b"mender/mender.conf", &ATTRS)?;
    ext.symlink(&format!("{prefix}/etc/long"), "x/".repeat(100).as_bytes(), &ATTRS)?;
    ext.link(&format!("{prefix}/etc/mender/mender.conf"), &format!("{prefix}/etc/conf-link"), time)?;
    ext.rename(&format!("{prefix}/etc/mender/conf.d"), &format!("{prefix}/conf.d"), time)?;
    let attrs = SetAttrs { mode: Some(0o640), uid: Some(1000), gid: Some(1000), ..SetAttrs::default() };
    ext.set_attrs(&format!("{prefix}/etc/mender/mender.conf"), &attrs)?;
    ext.create_dir_all(&format!("{prefix}/tmp/a/b"), &DIR_ATTRS)?;
    ext.write_file(&format!("{prefix}/tmp/a/b/file"), b"gone soon", &ATTRS)?;
    ext.remove_tree(&format!("{prefix}/tmp"), time)
}

/// Checks what `writer_changes` left, through debugfs.
fn assert_writer_changes(image: &Path, prefix: &str) {
    assert_eq!(debugfs_cat(image, &format!("{prefix}/etc/mender/mender.conf")), pattern(3000, 1));
    assert_eq!(debugfs_cat(image, &format!("{prefix}/etc/conf-link")), pattern(3000, 1));
    assert_eq!(debugfs_cat(image, &format!("{prefix}/etc/mender/big")), pattern(100_000, 2));
    let short = debugfs(image, &format!("stat {prefix}/etc/short"));
    assert!(short.contains("Fast link dest: \"mender/mender.conf\""), "{short}");
    let stat = debugfs(image, &format!("stat {prefix}/etc/mender/mender.conf"));
    assert_eq!(field(&stat, "Links:").as_deref(), Some("2"), "{stat}");
    assert_eq!(field(&stat, "User:").as_deref(), Some("1000"), "{stat}");
    assert!(debugfs(image, &format!("ls {prefix}/conf.d")).contains(".."));
    assert!(debugfs(image, &format!("ls {prefix}")).contains("conf.d"));
    assert!(!debugfs(image, &format!("ls {prefix}")).contains("tmp"));
}

/// Runs `debugfs -w -f` with `commands` and fails on any complaint.
fn debugfs_script(image: &Path, commands: &str) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), commands).unwrap();
    let output = std::process::Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(script.path())
        .arg(image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(output.status.success(), "debugfs -w {commands:?} failed: {stderr}");
    assert!(complaints.is_empty(), "debugfs -w {commands:?}: {stderr}");
}

/// `debugfs -w` changes of the interplay tests: a written file, a directory, a removal.
fn debugfs_changes(image: &Path, prefix: &str, removed: &str, host_file: &Path) {
    debugfs_script(
        image,
        &format!(
            "mkdir {prefix}/from-debugfs\nwrite {} {prefix}/from-debugfs/copy\nrm {removed}\n",
            host_file.display()
        ),
    );
}

#[test]
fn writer_then_debugfs_stays_clean() {
    if tools("writer_then_debugfs_stays_clean").is_none() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let host_file = host.path().join("payload");
    std::fs::write(&host_file, pattern(50_000, 9)).unwrap();
    for (name, args) in FEATURE_SETS {
        let image = make_image(32, args, None);
        modify(&image.path, |ext| {
            ext.create_dir("/w", &DIR_ATTRS)?;
            writer_changes(ext, "/w")
        });
        assert_fsck_clean(&image.path);
        debugfs_changes(&image.path, "/w", "/w/etc/conf-link", &host_file);
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/w/from-debugfs/copy"), pattern(50_000, 9), "{name}");

        // The writer again, on top of what debugfs did.
        modify(&image.path, |ext| {
            ext.rename("/w/from-debugfs/copy", "/w/etc/copy", ATTRS.time)?;
            ext.remove_tree("/w/from-debugfs", ATTRS.time)?;
            ext.write_at("/w/etc/copy", 10, b"patched", ATTRS.time)
        });
        assert_fsck_clean(&image.path);
        let mut expected = pattern(50_000, 9);
        expected[10..17].copy_from_slice(b"patched");
        assert_eq!(debugfs_cat(&image.path, "/w/etc/copy"), expected, "{name}");
        let stat = debugfs(&image.path, "stat /w/etc/mender/mender.conf");
        assert_eq!(field(&stat, "Links:").as_deref(), Some("1"), "{name}: debugfs rm dropped a link: {stat}");
    }
}

#[test]
fn debugfs_then_writer_stays_clean() {
    if tools("debugfs_then_writer_stays_clean").is_none() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let host_file = host.path().join("payload");
    std::fs::write(&host_file, pattern(30_000, 8)).unwrap();
    for (name, args) in FEATURE_SETS {
        let image = make_image(32, args, None);
        debugfs_script(
            &image.path,
            &format!("mkdir /d\nwrite {} /d/old\nmkdir /d/sub\n", host_file.display()),
        );
        debugfs_changes(&image.path, "/d/sub", "/d/old", &host_file);
        assert_fsck_clean(&image.path);

        modify(&image.path, |ext| {
            writer_changes(ext, "/d/sub")?;
            ext.rename("/d/sub/from-debugfs", "/moved", ATTRS.time)?;
            ext.truncate("/moved/copy", 12_345, ATTRS.time)
        });
        assert_fsck_clean(&image.path);
        assert_writer_changes(&image.path, "/d/sub");
        assert_eq!(debugfs_cat(&image.path, "/moved/copy"), pattern(30_000, 8)[..12_345], "{name}");
    }
}

/// Hashes the staged writes, to show that a failed operation staged nothing.
fn pending_digest(ext: &Ext<Staged<Vec<u8>>>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for (offset, bytes) in ext.volume().pending_writes() {
        offset.hash(&mut hasher);
        bytes.hash(&mut hasher);
    }
    hasher.finish()
}

/// Asserts that `operation` fails with `NoSpace` for `what` and stages nothing.
fn assert_no_space<T: std::fmt::Debug>(
    ext: &mut Ext<Staged<Vec<u8>>>,
    what: &str,
    case: &str,
    operation: impl FnOnce(&mut Ext<Staged<Vec<u8>>>) -> Result<T, ExtError>,
) {
    let before = pending_digest(ext);
    let result = operation(ext);
    assert!(
        matches!(&result, Err(ExtError::NoSpace { what: found, .. }) if *found == what),
        "{case}: expected no space for {what}, got {result:?}"
    );
    assert_eq!(pending_digest(ext), before, "{case}: the failed operation staged writes");
}

/// Opens the image in memory with staged writes.
fn open_in_memory(image: &Path) -> Ext<Staged<Vec<u8>>> {
    Ext::open(Staged::new(std::fs::read(image).unwrap())).unwrap()
}

/// Writes the staged changes back to the image file.
fn save(ext: Ext<Staged<Vec<u8>>>, image: &Path) {
    let bytes = ext.into_volume().commit().unwrap();
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn last_free_block_gives_no_space_first() {
    if tools("last_free_block_gives_no_space_first").is_none() {
        return;
    }
    for (name, args) in [("ext4 1k", SMALL_1K), ("ext4 4k", DEFAULT_4K), ("ext2", EXT2)] {
        let image = make_image(8, args, None);
        let mut ext = open_in_memory(&image.path);
        let block = u64::from(ext.block_size());
        ext.create_dir_all("/fill/a", &DIR_ATTRS).unwrap();
        ext.write_file("/keep", b"small", &ATTRS).unwrap();

        // One large file takes most of the space, then one-block files take the rest.
        let free = ext.free_bytes() / block;
        ext.write_file("/fill/bulk", &vec![1u8; ((free - 64) * block) as usize], &ATTRS).unwrap();
        let mut count = 0;
        loop {
            let path = format!("/fill/a/f{count}");
            let before = pending_digest(&ext);
            match ext.write_file(&path, &vec![2u8; block as usize], &ATTRS) {
                Ok(_) => count += 1,
                Err(ExtError::NoSpace { what: "blocks", .. }) => {
                    assert_eq!(pending_digest(&ext), before, "{name}: a write without space staged bytes");
                    break;
                }
                Err(error) => panic!("{name}: {error}"),
            }
            assert!(count < 1000, "{name}: the filesystem never filled");
        }
        let left = ext.free_bytes() / block;
        assert!(left <= 2, "{name}: {left} blocks still free");

        // Everything that needs a block now fails before writing.
        let data = vec![3u8; 3 * block as usize];
        assert_no_space(&mut ext, "blocks", name, |ext| ext.write_file("/fill/new", &data, &ATTRS));
        assert_no_space(&mut ext, "blocks", name, |ext| ext.write_at("/keep", 10 * block, &data, 1));
        assert_no_space(&mut ext, "blocks", name, |ext| ext.create_dir_all("/x/y/z/w", &DIR_ATTRS));
        assert_no_space(&mut ext, "blocks", name, |ext| {
            ext.symlink("/fill/l", "y".repeat(80).as_bytes(), &ATTRS)
        });
        // Freeing space makes room again.
        ext.remove_tree("/fill/a", ATTRS.time).unwrap();
        ext.write_file("/fill/new", &data, &ATTRS).unwrap();
        save(ext, &image.path);
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/fill/new"), data, "{name}");
    }
}

#[test]
fn last_free_inode_gives_no_space_first() {
    if tools("last_free_inode_gives_no_space_first").is_none() {
        return;
    }
    for (name, args) in [("ext4 1k", &["-N", "64"][..]), ("ext3", &["-t", "ext3", "-N", "64"][..])] {
        let image = make_image(8, args, None);
        let mut ext = open_in_memory(&image.path);
        ext.create_dir("/many", &DIR_ATTRS).unwrap();
        let mut count = 0;
        loop {
            let before = pending_digest(&ext);
            match ext.write_file(&format!("/many/f{count}"), b"x", &ATTRS) {
                Ok(_) => count += 1,
                Err(ExtError::NoSpace { what: "inodes", .. }) => {
                    assert_eq!(pending_digest(&ext), before, "{name}: a write without an inode staged bytes");
                    break;
                }
                Err(error) => panic!("{name}: {error}"),
            }
            assert!(count < 100, "{name}: inodes never ran out");
        }
        assert_eq!(ext.free_inodes(), 0, "{name}");
        assert_no_space(&mut ext, "inodes", name, |ext| ext.create_dir_all("/a/b", &DIR_ATTRS));
        assert_no_space(&mut ext, "inodes", name, |ext| ext.symlink("/many/l", b"f0", &ATTRS));
        // A hard link and a rename need no inode.
        ext.link("/many/f0", "/f0-link", ATTRS.time).unwrap();
        ext.rename("/many/f1", "/f1", ATTRS.time).unwrap();
        ext.remove_file("/many/f2", ATTRS.time).unwrap();
        ext.symlink("/many/l", b"f0", &ATTRS).unwrap();
        save(ext, &image.path);
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/f0-link"), b"x", "{name}");
    }
}

#[test]
fn failed_step_leaves_compound_operation_unwritten() {
    if tools("failed_step_leaves_compound_operation_unwritten").is_none() {
        return;
    }
    // remove_tree stops at a directory it cannot change; nothing before it is written.
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("tree/sub")).unwrap();
    std::fs::write(source.path().join("tree/a"), b"a").unwrap();
    std::fs::write(source.path().join("tree/sub/b"), b"b").unwrap();
    std::fs::write(source.path().join("tree/sub/tiny"), b"inline").unwrap();
    let image = make_image(16, &["-O", "inline_data"], Some(source.path()));
    let stat = debugfs(&image.path, "stat /tree/sub");
    assert!(stat.contains("Size of inline data"), "mkfs made /tree/sub a block directory: {stat}");

    let mut ext = open_in_memory(&image.path);
    let before = pending_digest(&ext);
    let error = ext.remove_tree("/tree", ATTRS.time).unwrap_err();
    assert!(
        matches!(error, ExtError::Unsupported { ref feature, .. } if feature == "inline_data"),
        "{error}"
    );
    assert_eq!(pending_digest(&ext), before, "remove_tree staged part of its work");
    assert_eq!(ext.volume().pending_bytes(), 0);
}

#[test]
fn rename_rules_follow_posix() {
    if tools("rename_rules_follow_posix").is_none() {
        return;
    }
    let image = make_image(16, SMALL_1K, None);
    let mut ext = open_in_memory(&image.path);
    ext.create_dir_all("/a/b/c", &DIR_ATTRS).unwrap();
    ext.create_dir_all("/full/x", &DIR_ATTRS).unwrap();
    ext.write_file("/file", b"f", &ATTRS).unwrap();
    ext.create_dir("/empty", &DIR_ATTRS).unwrap();

    type Expected = fn(&ExtError) -> bool;
    let cases: [(&str, &str, Expected); 5] = [
        ("/a", "/a/b/c/a", |e| matches!(e, ExtError::RenameIntoItself { .. })),
        ("/a", "/file", |e| matches!(e, ExtError::NotADirectory(_))),
        ("/file", "/empty", |e| matches!(e, ExtError::IsADirectory(_))),
        ("/a", "/full", |e| matches!(e, ExtError::DirectoryNotEmpty(_))),
        ("/missing", "/b", |e| matches!(e, ExtError::NotFound(_))),
    ];
    for (from, to, expected) in cases {
        let before = pending_digest(&ext);
        let error = ext.rename(from, to, 1).unwrap_err();
        assert!(expected(&error), "rename {from} {to}: {error}");
        assert_eq!(pending_digest(&ext), before, "rename {from} {to} staged writes");
    }
    let error = ext.link("/a", "/a-link", 1).unwrap_err();
    assert!(matches!(error, ExtError::HardLinkToDirectory(_)), "{error}");
    let error = ext.remove_dir("/a", 1).unwrap_err();
    assert!(matches!(error, ExtError::DirectoryNotEmpty(_)), "{error}");

    // Replacing an empty directory, and moving a directory to another parent.
    ext.rename("/a/b", "/empty", 5).unwrap();
    ext.rename("/file", "/file", 5).unwrap();
    save(ext, &image.path);
    assert_fsck_clean(&image.path);
    let listing = debugfs(&image.path, "ls -l /empty");
    assert!(listing.lines().any(|line| line.trim_end().ends_with(" c")), "{listing}");
    let stat = debugfs(&image.path, "stat /a");
    assert_eq!(field(&stat, "Links:").as_deref(), Some("2"), "/a lost its subdirectory: {stat}");
}
