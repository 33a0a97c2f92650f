//! Extended attributes on images made by mkfs.ext4: attributes set by debugfs read back through
//! `Ext::xattrs`, attributes written by `Ext::set_xattr` read back by debugfs, shared attribute
//! blocks crafted with debugfs and e2fsck, and e2fsck -fn clean after every write.

mod ext_support;

use std::path::Path;
use std::process::Command;

use ext_support::*;
use mender_preauth::fs::ext::ExtError;

/// Inode sizes and checksum settings the tests cover, as extra mkfs.ext4 arguments.
const XATTR_SETS: [(&str, &[&str]); 6] = [
    ("256-byte inodes, metadata_csum", &["-b", "1024", "-I", "256"]),
    ("256-byte inodes, no csum", &["-b", "1024", "-I", "256", "-O", "^metadata_csum"]),
    ("128-byte inodes, metadata_csum", &["-b", "1024", "-I", "128"]),
    ("128-byte inodes, no csum", &["-b", "1024", "-I", "128", "-O", "^has_journal,^metadata_csum"]),
    ("4k blocks, 256-byte inodes", &["-b", "4096", "-I", "256"]),
    ("ext2, block maps", &["-t", "ext2", "-b", "1024"]),
];

/// An SELinux label as `setfiles` stores it, with its trailing NUL.
const LABEL: &[u8] = b"system_u:object_r:mender_data_t:s0\0";

/// A value too large for the room a 256-byte inode has, so it goes to the attribute block.
fn large_value() -> Vec<u8> {
    (0..300u32).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Binary bytes, NUL and newline included.
const BINARY: &[u8] = &[0x00, 0xFF, b'\n', 0x7F, 0x80, 0x01];

/// An image with the files `/a`, `/b` and `/dir/c`.
fn image_with_files(args: &[&str]) -> Image {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("a"), pattern(3000, 1)).unwrap();
    std::fs::write(source.path().join("b"), pattern(500, 2)).unwrap();
    std::fs::create_dir(source.path().join("dir")).unwrap();
    std::fs::write(source.path().join("dir/c"), b"c").unwrap();
    make_image(16, args, Some(source.path()))
}

/// Sets attribute `name` of `path` to `value` with `debugfs -w -R "ea_set -f FILE ..."`.
fn debugfs_ea_set(image: &Path, path: &str, name: &str, value: &[u8]) {
    let value_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(value_file.path(), value).unwrap();
    debugfs_write(image, &format!("ea_set -f {} {path} {name}", value_file.path().display()));
}

/// Reads attribute `name` of `path` with `debugfs -R "ea_get -f FILE ..."`; `None` when debugfs
/// reports that the file has no such attribute.
fn debugfs_ea_get(image: &Path, path: &str, name: &str) -> Option<Vec<u8>> {
    let value_file = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ea_get -f {} {path} {name}", value_file.path().display()))
        .arg(image)
        .output()
        .expect("run debugfs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("key not found") {
        return None;
    }
    let complaints: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(output.status.success() && complaints.is_empty(), "debugfs ea_get {path} {name}: {stderr}");
    Some(std::fs::read(value_file.path()).unwrap())
}

/// Names of the attributes of `path`, sorted, as `debugfs -R "ea_list ..."` prints them.
fn debugfs_ea_names(image: &Path, path: &str) -> Vec<String> {
    let listing = debugfs(image, &format!("ea_list {path}"));
    let mut names: Vec<String> = listing
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// `File ACL:` (the attribute block) and `Blockcount:` (i_blocks in 512-byte units) of `path`.
fn acl_and_blockcount(image: &Path, path: &str) -> (u64, u64) {
    let stat = debugfs(image, &format!("stat {path}"));
    let number = |key| {
        field(&stat, key).and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("{key} in {stat}"))
    };
    (number("File ACL:"), number("Blockcount:"))
}

/// The reference count of attribute block `block`, from `debugfs -R "bd -x BLOCK"`.
fn refcount(image: &Path, block: u64) -> u32 {
    let dump = debugfs(image, &format!("bd -x {block}"));
    field(&dump, "refcount =")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("refcount in {dump}"))
}

