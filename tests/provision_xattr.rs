//! `mender-preauth provision` and extended attributes: new key and store files get the SELinux
//! label of the files already in /mender, `--xattr` sets attributes instead, and a replaced key
//! keeps its own. Fixtures come from `scripts/make-fixtures`, labels from `debugfs ea_set`, and
//! debugfs and e2fsck judge the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, e2fsck_clean, extract_partition, make_bare_data, make_fixture,
    offset_path, run_cli, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 3] = ["e2fsck", "debugfs", "openssl"];

const KEY_PATH: &str = "/mender/mender-agent.pem";
const STORE_PATH: &str = "/mender/mender-store";

/// Labels as `setfiles` stores them, with a trailing NUL.
const DATA_LABEL: &[u8] = b"system_u:object_r:mender_data_t:s0\0";
const OTHER_LABEL: &[u8] = b"system_u:object_r:etc_t:s0\0";
const DIR_LABEL: &[u8] = b"system_u:object_r:var_lib_t:s0\0";

/// Makes an RSA key with openssl and returns its path.
fn openssl_rsa_key(dir: &Path) -> PathBuf {
    let path = dir.join("device.pem");
    let mut command = Command::new("openssl");
    command.args(["genrsa", "-traditional", "-out"]).arg(&path).arg("2048");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(output.status.success(), "openssl genrsa failed: {}", String::from_utf8_lossy(&output.stderr));
    path
}

/// Builds a bare data filesystem with make-fixtures, `/mender/device_type` included, and
/// `data_fs_options` for mkfs.ext4. Returns `None` when a tool is missing.
fn data_image(dir: &Path, data_fs_options: &str, test: &str) -> Option<(PathBuf, PathBuf)> {
    let image = make_bare_data(dir, "data.dataimg", &["--data-fs-options", data_fs_options], test)?;
    require_tools(&JUDGES, test)?;
    Some((image, openssl_rsa_key(dir)))
}

/// Runs `provision IMAGE --key KEY -i mac=... --target-layout 64le` with `extra` arguments.
fn provision(image: &Path, key: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec![
        "provision",
        image.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-i",
        "mac=02:12:61:13:6c:42",
        "--target-layout",
        "64le",
    ];
    args.extend_from_slice(extra);
    run_cli(args)
}

/// Runs debugfs with `requests` on the filesystem at `fs`, in write mode when `write` is true,
/// and returns its stdout. Panics when debugfs reports an error.
fn run_debugfs(fs: &Path, requests: &[String], write: bool) -> String {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), requests.join("\n") + "\n").unwrap();
    let mut command = Command::new("debugfs");
    if write {
        command.arg("-w");
    }
    command.arg("-f").arg(script.path()).arg(fs).env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(output.status.success(), "debugfs {requests:?} failed: {stderr}");
    assert!(errors.is_empty(), "debugfs {requests:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Sets attribute `name` of each file in `paths` to `value` with debugfs `ea_set -f`.
fn set_label(fs: &Path, paths: &[&str], value: &[u8]) {
    let value_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(value_file.path(), value).unwrap();
    let requests: Vec<String> = paths
        .iter()
        .map(|path| format!("ea_set -f {} {path} security.selinux", value_file.path().display()))
        .collect();
    run_debugfs(fs, &requests, true);
}

/// Creates empty files at `paths` with debugfs.
fn create_files(fs: &Path, paths: &[&str]) {
    let requests: Vec<String> = paths.iter().map(|path| format!("write /dev/null {path}")).collect();
    run_debugfs(fs, &requests, true);
}

/// Reads every attribute of `path` as (name, value) with debugfs `ea_list` for the names and
/// `ea_get -f` for the exact bytes.
fn attributes(fs: &Path, path: &str) -> Vec<(String, Vec<u8>)> {
    let listing = run_debugfs(fs, &[format!("ea_list {path}")], false);
    let names: Vec<&str> = listing
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let value_file = tempfile::NamedTempFile::new().unwrap();
            run_debugfs(fs, &[format!("ea_get -f {} {path} {name}", value_file.path().display())], false);
            (name.to_string(), std::fs::read(value_file.path()).unwrap())
        })
        .collect()
}

fn label_only(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![("security.selinux".to_string(), value.to_vec())]
}

#[test]
fn new_files_copy_most_common_label() {
    let test = "new_files_copy_most_common_label";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };
    create_files(&image, &["/mender/one", "/mender/two"]);
    set_label(&image, &["/mender/one", "/mender/two"], DATA_LABEL);
    set_label(&image, &["/mender/device_type"], OTHER_LABEL);
    set_label(&image, &["/mender"], DIR_LABEL);

    let run = provision(&image, &key, &[]);

    run.assert_success("provision");
    e2fsck_clean(&image);
    assert_eq!(attributes(&image, KEY_PATH), label_only(DATA_LABEL));
    assert_eq!(attributes(&image, STORE_PATH), label_only(DATA_LABEL));
    assert_eq!(attributes(&image, "/mender/device_type"), label_only(OTHER_LABEL), "siblings keep theirs");
    assert!(run.stderr.contains("labelled the new files security.selinux="), "{}", run.stderr);
}

#[test]
fn equally_common_labels_pick_smallest() {
    let test = "equally_common_labels_pick_smallest";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };
    create_files(&image, &["/mender/one"]);
    set_label(&image, &["/mender/one"], OTHER_LABEL);
    set_label(&image, &["/mender/device_type"], DATA_LABEL);

    provision(&image, &key, &[]).assert_success("provision");

    assert!(OTHER_LABEL < DATA_LABEL);
    assert_eq!(attributes(&image, KEY_PATH), label_only(OTHER_LABEL));
}

