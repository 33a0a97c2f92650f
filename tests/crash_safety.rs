//! An in-place provisioning run that dies part way (a failpoint after the Nth written chunk, or
//! SIGKILL at a random moment) leaves an undo log; the next run rolls the image back. Afterwards
//! the image is byte-identical to the original or to the completed result, and e2fsck finds the
//! data partition clean either way. A `cp` stopped inside the copy of a host file's blocks is
//! rolled back the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, KillOnDrop, e2fsck_clean, extract_partition, make_fixture,
    run_with_timeout, sha256_file,
};
use mender_preauth::image::disk_image::{FAILPOINT_EXIT_CODE, FAILPOINT_VAR};
use mender_preauth::test_support::require_tools;

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Builds the provision command with fixed inputs, so that every completed run gives the same bytes.
fn provision_command(image: &Path, key: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
    command.args(["-q", "provision"]).arg(image).arg("--key").arg(key).args(["-i", IDENTITY]);
    command.env("SOURCE_DATE_EPOCH", "1700000000");
    command
}

/// Runs `inspect`, which rolls back an interrupted run before it reads anything, and returns its stderr.
fn next_run(image: &Path) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
    command.arg("inspect").arg(image);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "inspect after the interrupted run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn undo_log_of(image: &Path) -> PathBuf {
    mender_preauth::image::undo_log::log_path(image)
}

/// A fixture whose data partition lacks /mender, so a run creates a directory and two files.
struct Setup {
    dir: tempfile::TempDir,
    original: PathBuf,
    key: PathBuf,
    original_sha: String,
    completed_sha: String,
}

fn setup(test: &str) -> Option<Setup> {
    let dir = tempfile::tempdir().unwrap();
    let original = make_fixture(dir.path(), "original.sdimg", &["--no-mender-dir"], test)?;
    require_tools(&["openssl", "e2fsck"], test)?;
    let key = dir.path().join("device.pem");
    let mut openssl = Command::new("openssl");
    openssl.args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key);
    assert!(run_with_timeout(&mut openssl, COMMAND_TIMEOUT).status.success());

    let completed = dir.path().join("completed.sdimg");
    std::fs::copy(&original, &completed).unwrap();
    let output = run_with_timeout(&mut provision_command(&completed, &key), COMMAND_TIMEOUT);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let original_sha = sha256_file(&original);
    let completed_sha = sha256_file(&completed);
    assert_ne!(original_sha, completed_sha);
    Some(Setup { dir, original, key, original_sha, completed_sha })
}

#[test]
fn failpoint_at_every_chunk_rolls_back() {
    let Some(setup) = setup("failpoint_at_every_chunk_rolls_back") else { return };
    let image = setup.dir.path().join("work.sdimg");

    let mut stopped_runs = 0;
    for chunk in 1.. {
        std::fs::copy(&setup.original, &image).unwrap();
        let mut command = provision_command(&image, &setup.key);
        command.env(FAILPOINT_VAR, format!("write:{chunk}"));
        let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
        if output.status.success() {
            assert_eq!(sha256_file(&image), setup.completed_sha, "run with failpoint {chunk} never reached");
            break;
        }
        assert_eq!(
            output.status.code(),
            Some(FAILPOINT_EXIT_CODE),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(undo_log_of(&image).exists(), "chunk {chunk}: no undo log after the interrupted run");
        stopped_runs += 1;

        let stderr = next_run(&image);

        assert!(
            stderr.contains("rolled back"),
            "chunk {chunk}: the next run did not report the roll-back: {stderr}"
        );
        assert!(!undo_log_of(&image).exists(), "chunk {chunk}: the undo log is still there");
        assert_eq!(sha256_file(&image), setup.original_sha, "chunk {chunk}: image differs from the original");
    }

    assert!(stopped_runs >= 3, "only {stopped_runs} chunks written: the run should touch several blocks");
    e2fsck_clean(&extract_partition(&image, DATA_PARTITION, &setup.dir.path().join("data.ext4")));
}

#[test]
fn sigkill_at_random_moments_leaves_original_or_result() {
    let Some(setup) = setup("sigkill_at_random_moments_leaves_original_or_result") else { return };
    let image = setup.dir.path().join("work.sdimg");
    // A small xorshift generator with a fixed seed, so a failing delay can be reproduced.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next_delay = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Duration::from_micros(state % 30_000)
    };

    let mut outcomes = [0usize; 2];
    for round in 0..24 {
        std::fs::copy(&setup.original, &image).unwrap();
        let delay = next_delay();
        let mut child = KillOnDrop(provision_command(&image, &setup.key).spawn().unwrap());
        std::thread::sleep(delay);
        let _ = child.0.kill();
        let _ = child.0.wait();

        next_run(&image);

        let sha = sha256_file(&image);
        assert!(
            sha == setup.original_sha || sha == setup.completed_sha,
            "round {round}, killed after {delay:?}: image is neither the original nor the completed result"
        );
        outcomes[usize::from(sha == setup.completed_sha)] += 1;
        assert!(!undo_log_of(&image).exists(), "round {round}: the undo log is still there");
        e2fsck_clean(&extract_partition(&image, DATA_PARTITION, &setup.dir.path().join("data.ext4")));
    }
    eprintln!(
        "sigkill rounds: {} ended as the original, {} as the completed result",
        outcomes[0], outcomes[1]
    );
}

