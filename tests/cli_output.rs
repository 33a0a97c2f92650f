//! How the binary behaves towards the programs reading its output.

mod common;

use std::process::{Command, Stdio};

use common::sha256_file;

/// `inspect IMAGE | head -1` closes the pipe before `inspect` is done. That is the reader's
/// choice, not a failure, so the tool must exit quietly instead of printing "Broken pipe".
#[test]
fn closed_stdout_pipe_ends_quietly() {
    let (reader, writer) = std::io::pipe().expect("create a pipe");
    drop(reader);

    let output = Command::new(env!("CARGO_BIN_EXE_mender-preauth"))
        .args(["inspect", concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.sdimg")])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run mender-preauth");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit status {:?}, stderr: {stderr}", output.status);
    assert!(!stderr.contains("Broken pipe"), "stderr: {stderr}");
    assert!(!stderr.contains("error"), "stderr: {stderr}");
}

/// A full stdout fails the run after the image is written and the generated key saved, so the
/// message must say so, and where the key is, instead of sounding like nothing happened.
#[test]
fn full_stdout_names_written_image_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("pp.sdimg");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.sdimg"), &image).unwrap();
    let original_sha = sha256_file(&image);
    let keys_dir = dir.path().join("kk");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");

    let output = Command::new(env!("CARGO_BIN_EXE_mender-preauth"))
        .arg("provision")
        .arg(&image)
        .args(["-i", "mac=aa", "--keys-dir"])
        .arg(&keys_dir)
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run mender-preauth");

    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_line = stderr.lines().find(|line| line.contains("error:")).unwrap_or_default();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        error_line.contains("pp.sdimg was provisioned, but writing the request failed"),
        "stderr: {stderr}"
    );
    assert!(error_line.contains(&keys_dir.join("pp-private.key").display().to_string()), "stderr: {stderr}");
    assert!(error_line.contains("No space left on device"), "stderr: {stderr}");
    assert!(keys_dir.join("pp-private.key").is_file());
    assert_ne!(sha256_file(&image), original_sha, "the image was not provisioned");
}
