//! Filesystems this module must not modify are rejected before anything is written, while
//! reading them still works.

mod ext_support;

use std::path::Path;

use ext_support::*;
use mender_preauth::fs::ext::ExtError;

/// Asserts that `check_writable` and `write_file` both fail with an error `expected` accepts,
/// that the image is unchanged, and that the root directory still reads.
fn assert_rejected(image: &Path, case: &str, expected: impl Fn(&ExtError) -> bool) {
    let before = std::fs::read(image).unwrap();
    let file = std::fs::File::options().read(true).write(true).open(image).unwrap();
    let len = file.metadata().unwrap().len();
    let volume = mender_preauth::image::volume::Staged::new(mender_preauth::image::volume::FileVolume::new(
        &file, 0, len,
    ));
    let mut ext = mender_preauth::fs::ext::Ext::open(volume)
        .unwrap_or_else(|error| panic!("{case}: open failed: {error}"));

    let error = ext.check_writable().unwrap_err();
    assert!(expected(&error), "{case}: check_writable returned {error}");
    let error = ext.write_file("/key", b"x", &ATTRS).unwrap_err();
    assert!(expected(&error), "{case}: write_file returned {error}");
    assert_eq!(ext.volume().pending_bytes(), 0, "{case}: a rejected write staged bytes");

    let names: Vec<Vec<u8>> =
        ext.read_dir(ext.lookup("/").unwrap().unwrap()).unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&b"lost+found".to_vec()), "{case}: root lists {names:?}");
    drop(ext);
    assert!(std::fs::read(image).unwrap() == before, "{case}: image changed");
}

#[test]
fn unsupported_features_are_rejected_for_writing() {
    if tools("unsupported_features_are_rejected_for_writing").is_none() {
        return;
    }
    let cases: [(&str, &[&str]); 5] = [
        ("quota", &["-O", "quota"]),
        ("bigalloc", &["-O", "bigalloc", "-C", "16384"]),
        ("mmp", &["-O", "mmp"]),
        ("encrypt", &["-O", "encrypt"]),
        ("casefold", &["-O", "casefold"]),
    ];
    for (feature, args) in cases {
        let image = make_image(32, args, None);
        assert_rejected(
            &image.path,
            feature,
            |error| matches!(error, ExtError::Unsupported { feature: named, .. } if named == feature),
        );
    }
}

#[test]
fn pending_recovery_and_errors_are_rejected() {
    if tools("pending_recovery_and_errors_are_rejected").is_none() {
        return;
    }
    let image = make_image(16, SMALL_1K, None);
    debugfs_write(&image.path, "feature needs_recovery");
    assert_rejected(&image.path, "needs_recovery", |error| matches!(error, ExtError::NeedsRecovery { .. }));
    assert!(ExtError::NeedsRecovery { reason: "x" }.to_string().contains("e2fsck -fy"));

    let image = make_image(16, SMALL_1K, None);
    debugfs_write(&image.path, "ssv state 3");
    assert_rejected(&image.path, "error state", |error| matches!(error, ExtError::HasErrors));

    let image = make_image(16, SMALL_1K, None);
    debugfs_write(&image.path, "ssv state 0");
    assert_rejected(&image.path, "not clean", |error| matches!(error, ExtError::NeedsRecovery { .. }));

    let image = make_image(16, SMALL_1K, None);
    debugfs_write(&image.path, "ssv last_orphan 11");
    assert_rejected(&image.path, "orphans", |error| matches!(error, ExtError::NeedsRecovery { .. }));
}

#[test]
fn inline_data_files_read_but_are_not_rewritten() {
    if tools("inline_data_files_read_but_are_not_rewritten").is_none() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("tiny"), b"inline contents").unwrap();
    let image = make_image(16, &["-O", "inline_data"], Some(source.path()));
    let stat = debugfs(&image.path, "stat /tiny");
    assert!(stat.contains("Size of inline data"), "{stat}");

    inspect(&image.path, |ext| {
        let ino = ext.lookup("/tiny").unwrap().unwrap();
        assert_eq!(ext.read_file(ino, 100).unwrap(), b"inline contents");
    });
    let before = std::fs::read(&image.path).unwrap();
    let file = std::fs::File::options().read(true).write(true).open(&image.path).unwrap();
    let len = file.metadata().unwrap().len();
    let volume = mender_preauth::image::volume::Staged::new(mender_preauth::image::volume::FileVolume::new(
        &file, 0, len,
    ));
    let mut ext = mender_preauth::fs::ext::Ext::open(volume).unwrap();
    let error = ext.write_file("/tiny", b"new", &ATTRS).unwrap_err();
    assert!(
        matches!(error, ExtError::Unsupported { ref feature, .. } if feature == "inline_data"),
        "{error}"
    );
    assert_eq!(ext.volume().pending_bytes(), 0);
    drop(ext);
    assert!(std::fs::read(&image.path).unwrap() == before);
}