/// Returns `blocks` blocks of 4096 bytes and a 100-byte tail, each block starting with its own
/// marker, so that a block of the file can be recognized in the image.
fn marked_blocks(blocks: usize) -> Vec<u8> {
    let mut content = Vec::with_capacity(blocks * 4096 + 100);
    for block in 0..blocks {
        let start = content.len();
        content.extend_from_slice(format!("payload block {block:08}\n").as_bytes());
        content.extend((content.len() - start..4096).map(|index| (index * 31 + block) as u8));
    }
    content.extend_from_slice(&[0x5a; 100]);
    content
}

/// Returns whether a 4096-byte-aligned block of `image` starts with `marker`.
fn image_has_block(image: &Path, marker: &[u8]) -> bool {
    std::fs::read(image).unwrap().chunks_exact(4096).any(|block| block.starts_with(marker))
}

#[test]
fn failpoint_inside_host_file_copy_rolls_back() {
    let test = "failpoint_inside_host_file_copy_rolls_back";
    let dir = tempfile::tempdir().unwrap();
    let Some(original) = make_fixture(dir.path(), "original.sdimg", &["--rootfs-b"], test) else { return };
    // 256 KiB, above the size from which cp copies a host file's blocks at apply time.
    let blocks = 64;
    let host = dir.path().join("payload.bin");
    std::fs::write(&host, marked_blocks(blocks)).unwrap();
    let image = dir.path().join("work.sdimg");
    let cp_command = |failpoint: Option<u64>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
        command.args(["-q", "cp"]).arg(&host).arg(format!("{}:/etc/payload.bin", image.display()));
        command.env("SOURCE_DATE_EPOCH", "1700000000");
        if let Some(chunk) = failpoint {
            command.env(FAILPOINT_VAR, format!("write:{chunk}"));
        }
        command
    };
    let first_block = format!("payload block {:08}\n", 0).into_bytes();
    let last_block = format!("payload block {:08}\n", blocks - 1).into_bytes();
    let original_sha = sha256_file(&original);
    std::fs::copy(&original, &image).unwrap();
    assert!(run_with_timeout(&mut cp_command(None), COMMAND_TIMEOUT).status.success());
    let completed_sha = sha256_file(&image);

    // Each rootfs gets its metadata writes, then the copy of the file's whole blocks in chunks
    // of 4096 bytes. Stopping after every 5th chunk samples both.
    let mut stops_inside_copy = 0;
    for chunk in (1..).step_by(5) {
        std::fs::copy(&original, &image).unwrap();
        let output = run_with_timeout(&mut cp_command(Some(chunk)), COMMAND_TIMEOUT);
        if output.status.success() {
            assert_eq!(sha256_file(&image), completed_sha, "run with failpoint {chunk} never reached");
            break;
        }
        assert_eq!(
            output.status.code(),
            Some(FAILPOINT_EXIT_CODE),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(undo_log_of(&image).exists(), "chunk {chunk}: no undo log after the interrupted run");
        if image_has_block(&image, &first_block) && !image_has_block(&image, &last_block) {
            stops_inside_copy += 1;
        }

        let stderr = next_run(&image);

        assert!(stderr.contains("rolled back"), "chunk {chunk}: no roll-back reported: {stderr}");
        assert!(!undo_log_of(&image).exists(), "chunk {chunk}: the undo log is still there");
        assert_eq!(sha256_file(&image), original_sha, "chunk {chunk}: image differs from the original");
    }

    assert!(stops_inside_copy >= 10, "only {stops_inside_copy} stops landed inside the copy of rootfs A");
    for number in [common::ROOTFS_A_PARTITION, common::ROOTFS_B_PARTITION] {
        e2fsck_clean(&extract_partition(&image, number, &dir.path().join(format!("p{number}.ext4"))));
    }
}