/// Entry names of attribute block `block` in the order they are stored, from `bd -x`.
fn block_entry_names(image: &Path, block: u64) -> Vec<String> {
    let dump = debugfs(image, &format!("bd -x {block}"));
    dump.lines().filter_map(|line| line.strip_prefix("name = ")).map(str::to_string).collect()
}

/// Makes `/b` share the attribute block of `/a`, which must hold one: points `/b`'s
/// `i_file_acl` at it and counts it in `/b`'s `i_blocks` with debugfs, then lets `e2fsck -fy` set
/// the block's reference count to 2 (and reseal its checksum). Returns the block.
fn share_block_of_a_with_b(image: &Path) -> u64 {
    let (block, _) = acl_and_blockcount(image, "/a");
    assert_ne!(block, 0, "/a has no attribute block to share");
    let (old_acl, b_blocks) = acl_and_blockcount(image, "/b");
    assert_eq!(old_acl, 0, "/b already has an attribute block");
    let sectors_per_block = inspect(image, |ext| u64::from(ext.block_size()) / 512);
    debugfs_write(image, &format!("sif /b file_acl {block}"));
    debugfs_write(image, &format!("sif /b blocks {}", b_blocks + sectors_per_block));
    let output = Command::new("e2fsck").arg("-fy").arg(image).output().expect("run e2fsck");
    assert!(matches!(output.status.code(), Some(0 | 1)), "e2fsck -fy failed: {output:?}");
    assert_fsck_clean(image);
    assert_eq!(refcount(image, block), 2, "e2fsck did not count both users of block {block}");
    block
}

fn ino(image: &Path, path: &str) -> mender_preauth::fs::ext::InodeIndex {
    inspect(image, |ext| ext.lookup(path).unwrap().unwrap_or_else(|| panic!("{path} not found")))
}

#[test]
fn debugfs_attributes_read_back() {
    if tools("debugfs_attributes_read_back").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "security.selinux", LABEL);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        debugfs_ea_set(&image.path, "/a", "trusted.binary", BINARY);
        debugfs_ea_set(&image.path, "/a", "user.empty", b"");
        let a = ino(&image.path, "/a");

        let mut read = inspect(&image.path, |ext| ext.xattrs(a).unwrap());
        read.sort();
        let expected = vec![
            ("security.selinux".to_string(), LABEL.to_vec()),
            ("trusted.binary".to_string(), BINARY.to_vec()),
            ("user.empty".to_string(), Vec::new()),
            ("user.large".to_string(), large_value()),
        ];
        assert_eq!(read, expected, "{name}");
        let b = ino(&image.path, "/b");
        assert!(inspect(&image.path, |ext| ext.xattrs(b).unwrap()).is_empty(), "{name}");
    }
}

#[test]
fn written_attributes_read_by_debugfs() {
    if tools("written_attributes_read_by_debugfs").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        let free_before = free_blocks(&image.path);
        let (_, blocks_before) = acl_and_blockcount(&image.path, "/a");

        modify(&image.path, |ext| {
            ext.set_xattr("/a", "security.selinux", LABEL)?;
            ext.set_xattr("/a", "user.large", &large_value())?;
            ext.set_xattr("/a", "trusted.binary", BINARY)?;
            ext.set_xattr("/a", "user.empty", b"")
        });
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_ea_get(&image.path, "/a", "security.selinux").as_deref(), Some(LABEL), "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "user.large"), Some(large_value()), "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "trusted.binary").as_deref(), Some(BINARY), "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "user.empty").as_deref(), Some(&b""[..]), "{name}");
        assert_eq!(
            debugfs_ea_names(&image.path, "/a"),
            ["security.selinux", "trusted.binary", "user.empty", "user.large"],
            "{name}"
        );
        let (block, blocks_with) = acl_and_blockcount(&image.path, "/a");
        assert_ne!(block, 0, "{name}: the large value needs the attribute block");
        let sectors_per_block = inspect(&image.path, |ext| u64::from(ext.block_size()) / 512);
        assert_eq!(blocks_with, blocks_before + sectors_per_block, "{name}: i_blocks counts the block");
        assert_eq!(free_blocks(&image.path), free_before - 1, "{name}");

        modify(&image.path, |ext| ext.set_xattr("/a", "user.large", b"short now"));
        assert_fsck_clean(&image.path);
        assert_eq!(
            debugfs_ea_get(&image.path, "/a", "user.large").as_deref(),
            Some(&b"short now"[..]),
            "{name}"
        );

        modify(&image.path, |ext| {
            for attribute in ["security.selinux", "user.large", "trusted.binary", "user.empty"] {
                ext.remove_xattr("/a", attribute)?;
            }
            Ok(())
        });
        assert_fsck_clean(&image.path);
        assert!(debugfs_ea_names(&image.path, "/a").is_empty(), "{name}");
        assert_eq!(acl_and_blockcount(&image.path, "/a"), (0, blocks_before), "{name}: block released");
        assert_eq!(free_blocks(&image.path), free_before, "{name}: the attribute block is free again");
    }
}

