//! How the binary behaves towards the programs reading its output.

use std::process::{Command, Stdio};

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
