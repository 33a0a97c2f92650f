//! An in-place run on a host file system that fills up: the image is sparse, so writing into its
//! holes needs new space. Each run happens on a small tmpfs, mounted in a mount namespace of its
//! own (`unshare --mount --map-root-user`), which needs no root where the kernel allows
//! unprivileged user namespaces, and leaves no mount behind when a test dies.
//!
//! NOTE: where the kernel or a container forbids that mount, the test is skipped with a message
//! even under MENDER_PREAUTH_REQUIRE_TOOLS=1, because no package can provide it; `unshare`
//! itself (util-linux) is required.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, e2fsck_clean, extract_partition, make_fixture, run_with_timeout,
    sha256_file,
};
use mender_preauth::test_support::require_tools;

/// Shell script run inside the namespace: mount a tmpfs of `$1` bytes on `$2`, copy the sparse
/// image `$3` onto it, provision it there, and copy the result and the tmpfs's file names back to
/// `$4`. Exit status 99 means the mount was not permitted.
const RUN_ON_TMPFS: &str = r#"
set -u
size=$1 mount_point=$2 image=$3 out=$4
shift 4
mount -t tmpfs -o "size=$size" tmpfs "$mount_point" || exit 99
cp --sparse=always "$image" "$mount_point/disk.gptimg"
"$@" "$mount_point/disk.gptimg" > "$out/stdout" 2> "$out/stderr"
echo $? > "$out/status"
cp --sparse=always "$mount_point/disk.gptimg" "$out/disk.gptimg"
ls -A "$mount_point" > "$out/files"
"#;

/// What one run on a tmpfs left behind.
struct TmpfsRun {
    status: i32,
    stderr: String,
    files_left: Vec<String>,
    image: PathBuf,
}

/// Runs provision on a copy of `image` on a tmpfs of `size` bytes. Returns `None` when the
/// tmpfs could not be mounted.
fn provision_on_tmpfs(dir: &Path, image: &Path, key: &Path, size: u64) -> Option<TmpfsRun> {
    let out = dir.join(format!("run-{size}"));
    let mount_point = dir.join("mnt");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&mount_point).unwrap();

    let mut command = Command::new("unshare");
    command.args(["--mount", "--map-root-user", "sh", "-c", RUN_ON_TMPFS, "sh"]);
    command.arg(size.to_string()).arg(&mount_point).arg(image).arg(&out);
    command.arg(env!("CARGO_BIN_EXE_mender-preauth")).args(["provision", "-k"]).arg(key);
    command.args(["-i", "mac=aa", "--bootstrap-provides"]);
    command.env("SOURCE_DATE_EPOCH", "1700000000");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    if output.status.code() == Some(99) {
        return None;
    }
    assert!(output.status.success(), "tmpfs script failed: {}", String::from_utf8_lossy(&output.stderr));

    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    Some(TmpfsRun {
        status: read("status").trim().parse().unwrap(),
        stderr: read("stderr"),
        files_left: read("files").lines().map(str::to_string).collect(),
        image: out.join("disk.gptimg"),
    })
}

