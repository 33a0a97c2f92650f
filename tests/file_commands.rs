//! The file commands (`ls`, `cat`, `stat`, `cp`, `install`, `rm`, `mkdir`, `ln`, `chmod`,
//! `chown`) on fixture images, judged by `mender-artifact` 3.9, `debugfs` and `e2fsck -fn`.
//! Files this tool writes are read back by mender-artifact and debugfs; files mender-artifact
//! writes are read back by this tool. mender-artifact's `cat` returns only the first 32 KiB of a
//! file, so larger files are read back with its `cp` instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    BOOT_PARTITION, COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION,
    debugfs_cat, debugfs_stat, e2fsck_clean, extract_partition, make_bare_data, make_fixture, run_cli,
    run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

/// Builds a fixture with `options` in `work`, or returns `None` after saying which tool is missing.
fn fixture(work: &Path, options: &[&str], test: &str) -> Option<PathBuf> {
    require_tools(&EXT4_JUDGES, test)?;
    make_fixture(work, "device.sdimg", options, test)
}

/// Runs `mender-artifact` with `args` and returns its stdout, panicking when it fails.
fn mender_artifact(args: &[&str]) -> Vec<u8> {
    let mut command = Command::new("mender-artifact");
    command.args(args);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-artifact {args:?} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn image_arg(image: &Path, path: &str) -> String {
    format!("{}:{path}", image.display())
}

/// Runs this tool and panics unless it succeeds; returns stdout.
fn cli_ok(args: &[&str]) -> String {
    let run = run_cli(args);
    run.assert_success(&format!("mender-preauth {args:?}"));
    run.stdout
}

/// Extracts partition `number` and checks it with e2fsck.
fn assert_partition_clean(image: &Path, number: u32, work: &Path) -> PathBuf {
    let copy = extract_partition(image, number, &work.join(format!("p{number}.ext4")));
    e2fsck_clean(&copy);
    copy
}

/// A file of `len` bytes that no two offsets repeat within a block.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index * 7 + index / 4096) as u8).collect()
}

