//! Hashed-index (htree) directories. New names go to the leaf their hash selects, and e2fsck
//! checks each leaf's names against its hash range. A full leaf is split in two, a full index
//! node too, and a full root moves its entries one level down.

mod ext_support;

use std::path::Path;

use ext_support::*;
use mender_preauth::image::volume::VolumeMut;

/// Creates a source tree with `/many` containing `count` files, some with non-ASCII names so that signed
/// and unsigned hashes differ.
fn many_files(count: usize, prefix: &str) -> tempfile::TempDir {
    let source = tempfile::tempdir().unwrap();
    let many = source.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for index in 0..count {
        let name = if index % 3 == 0 {
            format!("{prefix}entrée-{index:05}")
        } else {
            format!("{prefix}entry-{index:05}")
        };
        std::fs::write(many.join(name), format!("{index}")).unwrap();
    }
    source
}

/// Number of leaf blocks `debugfs htree` lists for `path`.
fn leaf_count(image: &Path, path: &str) -> usize {
    debugfs(image, &format!("htree {path}"))
        .lines()
        .filter(|line| line.starts_with("Entry #") && line.contains("block"))
        .count()
}

/// `Indirect levels` and the root's entry count from `debugfs htree`.
fn root_shape(image: &Path, path: &str) -> (u32, u32) {
    let dump = debugfs(image, &format!("htree {path}"));
    let levels = field(&dump, "Indirect levels:").unwrap().parse().unwrap();
    let count = field(&dump, "Number of entries (count):").unwrap().parse().unwrap();
    (levels, count)
}

fn assert_indexed(image: &Path, path: &str) {
    let stat = debugfs(image, &format!("stat {path}"));
    let flags = u32::from_str_radix(field(&stat, "Flags:").unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 0x1000, 0, "{path} has no hashed index: {stat}");
}

#[test]
fn htree_insert_follows_each_hash_version() {
    if tools("htree_insert_follows_each_hash_version").is_none() {
        return;
    }
    let source = many_files(300, "");
    for hash in ["half_md4", "tea", "legacy"] {
        for flags in ["1", "2"] {
            let case = format!("{hash} with s_flags {flags}");
            let image = make_image(16, SMALL_1K, Some(source.path()));
            debugfs_write(&image.path, &format!("ssv def_hash_version {hash}"));
            debugfs_write(&image.path, &format!("ssv flags {flags}"));
            index_directories(&image.path);
            assert_indexed(&image.path, "/many");
            let leaves_before = leaf_count(&image.path, "/many");

            // 300 more names fill the leaves e2fsck packed, so most of them split.
            let added = modify(&image.path, |ext| {
                let mut added = Vec::new();
                for index in 0..300 {
                    let path = format!("/many/nouvelle-entrée-{index}");
                    ext.write_file(&path, path.as_bytes(), &ATTRS)?;
                    added.push(path);
                }
                Ok(added)
            });
            assert!(leaf_count(&image.path, "/many") > leaves_before, "{case}: no leaf was split");
            assert_fsck_clean(&image.path);
            for path in added.iter().step_by(29) {
                assert_eq!(debugfs_cat(&image.path, path), path.as_bytes(), "{case}");
            }
            inspect(&image.path, |ext| {
                for index in (0..300).step_by(37) {
                    let name = if index % 3 == 0 {
                        format!("entrée-{index:05}")
                    } else {
                        format!("entry-{index:05}")
                    };
                    let ino = ext.lookup(&format!("/many/{name}")).unwrap().expect("existing name found");
                    assert_eq!(ext.read_file(ino, 64).unwrap(), format!("{index}").as_bytes(), "{case}");
                }
            });
        }
    }
}

