//! The Artifact records (`artifact-name`, `artifact-provides`) that `provision` and `store`
//! write, judged by mdb_dump, the real Mender client 3.4 (`show-artifact`, `show-provides` on a
//! copy of `/mender` taken out with debugfs), e2fsck, debugfs, and for `--bootstrap-provides` by
//! `sha256sum` over the filesystem's bytes.

mod common;

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, ROOTFS_A_PARTITION, debugfs_dump_dir, debugfs_ls, debugfs_stat,
    debugfs_write_requests, e2fsck_clean, extract_partition, make_bare_data, make_fixture, mdb_dump_pairs,
    mdb_load_records, offset_path, partition, run_cli, run_judge, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 9] =
    ["e2fsck", "debugfs", "dumpe2fs", "resize2fs", "mdb_load", "mdb_dump", "openssl", "sha256sum", "mender"];

/// The Artifact name in the fixture's /etc/mender/artifact_info.
const FIXTURE_ARTIFACT_NAME: &str = "demo-1.0";

/// Builds a fixture image and checks for every judge; `None` when one is missing.
fn fixture(dir: &Path, test: &str) -> Option<PathBuf> {
    let image = make_fixture(dir, "device.sdimg", &[], test)?;
    require_tools(&JUDGES, test)?;
    Some(image)
}

/// Makes an RSA key with openssl and returns its path.
fn rsa_key(dir: &Path) -> PathBuf {
    let path = dir.join("device.pem");
    run_judge(
        "openssl",
        &[
            OsStr::new("genrsa"),
            OsStr::new("-traditional"),
            OsStr::new("-out"),
            path.as_os_str(),
            OsStr::new("2048"),
        ],
    );
    path
}

/// Runs `provision IMAGE --key KEY -i IDENTITY` with `extra` arguments after them.
fn provision(image: &Path, key: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec!["provision", image.to_str().unwrap(), "--key", key.to_str().unwrap(), "-i", IDENTITY];
    args.extend_from_slice(extra);
    run_cli(args)
}

