//! Shared helpers of the ext integration tests: building images with mkfs.ext4, opening them
//! through `Staged<FileVolume>`, and asking e2fsck and debugfs about the result.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use mender_preauth::fs::ext::{Ext, ExtError, NewAttrs};
use mender_preauth::image::volume::{FileVolume, Staged};
use mender_preauth::test_support::require_tools;

/// Every external program these tests use as a judge or to build images.
pub const TOOLS: [&str; 3] = ["mkfs.ext4", "e2fsck", "debugfs"];

/// Feature sets the tests cover, as extra mkfs.ext4 arguments.
pub const DEFAULT_4K: &[&str] = &["-b", "4096"];
pub const SMALL_1K: &[&str] = &[];
pub const NO_CSUM_1K: &[&str] = &["-b", "1024", "-I", "128", "-O", "^has_journal,^metadata_csum"];
pub const UNINIT_BG_1K: &[&str] = &["-b", "1024", "-O", "^metadata_csum,uninit_bg"];
pub const EXT2: &[&str] = &["-t", "ext2", "-b", "1024"];
pub const EXT3: &[&str] = &["-t", "ext3", "-b", "1024"];

/// Every feature set with a name for messages.
pub const FEATURE_SETS: [(&str, &[&str]); 6] = [
    ("ext4 4k", DEFAULT_4K),
    ("ext4 1k", SMALL_1K),
    ("ext4 1k no csum", NO_CSUM_1K),
    ("ext4 1k uninit_bg", UNINIT_BG_1K),
    ("ext2", EXT2),
    ("ext3", EXT3),
];

/// A filesystem image in a temporary directory.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Attributes the tests give new files: mode 0600, root, a fixed time in 2024.
pub const ATTRS: NewAttrs = NewAttrs { mode: 0o600, uid: 0, gid: 0, time: 1_717_171_717 };
pub const DIR_ATTRS: NewAttrs = NewAttrs { mode: 0o755, uid: 0, gid: 0, time: 1_717_171_717 };

/// Returns `None` (after `require_tools` printed why) when a judge is missing.
pub fn tools(test: &str) -> Option<()> {
    require_tools(&TOOLS, test).map(|_| ())
}

