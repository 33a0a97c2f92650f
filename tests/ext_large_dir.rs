//! Hashed-index directories grown until their index is full: a third level under `large_dir`,
//! and `DirectoryIndexFull` before any write without it. Each needs tens of thousands of
//! names, about 40 s in a debug build on two cores, so both are ignored by default; run them
//! with `cargo test --test ext_large_dir -- --ignored`.

mod ext_support;

use std::path::Path;

use ext_support::*;
use mender_preauth::fs::ext::{Ext, ExtError};
use mender_preauth::image::volume::{Staged, VolumeMut};

/// Offset of `indirect_levels` in an htree root block.
const ROOT_INDIRECT_LEVELS: u64 = 0x1E;
/// Names of 255 bytes: three entries fill a 1 KiB leaf, so the index fills fast.
const NAME_PREFIX_LEN: usize = 248;

/// Builds a 1 KiB block image with `/d` indexed by e2fsck and three files to link from.
fn indexed_image(features: &str) -> Image {
    let image = make_image(96, &["-b", "1024", "-N", "4096", "-O", features], None);
    modify(&image.path, |ext| {
        ext.create_dir("/d", &DIR_ATTRS)?;
        for file in 0..3 {
            ext.write_file(&format!("/f{file}"), format!("{file}").as_bytes(), &ATTRS)?;
        }
        for index in 0..300 {
            ext.link(&format!("/f{}", index % 3), &name(index), ATTRS.time)?;
        }
        Ok(())
    });
    index_directories(&image.path);
    assert!(debugfs(&image.path, "htree /d").contains("Indirect levels: 0"));
    image
}

fn name(index: usize) -> String {
    format!("/d/{}-{index:06}", "n".repeat(NAME_PREFIX_LEN))
}

/// Reads the root's `indirect_levels` of `/d`.
fn levels<V: VolumeMut>(ext: &Ext<V>) -> u8 {
    let dir = ext.lookup("/d").unwrap().unwrap();
    let mut byte = [0u8; 1];
    ext.read_at(dir, ROOT_INDIRECT_LEVELS, &mut byte).unwrap();
    byte[0]
}

/// Links names into `/d` until `stop` returns true or a link fails; returns the names linked
/// and the error, if any.
fn grow<V: VolumeMut>(ext: &mut Ext<V>, stop: impl Fn(&Ext<V>) -> bool) -> (usize, Option<ExtError>) {
    let mut index = 300;
    while index < 150_000 {
        if index % 200 == 0 && stop(ext) {
            return (index, None);
        }
        if let Err(error) = ext.link(&format!("/f{}", index % 3), &name(index), ATTRS.time) {
            return (index, Some(error));
        }
        index += 1;
    }
    (index, None)
}

fn save(ext: Ext<Staged<Vec<u8>>>, image: &Path) {
    std::fs::write(image, ext.into_volume().commit().unwrap()).unwrap();
}

#[test]
#[ignore = "links tens of thousands of names: about 40 s in a debug build"]
fn large_dir_index_reaches_three_levels() {
    if tools("large_dir_index_reaches_three_levels").is_none() {
        return;
    }
    let image = indexed_image("large_dir");
    let mut ext = Ext::open(Staged::new(std::fs::read(&image.path).unwrap())).unwrap();
    let (linked, error) = grow(&mut ext, |ext| levels(ext) == 2);
    assert!(error.is_none(), "linking name {linked} failed: {error:?}");
    assert_eq!(levels(&ext), 2, "no third level after {linked} names");
    save(ext, &image.path);

    assert_fsck_clean(&image.path);
    assert!(debugfs(&image.path, "htree /d").contains("Indirect levels: 2"));
    assert_eq!(debugfs_cat(&image.path, &name(linked - 1)), format!("{}", (linked - 1) % 3).as_bytes());
    let stat = debugfs(&image.path, "stat /f0");
    assert_eq!(field(&stat, "Links:").unwrap().parse::<usize>().unwrap(), 1 + linked.div_ceil(3));
}

#[test]
#[ignore = "links tens of thousands of names: about 40 s in a debug build"]
fn full_index_rejects_the_next_name() {
    if tools("full_index_rejects_the_next_name").is_none() {
        return;
    }
    let image = indexed_image("^large_dir");
    let mut ext = Ext::open(Staged::new(std::fs::read(&image.path).unwrap())).unwrap();
    let (linked, error) = grow(&mut ext, |_| false);
    assert!(matches!(error, Some(ExtError::DirectoryIndexFull(_))), "after {linked} names: {error:?}");
    assert_eq!(levels(&ext), 1);

    // The rejected name staged nothing, so the image saved now is consistent.
    save(ext, &image.path);
    assert_fsck_clean(&image.path);
    assert!(debugfs(&image.path, "ls /d").lines().count() > 1000);
    let missing = debugfs(&image.path, &format!("stat {}", name(linked)));
    assert!(!missing.contains("Inode:"), "the rejected name exists: {missing}");
}