#[test]
fn label_falls_back_to_mender_dir() {
    let test = "label_falls_back_to_mender_dir";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 1024 -I 128", test) else { return };
    set_label(&image, &["/mender"], DIR_LABEL);

    provision(&image, &key, &[]).assert_success("provision");

    e2fsck_clean(&image);
    assert_eq!(attributes(&image, KEY_PATH), label_only(DIR_LABEL));
    assert_eq!(attributes(&image, STORE_PATH), label_only(DIR_LABEL));
}

#[test]
fn unlabelled_mender_gives_no_label() {
    let test = "unlabelled_mender_gives_no_label";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };

    let run = provision(&image, &key, &[]);

    run.assert_success("provision");
    e2fsck_clean(&image);
    assert!(attributes(&image, KEY_PATH).is_empty());
    assert!(attributes(&image, STORE_PATH).is_empty());
    assert!(!run.stderr.contains("labelled"), "{}", run.stderr);
}

#[test]
fn xattr_flag_replaces_inherited_label() {
    let test = "xattr_flag_replaces_inherited_label";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 1024 -I 128 -O ^metadata_csum", test) else { return };
    set_label(&image, &["/mender/device_type", "/mender"], DATA_LABEL);

    let run = provision(
        &image,
        &key,
        &["--xattr", "security.selinux=system_u:object_r:custom_t:s0", "--xattr", "user.raw=0x00ff0A"],
    );

    run.assert_success("provision with --xattr");
    e2fsck_clean(&image);
    let expected = vec![
        ("security.selinux".to_string(), b"system_u:object_r:custom_t:s0".to_vec()),
        ("user.raw".to_string(), vec![0x00, 0xFF, 0x0A]),
    ];
    for path in [KEY_PATH, STORE_PATH] {
        let mut found = attributes(&image, path);
        found.sort();
        assert_eq!(found, expected, "{path}");
    }
}

#[test]
fn replaced_key_keeps_its_label() {
    let test = "replaced_key_keeps_its_label";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };
    set_label(&image, &["/mender/device_type"], DATA_LABEL);
    provision(&image, &key, &[]).assert_success("first provision");
    set_label(&image, &["/mender/device_type"], OTHER_LABEL);
    let second_key = dir.path().join("second.pem");
    std::fs::rename(openssl_rsa_key(dir.path()), &second_key).unwrap();

    provision(&image, &second_key, &[]).assert_success("second provision");

    e2fsck_clean(&image);
    assert_eq!(attributes(&image, KEY_PATH), label_only(DATA_LABEL), "the replaced key keeps its label");
    assert_eq!(attributes(&image, STORE_PATH), label_only(DATA_LABEL), "the kept store keeps its label");
}

#[test]
fn xattr_flag_sets_replaced_key() {
    let test = "xattr_flag_sets_replaced_key";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };
    set_label(&image, &["/mender/device_type"], DATA_LABEL);
    provision(&image, &key, &[]).assert_success("first provision");

    provision(&image, &key, &["--xattr", "security.selinux=relabelled"]).assert_success("second provision");

    e2fsck_clean(&image);
    assert_eq!(attributes(&image, KEY_PATH), label_only(b"relabelled"));
    assert_eq!(attributes(&image, STORE_PATH), label_only(DATA_LABEL), "the unchanged store is not written");
}

#[test]
fn disk_image_data_partition_gets_label() {
    let test = "disk_image_data_partition_gets_label";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) =
        make_fixture(dir.path(), "device.sdimg", &["--data-fs-options", "-b 1024 -I 128"], test)
    else {
        return;
    };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = openssl_rsa_key(dir.path());
    set_label(&offset_path(&image, DATA_PARTITION), &["/mender/device_type"], DATA_LABEL);

    let run = run_cli([
        "provision",
        image.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-i",
        "mac=02:12:61:13:6c:42",
    ]);

    run.assert_success("provision");
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    assert_eq!(attributes(&data, KEY_PATH), label_only(DATA_LABEL));
    assert_eq!(attributes(&data, STORE_PATH), label_only(DATA_LABEL));
}

#[test]
fn bad_xattr_arguments_change_nothing() {
    let test = "bad_xattr_arguments_change_nothing";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = data_image(dir.path(), "-b 4096", test) else { return };
    let before = sha256_file(&image);
    let cases: [(&str, &str); 5] = [
        ("security.selinux", "expected NAME=VALUE"),
        ("selinux=x", "must start with user., trusted. or security."),
        ("user.=x", "must start with user., trusted. or security."),
        ("user.hex=0xabc", "odd number of digits"),
        ("user.hex=0xzz", "not a hex digit"),
    ];
    for (argument, message) in cases {
        let run = provision(&image, &key, &["--xattr", argument]);
        assert!(!run.status.success(), "--xattr {argument} was accepted");
        assert!(run.stderr.contains(message), "--xattr {argument}: {}", run.stderr);
    }
    let twice = provision(&image, &key, &["--xattr", "user.a=1", "--xattr", "user.a=2"]);
    assert!(twice.stderr.contains("more than once"), "{}", twice.stderr);
    let huge = format!("user.huge=0x{}", "ab".repeat(5000));
    let too_big = provision(&image, &key, &["--xattr", &huge]);
    assert!(!too_big.status.success());
    assert!(too_big.stderr.contains("which has room for"), "{}", too_big.stderr);
    assert_eq!(sha256_file(&image), before, "rejected runs leave the image unchanged");
}
