//! Hashed-index (htree) directories. New names go to the leaf their hash selects, and e2fsck
//! checks each leaf's names against its hash range. A full leaf is rejected before any write.

mod ext_support;

use std::path::Path;

use ext_support::*;
use mender_preauth::fs::ext::ExtError;
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

            let added = modify(&image.path, |ext| {
                let mut added = Vec::new();
                for index in 0..12 {
                    let path = format!("/many/nouvelle-entrée-{index}");
                    match ext.write_file(&path, path.as_bytes(), &ATTRS) {
                        Ok(_) => added.push(path),
                        Err(ExtError::Unsupported { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(added)
            });
            assert!(added.len() >= 6, "{case}: only {} names fitted", added.len());
            assert_fsck_clean(&image.path);
            for path in &added {
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

    modify(&image.path, |ext| {
        for index in 0..20 {
            let path = format!("/many/deep-{index}");
            match ext.write_file(&path, b"deep", &ATTRS) {
                Ok(_) | Err(ExtError::Unsupported { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    assert_fsck_clean(&image.path);
}

#[test]
fn full_htree_leaf_is_rejected_before_writing() {
    if tools("full_htree_leaf_is_rejected_before_writing").is_none() {
        return;
    }
    let source = many_files(300, "");
    let image = make_image(16, SMALL_1K, Some(source.path()));
    index_directories(&image.path);

    let (added, error) = modify(&image.path, |ext| {
        for index in 0..2000 {
            let path = format!("/many/filler-{index:04}");
            let pending_before = ext.volume().pending_bytes();
            match ext.write_file(&path, b"x", &ATTRS) {
                Ok(_) => {}
                Err(error) => {
                    assert_eq!(
                        ext.volume().pending_bytes(),
                        pending_before,
                        "the rejected write staged bytes"
                    );
                    return Ok((index, error));
                }
            }
        }
        panic!("2000 names fitted without filling a leaf");
    });
    assert!(added > 0, "the first name already hit a full leaf");
    assert!(matches!(error, ExtError::Unsupported { .. }), "{error}");
    assert!(error.to_string().contains("splitting a full hashed-index directory block"), "{error}");
    assert_fsck_clean(&image.path);
    assert_eq!(debugfs_cat(&image.path, &format!("/many/filler-{:04}", added - 1)), b"x");
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
