//! Helpers shared by the integration tests: running the `mender-preauth` binary and other programs
//! with a time limit, building fixture images with `scripts/make-fixtures`, reading their partition
//! tables with sfdisk, and judging ext4 filesystems with e2fsck and debugfs.
//!
//! The judges (`e2fsck_clean`, `debugfs_*`, `partitions`) expect the test to have called
//! `require_tools` for their programs first, and panic with the program's name when one is missing.
//! Both e2fsck and debugfs (e2fsprogs 1.47) also accept `IMAGE?offset=BYTES` in place of a
//! filesystem path, which `offset_path` builds. The tests prefer `extract_partition`, because a copy
//! of exactly the partition's size also catches a filesystem that claims more blocks than its
//! partition holds.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mender_preauth::test_support::{find_program, require_tools};
use sha2::{Digest, Sha256};

/// Programs `scripts/make-fixtures` runs to build a disk image.
pub const FIXTURE_TOOLS: [&str; 5] = ["mkfs.ext4", "debugfs", "sfdisk", "mkfs.vfat", "mcopy"];

/// Programs `scripts/make-fixtures --bare-data` runs to build a bare data filesystem.
pub const BARE_DATA_TOOLS: [&str; 2] = ["mkfs.ext4", "debugfs"];

/// Programs that judge an ext4 filesystem.
pub const EXT4_JUDGES: [&str; 2] = ["e2fsck", "debugfs"];

/// Partition numbers in the disk images `scripts/make-fixtures` builds.
pub const BOOT_PARTITION: u32 = 1;
pub const ROOTFS_A_PARTITION: u32 = 2;
pub const ROOTFS_B_PARTITION: u32 = 3;
pub const DATA_PARTITION: u32 = 4;

/// Time limit for one run of the tool under test or of a judge.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Result of one run of the `mender-preauth` binary.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Panics with the exit status and stderr unless the run succeeded.
    pub fn assert_success(&self, what: &str) {
        assert!(self.status.success(), "{what} failed with {}; stderr:\n{}", self.status, self.stderr);
    }

    /// Parses stdout as exactly one line holding one JSON value.
    pub fn stdout_json_line(&self) -> serde_json::Value {
        let line = self.stdout.strip_suffix('\n').unwrap_or_else(|| {
            panic!("stdout does not end with a newline: {:?}", self.stdout);
        });
        assert!(!line.contains('\n'), "stdout has more than one line: {:?}", self.stdout);
        serde_json::from_str(line).unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {line:?}"))
    }
}

