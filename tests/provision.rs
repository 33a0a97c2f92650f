//! `mender-preauth provision` on fixture images, judged by e2fsck, debugfs, mdb_dump and openssl:
//! what it writes, what it keeps, and that bad input leaves the image byte-for-byte unchanged.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, debugfs_cat, debugfs_stat, e2fsck_clean, extract_partition,
    make_bare_data, make_fixture, offset_path, run_cli, run_judge, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 5] = ["e2fsck", "debugfs", "dumpe2fs", "openssl", "mdb_dump"];

/// Runs `provision IMAGE --key KEY -i IDENTITY` with `extra` arguments after them.
fn provision_with_key(image: &Path, key: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec!["provision", image.to_str().unwrap(), "--key", key.to_str().unwrap(), "-i", IDENTITY];
    args.extend_from_slice(extra);
    run_cli(args)
}

/// Makes an RSA key in PKCS#1 form with openssl and returns its path.
fn openssl_rsa_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    run_judge("openssl", &["genrsa", "-traditional", "-out", path.to_str().unwrap(), "2048"]);
    path
}

/// Returns the public key of a private key file as `openssl pkey -pubout` prints it.
fn openssl_pubout(key: &Path) -> String {
    String::from_utf8(run_judge("openssl", &["pkey", "-pubout", "-in", key.to_str().unwrap()])).unwrap()
}

/// Runs debugfs in write mode with one request per line on the filesystem at `fs`.
fn debugfs_write(fs: &Path, requests: &[String]) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), requests.join("\n") + "\n").unwrap();
    let mut command = Command::new("debugfs");
    command.arg("-w").arg("-f").arg(script.path()).arg(fs);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(output.status.success() && errors.is_empty(), "debugfs -w {requests:?}: {stderr}");
}

/// Builds an LMDB file holding `records` with the real mdb_load (MDB_NOSUBDIR).
fn mdb_load_store(dir: &Path, records: &[(&str, &str)]) -> PathBuf {
    let dump = dir.join("store.dump");
    let mut text = String::from("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n");
    for (key, value) in records {
        text.push_str(&format!(" {key}\n {value}\n"));
    }
    text.push_str("DATA=END\n");
    std::fs::write(&dump, text).unwrap();
    let store = dir.join("mender-store");
    run_judge("mdb_load", &["-n", "-f", dump.to_str().unwrap(), store.to_str().unwrap()]);
    store
}

/// Returns the records of an LMDB file as (key, value) text pairs, read with the real mdb_dump.
fn mdb_dump_records(store: &Path) -> Vec<(String, String)> {
    let text = String::from_utf8(run_judge("mdb_dump", &["-n", "-p", store.to_str().unwrap()])).unwrap();
    let data: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "HEADER=END")
        .skip(1)
        .take_while(|line| *line != "DATA=END")
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    data.chunks(2).map(|pair| (pair[0].to_string(), pair[1].to_string())).collect()
}

/// Copies mender-store out of a filesystem image into `dir` and returns its path.
fn store_from(fs: &Path, dir: &Path) -> PathBuf {
    let store = dir.join("store-copy");
    std::fs::write(&store, debugfs_cat(fs, "/mender/mender-store")).unwrap();
    store
}

