//! Checks that `scripts/make-fixtures` and the committed `testdata/demo.sdimg` have the layout the
//! other tests rely on, judged by sfdisk, e2fsck, debugfs, dumpe2fs and fsck.vfat. These tests also
//! exercise the helpers in `common`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    BOOT_PARTITION, COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION,
    debugfs_cat, debugfs_dump_dir, debugfs_stat, e2fsck_clean, extract_partition, make_bare_data,
    make_fixture, offset_path, partitions, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

const MIB: u64 = 1024 * 1024;

/// Returns `dumpe2fs -h` of the filesystem at `fs`: the superblock fields, one `Name: value` a line.
fn dumpe2fs_header(fs: &Path) -> String {
    let mut command = Command::new("dumpe2fs");
    command.arg("-h").arg(fs).env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "dumpe2fs -h {} failed: {}",
        fs.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("dumpe2fs printed text that is not UTF-8")
}

/// Returns the value of the superblock field `name` in `dumpe2fs -h` output.
fn superblock_field<'a>(header: &'a str, name: &str) -> &'a str {
    header
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("dumpe2fs printed no {name}:\n{header}"))
}

fn require_judges(test: &str) -> bool {
    require_tools(&EXT4_JUDGES, test).is_some() && require_tools(&["dumpe2fs"], test).is_some()
}

#[test]
fn fixture_partitions_follow_wic_layout() {
    const TEST: &str = "fixture_partitions_follow_wic_layout";
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], TEST) else { return };

    let table = partitions(&image);
    let layout: Vec<(u32, u64, u64, &str, bool)> = table
        .iter()
        .map(|partition| {
            (
                partition.number,
                partition.start_bytes / MIB,
                partition.size_bytes / MIB,
                partition.partition_type.as_str(),
                partition.bootable,
            )
        })
        .collect();
    assert_eq!(
        layout,
        [
            (BOOT_PARTITION, 8, 8, "c", true),
            (ROOTFS_A_PARTITION, 16, 16, "83", false),
            (ROOTFS_B_PARTITION, 32, 16, "83", false),
            (DATA_PARTITION, 48, 16, "83", false),
        ]
    );
    for partition in &table {
        assert_eq!(
            partition.start_bytes % (8 * MIB),
            0,
            "partition {} is not aligned to 8 MiB",
            partition.number
        );
    }
    let image_size = std::fs::metadata(&image).expect("failed to stat the image").len();
    assert_eq!(image_size, 64 * MIB);
}

#[test]
fn fixture_partition_sizes_follow_options() {
    const TEST: &str = "fixture_partition_sizes_follow_options";
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let options = ["--boot-mib", "4", "--rootfs-mib", "20", "--data-mib", "10"];
    let Some(image) = make_fixture(work.path(), "device.sdimg", &options, TEST) else { return };

    let positions: Vec<(u64, u64)> = partitions(&image)
        .iter()
        .map(|partition| (partition.start_bytes / MIB, partition.size_bytes / MIB))
        .collect();
    assert_eq!(positions, [(8, 4), (16, 20), (40, 20), (64, 10)]);
}

#[test]
fn fixture_data_partition_is_clean_and_root_owned() {
    const TEST: &str = "fixture_data_partition_is_clean_and_root_owned";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], TEST) else { return };
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));

    e2fsck_clean(&data);
    let header = dumpe2fs_header(&data);
    assert_eq!(superblock_field(&header, "Filesystem volume name"), "data");
    assert_eq!(superblock_field(&header, "Block size"), "4096");
    let features = superblock_field(&header, "Filesystem features");
    for feature in ["has_journal", "extent", "metadata_csum", "64bit", "flex_bg"] {
        assert!(
            features.split_whitespace().any(|f| f == feature),
            "data filesystem lacks {feature}: {features}"
        );
    }

    let mender = debugfs_stat(&data, "/mender");
    assert_eq!((mender.file_type.as_str(), mender.mode, mender.uid, mender.gid), ("directory", 0o755, 0, 0));
    let device_type = debugfs_stat(&data, "/mender/device_type");
    assert_eq!(
        (device_type.file_type.as_str(), device_type.mode, device_type.uid, device_type.gid),
        ("regular", 0o644, 0, 0)
    );
    assert_eq!(device_type.size, 23);
    assert_eq!(debugfs_cat(&data, "/mender/device_type"), b"device_type=qemux86-64\n");
    let root = debugfs_stat(&data, "/");
    assert_eq!((root.uid, root.gid), (0, 0), "the data filesystem's root directory is not owned by root");
}