/// Runs `mender-preauth` with `args` and collects its output.
pub fn run_cli<I, S>(args: I) -> CliRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
    command.args(args);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    CliRun {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("mender-preauth wrote stdout that is not UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `command` with stdin closed and collects its output. Kills it and panics when it runs
/// longer than `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {description}: {error}"));

    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{description} timed out after {} s", timeout.as_secs());
            }
            Err(error) => panic!("failed to wait for {description}: {error}"),
        }
    };

    Output {
        status,
        stdout: stdout.join().expect("stdout reader panicked"),
        stderr: stderr.join().expect("stderr reader panicked"),
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// A child process that is killed and reaped when this value is dropped, also when a test panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finds `program` for a helper whose test already called `require_tools` for it.
fn judge(program: &str) -> PathBuf {
    find_program(program)
        .unwrap_or_else(|| panic!("`{program}` is not installed; call require_tools for it first"))
}

/// Builds the disk image `dir/name` with `scripts/make-fixtures` and `options`. Returns `None`
/// when a fixture tool is missing, after `require_tools` printed why.
pub fn make_fixture(dir: &Path, name: &str, options: &[&str], test: &str) -> Option<PathBuf> {
    require_tools(&FIXTURE_TOOLS, test)?;
    let image = dir.join(name);
    let mut arguments: Vec<&OsStr> = options.iter().map(OsStr::new).collect();
    arguments.push(image.as_os_str());
    run_make_fixtures(&arguments);
    Some(image)
}

/// Builds the bare data filesystem `dir/name` with `scripts/make-fixtures --bare-data` and
/// `options`. Returns `None` when a fixture tool is missing, after `require_tools` printed why.
pub fn make_bare_data(dir: &Path, name: &str, options: &[&str], test: &str) -> Option<PathBuf> {
    require_tools(&BARE_DATA_TOOLS, test)?;
    let image = dir.join(name);
    let mut arguments: Vec<&OsStr> = options.iter().map(OsStr::new).collect();
    arguments.push(OsStr::new("--bare-data"));
    arguments.push(image.as_os_str());
    run_make_fixtures(&arguments);
    Some(image)
}

fn run_make_fixtures(arguments: &[&OsStr]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
    let mut command = Command::new("bash");
    command.arg(&script).args(arguments);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "make-fixtures {arguments:?} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the SHA-256 of the file's content as lower-case hex.
pub fn sha256_file(path: &Path) -> String {
    let mut file =
        File::open(path).unwrap_or_else(|error| panic!("failed to open {}: {error}", path.display()));
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = file
            .read(&mut buffer)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
        if count == 0 {
            break;
        }
        hasher.update(&buffer[..count]);
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One entry of an MBR partition table, with its position in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// The MBR type as sfdisk prints it, e.g. `83` or `c`.
    pub partition_type: String,
    pub bootable: bool,
}

/// Reads the partition table of `image` with `sfdisk -J`.
pub fn partitions(image: &Path) -> Vec<Partition> {
    let mut command = Command::new(judge("sfdisk"));
    command.arg("-J").arg(image).env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "sfdisk -J {} failed with {}; stderr:\n{}",
        image.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("sfdisk -J printed invalid JSON: {error}"));
    let table = &json["partitiontable"];
    assert_eq!(table["unit"], "sectors", "sfdisk -J reports positions in another unit: {table}");
    let sector_size = table["sectorsize"].as_u64().unwrap_or(512);
    let entries = table["partitions"].as_array().unwrap_or_else(|| panic!("no partitions in {table}"));

    entries
        .iter()
        .map(|entry| {
            let node = entry["node"].as_str().unwrap_or_else(|| panic!("partition without node: {entry}"));
            let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let number = node[node.len() - digits..]
                .parse()
                .unwrap_or_else(|error| panic!("no partition number at the end of {node:?}: {error}"));
            let sectors = |field: &str| {
                entry[field].as_u64().unwrap_or_else(|| panic!("partition {node} has no {field}: {entry}"))
            };
            Partition {
                number,
                start_bytes: sectors("start") * sector_size,
                size_bytes: sectors("size") * sector_size,
                partition_type: entry["type"].as_str().unwrap_or_default().to_owned(),
                bootable: entry["bootable"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// Returns partition `number` of `image`, panicking when the table lacks it.
pub fn partition(image: &Path, number: u32) -> Partition {
    let all = partitions(image);
    all.iter()
        .find(|partition| partition.number == number)
        .cloned()
        .unwrap_or_else(|| panic!("{} has no partition {number}: {all:?}", image.display()))
}

/// Copies the bytes of partition `number` of `image` to `dest`, so judges see a file of exactly
/// the partition's size.
pub fn extract_partition(image: &Path, number: u32, dest: &Path) -> PathBuf {
    let partition = partition(image, number);
    let mut source =
        File::open(image).unwrap_or_else(|error| panic!("failed to open {}: {error}", image.display()));
    source
        .seek(SeekFrom::Start(partition.start_bytes))
        .unwrap_or_else(|error| panic!("failed to seek in {}: {error}", image.display()));
    let mut target =
        File::create(dest).unwrap_or_else(|error| panic!("failed to create {}: {error}", dest.display()));
    let copied = std::io::copy(&mut source.take(partition.size_bytes), &mut target)
        .unwrap_or_else(|error| panic!("failed to copy partition {number} of {}: {error}", image.display()));
    assert_eq!(copied, partition.size_bytes, "partition {number} runs past the end of {}", image.display());
    target.flush().unwrap_or_else(|error| panic!("failed to write {}: {error}", dest.display()));
    dest.to_path_buf()
}

/// Returns `IMAGE?offset=BYTES` for partition `number`, a path e2fsck and debugfs open in place.
pub fn offset_path(image: &Path, number: u32) -> PathBuf {
    let partition = partition(image, number);
    let mut path = image.as_os_str().to_owned();
    path.push(format!("?offset={}", partition.start_bytes));
    PathBuf::from(path)
}

/// Runs `e2fsck -fn` on the filesystem at `fs` and panics unless it exits 0 and prints nothing but
/// its version, the five pass headers and the summary line.
pub fn e2fsck_clean(fs: &Path) {
    let mut command = Command::new(judge("e2fsck"));
    command.arg("-fn").arg(fs).env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    let problems: Vec<&str> =
        stdout.lines().chain(stderr.lines()).filter(|line| !is_clean_e2fsck_line(line)).collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "e2fsck -fn {} exited with {} and reported:\n{}\nfull output:\n{stdout}{stderr}",
        fs.display(),
        output.status,
        problems.join("\n")
    );
}

fn is_clean_e2fsck_line(line: &str) -> bool {
    const PASSES: [&str; 5] = [
        "Pass 1: Checking inodes, blocks, and sizes",
        "Pass 2: Checking directory structure",
        "Pass 3: Checking directory connectivity",
        "Pass 4: Checking reference counts",
        "Pass 5: Checking group summary information",
    ];
    let is_version = line.starts_with("e2fsck ");
    let is_summary = line.contains(" files (") && line.ends_with(" blocks");
    PASSES.contains(&line) || is_version || is_summary
}

/// Runs one debugfs request on the filesystem at `fs` and returns its stdout. Panics when debugfs
/// reports an error. It still exits 0 then, so only its stderr shows the error.
fn debugfs(fs: &Path, request: &str, tolerated_error: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut command = Command::new(judge("debugfs"));
    command
        .arg("-R")
        .arg(request)
        .arg(fs)
        .env("LC_ALL", "C")
        .env("PAGER", "__none__")
        .env("DEBUGFS_PAGER", "__none__");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("debugfs ") && !line.is_empty() && !tolerated_error(line))
        .collect();
    assert!(
        output.status.success() && errors.is_empty(),
        "debugfs -R {request:?} {} exited with {} and reported:\n{}",
        fs.display(),
        output.status,
        errors.join("\n")
    );
    output.stdout
}

/// Owner, permissions and size of one inode, as `debugfs stat` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeStat {
    /// `regular`, `directory`, `symlink`, ...
    pub file_type: String,
    /// Permission bits including setuid, setgid and sticky (`i_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
}

/// Reads the inode of `file` in the filesystem at `fs` with `debugfs -R "stat FILE"`.
pub fn debugfs_stat(fs: &Path, file: &str) -> InodeStat {
    let stdout = debugfs(fs, &format!("stat \"{file}\""), |_| false);
    let text = String::from_utf8_lossy(&stdout);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let after = |label: &str| -> &str {
        let position = tokens
            .iter()
            .position(|token| *token == label)
            .unwrap_or_else(|| panic!("debugfs stat {file} printed no {label}:\n{text}"));
        tokens
            .get(position + 1)
            .unwrap_or_else(|| panic!("debugfs stat {file} printed nothing after {label}"))
    };
    let number = |label: &str, radix: u32| -> u64 {
        let value = after(label);
        u64::from_str_radix(value, radix)
            .unwrap_or_else(|error| panic!("debugfs stat {file}: {label} {value:?} is not a number: {error}"))
    };
    let narrow = |value: u64, label: &str| -> u32 {
        u32::try_from(value).unwrap_or_else(|_| panic!("debugfs stat {file}: {label} {value} exceeds u32"))
    };

    InodeStat {
        file_type: after("Type:").to_owned(),
        mode: narrow(number("Mode:", 8), "Mode:"),
        uid: narrow(number("User:", 10), "User:"),
        gid: narrow(number("Group:", 10), "Group:"),
        // The first `Size:` is the file size. A later one belongs to the obsolete fragment fields.
        size: number("Size:", 10),
        links: narrow(number("Links:", 10), "Links:"),
    }
}

/// Reads the content of `file` in the filesystem at `fs` with `debugfs -R "cat FILE"`.
pub fn debugfs_cat(fs: &Path, file: &str) -> Vec<u8> {
    debugfs(fs, &format!("cat \"{file}\""), |_| false)
}

/// Copies the directory `dir` of the filesystem at `fs` into `dest` with `debugfs -R "rdump DIR
/// DEST"` and returns the copy, `dest/<last component of dir>`. Run as root, the copy keeps the
/// owners. Otherwise debugfs cannot change them and reports it, which is ignored here.
pub fn debugfs_dump_dir(fs: &Path, dir: &str, dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest)
        .unwrap_or_else(|error| panic!("failed to create {}: {error}", dest.display()));
    let is_root = effective_uid() == Some(0);
    debugfs(fs, &format!("rdump \"{dir}\" \"{}\"", dest.display()), |line| {
        !is_root && line.contains("while changing ownership")
    });
    let name = Path::new(dir).file_name().unwrap_or_else(|| panic!("{dir:?} has no last component"));
    let copy = dest.join(name);
    assert!(copy.is_dir(), "debugfs rdump {dir} did not create {}", copy.display());
    copy
}

/// Returns this process's effective user ID, read from `/proc/self/status`.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    // The fields are real, effective, saved and filesystem UID.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs a program with `args` and returns its stdout, panicking with its stderr when it fails.
pub fn run_judge<S: AsRef<OsStr> + std::fmt::Debug>(program: &str, args: &[S]) -> Vec<u8> {
    let mut command = Command::new(judge(program));
    command.args(args).env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{program} {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Builds the LMDB file `dir/name` holding `records` with the real mdb_load (MDB_NOSUBDIR).
/// Values are written in mdb_load's printable format, so they must not contain a backslash.
pub fn mdb_load_records(dir: &Path, name: &str, records: &[(&str, &str)]) -> PathBuf {
    let dump = dir.join(format!("{name}.dump"));
    let mut text = String::from("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n");
    for (key, value) in records {
        assert!(!key.contains('\\'), "mdb_load_records takes no backslashes in keys");
        assert!(!value.contains('\\'), "mdb_load_records takes no backslashes in values");
        text.push_str(&format!(" {key}\n {value}\n"));
    }
    text.push_str("DATA=END\n");
    std::fs::write(&dump, text).unwrap_or_else(|error| panic!("failed to write {}: {error}", dump.display()));
    let store = dir.join(name);
    run_judge("mdb_load", &[OsStr::new("-n"), OsStr::new("-f"), dump.as_os_str(), store.as_os_str()]);
    store
}

/// Returns the records of an LMDB file as (key, value) pairs, read with the real `mdb_dump -p`,
/// with its backslash escapes decoded.
pub fn mdb_dump_pairs(store: &Path) -> Vec<(String, String)> {
    let stdout = run_judge("mdb_dump", &[OsStr::new("-n"), OsStr::new("-p"), store.as_os_str()]);
    let text = String::from_utf8(stdout).expect("mdb_dump printed text that is not UTF-8");
    let data: Vec<String> = text
        .lines()
        .skip_while(|line| *line != "HEADER=END")
        .skip(1)
        .take_while(|line| *line != "DATA=END")
        .map(|line| decode_mdb_print(line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    assert!(data.len().is_multiple_of(2), "mdb_dump printed an odd number of data lines:\n{text}");
    data.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
}

/// Decodes mdb_dump's printable format: `\\` is a backslash, `\XX` a byte in hex.
fn decode_mdb_print(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && bytes.get(index + 1) == Some(&b'\\') {
            decoded.push(b'\\');
            index += 2;
        } else if bytes[index] == b'\\' && index + 3 <= bytes.len() {
            let hex =
                std::str::from_utf8(&bytes[index + 1..index + 3]).expect("mdb_dump escape is not ASCII");
            decoded.push(
                u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad mdb_dump escape in {line}")),
            );
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).expect("mdb_dump value is not UTF-8")
}

/// Runs debugfs in write mode with one request per line on the filesystem at `fs`, panicking
/// when it reports an error.
pub fn debugfs_write_requests(fs: &Path, requests: &[String]) {
    let script = tempfile::NamedTempFile::new().expect("failed to create a debugfs script");
    std::fs::write(script.path(), requests.join("\n") + "\n").expect("failed to write the debugfs script");
    let mut command = Command::new(judge("debugfs"));
    command.arg("-w").arg("-f").arg(script.path()).arg(fs);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("debugfs ")).collect();
    assert!(output.status.success(), "debugfs -w {requests:?} failed: {stderr}");
    assert!(errors.is_empty(), "debugfs -w {requests:?} reported errors: {stderr}");
}

/// Lists the names in directory `dir` of the filesystem at `fs` with `debugfs -R "ls -p DIR"`,
/// without `.` and `..`, sorted.
pub fn debugfs_ls(fs: &Path, dir: &str) -> Vec<String> {
    let stdout = debugfs(fs, &format!("ls -p \"{dir}\""), |_| false);
    let text = String::from_utf8_lossy(&stdout);
    // `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| line.split('/').nth(5).map(str::to_owned))
        .filter(|name| name != "." && name != ".." && !name.is_empty())
        .collect();
    names.sort();
    names
}