/// Runs `store OPERATION IMAGE` with `extra` arguments after them.
fn store(operation: &str, image: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec!["store", operation, image.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_cli(args)
}

/// Writes `records` as /mender/mender-store of the image's data partition, with the real
/// mdb_load and debugfs.
fn install_store(image: &Path, dir: &Path, records: &[(&str, &str)]) {
    let store = mdb_load_records(dir, "loaded-store", records);
    debugfs_write_requests(
        &offset_path(image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", store.display())],
    );
}

/// Files in the fixture's /mender after `provision`: the key and the store, and no lock file.
const PROVISIONED_FILES: [&str; 3] = ["device_type", "mender-agent.pem", "mender-store"];

/// Files in the fixture's /mender after `store set`: the store, and no lock file.
const STORE_ONLY_FILES: [&str; 2] = ["device_type", "mender-store"];

/// Checks the data partition with e2fsck, the store's mode and owner with debugfs, that /mender
/// contains exactly `files`, and returns the store's records by mdb_dump.
fn judge_data_partition(image: &Path, dir: &Path, files: &[&str]) -> Vec<(String, String)> {
    let data = extract_partition(image, DATA_PARTITION, &dir.join("data.ext4"));
    e2fsck_clean(&data);
    let stat = debugfs_stat(&data, "/mender/mender-store");
    assert_eq!((stat.file_type.as_str(), stat.mode, stat.uid, stat.gid), ("regular", 0o600, 0, 0));
    assert_eq!(debugfs_ls(&data, "/mender"), files);

    let store = dir.join("store-copy");
    std::fs::write(&store, common::debugfs_cat(&data, "/mender/mender-store")).unwrap();
    mdb_dump_pairs(&store)
}

/// Copies /mender out of the data partition with debugfs rdump and returns the copy.
fn dump_mender_dir(image: &Path, dir: &Path) -> PathBuf {
    let data = extract_partition(image, DATA_PARTITION, &dir.join("data-for-client.ext4"));
    debugfs_dump_dir(&data, "/mender", &dir.join("dump"))
}

/// Runs the Mender client's `command` (show-artifact, show-provides) on `data_dir` with an empty
/// configuration, and returns its stdout, which must come with success.
fn mender_client(data_dir: &Path, command: &str) -> String {
    let config = data_dir.parent().unwrap().join("mender.conf");
    std::fs::write(&config, "{}").unwrap();
    let mut client = Command::new("mender");
    client
        .args(["--no-syslog", "--log-level", "fatal", "--config"])
        .arg(&config)
        .arg("--fallback-config")
        .arg(&config)
        .arg("--data")
        .arg(data_dir)
        .arg(command);
    let output = run_with_timeout(&mut client, COMMAND_TIMEOUT);
    assert!(output.status.success(), "mender {command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the number in a `dumpe2fs -h` line such as `Block count: 3072`.
fn dumpe2fs_field(fs: &Path, field: &str) -> u64 {
    let text = String::from_utf8(run_judge("dumpe2fs", &[OsStr::new("-h"), fs.as_os_str()])).unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("dumpe2fs printed no {field}:\n{text}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Returns `head -c LEN FILE | sha256sum`, computed by the shell tools.
fn head_sha256sum(file: &Path, len: u64) -> String {
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(format!("head -c {len} \"$1\" | sha256sum")).arg("sh").arg(file);
    let output = run_with_timeout(&mut shell, COMMAND_TIMEOUT);
    assert!(output.status.success(), "head | sha256sum failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// Shrinks rootfs A's filesystem to 3,000 blocks and fills the rest of its partition with 0xa5,
/// so a checksum over the whole partition differs from one over the filesystem.
fn shrink_rootfs(image: &Path, dir: &Path) {
    let rootfs = extract_partition(image, ROOTFS_A_PARTITION, &dir.join("rootfs-to-shrink.ext4"));
    run_judge("e2fsck", &[OsStr::new("-fp"), rootfs.as_os_str()]);
    run_judge("resize2fs", &[rootfs.as_os_str(), OsStr::new("3000")]);
    let shrunk_len = dumpe2fs_field(&rootfs, "Block count") * dumpe2fs_field(&rootfs, "Block size");
    let bytes = std::fs::read(&rootfs).unwrap();

    let place = partition(image, ROOTFS_A_PARTITION);
    let mut file = OpenOptions::new().write(true).open(image).unwrap();
    file.seek(SeekFrom::Start(place.start_bytes)).unwrap();
    file.write_all(&bytes[..shrunk_len as usize]).unwrap();
    file.write_all(&vec![0xa5; (place.size_bytes - shrunk_len) as usize]).unwrap();
}

#[test]
fn bootstrap_provides_match_sha256sum_and_client() {
    let test = "bootstrap_provides_match_sha256sum_and_client";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    shrink_rootfs(&image, dir.path());
    let rootfs = extract_partition(&image, ROOTFS_A_PARTITION, &dir.path().join("rootfs.ext4"));
    let fs_len = dumpe2fs_field(&rootfs, "Block count") * dumpe2fs_field(&rootfs, "Block size");
    let checksum = head_sha256sum(&rootfs, fs_len);
    assert_ne!(checksum, sha256_file(&rootfs), "the test needs a partition larger than its filesystem");
    let key = rsa_key(dir.path());

    let run = provision(&image, &key, &["--bootstrap-provides", "--provides", "app.version:3"]);

    run.assert_success("provision --bootstrap-provides");
    let provides = format!(
        r#"{{"app.version":"3","rootfs-image.checksum":"{checksum}","rootfs-image.version":"{FIXTURE_ARTIFACT_NAME}"}}"#
    );
    assert_eq!(
        judge_data_partition(&image, dir.path(), &PROVISIONED_FILES),
        [
            ("artifact-name".to_owned(), FIXTURE_ARTIFACT_NAME.to_owned()),
            ("artifact-provides".to_owned(), provides)
        ]
    );
    let data_dir = dump_mender_dir(&image, dir.path());
    assert_eq!(mender_client(&data_dir, "show-artifact"), format!("{FIXTURE_ARTIFACT_NAME}\n"));
    assert_eq!(
        mender_client(&data_dir, "show-provides"),
        format!(
            "app.version=3\nartifact_name={FIXTURE_ARTIFACT_NAME}\nrootfs-image.checksum={checksum}\n\
             rootfs-image.version={FIXTURE_ARTIFACT_NAME}\n"
        )
    );
}

#[test]
fn provides_edit_existing_store_as_client_commits() {
    let test = "provides_edit_existing_store_as_client_commits";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(
        &image,
        dir.path(),
        &[
            ("artifact-name", "release-1"),
            ("artifact-provides", r#"{"app.version":"1","data.x":"y","rootfs-image.version":"release-1"}"#),
            ("authtoken", "token-of-the-old-key"),
            ("state", "{}"),
        ],
    );
    let key = rsa_key(dir.path());

    let run = provision(
        &image,
        &key,
        &[
            "--artifact-name",
            "release-2",
            "--clears-provides",
            "rootfs-image.*",
            "--clears-provides",
            "data.x",
            "--provides",
            "rootfs-image.version:release-2",
            "--provides",
            "with.colons:a:b",
        ],
    );

    run.assert_success("provision with records over an existing store");
    let expected = [
        ("artifact-name", "release-2"),
        (
            "artifact-provides",
            r#"{"app.version":"1","rootfs-image.version":"release-2","with.colons":"a:b"}"#,
        ),
        ("state", "{}"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(judge_data_partition(&image, dir.path(), &PROVISIONED_FILES), expected);
    let data_dir = dump_mender_dir(&image, dir.path());
    assert_eq!(mender_client(&data_dir, "show-artifact"), "release-2\n");
    assert_eq!(
        mender_client(&data_dir, "show-provides"),
        "app.version=1\nartifact_name=release-2\nrootfs-image.version=release-2\nwith.colons=a:b\n"
    );
}

#[test]
fn stored_artifact_name_wins_over_artifact_info() {
    let test = "stored_artifact_name_wins_over_artifact_info";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(&image, dir.path(), &[("artifact-name", "release-1")]);
    let key = rsa_key(dir.path());

    let run = provision(&image, &key, &["--provides", "app.version:2"]);

    run.assert_success("provision --provides");
    assert_eq!(
        judge_data_partition(&image, dir.path(), &PROVISIONED_FILES),
        [
            ("artifact-name".to_owned(), "release-1".to_owned()),
            ("artifact-provides".to_owned(), r#"{"app.version":"2"}"#.to_owned())
        ]
    );
}

#[test]
fn provision_without_record_options_keeps_records_as_before() {
    let test = "provision_without_record_options_keeps_records_as_before";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    let key = rsa_key(dir.path());

    provision(&image, &key, &[]).assert_success("provision");

    assert_eq!(judge_data_partition(&image, dir.path(), &PROVISIONED_FILES), Vec::<(String, String)>::new());
}

#[test]
fn store_subcommand_lists_gets_sets_deletes() {
    let test = "store_subcommand_lists_gets_sets_deletes";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(
        &image,
        dir.path(),
        &[("artifact-name", "release-1"), ("authtoken", "secret-token"), ("state", "{\"a\":1}")],
    );

    let list = store("list", &image, &[]);
    list.assert_success("store list");
    assert_eq!(list.stdout, "artifact-name=release-1\nauthtoken=<12 bytes, not shown>\nstate={\"a\":1}\n");
    let json = store("list", &image, &["--json"]);
    json.assert_success("store list --json");
    let entries: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(entries[1]["key"], "authtoken");
    assert_eq!(entries[1]["value"], serde_json::Value::Null);
    assert_eq!(entries[1]["secret"], true);
    let get = store("get", &image, &["state"]);
    get.assert_success("store get");
    assert_eq!(get.stdout, "{\"a\":1}\n");

    store("set", &image, &["artifact-name", "release-2"]).assert_success("store set artifact-name");
    store("set", &image, &["artifact-provides", r#"{"rootfs-image.version":"release-2"}"#])
        .assert_success("store set artifact-provides");
    store("delete", &image, &["authtoken", "state"]).assert_success("store delete");

    assert_eq!(
        judge_data_partition(&image, dir.path(), &STORE_ONLY_FILES),
        [
            ("artifact-name".to_owned(), "release-2".to_owned()),
            ("artifact-provides".to_owned(), r#"{"rootfs-image.version":"release-2"}"#.to_owned())
        ]
    );
    let data_dir = dump_mender_dir(&image, dir.path());
    assert_eq!(mender_client(&data_dir, "show-artifact"), "release-2\n");
    assert_eq!(
        mender_client(&data_dir, "show-provides"),
        "artifact_name=release-2\nrootfs-image.version=release-2\n"
    );
}

#[test]
fn store_set_creates_missing_store() {
    let test = "store_set_creates_missing_store";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };

    let list = store("list", &image, &[]);
    list.assert_success("store list without a store");
    assert_eq!(list.stdout, "");
    store("set", &image, &["artifact-name", "release-3"]).assert_success("store set");

    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let stat = debugfs_stat(&data, "/mender/mender-store");
    assert_eq!((stat.mode, stat.uid, stat.gid), (0o600, 0, 0));
    assert_eq!(debugfs_ls(&data, "/mender"), STORE_ONLY_FILES);
    let data_dir = debugfs_dump_dir(&data, "/mender", &dir.path().join("dump"));
    assert_eq!(mender_client(&data_dir, "show-artifact"), "release-3\n");
}

#[test]
fn store_get_and_delete_without_store_say_so() {
    let test = "store_get_and_delete_without_store_say_so";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    let before = sha256_file(&image);

    let runs = [("get", store("get", &image, &["state"])), ("delete", store("delete", &image, &["state"]))];

    for (case, run) in runs {
        assert_eq!(
            run.status.code(),
            Some(1),
            "{case}: exit status {:?}, stderr: {}",
            run.status,
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{case}: stderr is not one line: {}", run.stderr);
        assert!(
            run.stderr.contains("there is no /mender/mender-store"),
            "{case}: stderr does not say the store is missing: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("device.sdimg"),
            "{case}: stderr does not name the image: {}",
            run.stderr
        );
        assert_eq!(sha256_file(&image), before, "{case}: the image changed");
    }
}

#[test]
fn store_set_warns_on_key_client_ignores() {
    let test = "store_set_warns_on_key_client_ignores";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };

    let typo = store("set", &image, &["artifact_name", "release-2"]);
    let known = store("set", &image, &["artifact-name", "release-2"]);

    typo.assert_success("store set artifact_name");
    assert!(typo.stderr.contains("warning"), "{}", typo.stderr);
    assert!(typo.stderr.contains("\"artifact_name\""), "{}", typo.stderr);
    known.assert_success("store set artifact-name");
    assert!(!known.stderr.contains("warning"), "{}", known.stderr);
    assert_eq!(
        judge_data_partition(&image, dir.path(), &STORE_ONLY_FILES),
        [
            ("artifact-name".to_owned(), "release-2".to_owned()),
            ("artifact_name".to_owned(), "release-2".to_owned())
        ]
    );
}

/// Sets the ext volume label of the image's data partition with the real tune2fs, which copies
/// any bytes, control characters included.
fn label_data_partition(image: &Path, dir: &Path, label: &str) {
    let data = extract_partition(image, DATA_PARTITION, &dir.join("data-to-label.ext4"));
    run_judge("tune2fs", &[OsStr::new("-L"), OsStr::new(label), data.as_os_str()]);

    let place = partition(image, DATA_PARTITION);
    let mut file = OpenOptions::new().write(true).open(image).unwrap();
    file.seek(SeekFrom::Start(place.start_bytes)).unwrap();
    file.write_all(&std::fs::read(&data).unwrap()).unwrap();
}

#[test]
fn control_characters_in_keys_and_labels_are_escaped() {
    let test = "control_characters_in_keys_and_labels_are_escaped";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    let Some(_) = require_tools(&["tune2fs"], test) else { return };
    // mdb_load's print format writes other bytes as two hex digits after a backslash.
    let dump = dir.path().join("control.dump");
    std::fs::write(
        &dump,
        "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n a\\0ab\n v\n \\1b[31mred\n w\nDATA=END\n",
    )
    .unwrap();
    let store_file = dir.path().join("control-store");
    run_judge("mdb_load", &[OsStr::new("-n"), OsStr::new("-f"), dump.as_os_str(), store_file.as_os_str()]);
    debugfs_write_requests(
        &offset_path(&image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", store_file.display())],
    );
    label_data_partition(&image, dir.path(), "da\nta\u{1b}[0m");

    let list = store("list", &image, &[]);
    let inspect = run_cli(["inspect", image.to_str().unwrap()]);
    let json = run_cli(["inspect", "--json", image.to_str().unwrap()]);

    list.assert_success("store list");
    assert_eq!(list.stdout, "\\u{1b}[31mred=w\na\\nb=v\n");
    inspect.assert_success("inspect");
    assert!(!inspect.stdout.contains('\u{1b}'), "{}", inspect.stdout);
    assert!(inspect.stdout.contains("\n  a\\nb = v\n"), "{}", inspect.stdout);
    assert!(inspect.stdout.contains("\n  \\u{1b}[31mred = w\n"), "{}", inspect.stdout);
    assert!(inspect.stdout.contains(" da\\nta\\u{1b}[0m "), "{}", inspect.stdout);
    json.assert_success("inspect --json");
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["partitions"][3]["label"], "da\nta\u{1b}[0m");
}

#[test]
fn invalid_utf8_stored_name_survives_provision() {
    let test = "invalid_utf8_stored_name_survives_provision";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    // mdb_load's print format writes other bytes as two hex digits after a backslash.
    let dump = dir.path().join("name.dump");
    std::fs::write(
        &dump,
        "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n artifact-name\n r\\ffel\nDATA=END\n",
    )
    .unwrap();
    let store_file = dir.path().join("name-store");
    run_judge("mdb_load", &[OsStr::new("-n"), OsStr::new("-f"), dump.as_os_str(), store_file.as_os_str()]);
    debugfs_write_requests(
        &offset_path(&image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", store_file.display())],
    );
    let key = rsa_key(dir.path());

    provision(&image, &key, &["--provides", "a:b"]).assert_success("provision --provides");

    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let store_copy = dir.path().join("store-copy");
    std::fs::write(&store_copy, common::debugfs_cat(&data, "/mender/mender-store")).unwrap();
    let printed = run_judge("mdb_dump", &[OsStr::new("-n"), OsStr::new("-p"), store_copy.as_os_str()]);
    let printed = String::from_utf8(printed).unwrap();
    assert!(printed.contains("\n artifact-name\n r\\ffel\n"), "{printed}");
    assert!(printed.contains("\n artifact-provides\n {\"a\":\"b\"}\n"), "{printed}");
}

#[test]
fn new_name_warns_of_stale_rootfs_version() {
    let test = "new_name_warns_of_stale_rootfs_version";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(
        &image,
        dir.path(),
        &[("artifact-name", "demo-1.0"), ("artifact-provides", r#"{"rootfs-image.version":"demo-1.0"}"#)],
    );
    let key = rsa_key(dir.path());

    let renamed = provision(&image, &key, &["--artifact-name", "rel-3"]);
    let versioned =
        provision(&image, &key, &["--artifact-name", "rel-4", "--provides", "rootfs-image.version:rel-4"]);

    renamed.assert_success("provision --artifact-name");
    let warning = format!("{}: rootfs-image.version stays \"demo-1.0\"", image.display());
    assert!(renamed.stderr.contains(&warning), "{}", renamed.stderr);
    assert_eq!(
        renamed.stderr.lines().filter(|line| line.contains("warning")).count(),
        1,
        "{}",
        renamed.stderr
    );
    versioned.assert_success("provision --artifact-name --provides");
    assert!(!versioned.stderr.contains("warning"), "{}", versioned.stderr);
    assert_eq!(
        judge_data_partition(&image, dir.path(), &PROVISIONED_FILES),
        [
            ("artifact-name".to_owned(), "rel-4".to_owned()),
            ("artifact-provides".to_owned(), r#"{"rootfs-image.version":"rel-4"}"#.to_owned())
        ]
    );
}

#[test]
fn oversized_rootfs_superblock_is_named() {
    let test = "oversized_rootfs_superblock_is_named";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    // Eight times as many 1 KiB blocks as the partition has, too many for any block size.
    let blocks = partition(&image, ROOTFS_A_PARTITION).size_bytes / 1024 * 8;
    debugfs_write_requests(&offset_path(&image, ROOTFS_A_PARTITION), &[format!("ssv blocks_count {blocks}")]);
    let key = rsa_key(dir.path());
    let before = sha256_file(&image);

    let bootstrap = provision(&image, &key, &["--bootstrap-provides"]);
    let inspect = run_cli(["inspect", "--json", image.to_str().unwrap()]);

    assert_eq!(bootstrap.status.code(), Some(1), "{}", bootstrap.stderr);
    assert_eq!(bootstrap.stderr.lines().count(), 1, "{}", bootstrap.stderr);
    assert!(bootstrap.stderr.contains(&format!("partition {ROOTFS_A_PARTITION}: ")), "{}", bootstrap.stderr);
    assert!(bootstrap.stderr.contains("do not fit"), "{}", bootstrap.stderr);
    assert_eq!(sha256_file(&image), before, "the image changed");
    inspect.assert_success("inspect --json");
    let report: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    let rootfs = &report["partitions"][ROOTFS_A_PARTITION as usize - 1];
    assert_eq!(rootfs["role"], serde_json::Value::Null);
    assert!(rootfs["role_reason"].as_str().unwrap().contains("do not fit"), "{rootfs}");
}

#[test]
fn layout_mismatch_with_rootfs_binary_warns() {
    let test = "layout_mismatch_with_rootfs_binary_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    let key = rsa_key(dir.path());
    let image_name = image.display().to_string();

    let forced = store("set", &image, &["artifact-name", "rel-1", "--target-layout", "32le"]);
    let list = store("list", &image, &[]);
    let provision_dry = provision(&image, &key, &["--target-layout", "32le", "--dry-run"]);

    forced.assert_success("store set --target-layout 32le");
    let forced_warning = format!("{image_name}: --target-layout gives 32-bit little-endian, but /usr/bin/");
    assert!(forced.stderr.contains(&forced_warning), "{}", forced.stderr);
    assert!(forced.stderr.contains("(64-bit little-endian)"), "{}", forced.stderr);
    list.assert_success("store list");
    assert_eq!(list.stdout, "artifact-name=rel-1\n");
    let list_warning =
        format!("{image_name}: /mender/mender-store is in the 32-bit little-endian LMDB layout");
    assert!(list.stderr.contains(&list_warning), "{}", list.stderr);
    assert!(list.stderr.contains("64-bit little-endian"), "{}", list.stderr);
    provision_dry.assert_success("provision --target-layout 32le --dry-run");
    assert!(provision_dry.stderr.contains(&forced_warning), "{}", provision_dry.stderr);
}

#[test]
fn store_output_and_dry_run_leave_image_unchanged() {
    let test = "store_output_and_dry_run_leave_image_unchanged";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(&image, dir.path(), &[("artifact-name", "release-1")]);
    let before = sha256_file(&image);
    let copy = dir.path().join("copy.sdimg");

    let dry = store("set", &image, &["artifact-name", "release-2", "--dry-run"]);
    let to_copy = store("set", &image, &["artifact-name", "release-2", "--output", copy.to_str().unwrap()]);

    dry.assert_success("store set --dry-run");
    assert!(dry.stderr.contains("would set artifact-name"), "{}", dry.stderr);
    to_copy.assert_success("store set --output");
    assert_eq!(sha256_file(&image), before, "the input image changed");
    assert_eq!(
        judge_data_partition(&copy, dir.path(), &STORE_ONLY_FILES),
        [("artifact-name".to_owned(), "release-2".to_owned())]
    );
}

/// Every kind of bad input: exit status 1, one line on stderr naming the image or the value,
/// image unchanged.
#[test]
fn bad_record_input_leaves_image_unchanged() {
    let test = "bad_record_input_leaves_image_unchanged";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    install_store(&image, dir.path(), &[("artifact-name", "release-1")]);
    let key = rsa_key(dir.path());
    let image_arg = image.to_str().unwrap();
    let key_arg = key.to_str().unwrap();
    let provision_args = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["provision", image_arg, "--key", key_arg, "-i", IDENTITY];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let store_args = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["store"];
        args.extend_from_slice(&extra[..1]);
        args.push(image_arg);
        args.extend_from_slice(&extra[1..]);
        args.into_iter().map(str::to_owned).collect()
    };
    let missing = "/nonexistent/device.sdimg".to_owned();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("repeated provide name", provision_args(&["--provides", "x:1", "--provides", "x:2"]), "\"x\""),
        ("pattern ending in backslash", provision_args(&["--clears-provides", "a\\"]), "a\\\\"),
        ("empty artifact name", provision_args(&["--artifact-name", ""]), "empty"),
        ("get of an unknown key", store_args(&["get", "no-such-key"]), "no-such-key"),
        ("delete of an unknown key", store_args(&["delete", "no-such-key"]), "no-such-key"),
        (
            "provides that are not JSON",
            store_args(&["set", "artifact-provides", "not json"]),
            "artifact-provides",
        ),
        (
            "provides that are not strings",
            store_args(&["set", "artifact-provides", r#"{"a":1}"#]),
            "artifact-provides",
        ),
        ("key with an equals sign", store_args(&["set", "my=key", "v"]), "\"my=key\""),
        ("key with a newline", store_args(&["set", "my\nkey", "v"]), "\"my\\nkey\""),
        ("empty artifact name by set", store_args(&["set", "artifact-name", ""]), "artifact-name"),
        ("missing image for list", vec!["store".into(), "list".into(), missing.clone()], &missing),
        (
            "missing image for set",
            vec!["store".into(), "set".into(), missing.clone(), "k".into(), "v".into()],
            &missing,
        ),
        (
            "missing image for provision",
            vec![
                "provision".into(),
                missing.clone(),
                "--key".into(),
                key_arg.into(),
                "-i".into(),
                IDENTITY.into(),
                "--provides".into(),
                "a:b".into(),
            ],
            &missing,
        ),
    ];

    let before = sha256_file(&image);
    for (case, args, named) in cases {
        let run = run_cli(&args);

        assert_eq!(
            run.status.code(),
            Some(1),
            "{case}: exit status {:?}, stderr: {}",
            run.status,
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{case}: stderr is not one line: {}", run.stderr);
        assert!(run.stderr.contains(named), "{case}: stderr does not name {named}: {}", run.stderr);
        assert!(
            run.stderr.contains("device.sdimg"),
            "{case}: stderr does not name the image: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{case}: stdout is not empty: {}", run.stdout);
        assert_eq!(sha256_file(&image), before, "{case}: the image changed");
    }
}

#[test]
fn corrupt_store_fails_every_command() {
    let test = "corrupt_store_fails_every_command";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };
    // Two pages that are not an LMDB meta page: the magic number is missing.
    let garbage: Vec<u8> = b"not an LMDB file. ".iter().copied().cycle().take(8192).collect();
    let garbage_path = dir.path().join("garbage-store");
    std::fs::write(&garbage_path, &garbage).unwrap();
    debugfs_write_requests(
        &offset_path(&image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", garbage_path.display())],
    );
    let key = rsa_key(dir.path());
    let before = sha256_file(&image);

    let runs = [
        ("list", store("list", &image, &[])),
        ("get", store("get", &image, &["artifact-name"])),
        ("set", store("set", &image, &["artifact-name", "x"])),
        ("delete", store("delete", &image, &["artifact-name"])),
        ("provision", provision(&image, &key, &["--provides", "a:b"])),
    ];

    for (case, run) in runs {
        assert_eq!(
            run.status.code(),
            Some(1),
            "{case}: exit status {:?}, stderr: {}",
            run.status,
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{case}: stderr is not one line: {}", run.stderr);
        assert!(
            run.stderr.contains("device.sdimg"),
            "{case}: stderr does not name the image: {}",
            run.stderr
        );
        assert!(run.stderr.contains("corrupt"), "{case}: stderr does not say corrupt: {}", run.stderr);
        assert_eq!(sha256_file(&image), before, "{case}: the image changed");
    }
}

#[test]
fn bare_data_image_needs_artifact_name() {
    let test = "bare_data_image_needs_artifact_name";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_bare_data(dir.path(), "data.dataimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = rsa_key(dir.path());
    let before = sha256_file(&image);

    let without_name = provision(&image, &key, &["--target-layout", "64le", "--provides", "a:b"]);
    assert_eq!(without_name.status.code(), Some(1), "{}", without_name.stderr);
    assert!(without_name.stderr.contains("--artifact-name"), "{}", without_name.stderr);
    assert_eq!(sha256_file(&image), before, "a failed run changed the image");
    let with_name = provision(&image, &key, &["--target-layout", "64le", "--artifact-name", "r-1"]);

    with_name.assert_success("provision --artifact-name on a bare data image");
    e2fsck_clean(&image);
    let store_copy = dir.path().join("store-copy");
    std::fs::write(&store_copy, common::debugfs_cat(&image, "/mender/mender-store")).unwrap();
    assert_eq!(
        mdb_dump_pairs(&store_copy),
        [("artifact-name".to_owned(), "r-1".to_owned()), ("artifact-provides".to_owned(), "{}".to_owned())]
    );
}