#[test]
fn fixture_rootfs_a_has_mender_client_files() {
    const TEST: &str = "fixture_rootfs_a_has_mender_client_files";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], TEST) else { return };
    let rootfs = extract_partition(&image, ROOTFS_A_PARTITION, &work.path().join("rootfs.ext4"));

    e2fsck_clean(&rootfs);
    let config: serde_json::Value = serde_json::from_slice(&debugfs_cat(&rootfs, "/etc/mender/mender.conf"))
        .expect("mender.conf is not JSON");
    assert_eq!(config["ServerURL"], "https://docker.mender.io");
    assert_eq!(config["TenantToken"], "");
    assert_eq!(debugfs_cat(&rootfs, "/etc/mender/artifact_info"), b"artifact_name=demo-1.0\n");
    assert_eq!(debugfs_cat(&rootfs, "/etc/hostname"), b"qemux86-64\n");

    let client = debugfs_cat(&rootfs, "/usr/bin/mender");
    assert!(client.starts_with(b"\x7fELF"), "/usr/bin/mender is not an ELF binary");
    let link = debugfs_stat(&rootfs, "/var/lib/mender");
    assert_eq!(link.file_type, "symlink");
    let mut command = Command::new("debugfs");
    command.arg("-R").arg("stat /var/lib/mender").arg(&rootfs);
    let stat = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        String::from_utf8_lossy(&stat.stdout).contains("Fast link dest: \"/data/mender\""),
        "/var/lib/mender does not point to /data/mender"
    );

    for path in ["/", "/etc/mender/mender.conf", "/usr/bin/mender", "/var/lib/mender", "/data", "/bin/sh"] {
        let inode = debugfs_stat(&rootfs, path);
        assert_eq!((inode.uid, inode.gid), (0, 0), "{path} is not owned by root");
    }
    assert_eq!(debugfs_stat(&rootfs, "/usr/bin/mender").mode, 0o755);
}

#[test]
fn fixture_rootfs_b_is_zeros() {
    const TEST: &str = "fixture_rootfs_b_is_zeros";
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], TEST) else { return };
    let rootfs_b = extract_partition(&image, ROOTFS_B_PARTITION, &work.path().join("rootfs-b.bin"));

    let bytes = std::fs::read(&rootfs_b).expect("failed to read rootfs B");
    assert_eq!(bytes.len() as u64, 16 * MIB);
    assert!(bytes.iter().all(|&byte| byte == 0), "rootfs B holds data");
}

#[test]
fn fixture_boot_partition_is_clean_vfat() {
    const TEST: &str = "fixture_boot_partition_is_clean_vfat";
    if require_tools(&["fsck.vfat", "mdir"], TEST).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], TEST) else { return };
    let boot = extract_partition(&image, BOOT_PARTITION, &work.path().join("boot.vfat"));

    let mut fsck = Command::new("fsck.vfat");
    fsck.arg("-n").arg(&boot);
    let output = run_with_timeout(&mut fsck, COMMAND_TIMEOUT);
    assert!(output.status.success(), "fsck.vfat -n failed: {}", String::from_utf8_lossy(&output.stdout));

    let mut mdir = Command::new("mdir");
    mdir.arg("-i").arg(&boot).arg("-/").arg("::").env("MTOOLS_SKIP_CHECK", "1");
    let output = run_with_timeout(&mut mdir, COMMAND_TIMEOUT);
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "mdir failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(listing.contains("Volume in drive : is boot"), "boot partition is not labelled boot:\n{listing}");
    assert!(listing.contains("Volume Serial Number is 4D45-4E44"), "unexpected volume ID:\n{listing}");
    assert!(listing.contains("Directory for ::/EFI/BOOT"), "no EFI/BOOT directory:\n{listing}");
}