#[test]
fn cp_writes_both_rootfs_and_artifact_reads_it() {
    let test = "cp_writes_both_rootfs_and_artifact_reads_it";
    if require_tools(&["mender-artifact"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let host = work.path().join("payload.bin");
    let content = patterned(1 << 20);
    std::fs::write(&host, &content).unwrap();
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();

    cli_ok(&["cp", host.to_str().unwrap(), &image_arg(&image, "/etc/payload.bin")]);

    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = assert_partition_clean(&image, number, work.path());
        assert!(debugfs_cat(&fs, "/etc/payload.bin") == content, "partition {number} has other bytes");
        let stat = debugfs_stat(&fs, "/etc/payload.bin");
        assert_eq!((stat.mode, stat.uid, stat.gid, stat.size), (0o640, 0, 0, 1 << 20), "partition {number}");
    }
    let copied = work.path().join("back.bin");
    mender_artifact(&["cp", &image_arg(&image, "/etc/payload.bin"), copied.to_str().unwrap()]);
    assert!(std::fs::read(&copied).unwrap() == content, "mender-artifact cp read other bytes");
    let small = mender_artifact(&["cat", &image_arg(&image, "/etc/hostname")]);
    assert_eq!(small, b"qemux86-64\n");
}

#[test]
fn symlink_crosses_to_data_partition() {
    let test = "symlink_crosses_to_data_partition";
    if require_tools(&["mender-artifact"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let host = work.path().join("server.crt");
    std::fs::write(&host, b"certificate\n").unwrap();

    cli_ok(&["cp", host.to_str().unwrap(), &image_arg(&image, "/var/lib/mender/server.crt")]);

    let data = assert_partition_clean(&image, DATA_PARTITION, work.path());
    assert_eq!(debugfs_cat(&data, "/mender/server.crt"), b"certificate\n");
    assert_eq!(mender_artifact(&["cat", &image_arg(&image, "/data/mender/server.crt")]), b"certificate\n");
    assert_eq!(cli_ok(&["cat", &image_arg(&image, "/var/lib/mender/server.crt")]), "certificate\n");
    let listing = cli_ok(&["ls", &image_arg(&image, "/var/lib/mender")]);
    assert_eq!(listing, "device_type\nserver.crt\n");
    let stat = cli_ok(&["stat", &image_arg(&image, "/var/lib/mender/server.crt")]);
    assert!(stat.contains("Found: /data/mender/server.crt"), "{stat}");
    assert!(stat.contains("partition 4"), "{stat}");
}

#[test]
fn artifact_writes_are_read_back() {
    let test = "artifact_writes_are_read_back";
    if require_tools(&["mender-artifact"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &[], test) else { return };
    let host = work.path().join("conf.json");
    std::fs::write(&host, b"{\"a\":1}\n").unwrap();
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

    mender_artifact(&["cp", host.to_str().unwrap(), &image_arg(&image, "/etc/mender/extra.json")]);
    mender_artifact(&[
        "install",
        "-m",
        "0600",
        host.to_str().unwrap(),
        &image_arg(&image, "/data/mender/x.json"),
    ]);

    assert_eq!(cli_ok(&["cat", &image_arg(&image, "/etc/mender/extra.json")]), "{\"a\":1}\n");
    assert_eq!(cli_ok(&["cat", &image_arg(&image, "/var/lib/mender/x.json")]), "{\"a\":1}\n");
    let stat = cli_ok(&["stat", &image_arg(&image, "/data/mender/x.json")]);
    assert!(stat.contains("Access: (0600/-rw-------)  Uid: 0  Gid: 0"), "{stat}");
    let long = cli_ok(&["ls", "-l", &image_arg(&image, "/etc/mender")]);
    let extra: Vec<&str> = long
        .lines()
        .find(|line| line.ends_with(" extra.json"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(extra.get(..5), Some(&["-rw-r--r--", "1", "0", "0", "8"][..]), "{long}");
}

#[test]
fn install_sets_mode_and_owner() {
    let test = "install_sets_mode_and_owner";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let host = work.path().join("tool");
    std::fs::write(&host, b"#!/bin/sh\n").unwrap();

    cli_ok(&[
        "install",
        "-m",
        "4750",
        "-o",
        "1000",
        "-g",
        "50",
        host.to_str().unwrap(),
        &image_arg(&image, "/usr/bin/"),
    ]);
    cli_ok(&["install", "-d", "-m", "0700", &image_arg(&image, "/data/app/state")]);

    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = assert_partition_clean(&image, number, work.path());
        let stat = debugfs_stat(&fs, "/usr/bin/tool");
        assert_eq!((stat.file_type.as_str(), stat.mode, stat.uid, stat.gid), ("regular", 0o4750, 1000, 50));
    }
    let data = assert_partition_clean(&image, DATA_PARTITION, work.path());
    for (dir, mode) in [("/app", 0o755), ("/app/state", 0o700)] {
        let stat = debugfs_stat(&data, dir);
        assert_eq!((stat.file_type.as_str(), stat.mode), ("directory", mode), "{dir}");
    }
}

#[test]
fn rm_mkdir_ln_chmod_chown_change_both_rootfs() {
    let test = "rm_mkdir_ln_chmod_chown_change_both_rootfs";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };

    cli_ok(&["mkdir", "-p", &image_arg(&image, "/opt/app/conf")]);
    cli_ok(&["ln", "-s", "/data/app", &image_arg(&image, "/opt/app/state")]);
    cli_ok(&["chmod", "0750", &image_arg(&image, "/opt/app/conf")]);
    cli_ok(&["chown", "12:34", &image_arg(&image, "/opt/app")]);
    cli_ok(&["chmod", "-R", "go-w,o-rx", &image_arg(&image, "/usr/share")]);
    cli_ok(&["chown", "-R", "7:8", &image_arg(&image, "/usr/share")]);
    cli_ok(&["rm", &image_arg(&image, "/etc/hostname")]);
    cli_ok(&["rm", "-r", &image_arg(&image, "/etc/mender/scripts")]);

    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = assert_partition_clean(&image, number, work.path());
        assert_eq!(debugfs_stat(&fs, "/opt/app/conf").mode, 0o750, "partition {number}");
        let app = debugfs_stat(&fs, "/opt/app");
        assert_eq!((app.uid, app.gid), (12, 34), "partition {number}");
        let link = debugfs_stat(&fs, "/opt/app/state");
        assert_eq!((link.file_type.as_str(), link.size), ("symlink", 9), "partition {number}");
        for (path, mode) in
            [("/usr/share", 0o750), ("/usr/share/mender/identity/mender-device-identity", 0o750)]
        {
            let stat = debugfs_stat(&fs, path);
            assert_eq!((stat.mode, stat.uid, stat.gid), (mode, 7, 8), "partition {number}: {path}");
        }
        let listing = String::from_utf8(debugfs_cat(&fs, "/etc/mender/artifact_info")).unwrap();
        assert_eq!(listing, "artifact_name=demo-1.0\n");
    }
    let etc = cli_ok(&["ls", &image_arg(&image, "/etc")]);
    assert_eq!(etc, "mender\n");
    let mender = cli_ok(&["ls", &image_arg(&image, "/etc/mender")]);
    assert_eq!(mender, "artifact_info\nmender.conf\n");
    let long = cli_ok(&["ls", "-l", &image_arg(&image, "/opt/app")]);
    assert!(long.contains(" state -> /data/app\n"), "{long}");
}

#[test]
fn ext_boot_partition_is_written() {
    let test = "ext_boot_partition_is_written";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--ext-boot"], test) else { return };
    let host = work.path().join("boot.scr");
    std::fs::write(&host, b"boot script\n").unwrap();

    cli_ok(&["cp", host.to_str().unwrap(), &image_arg(&image, "/uboot/boot.scr")]);

    let boot = assert_partition_clean(&image, BOOT_PARTITION, work.path());
    assert_eq!(debugfs_cat(&boot, "/boot.scr"), b"boot script\n");
    assert_eq!(cli_ok(&["cat", &image_arg(&image, "/boot/efi/boot.scr")]), "boot script\n");
}

#[test]
fn cp_recursive_round_trips_a_tree() {
    let test = "cp_recursive_round_trips_a_tree";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let tree = work.path().join("overlay");
    std::fs::create_dir_all(tree.join("etc/app/conf.d")).unwrap();
    std::fs::write(tree.join("etc/app/main.conf"), b"main\n").unwrap();
    std::fs::write(tree.join("etc/app/conf.d/10.conf"), b"ten\n").unwrap();
    std::os::unix::fs::symlink("main.conf", tree.join("etc/app/current")).unwrap();

    cli_ok(&["cp", "-r", tree.join("etc").to_str().unwrap(), &image_arg(&image, "/")]);

    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = assert_partition_clean(&image, number, work.path());
        assert_eq!(debugfs_cat(&fs, "/etc/app/conf.d/10.conf"), b"ten\n", "partition {number}");
        assert_eq!(debugfs_stat(&fs, "/etc/app/current").file_type, "symlink", "partition {number}");
        assert_eq!(debugfs_cat(&fs, "/etc/hostname"), b"qemux86-64\n", "partition {number}");
    }
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    cli_ok(&["cp", "-r", &image_arg(&image, "/etc/app"), out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("app/conf.d/10.conf")).unwrap(), b"ten\n");
    assert_eq!(std::fs::read_link(out.join("app/current")).unwrap(), PathBuf::from("main.conf"));
    assert_eq!(std::fs::read(out.join("app/current")).unwrap(), b"main\n");

    let recursive = cli_ok(&["ls", "-R", &image_arg(&image, "/etc/app")]);
    assert_eq!(recursive, "/etc/app:\nconf.d\ncurrent\nmain.conf\n\n/etc/app/conf.d:\n10.conf\n");
}

#[test]
fn bare_data_image_has_no_mapping() {
    let test = "bare_data_image_has_no_mapping";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_bare_data(work.path(), "data.ext4", &[], test) else { return };
    if require_tools(&EXT4_JUDGES, test).is_none() {
        return;
    }
    let host = work.path().join("note");
    std::fs::write(&host, b"note\n").unwrap();

    cli_ok(&["cp", host.to_str().unwrap(), &image_arg(&image, "/mender/note")]);

    e2fsck_clean(&image);
    assert_eq!(debugfs_cat(&image, "/mender/note"), b"note\n");
    assert_eq!(cli_ok(&["ls", &image_arg(&image, "/mender")]), "device_type\nnote\n");
}

/// Runs a command that must fail with a one-line error containing `expected`, and checks that
/// the image did not change.
fn assert_rejected(image: &Path, args: &[&str], expected: &str) {
    let before = sha256_file(image);
    let run = run_cli(args);
    assert_eq!(run.status.code(), Some(1), "{args:?} did not exit 1; stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} printed more than one line:\n{}", run.stderr);
    assert!(lines[0].contains(expected), "{args:?}: expected {expected:?} in {:?}", lines[0]);
    assert_eq!(sha256_file(image), before, "{args:?} changed the image");
}

#[test]
fn bad_paths_fail_in_one_line() {
    let test = "bad_paths_fail_in_one_line";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let Some(no_data) =
        make_fixture(work.path(), "fat.sdimg", &["--no-mender-dir", "--data-label", "other"], test)
    else {
        return;
    };
    let host = work.path().join("file");
    std::fs::write(&host, b"x").unwrap();
    let host = host.to_str().unwrap();
    let img = |path: &str| image_arg(&image, path);
    let missing = work.path().join("missing.sdimg");

    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["cp".into(), host.into(), image_arg(&missing, "/etc/x")],
            format!("{}: image", image_arg(&missing, "/etc/x")),
        ),
        (vec!["cp".into(), host.into(), img("/data/../etc/x")], "climbs out of the data partition".into()),
        (vec!["cp".into(), host.into(), img("/../etc/x")], "climbs out of the root filesystem".into()),
        (
            vec!["cp".into(), host.into(), image_arg(&no_data, "/data/x")],
            "the image has no data partition".into(),
        ),
        (
            vec!["ln".into(), "-s".into(), "x".into(), img("/uboot/x")],
            "the boot partition (partition 1) is FAT, which has no symbolic links".into(),
        ),
        (vec!["cat".into(), img("/etc")], format!("{}: is a directory", img("/etc"))),
        (
            vec!["cp".into(), img("/etc"), work.path().join("etc-copy").to_str().unwrap().into()],
            "is a directory; use -r".into(),
        ),
        (vec!["cp".into(), "/nonexistent/source".into(), img("/etc/x")], "/nonexistent/source".into()),
        (
            vec!["cp".into(), host.into(), img("/nonexistent/x")],
            "/nonexistent: no such file or directory".into(),
        ),
        (vec!["rm".into(), img("/etc/mender")], "is a directory; use -r".into()),
        (vec!["rm".into(), "-r".into(), img("/data")], "is the root of the data partition".into()),
        (vec!["mkdir".into(), img("/etc")], "already exists".into()),
        (vec!["cat".into(), img("/etc/hostname/x")], "not a directory".into()),
        (vec!["cat".into(), img("/etc/loop")], "too many levels of symbolic links".into()),
        (
            vec!["cp".into(), host.into(), img("/data/mender/up/hostname")],
            "climbs out of the data partition".into(),
        ),
        (vec!["ls".into(), img("/var/lib/mender/../..")], "climbs out of the data partition".into()),
    ];
    cli_ok(&["ln", "-s", "/etc/loop", &img("/etc/loop")]);
    cli_ok(&["ln", "-s", "../../etc", &img("/data/mender/up")]);
    for (args, expected) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let target =
            if args.iter().any(|arg| arg.starts_with(no_data.to_str().unwrap())) { &no_data } else { &image };
        assert_rejected(target, &args, expected);
    }
}