#[test]
fn htree_with_two_levels_takes_new_names() {
    if tools("htree_with_two_levels_takes_new_names").is_none() {
        return;
    }
    // About 14 of these 70-byte entries fill a 1 KiB leaf, so 3000 need more leaves than the
    // root's 123 index entries can point to.
    let source = many_files(3000, "a-rather-long-file-name-that-fills-directory-blocks-");
    let image = make_image(32, SMALL_1K, Some(source.path()));
    index_directories(&image.path);
    let htree = debugfs(&image.path, "htree /many");
    assert!(
        htree.contains("Indirect levels: 1"),
        "expected a two-level index: {}",
        &htree[..400.min(htree.len())]
    );

    let (_, root_entries_before) = root_shape(&image.path, "/many");
    modify(&image.path, |ext| {
        for index in 0..400 {
            ext.write_file(&format!("/many/deep-{index}"), b"deep", &ATTRS)?;
        }
        Ok(())
    });
    assert_fsck_clean(&image.path);
    assert_eq!(debugfs_cat(&image.path, "/many/deep-399"), b"deep");
    assert_eq!(root_shape(&image.path, "/many").0, 1, "still two levels");
    assert!(root_shape(&image.path, "/many").1 >= root_entries_before);
}

#[test]
fn full_index_node_splits() {
    if tools("full_index_node_splits").is_none() {
        return;
    }
    // Names of 252 bytes leave room for three entries per 1 KiB leaf, so 380 of them need
    // more leaves than the root can point to: two levels, whose nodes e2fsck fills.
    let source = many_files(380, &"x".repeat(240));
    let image = make_image(32, SMALL_1K, Some(source.path()));
    index_directories(&image.path);
    let (levels, root_entries_before) = root_shape(&image.path, "/many");
    assert_eq!(levels, 1);

    let long = "y".repeat(240);
    modify(&image.path, |ext| {
        for index in 0..400 {
            ext.write_file(&format!("/many/{long}-{index:04}"), format!("{index}").as_bytes(), &ATTRS)?;
        }
        Ok(())
    });
    assert_fsck_clean(&image.path);
    let (levels, root_entries) = root_shape(&image.path, "/many");
    assert_eq!(levels, 1);
    assert!(root_entries > root_entries_before, "no index node was split: {root_entries} root entries");
    assert_eq!(debugfs_cat(&image.path, &format!("/many/{long}-0399")), b"399");
}

#[test]
fn full_root_moves_down_a_level() {
    if tools("full_root_moves_down_a_level").is_none() {
        return;
    }
    // e2fsck leaves 20% of each leaf free, so about 1300 entries of 72 bytes fill close to the
    // 123 leaves one root can point to.
    let source = many_files(1300, "a-rather-long-file-name-that-fills-directory-blocks-");
    let image = make_image(32, SMALL_1K, Some(source.path()));
    index_directories(&image.path);
    assert_eq!(root_shape(&image.path, "/many").0, 0, "expected a one-level index");

    let added = modify(&image.path, |ext| {
        let mut added = 0;
        while added < 3000 {
            ext.write_file(&format!("/many/more-{added:05}"), b"more", &ATTRS)?;
            added += 1;
            if added % 50 == 0 && ext.volume().pending_bytes() > 0 {
                let dir = ext.lookup("/many").unwrap().unwrap();
                let size = ext.metadata(dir).unwrap().size;
                // 123 leaves, the root and at least one index node: the level was added.
                if size > 125 * 1024 {
                    break;
                }
            }
        }
        Ok(added)
    });
    assert_fsck_clean(&image.path);
    assert_eq!(root_shape(&image.path, "/many").0, 1, "the root did not move down after {added} names");
    assert_eq!(debugfs_cat(&image.path, &format!("/many/more-{:05}", added - 1)), b"more");
}

#[test]
fn staged_writes_reach_the_file_only_on_commit() {
    if tools("staged_writes_reach_the_file_only_on_commit").is_none() {
        return;
    }
    let image = make_image(16, SMALL_1K, None);
    let before = std::fs::read(&image.path).unwrap();
    {
        let file = std::fs::File::options().read(true).write(true).open(&image.path).unwrap();
        let len = file.metadata().unwrap().len();
        let volume = mender_preauth::image::volume::Staged::new(
            mender_preauth::image::volume::FileVolume::new(&file, 0, len),
        );
        let mut ext = mender_preauth::fs::ext::Ext::open(volume).unwrap();
        ext.write_file("/key", b"secret", &ATTRS).unwrap();
        assert!(ext.volume().pending_bytes() > 0);
        let mut volume = ext.into_volume();
        volume.discard();
        assert!(volume.write_at(0, &[]).is_ok());
    }
    assert!(std::fs::read(&image.path).unwrap() == before);
}