#[test]
fn fixture_without_mender_dir_keeps_data_label() {
    const TEST: &str = "fixture_without_mender_dir_keeps_data_label";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", &["--no-mender-dir"], TEST) else { return };
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));

    e2fsck_clean(&data);
    assert_eq!(superblock_field(&dumpe2fs_header(&data), "Filesystem volume name"), "data");
    let mut command = Command::new("debugfs");
    command.arg("-R").arg("ls -p /").arg(&data);
    let listing =
        String::from_utf8_lossy(&run_with_timeout(&mut command, COMMAND_TIMEOUT).stdout).into_owned();
    assert!(listing.contains("/lost+found/"), "debugfs ls printed no lost+found:\n{listing}");
    assert!(!listing.contains("/mender/"), "the data filesystem has /mender:\n{listing}");
}

#[test]
fn fixture_applies_data_fs_options() {
    const TEST: &str = "fixture_applies_data_fs_options";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let options = ["--data-mib", "9", "--data-fs-options", "-b 1024 -I 128 -O ^has_journal,^metadata_csum"];
    let Some(image) = make_fixture(work.path(), "device.sdimg", &options, TEST) else { return };
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));

    e2fsck_clean(&data);
    let header = dumpe2fs_header(&data);
    assert_eq!(superblock_field(&header, "Block size"), "1024");
    assert_eq!(superblock_field(&header, "Inode size"), "128");
    let features = superblock_field(&header, "Filesystem features");
    for feature in ["has_journal", "metadata_csum"] {
        assert!(
            !features.split_whitespace().any(|f| f == feature),
            "data filesystem has {feature}: {features}"
        );
    }
    assert_eq!(debugfs_cat(&data, "/mender/device_type"), b"device_type=qemux86-64\n");
}

#[test]
fn bare_data_fixture_is_data_filesystem() {
    const TEST: &str = "bare_data_fixture_is_data_filesystem";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(data) = make_bare_data(work.path(), "data.dataimg", &[], TEST) else { return };

    e2fsck_clean(&data);
    assert_eq!(std::fs::metadata(&data).expect("failed to stat the data image").len(), 16 * MIB);
    assert_eq!(superblock_field(&dumpe2fs_header(&data), "Filesystem volume name"), "data");
    let dump = debugfs_dump_dir(&data, "/mender", &work.path().join("dump"));
    assert_eq!(
        std::fs::read(dump.join("device_type")).expect("rdump wrote no device_type"),
        b"device_type=qemux86-64\n"
    );
}

#[test]
fn fixture_regenerates_identical_bytes() {
    const TEST: &str = "fixture_regenerates_identical_bytes";
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(first) = make_fixture(work.path(), "first.sdimg", &[], TEST) else { return };
    // Host times differ between the runs, so only the fixed times can make the bytes equal.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let Some(second) = make_fixture(work.path(), "second.sdimg", &[], TEST) else { return };

    assert_eq!(sha256_file(&first), sha256_file(&second));
}

#[test]
fn committed_demo_image_has_fixture_layout() {
    const TEST: &str = "committed_demo_image_has_fixture_layout";
    if !require_judges(TEST) {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(fresh) = make_fixture(work.path(), "fresh.sdimg", &[], TEST) else { return };
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo.sdimg");

    assert_eq!(partitions(&demo), partitions(&fresh), "testdata/demo.sdimg has another partition table");
    let demo_data = offset_path(&demo, DATA_PARTITION);
    e2fsck_clean(&demo_data);
    assert_eq!(debugfs_cat(&demo_data, "/mender/device_type"), b"device_type=qemux86-64\n");
    let demo_rootfs = offset_path(&demo, ROOTFS_A_PARTITION);
    e2fsck_clean(&demo_rootfs);
    assert_eq!(debugfs_cat(&demo_rootfs, "/etc/mender/artifact_info"), b"artifact_name=demo-1.0\n");
}