fn free_blocks(fs: &Path) -> u64 {
    let text = String::from_utf8(run_judge("dumpe2fs", &["-h", fs.to_str().unwrap()])).unwrap();
    let line =
        text.lines().find(|line| line.starts_with("Free blocks:")).expect("dumpe2fs printed no free blocks");
    line.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn provision_in_place_writes_key_and_empty_store() {
    let test = "provision_in_place_writes_key_and_empty_store";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");

    let run = provision_with_key(&image, &key, &[]);

    run.assert_success("provision in place");
    let request = run.stdout_json_line();
    assert_eq!(request["identity_data"]["mac"], "02:12:61:13:6c:42");
    assert_eq!(request["pubkey"], openssl_pubout(&key));
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let stat = debugfs_stat(&data, "/mender/mender-agent.pem");
    assert_eq!((stat.file_type.as_str(), stat.mode, stat.uid, stat.gid), ("regular", 0o600, 0, 0));
    assert_eq!(debugfs_cat(&data, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap());
    let store_stat = debugfs_stat(&data, "/mender/mender-store");
    assert_eq!((store_stat.mode, store_stat.uid, store_stat.gid), (0o600, 0, 0));
    assert_eq!(mdb_dump_records(&store_from(&data, dir.path())), Vec::<(String, String)>::new());
    assert!(!run.stderr.contains("BEGIN"), "stderr shows key material: {}", run.stderr);
}

#[test]
fn character_device_takes_the_request_but_not_the_image() {
    let test = "character_device_takes_the_request_but_not_the_image";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");

    // /dev/null cannot be synced (EINVAL); the request is still written there and the run succeeds.
    let run = provision_with_key(&image, &key, &["--preauth-out", "/dev/null"]);

    run.assert_success("provision --preauth-out /dev/null");
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    // --output replaces its path with a new file, so a device there is refused before any write.
    let run = provision_with_key(&image, &key, &["--output", "/dev/null"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "mender-preauth: error: /dev/null: is not a regular file; --output writes a new image file there"
    );
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

#[test]
fn provision_output_leaves_input_and_keeps_holes() {
    let test = "provision_output_leaves_input_and_keeps_holes";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "base.sdimg", &["--data-mib", "512"], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let before = sha256_file(&image);
    let output = dir.path().join("device-0001.sdimg");

    let run = provision_with_key(&image, &key, &["--output", output.to_str().unwrap()]);

    run.assert_success("provision --output");
    assert_eq!(sha256_file(&image), before, "the input image changed");
    let allocated =
        |path: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512;
    assert!(
        allocated(&output) <= allocated(&image) + (1 << 20),
        "output allocates {} bytes, input {}",
        allocated(&output),
        allocated(&image)
    );
    let data = extract_partition(&output, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    assert_eq!(debugfs_cat(&data, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap());
}

#[test]
fn provision_keeps_records_and_removes_stale_auth() {
    let test = "provision_keeps_records_and_removes_stale_auth";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&["mdb_load", "mdb_dump", "debugfs", "e2fsck", "openssl"], test) else {
        return;
    };
    let store = mdb_load_store(
        dir.path(),
        &[
            ("artifact-name", "release-1"),
            ("authtoken", "old-token"),
            ("auth-token-cache-invalidator", "x"),
            ("state", "{}"),
        ],
    );
    debugfs_write(
        &offset_path(&image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", store.display())],
    );
    let key = openssl_rsa_key(dir.path(), "device.pem");

    let run = provision_with_key(&image, &key, &[]);

    run.assert_success("provision over an existing store");
    assert!(run.stderr.contains("authtoken"), "stderr does not report the removed records: {}", run.stderr);
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let records = mdb_dump_records(&store_from(&data, dir.path()));
    let expected =
        vec![("artifact-name".to_string(), "release-1".to_string()), ("state".to_string(), "{}".to_string())];
    assert_eq!(records, expected);
}

#[test]
fn reprovisioning_replaces_key_and_frees_old_blocks() {
    let test = "reprovisioning_replaces_key_and_frees_old_blocks";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let first = openssl_rsa_key(dir.path(), "first.pem");
    let second = openssl_rsa_key(dir.path(), "second.pem");
    let provision = |key: &Path| {
        provision_with_key(&image, key, &[]).assert_success("provision");
        extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"))
    };

    let after_first = provision(&first);
    let free_after_first = free_blocks(&after_first);
    let after_second = provision(&second);

    e2fsck_clean(&after_second);
    assert_eq!(free_blocks(&after_second), free_after_first);
    assert_eq!(debugfs_cat(&after_second, "/mender/mender-agent.pem"), std::fs::read(&second).unwrap());
    let stat = debugfs_stat(&after_second, "/mender/mender-agent.pem");
    assert_eq!((stat.mode, stat.uid, stat.gid, stat.links), (0o600, 0, 0, 1));
}

/// Data filesystems of the shapes that real images carry, each judged by e2fsck after provisioning.
#[test]
fn provision_handles_every_data_filesystem_shape() {
    let test = "provision_handles_every_data_filesystem_shape";
    let shapes: [(&str, &str); 5] = [
        ("mkfs.ext4 defaults, 4 KiB blocks", "-b 4096"),
        ("small ext4 with checksums, 1 KiB blocks", "-b 1024"),
        ("small form without journal or checksums", "-b 1024 -I 128 -O ^has_journal,^metadata_csum"),
        (
            "ext3 features, block-mapped files",
            "-b 1024 -O ^extent,^64bit,^flex_bg,^metadata_csum,^huge_file,^dir_nlink,^extra_isize",
        ),
        (
            "ext2 features, 2 KiB blocks",
            "-b 2048 -O ^has_journal,^extent,^64bit,^flex_bg,^metadata_csum,^huge_file,^dir_nlink,^extra_isize",
        ),
    ];
    for (shape, options) in shapes {
        let dir = tempfile::tempdir().unwrap();
        let Some(image) = make_fixture(dir.path(), "device.sdimg", &["--data-fs-options", options], test)
        else {
            return;
        };
        let Some(_) = require_tools(&JUDGES, test) else { return };
        let key = openssl_rsa_key(dir.path(), "device.pem");

        let run = provision_with_key(&image, &key, &[]);

        assert!(run.status.success(), "{shape}: provision failed: {}", run.stderr);
        let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
        e2fsck_clean(&data);
        assert_eq!(debugfs_cat(&data, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap(), "{shape}");
        assert_eq!(debugfs_stat(&data, "/mender/mender-store").mode, 0o600, "{shape}");
    }
}

#[test]
fn label_only_data_partition_gets_mender_dir() {
    let test = "label_only_data_partition_gets_mender_dir";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &["--no-mender-dir"], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");

    let run = provision_with_key(&image, &key, &[]);

    run.assert_success("provision on a label-only data partition");
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let mender = debugfs_stat(&data, "/mender");
    assert_eq!((mender.file_type.as_str(), mender.mode, mender.uid, mender.gid), ("directory", 0o755, 0, 0));
    assert_eq!(debugfs_stat(&data, "/mender/mender-agent.pem").mode, 0o600);
}

#[test]
fn bare_data_image_writes_store_only_with_layout() {
    let test = "bare_data_image_writes_store_only_with_layout";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_bare_data(dir.path(), "data.dataimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let provision = |extra: &[&str]| provision_with_key(&image, &key, extra);

    let without_layout = provision(&[]);

    without_layout.assert_success("provision a bare data image");
    assert!(
        without_layout.stderr.contains("--target-layout"),
        "no hint to give the layout: {}",
        without_layout.stderr
    );
    e2fsck_clean(&image);
    assert_eq!(debugfs_cat(&image, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap());
    assert!(
        !String::from_utf8_lossy(&run_judge("debugfs", &["-R", "ls /mender", image.to_str().unwrap()]))
            .contains("mender-store")
    );

    provision(&["--target-layout", "64le"]).assert_success("provision with --target-layout 64le");
    e2fsck_clean(&image);
    assert_eq!(mdb_dump_records(&store_from(&image, dir.path())), Vec::<(String, String)>::new());
}

#[test]
fn dry_run_writes_nothing() {
    let test = "dry_run_writes_nothing";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&["openssl"], test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let before = sha256_file(&image);

    let run = provision_with_key(&image, &key, &["--dry-run"]);

    run.assert_success("provision --dry-run");
    assert_eq!(sha256_file(&image), before);
    let summary = format!("{}: dry run, nothing was written: ", image.display());
    assert!(run.stderr.contains(&summary), "{}", run.stderr);
    assert!(run.stderr.contains("would write /mender/mender-agent.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("bytes of partition 4 would change"), "{}", run.stderr);
    assert_eq!(run.stdout_json_line()["pubkey"], openssl_pubout(&key));
}

#[test]
fn generated_key_is_saved_private_and_never_overwritten() {
    let test = "generated_key_is_saved_private_and_never_overwritten";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let keys = dir.path().join("keys");
    let provision = || {
        run_cli([
            "provision".as_ref(),
            image.as_os_str(),
            "-i".as_ref(),
            IDENTITY.as_ref(),
            "--type".as_ref(),
            "ed25519".as_ref(),
            "--keys-dir".as_ref(),
            keys.as_os_str(),
        ])
    };

    let first = provision();

    first.assert_success("provision with a generated key");
    let private = keys.join("device-private.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&private).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(first.stdout_json_line()["pubkey"], openssl_pubout(&private));
    assert_eq!(std::fs::read_to_string(keys.join("device-public.key")).unwrap(), openssl_pubout(&private));
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    assert_eq!(debugfs_cat(&data, "/mender/mender-agent.pem"), std::fs::read(&private).unwrap());

    let saved = std::fs::read(&private).unwrap();
    let image_before = sha256_file(&image);
    let second = provision();

    assert_eq!(second.status.code(), Some(1));
    assert!(second.stderr.contains("already exists"), "{}", second.stderr);
    assert_eq!(std::fs::read(&private).unwrap(), saved);
    assert_eq!(sha256_file(&image), image_before);
}

#[test]
fn same_inputs_give_identical_images() {
    let test = "same_inputs_give_identical_images";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "base.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&["openssl"], test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let provision = |output: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
        command
            .arg("provision")
            .arg(&image)
            .arg("--key")
            .arg(&key)
            .args(["-i", IDENTITY])
            .arg("--output")
            .arg(output);
        command.env("SOURCE_DATE_EPOCH", "1700000000");
        let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };

    provision(&dir.path().join("one.sdimg"));
    provision(&dir.path().join("two.sdimg"));

    assert_eq!(sha256_file(&dir.path().join("one.sdimg")), sha256_file(&dir.path().join("two.sdimg")));
    assert_ne!(sha256_file(&dir.path().join("one.sdimg")), sha256_file(&image));
}

/// Every kind of bad input: exit status 1, one line on stderr naming the file, image unchanged.
#[test]
fn bad_input_leaves_image_unchanged() {
    let test = "bad_input_leaves_image_unchanged";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&EXT4_JUDGES, test) else { return };
    let Some(_) = require_tools(&["openssl"], test) else { return };
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let public = dir.path().join("public.pem");
    std::fs::write(&public, openssl_pubout(&key)).unwrap();
    let encrypted = dir.path().join("encrypted.pem");
    run_judge(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
            "-in",
            key.to_str().unwrap(),
            "-out",
            encrypted.to_str().unwrap(),
        ],
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a key\n").unwrap();
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(&identity_file, "mac=02:12:61:13:6c:42\nno equals sign here\n").unwrap();
    let image_arg = image.to_str().unwrap();
    let key_arg = key.to_str().unwrap();

    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("missing key file", vec!["--key", "/nonexistent/key.pem", "-i", IDENTITY], "/nonexistent/key.pem"),
        (
            "public key given as private",
            vec!["--key", public.to_str().unwrap(), "-i", IDENTITY],
            "public.pem",
        ),
        ("encrypted key", vec!["--key", encrypted.to_str().unwrap(), "-i", IDENTITY], "encrypted.pem"),
        ("garbage key", vec!["--key", garbage.to_str().unwrap(), "-i", IDENTITY], "garbage.pem"),
        (
            "identity file line without equals sign",
            vec!["--key", key_arg, "--identity-file", identity_file.to_str().unwrap()],
            "identity.txt",
        ),
        (
            "boot partition chosen as data",
            vec!["--key", key_arg, "-i", IDENTITY, "--data-partition", "1"],
            "device.sdimg",
        ),
        (
            "no such partition",
            vec!["--key", key_arg, "-i", IDENTITY, "--data-partition", "9"],
            "device.sdimg",
        ),
        ("character device as key", vec!["--key", "/dev/urandom", "-i", IDENTITY], "/dev/urandom"),
        (
            "rootfs chosen as data",
            vec!["--key", key_arg, "-i", IDENTITY, "--data-partition", "2"],
            "device.sdimg",
        ),
        (
            "output names the input",
            vec!["--key", key_arg, "-i", IDENTITY, "--output", image_arg],
            "device.sdimg",
        ),
        (
            "request file in a missing directory",
            vec!["--key", key_arg, "-i", IDENTITY, "--preauth-out", "/nonexistent/request.json"],
            "/nonexistent/request.json",
        ),
        (
            "output in a missing directory",
            vec!["--key", key_arg, "-i", IDENTITY, "--output", "/nonexistent/dir/out.sdimg"],
            "/nonexistent/dir/out.sdimg",
        ),
    ];

    let before = sha256_file(&image);
    for (case, extra, named) in cases {
        let mut args = vec!["provision", image_arg];
        args.extend(extra);

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
        assert!(run.stdout.is_empty(), "{case}: stdout is not empty: {}", run.stdout);
        assert_eq!(sha256_file(&image), before, "{case}: the image changed");
    }
}

#[test]
fn full_data_partition_fails_before_writing() {
    let test = "full_data_partition_fails_before_writing";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &["--data-fs-options", "-b 1024 -m 0"], test)
    else {
        return;
    };
    let Some(_) = require_tools(&["openssl", "debugfs", "dumpe2fs"], test) else { return };
    let data_path = offset_path(&image, DATA_PARTITION);
    let extracted = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    let free = free_blocks(&extracted) * 1024;
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0x5au8; usize::try_from(free).unwrap()]).unwrap();
    // debugfs stops writing when the filesystem is full and leaves what fits.
    let mut command = Command::new("debugfs");
    command.arg("-w").arg("-R").arg(format!("write {} /filler", filler.display())).arg(&data_path);
    run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let before = sha256_file(&image);

    let run = provision_with_key(&image, &key, &[]);

    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("device.sdimg"), "{}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("space"), "{}", run.stderr);
    assert_eq!(sha256_file(&image), before);
}

#[test]
fn data_partition_in_logical_partition_is_found() {
    let test = "data_partition_in_logical_partition_is_found";
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = make_bare_data(dir.path(), "data.ext4", &[], test) else { return };
    let Some(_) = require_tools(&["sfdisk", "e2fsck", "debugfs", "openssl"], test) else { return };
    let data_len = std::fs::metadata(&data).unwrap().len();
    let data_sectors = data_len / 512;
    // p1 a small Linux partition, p2 extended holding p5 (swap) and p6 (the data filesystem).
    let image = dir.path().join("logical.sdimg");
    let image_sectors = 2048 + 2048 + 2048 + 2048 + 2048 + data_sectors + 2048;
    std::fs::File::create(&image).unwrap().set_len(image_sectors * 512).unwrap();
    let layout = format!(
        "label: dos\nstart=2048, size=2048, type=83\nstart=4096, type=5\nstart=6144, size=2048, type=82\nstart=10240, size={data_sectors}, type=83\n"
    );
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.arg("--no-reread").arg("--no-tell-kernel").arg(&image).stdin(std::process::Stdio::piped());
    let mut child = sfdisk.stdout(std::process::Stdio::null()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), layout.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let p6 = common::partition(&image, 6);
    let image_file = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&image_file, &std::fs::read(&data).unwrap(), p6.start_bytes)
        .unwrap();
    drop(image_file);
    let key = openssl_rsa_key(dir.path(), "device.pem");

    let run = provision_with_key(&image, &key, &["--target-layout", "64le", "-v"]);

    run.assert_success("provision a data partition in a logical partition");
    assert!(run.stderr.contains("data partition: partition 6"), "{}", run.stderr);
    let extracted = extract_partition(&image, 6, &dir.path().join("p6.ext4"));
    e2fsck_clean(&extracted);
    assert_eq!(debugfs_cat(&extracted, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap());
}

/// A 1024-bit RSA key is weak, but the Mender client accepts it, so it is installed with one
/// warning that names the key file.
#[test]
fn short_rsa_key_is_used_with_warning() {
    let test = "short_rsa_key_is_used_with_warning";
    let dir = tempfile::tempdir().unwrap();
    let Some(_) = require_tools(&["openssl"], test) else { return };
    let image = dir.path().join("device.sdimg");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.sdimg"), &image).unwrap();
    let key = dir.path().join("weak.pem");
    run_judge("openssl", &["genrsa", "-traditional", "-out", key.to_str().unwrap(), "1024"]);

    let run = provision_with_key(&image, &key, &[]);

    run.assert_success("provision with a 1024-bit key");
    let warnings: Vec<&str> = run.stderr.lines().filter(|line| line.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "stderr: {}", run.stderr);
    assert!(warnings[0].contains("weak.pem"), "the warning does not name the key: {}", warnings[0]);
    assert!(warnings[0].contains("1024 bits is weak"), "{}", warnings[0]);
    assert!(run.stderr.contains("RSA 1024"), "the key was not installed: {}", run.stderr);
}

/// Errors about the chosen data partition say what it contains in words, and name a bare
/// filesystem image once, without partition prefixes.
#[test]
fn data_partition_errors_read_plainly() {
    let test = "data_partition_errors_read_plainly";
    let dir = tempfile::tempdir().unwrap();
    let Some(_) = require_tools(&["openssl", "mkfs.ext4"], test) else { return };
    let image = dir.path().join("device.sdimg");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.sdimg"), &image).unwrap();
    let key = openssl_rsa_key(dir.path(), "device.pem");
    let bare = dir.path().join("f.ext4");
    std::fs::File::create(&bare).unwrap().set_len(8 << 20).unwrap();
    run_judge("mkfs.ext4", &["-q", "-O", "quota", bare.to_str().unwrap()]);

    let unformatted = provision_with_key(&image, &key, &["--data-partition", "3"]);
    let vfat = provision_with_key(&image, &key, &["--data-partition", "1"]);
    let quota = provision_with_key(&bare, &key, &["--data-partition", "0", "--target-layout", "64le"]);

    assert_eq!(unformatted.status.code(), Some(1), "{}", unformatted.stderr);
    assert!(
        unformatted.stderr.contains("partition 3 is not formatted (it contains no filesystem)"),
        "{}",
        unformatted.stderr
    );
    assert!(vfat.stderr.contains("partition 1 contains a vfat filesystem"), "{}", vfat.stderr);
    assert_eq!(quota.status.code(), Some(1), "{}", quota.stderr);
    assert!(
        quota.stderr.contains(
            "f.ext4: the data filesystem cannot be written: unsupported ext filesystem feature: quota"
        ),
        "{}",
        quota.stderr
    );
    assert!(!quota.stderr.contains("whole image"), "{}", quota.stderr);
}
