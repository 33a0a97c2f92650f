//! Interoperation with `mender-artifact` (3.9 on Debian 12): after `mender-preauth provision`,
//! `mender-artifact cat IMAGE:/data/mender/...` must read back exactly the files the tool wrote.
//! mender-artifact finds the data partition by its position (the fourth of an .sdimg), copies it
//! out with dd, runs `fsck.ext4 -a` on the copy and reads the file with debugfs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, debugfs_cat, e2fsck_clean, extract_partition, make_fixture,
    run_cli, run_with_timeout,
};
use mender_preauth::test_support::require_tools;

/// Programs these tests run besides the fixture tools.
const ARTIFACT_TOOLS: [&str; 2] = ["mender-artifact", "openssl"];

/// Returns the bytes `mender-artifact cat IMAGE:PATH` prints, panicking when it fails.
fn mender_artifact_cat(image: &Path, path: &str) -> Vec<u8> {
    let mut command = Command::new("mender-artifact");
    command.arg("cat").arg(format!("{}:{path}", image.display()));
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-artifact cat {}:{path} failed with {}; stderr:\n{}",
        image.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Returns the public key of the private key in `pem` as `openssl pkey -pubout` prints it.
fn openssl_public_key(pem: &[u8], work: &Path) -> String {
    let key = work.join("key-for-pubout.pem");
    std::fs::write(&key, pem).expect("failed to write the key for openssl");
    let mut command = Command::new("openssl");
    command.args(["pkey", "-pubout", "-in"]).arg(&key);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    std::fs::remove_file(&key).expect("failed to remove the key written for openssl");
    assert!(
        output.status.success(),
        "openssl pkey -pubout failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("openssl printed a public key that is not UTF-8")
}

/// Builds a fixture with `fixture_options`, provisions it with a key made by openssl, and checks
/// that mender-artifact reads back the key and the store that debugfs finds on the data partition.
fn assert_mender_artifact_reads_back_key(fixture_options: &[&str], test: &str) {
    if require_tools(&ARTIFACT_TOOLS, test).is_none() || require_tools(&EXT4_JUDGES, test).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_fixture(work.path(), "device.sdimg", fixture_options, test) else { return };

    let given_key = work.path().join("given-key.pem");
    let mut genrsa = Command::new("openssl");
    genrsa.args(["genrsa", "-traditional", "-out"]).arg(&given_key).arg("3072");
    let output = run_with_timeout(&mut genrsa, COMMAND_TIMEOUT);
    assert!(output.status.success(), "openssl genrsa failed: {}", String::from_utf8_lossy(&output.stderr));
    let given_pem = std::fs::read(&given_key).expect("failed to read the generated key");

    let provision = run_cli([
        "provision".as_ref(),
        image.as_os_str(),
        "--identity".as_ref(),
        "mac=02:12:61:13:6c:42".as_ref(),
        "--key".as_ref(),
        given_key.as_os_str(),
    ]);
    provision.assert_success("mender-preauth provision --key");

    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written_key = debugfs_cat(&data, "/mender/mender-agent.pem");
    let written_store = debugfs_cat(&data, "/mender/mender-store");

    let read_key = mender_artifact_cat(&image, "/data/mender/mender-agent.pem");
    assert!(read_key == written_key, "mender-artifact read another /mender/mender-agent.pem than debugfs");
    let read_store = mender_artifact_cat(&image, "/data/mender/mender-store");
    assert!(read_store == written_store, "mender-artifact read another /mender/mender-store than debugfs");
    assert_eq!(
        openssl_public_key(&read_key, work.path()),
        openssl_public_key(&given_pem, work.path()),
        "the key on the image is not the key given to provision"
    );
}

#[test]
fn artifact_reads_back_provisioned_key() {
    assert_mender_artifact_reads_back_key(&[], "artifact_reads_back_provisioned_key");
}

#[test]
fn artifact_reads_key_on_label_only_data() {
    assert_mender_artifact_reads_back_key(&["--no-mender-dir"], "artifact_reads_key_on_label_only_data");
}

#[test]
fn artifact_reads_key_on_1k_block_fs() {
    assert_mender_artifact_reads_back_key(
        &["--data-mib", "9", "--data-fs-options", "-b 1024 -I 128 -O ^has_journal,^metadata_csum"],
        "artifact_reads_key_on_1k_block_fs",
    );
}