#[test]
fn interrupted_cp_rolls_back_both_rootfs() {
    use mender_preauth::image::disk_image::{FAILPOINT_EXIT_CODE, FAILPOINT_VAR};

    let test = "interrupted_cp_rolls_back_both_rootfs";
    let work = tempfile::tempdir().unwrap();
    let Some(original) = fixture(work.path(), &["--rootfs-b"], test) else { return };
    let host = work.path().join("payload.bin");
    std::fs::write(&host, patterned(40 * 1024)).unwrap();
    let original_sha = sha256_file(&original);
    let image = work.path().join("work.sdimg");
    let cp_command = |failpoint: Option<u64>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
        command.args(["-q", "cp"]).arg(&host).arg(image_arg(&image, "/etc/payload.bin"));
        command.env("SOURCE_DATE_EPOCH", "1700000000");
        if let Some(chunk) = failpoint {
            command.env(FAILPOINT_VAR, format!("write:{chunk}"));
        }
        command
    };

    std::fs::copy(&original, &image).unwrap();
    assert!(run_with_timeout(&mut cp_command(None), COMMAND_TIMEOUT).status.success());
    let completed_sha = sha256_file(&image);

    let mut stopped_runs = 0;
    for chunk in 1.. {
        std::fs::copy(&original, &image).unwrap();
        let output = run_with_timeout(&mut cp_command(Some(chunk)), COMMAND_TIMEOUT);
        if output.status.code() == Some(0) {
            assert_eq!(sha256_file(&image), completed_sha, "the completed run gave other bytes");
            break;
        }
        assert_eq!(
            output.status.code(),
            Some(FAILPOINT_EXIT_CODE),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stopped_runs += 1;

        let rollback = run_cli(["ls".as_ref(), image_arg(&image, "/etc").as_ref()] as [&std::ffi::OsStr; 2]);
        rollback.assert_success("ls after the interrupted cp");
        assert!(rollback.stderr.contains("rolled back"), "no rollback reported: {}", rollback.stderr);
        assert_eq!(sha256_file(&image), original_sha, "chunk {chunk}: the image was not rolled back");
    }
    // 40 KiB is ten chunks of data on each rootfs, so a stop lands in rootfs B too.
    assert!(stopped_runs > 20, "only {stopped_runs} runs were stopped");
    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = assert_partition_clean(&image, number, work.path());
        assert_eq!(debugfs_cat(&fs, "/etc/payload.bin").len(), 40 * 1024, "partition {number}");
    }
}

#[test]
fn cp_of_proc_file_writes_its_content() {
    let test = "cp_of_proc_file_writes_its_content";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture(work.path(), &[], test) else { return };
    // /proc files report a size of 0, so only a read returns their content.
    let expected = std::fs::read("/proc/version").unwrap();
    assert!(!expected.is_empty());

    cli_ok(&["cp", "/proc/version", &image_arg(&image, "/etc/kernel-version")]);

    let fs = assert_partition_clean(&image, ROOTFS_A_PARTITION, work.path());
    assert_eq!(debugfs_cat(&fs, "/etc/kernel-version"), expected);
}