#[test]
fn label_fits_in_large_inode() {
    if tools("label_fits_in_large_inode").is_none() {
        return;
    }
    let image = image_with_files(XATTR_SETS[0].1);
    modify(&image.path, |ext| ext.set_xattr("/dir/c", "security.selinux", LABEL));
    assert_fsck_clean(&image.path);
    assert_eq!(acl_and_blockcount(&image.path, "/dir/c").0, 0, "the label needs no attribute block");
    assert_eq!(debugfs_ea_get(&image.path, "/dir/c", "security.selinux").as_deref(), Some(LABEL));
}

#[test]
fn block_entries_are_sorted() {
    if tools("block_entries_are_sorted").is_none() {
        return;
    }
    let image = image_with_files(XATTR_SETS[2].1);
    let names = ["user.zz", "security.selinux", "user.b", "trusted.x", "user.aaa", "user.a"];
    modify(&image.path, |ext| {
        for name in names {
            ext.set_xattr("/a", name, name.as_bytes())?;
        }
        Ok(())
    });
    assert_fsck_clean(&image.path);
    let (block, _) = acl_and_blockcount(&image.path, "/a");
    // Name index (user 1, trusted 4, security 6), then name length, then name.
    assert_eq!(block_entry_names(&image.path, block), ["a", "b", "zz", "aaa", "x", "selinux"]);
    for name in names {
        assert_eq!(debugfs_ea_get(&image.path, "/a", name).as_deref(), Some(name.as_bytes()), "{name}");
    }
}

#[test]
fn replaced_file_keeps_attributes() {
    if tools("replaced_file_keeps_attributes").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "security.selinux", LABEL);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        let (block, _) = acl_and_blockcount(&image.path, "/a");

        let new_contents = pattern(9000, 7);
        modify(&image.path, |ext| ext.write_file("/a", &new_contents, &ATTRS));
        assert_fsck_clean(&image.path);
        assert_eq!(debugfs_cat(&image.path, "/a"), new_contents, "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "security.selinux").as_deref(), Some(LABEL), "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "user.large"), Some(large_value()), "{name}");
        assert_eq!(acl_and_blockcount(&image.path, "/a").0, block, "{name}: same attribute block");
    }
}

#[test]
fn shared_block_is_copied_on_write() {
    if tools("shared_block_is_copied_on_write").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        let shared = share_block_of_a_with_b(&image.path);
        let free_before = free_blocks(&image.path);

        modify(&image.path, |ext| ext.set_xattr("/a", "user.large", b"changed"));
        assert_fsck_clean(&image.path);
        let (a_block, _) = acl_and_blockcount(&image.path, "/a");
        assert_ne!(a_block, shared, "{name}: /a must get its own block");
        assert_eq!(refcount(&image.path, shared), 1, "{name}");
        assert_eq!(acl_and_blockcount(&image.path, "/b").0, shared, "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/b", "user.large"), Some(large_value()), "{name}");
        assert_eq!(
            debugfs_ea_get(&image.path, "/a", "user.large").as_deref(),
            Some(&b"changed"[..]),
            "{name}"
        );
        let copied = if a_block == 0 { 0 } else { 1 };
        assert_eq!(free_blocks(&image.path), free_before - copied, "{name}");
    }
}