/// Bytes the file occupies on its file system.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn full_disk_rolls_back_at_once() {
    let test = "full_disk_rolls_back_at_once";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "disk.gptimg", &["--label", "gpt"], test) else { return };
    if require_tools(&["unshare", "openssl", "e2fsck"], test).is_none() {
        return;
    }
    let key = dir.path().join("device.pem");
    let mut openssl = Command::new("openssl");
    openssl.args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key);
    assert!(run_with_timeout(&mut openssl, COMMAND_TIMEOUT).status.success());
    let sparse = dir.path().join("sparse.gptimg");
    let mut copy = Command::new("cp");
    copy.arg("--sparse=always").arg(&image).arg(&sparse);
    assert!(run_with_timeout(&mut copy, COMMAND_TIMEOUT).status.success());
    let original_sha = sha256_file(&sparse);

    // From a tmpfs just large enough for the image up, one page more each time, until a run
    // succeeds: the small sizes fail writing the undo log, the next ones writing the image.
    let base = allocated_bytes(&sparse);
    let mut log_failures = 0;
    let mut write_failures = 0;
    for page in 0..64 {
        let size = base + page * 4096;
        let Some(run) = provision_on_tmpfs(dir.path(), &sparse, &key, size) else {
            eprintln!("skipped {test}: mounting a tmpfs in a user and mount namespace is not permitted here");
            return;
        };
        if run.status == 0 {
            assert_ne!(sha256_file(&run.image), original_sha, "size {size}: the run changed nothing");
            e2fsck_clean(&extract_partition(&run.image, DATA_PARTITION, &dir.path().join("data.ext4")));
            break;
        }

        assert_eq!(run.status, 1, "size {size}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "size {size}: not one line: {}", run.stderr);
        assert!(run.stderr.contains("nothing was changed"), "size {size}: {}", run.stderr);
        assert!(run.stderr.contains("No space left on device"), "size {size}: {}", run.stderr);
        assert_eq!(run.files_left, ["disk.gptimg"], "size {size}: files left beside the image");
        assert_eq!(sha256_file(&run.image), original_sha, "size {size}: the failed run changed the image");
        if run.stderr.contains("undo log") {
            log_failures += 1;
        } else {
            assert!(run.stderr.contains("rolled back"), "size {size}: {}", run.stderr);
            write_failures += 1;
        }
    }

    assert!(log_failures > 0, "no tmpfs size made writing the undo log fail");
    assert!(write_failures > 0, "no tmpfs size made writing the image fail");
}

/// Shell script run inside the namespace: mount a tmpfs of `$1` bytes on `$2` and run the rest
/// of the arguments with `$2/out.sdimg` appended, leaving its status, stderr and the tmpfs's
/// file names in `$3`. Exit status 99 means the mount was not permitted.
const OUTPUT_ON_TMPFS: &str = r#"
set -u
size=$1 mount_point=$2 out=$3
shift 3
mount -t tmpfs -o "size=$size" tmpfs "$mount_point" || exit 99
"$@" "$mount_point/out.sdimg" > "$out/stdout" 2> "$out/stderr"
echo $? > "$out/status"
ls -A "$mount_point" > "$out/files"
"#;

#[test]
fn full_output_disk_names_output() {
    let test = "full_output_disk_names_output";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "disk.sdimg", &[], test) else { return };
    if require_tools(&["unshare", "openssl", "gzip"], test).is_none() {
        return;
    }
    let key = dir.path().join("device.pem");
    let mut openssl = Command::new("openssl");
    openssl.args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key);
    assert!(run_with_timeout(&mut openssl, COMMAND_TIMEOUT).status.success());
    let mut gzip = Command::new("gzip");
    gzip.arg("-k").arg(&image);
    assert!(run_with_timeout(&mut gzip, COMMAND_TIMEOUT).status.success());
    let input = dir.path().join("disk.sdimg.gz");
    let input_sha = sha256_file(&input);

    let out = dir.path().join("run");
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&mount_point).unwrap();
    let mut command = Command::new("unshare");
    command.args(["--mount", "--map-root-user", "sh", "-c", OUTPUT_ON_TMPFS, "sh", "400k"]);
    command.arg(&mount_point).arg(&out);
    command.arg(env!("CARGO_BIN_EXE_mender-preauth")).args(["provision", "-k"]).arg(&key);
    command.args(["-i", "mac=aa"]).arg(&input).arg("--output");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    if output.status.code() == Some(99) {
        eprintln!("skipped {test}: mounting a tmpfs in a user and mount namespace is not permitted here");
        return;
    }
    assert!(output.status.success(), "tmpfs script failed: {}", String::from_utf8_lossy(&output.stderr));

    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let stderr = read("stderr");
    assert_eq!(read("status").trim(), "1", "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    let destination = mount_point.join("out.sdimg");
    assert!(stderr.contains(&format!("{}: ", destination.display())), "output not named: {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains(input.to_str().unwrap()), "input named: {stderr}");
    assert_eq!(read("files"), "", "files left on the full disk");
    assert_eq!(sha256_file(&input), input_sha, "the input changed");
}
