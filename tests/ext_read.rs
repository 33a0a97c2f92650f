//! Reading images populated by `mkfs.ext4 -d`: files, holes, directories and symbolic links.

mod ext_support;

use std::os::unix::fs::{PermissionsExt, symlink};

use ext_support::*;
use mender_preauth::fs::ext::{ExtError, FileKind};

/// Creates a source tree with every kind of file the reader must handle.
fn source_tree() -> tempfile::TempDir {
    let source = tempfile::tempdir().unwrap();
    let root = source.path();
    std::fs::create_dir_all(root.join("etc/mender")).unwrap();
    std::fs::write(root.join("etc/mender/mender.conf"), b"{\"ServerURL\": \"https://example.com\"}\n")
        .unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("big"), pattern(200_000, 11)).unwrap();
    std::fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();

    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(2 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 1 << 20).unwrap();

    symlink("/etc/mender", root.join("abs-link")).unwrap();
    symlink("mender/mender.conf", root.join("etc/rel-link")).unwrap();
    symlink("../../../../etc/mender/mender.conf", root.join("etc/mender/up-link")).unwrap();
    // Longer than the 60 bytes of i_block, so the target needs a data block.
    let long_target = format!("/etc/{}mender/mender.conf", "./".repeat(35));
    symlink(long_target, root.join("slow-link")).unwrap();
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    source
}

#[test]
fn populated_images_read_back_on_every_feature_set() {
    if tools("populated_images_read_back_on_every_feature_set").is_none() {
        return;
    }
    let source = source_tree();
    for (name, args) in FEATURE_SETS {
        let image = make_image(32, args, Some(source.path()));
        inspect(&image.path, |ext| {
            assert_eq!(ext.label(), "data", "{name}");
            assert_eq!(ext.size_bytes(), 32 << 20, "{name}");
            assert_eq!(ext.features().iter().any(|f| f == "extent"), name.starts_with("ext4"), "{name}");

            let conf = ext.lookup("/etc/mender/mender.conf").unwrap().expect("mender.conf");
            assert_eq!(ext.read_file(conf, 4096).unwrap(), b"{\"ServerURL\": \"https://example.com\"}\n");
            let big = ext.lookup("/big").unwrap().unwrap();
            assert_eq!(ext.read_file(big, 1 << 20).unwrap(), pattern(200_000, 11), "{name}");
            assert!(matches!(ext.read_file(big, 1000), Err(ExtError::FileTooLarge { size: 200_000, .. })));
            let empty = ext.lookup("/empty").unwrap().unwrap();
            assert_eq!(ext.read_file(empty, 0).unwrap(), b"");

            let setuid = ext.metadata(ext.lookup("/setuid").unwrap().unwrap()).unwrap();
            assert_eq!((setuid.kind, setuid.mode, setuid.uid), (FileKind::Regular, 0o4755, 0), "{name}");

            let sparse = ext.lookup("/sparse").unwrap().unwrap();
            let contents = ext.read_file(sparse, 4 << 20).unwrap();
            assert_eq!(contents.len(), 2 << 20);
            assert_eq!(&contents[1 << 20..(1 << 20) + 6], b"middle", "{name}");
            assert!(contents[..1 << 20].iter().all(|&byte| byte == 0), "{name}: hole is not zero");
            let mut tail = [1u8; 100];
            assert_eq!(ext.read_at(sparse, (2 << 20) - 50, &mut tail).unwrap(), 50);
            assert!(tail[..50].iter().all(|&byte| byte == 0));

            assert_eq!(ext.read_link(ext.lookup("/abs-link").unwrap().unwrap()).unwrap(), b"/etc/mender");
            let slow = ext.lookup("/slow-link").unwrap().unwrap();
            assert_eq!(ext.read_link(slow).unwrap().len(), 5 + 70 + 18, "{name}");
            for path in [
                "/abs-link/mender.conf",
                "/etc/rel-link",
                "/etc/mender/up-link",
                "/slow-link",
                "/../etc/./mender/mender.conf",
            ] {
                assert_eq!(ext.resolve(path, true).unwrap(), Some(conf), "{name}: {path}");
            }
            assert_eq!(ext.resolve("/etc/rel-link", false).unwrap(), ext.lookup("/etc/rel-link").unwrap());
            assert!(matches!(ext.lookup("/abs-link/mender.conf"), Err(ExtError::NotADirectory(_))));
            assert!(matches!(ext.resolve("/loop-a", true), Err(ExtError::TooManySymlinks(_))), "{name}");
            assert_eq!(ext.lookup("/etc/missing").unwrap(), None);

            let etc = ext.lookup("/etc").unwrap().unwrap();
            let mut names: Vec<String> = ext
                .read_dir(etc)
                .unwrap()
                .into_iter()
                .map(|entry| String::from_utf8(entry.name).unwrap())
                .collect();
            names.sort();
            assert_eq!(names, [".", "..", "mender", "rel-link"], "{name}");
            let kinds: Vec<FileKind> =
                ext.read_dir(etc).unwrap().into_iter().map(|entry| entry.kind).collect();
            assert!(kinds.contains(&FileKind::Symlink), "{name}");
            assert!(kinds.contains(&FileKind::Directory), "{name}");
        });
    }
}