#[test]
fn attribute_in_inode_leaves_shared_block_alone() {
    if tools("attribute_in_inode_leaves_shared_block_alone").is_none() {
        return;
    }
    let image = image_with_files(XATTR_SETS[0].1);
    debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
    let shared = share_block_of_a_with_b(&image.path);

    modify(&image.path, |ext| ext.set_xattr("/a", "security.selinux", LABEL));
    assert_fsck_clean(&image.path);
    assert_eq!(acl_and_blockcount(&image.path, "/a").0, shared);
    assert_eq!(refcount(&image.path, shared), 2);
    assert_eq!(debugfs_ea_get(&image.path, "/a", "security.selinux").as_deref(), Some(LABEL));
    assert_eq!(debugfs_ea_get(&image.path, "/a", "user.large"), Some(large_value()));
}

#[test]
fn removing_shared_attribute_drops_reference() {
    if tools("removing_shared_attribute_drops_reference").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        let shared = share_block_of_a_with_b(&image.path);
        let (_, a_blocks) = acl_and_blockcount(&image.path, "/a");
        let sectors_per_block = inspect(&image.path, |ext| u64::from(ext.block_size()) / 512);

        modify(&image.path, |ext| ext.remove_xattr("/a", "user.large"));
        assert_fsck_clean(&image.path);
        assert_eq!(acl_and_blockcount(&image.path, "/a"), (0, a_blocks - sectors_per_block), "{name}");
        assert_eq!(refcount(&image.path, shared), 1, "{name}");
        assert_eq!(debugfs_ea_get(&image.path, "/b", "user.large"), Some(large_value()), "{name}");
    }
}

#[test]
fn shared_block_survives_replace_and_remove() {
    if tools("shared_block_survives_replace_and_remove").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        let shared = share_block_of_a_with_b(&image.path);

        modify(&image.path, |ext| ext.write_file("/a", &pattern(7000, 3), &ATTRS));
        assert_fsck_clean(&image.path);
        assert_eq!(refcount(&image.path, shared), 2, "{name}: replacing /a keeps its reference");

        let free_before = free_blocks(&image.path);
        modify(&image.path, |ext| ext.remove_file("/b", ATTRS.time));
        assert_fsck_clean(&image.path);
        assert_eq!(refcount(&image.path, shared), 1, "{name}: removing /b drops its reference");
        assert_eq!(debugfs_ea_get(&image.path, "/a", "user.large"), Some(large_value()), "{name}");
        let b_data_blocks = 1;
        assert_eq!(free_blocks(&image.path), free_before + b_data_blocks, "{name}: the shared block stays");

        let free_before = free_blocks(&image.path);
        modify(&image.path, |ext| ext.remove_file("/a", ATTRS.time));
        assert_fsck_clean(&image.path);
        let a_blocks = inspect(&image.path, |ext| 7000u64.div_ceil(u64::from(ext.block_size())));
        assert_eq!(free_blocks(&image.path), free_before + a_blocks + 1, "{name}: the last user frees it");
    }
}

#[test]
fn bad_names_and_sizes_are_rejected() {
    if tools("bad_names_and_sizes_are_rejected").is_none() {
        return;
    }
    let image = image_with_files(XATTR_SETS[0].1);
    let before = sha256_file(&image.path);
    for bad in ["selinux", "user.", "system.posix_acl_access", "system.data", "os2.name"] {
        let error = modify(&image.path, |ext| Ok(ext.set_xattr("/a", bad, b"x").unwrap_err()));
        assert!(matches!(error, ExtError::InvalidXattrName(ref name, _) if name == bad), "{bad}: {error}");
    }
    let long_name = format!("user.{}", "n".repeat(256));
    let error = modify(&image.path, |ext| Ok(ext.set_xattr("/a", &long_name, b"x").unwrap_err()));
    assert!(matches!(error, ExtError::InvalidXattrName(..)), "{error}");

    let error = modify(&image.path, |ext| Ok(ext.remove_xattr("/a", "user.missing").unwrap_err()));
    assert!(matches!(error, ExtError::XattrNotFound { .. }), "{error}");
    let error = modify(&image.path, |ext| Ok(ext.set_xattr("/missing", "user.x", b"x").unwrap_err()));
    assert!(matches!(error, ExtError::NotFound(_)), "{error}");

    let huge = vec![b'h'; 2000];
    let error = modify(&image.path, |ext| Ok(ext.set_xattr("/a", "user.huge", &huge).unwrap_err()));
    assert!(
        matches!(
            error,
            ExtError::XattrNoSpace { place: "the attribute block", needed: 2020, available: 988, .. }
        ),
        "{error}"
    );
    assert_eq!(sha256_file(&image.path), before, "rejected writes change nothing");
}