/// Builds an image of `size_mib` MiB with `mkfs.ext4 -q -F -L data -E root_owner=0:0` and
/// `args`, populated from `source` when given.
pub fn make_image(size_mib: u64, args: &[&str], source: Option<&Path>) -> Image {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("data.img");
    let file = File::create(&path).expect("create image");
    file.set_len(size_mib << 20).expect("size image");
    drop(file);

    let mut command = Command::new("mkfs.ext4");
    command.args(["-q", "-F", "-L", "data", "-E", "root_owner=0:0"]).args(args);
    if let Some(source) = source {
        command.arg("-d").arg(source);
    }
    let output = command.arg(&path).env("MKE2FS_CONFIG", "/etc/mke2fs.conf").output().expect("run mkfs.ext4");
    assert!(
        output.status.success(),
        "mkfs.ext4 {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Image { dir, path }
}

/// Opens the image, runs `change` on the filesystem through a staging volume, and commits the
/// staged writes when `change` succeeds.
pub fn modify<T>(
    image: &Path,
    change: impl FnOnce(&mut Ext<Staged<FileVolume<'_>>>) -> Result<T, ExtError>,
) -> T {
    let file = File::options().read(true).write(true).open(image).expect("open image");
    let len = file.metadata().expect("image metadata").len();
    let mut ext = Ext::open(Staged::new(FileVolume::new(&file, 0, len))).expect("open filesystem");
    let value = change(&mut ext).expect("change the filesystem");
    ext.into_volume().commit().expect("commit staged writes");
    value
}

/// Opens the image read-only and runs `inspect` on it.
pub fn inspect<T>(image: &Path, inspect: impl FnOnce(&Ext<FileVolume<'_>>) -> T) -> T {
    let file = File::open(image).expect("open image");
    let len = file.metadata().expect("image metadata").len();
    let ext = Ext::open(FileVolume::new(&file, 0, len)).expect("open filesystem");
    inspect(&ext)
}

/// Runs `e2fsck -fn` and asserts that it exits 0 and prints nothing but its pass headers and
/// the summary line.
pub fn assert_fsck_clean(image: &Path) {
    let output = Command::new("e2fsck").arg("-fn").arg(image).output().expect("run e2fsck");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report =
        format!("e2fsck -fn exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status.code());
    assert_eq!(output.status.code(), Some(0), "{report}");
    for line in stdout.lines().chain(stderr.lines()) {
        let expected = line.is_empty()
            || line.starts_with("e2fsck ")
            || line.starts_with("Pass ")
            || is_summary_line(line);
        assert!(expected, "unexpected e2fsck line {line:?}\n{report}");
    }
}

/// True for e2fsck's closing `data: 12/2048 files (0.0% non-contiguous), 1234/8192 blocks`.
fn is_summary_line(line: &str) -> bool {
    line.contains(" files (") && line.contains("non-contiguous), ") && line.ends_with(" blocks")
}

/// Output of `debugfs -R request`.
pub fn debugfs(image: &Path, request: &str) -> String {
    let output = Command::new("debugfs").arg("-R").arg(request).arg(image).output().expect("run debugfs");
    assert!(
        output.status.success(),
        "debugfs -R {request:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Raw bytes of `debugfs -R "cat path"`.
pub fn debugfs_cat(image: &Path, path: &str) -> Vec<u8> {
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .output()
        .expect("run debugfs");
    assert!(output.status.success());
    output.stdout
}

/// Returns the value after `key` in debugfs output such as `Free blocks: 1234`.
pub fn field(output: &str, key: &str) -> Option<String> {
    let start = output.find(key)? + key.len();
    let rest = output[start..].trim_start();
    Some(rest.split(|c: char| c.is_whitespace() || c == ',').next()?.to_string())
}

/// Free blocks by the superblock, as `debugfs -R stats` prints them.
pub fn free_blocks(image: &Path) -> u64 {
    let stats = debugfs(image, "stats");
    field(&stats, "Free blocks:").and_then(|value| value.parse().ok()).expect("free block count in stats")
}

/// Checks the type, permissions, owner and size that `debugfs stat` prints for `path`.
pub fn assert_stat(image: &Path, path: &str, kind: &str, mode: u16, size: u64) {
    let stat = debugfs(image, &format!("stat {path}"));
    assert_eq!(field(&stat, "Type:").as_deref(), Some(kind), "{path}: {stat}");
    assert_eq!(field(&stat, "Mode:").as_deref(), Some(format!("{mode:04o}").as_str()), "{path}: {stat}");
    assert_eq!(field(&stat, "User:").as_deref(), Some("0"), "{path}: {stat}");
    assert_eq!(field(&stat, "Group:").as_deref(), Some("0"), "{path}: {stat}");
    assert_eq!(field(&stat, "Size:").and_then(|s| s.parse::<u64>().ok()), Some(size), "{path}: {stat}");
}

/// Deterministic bytes that do not repeat within a block: a simple xorshift stream.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// SHA-256 of a file, as hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read image");
    Sha256::digest(&bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs `debugfs -w -R request` on the image.
pub fn debugfs_write(image: &Path, request: &str) {
    let output =
        Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(image).output().expect("run debugfs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "debugfs -w -R {request:?} failed: {stderr}");
    let complaints: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(complaints.is_empty(), "debugfs -w -R {request:?}: {stderr}");
}

/// Rebuilds every directory's hashed index with `e2fsck -fyD`.
pub fn index_directories(image: &Path) {
    let output = Command::new("e2fsck").arg("-fyD").arg(image).output().expect("run e2fsck");
    // Exit code 1 means e2fsck changed the filesystem, which -D does on purpose.
    assert!(matches!(output.status.code(), Some(0 | 1)), "e2fsck -fyD failed: {output:?}");
}