#[test]
fn attributes_on_directory_and_symlink() {
    if tools("attributes_on_directory_and_symlink").is_none() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir(source.path().join("dir")).unwrap();
    std::os::unix::fs::symlink("/dir", source.path().join("link")).unwrap();
    let image = make_image(16, XATTR_SETS[2].1, Some(source.path()));
    modify(&image.path, |ext| {
        ext.set_xattr("/dir", "security.selinux", LABEL)?;
        ext.set_xattr("/link", "security.selinux", b"system_u:object_r:link_t:s0")
    });
    assert_fsck_clean(&image.path);
    assert_eq!(debugfs_ea_get(&image.path, "/dir", "security.selinux").as_deref(), Some(LABEL));
    assert_eq!(
        debugfs_ea_get(&image.path, "/link", "security.selinux").as_deref(),
        Some(&b"system_u:object_r:link_t:s0"[..]),
        "the link itself gets the label, not its target"
    );
    assert_eq!(debugfs(&image.path, "stat /link").matches("link_t").count(), 1);
}

#[test]
fn unsupported_features_reject_writes() {
    if tools("unsupported_features_reject_writes").is_none() {
        return;
    }
    let cases: [(&[&str], &str); 2] =
        [(&["-b", "1024", "-O", "ea_inode"], "ea_inode"), (&["-b", "1024", "-O", "^ext_attr"], "ext_attr")];
    for (args, feature) in cases {
        let image = image_with_files(args);
        let before = sha256_file(&image.path);
        let error = modify(&image.path, |ext| Ok(ext.set_xattr("/a", "user.x", b"x").unwrap_err()));
        assert!(
            matches!(error, ExtError::Unsupported { feature: ref name, .. } if name == feature),
            "{error}"
        );
        assert_eq!(sha256_file(&image.path), before, "{feature}");
    }
}

#[test]
fn compound_operations_release_shared_blocks() {
    if tools("compound_operations_release_shared_blocks").is_none() {
        return;
    }
    for (name, args) in XATTR_SETS {
        let image = image_with_files(args);
        debugfs_ea_set(&image.path, "/a", "user.large", &large_value());
        let shared = share_block_of_a_with_b(&image.path);

        // Renaming /a over /b frees /b, one of the two users of the block.
        modify(&image.path, |ext| ext.rename("/a", "/b", ATTRS.time));
        assert_fsck_clean(&image.path);
        assert_eq!(refcount(&image.path, shared), 1, "{name}: the replaced file dropped its reference");
        assert_eq!(debugfs_ea_get(&image.path, "/b", "user.large"), Some(large_value()), "{name}");

        // A tree holding the last user frees the block with everything else.
        modify(&image.path, |ext| ext.create_dir_all("/tree/deeper", &ATTRS).map(drop));
        modify(&image.path, |ext| ext.rename("/b", "/tree/deeper/b", ATTRS.time));
        let free_before = free_blocks(&image.path);
        modify(&image.path, |ext| ext.remove_tree("/tree", ATTRS.time));
        assert_fsck_clean(&image.path);
        let freed = free_blocks(&image.path) - free_before;
        let data_blocks = inspect(&image.path, |ext| 3000u64.div_ceil(u64::from(ext.block_size())));
        assert_eq!(freed, data_blocks + 1 + 2, "{name}: data, the attribute block and two directory blocks");
    }
}
