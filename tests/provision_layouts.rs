//! `mender-preauth provision` and `inspect` on images of 32-bit and big-endian targets. The store
//! is read and written in the target's LMDB layout, judged by Debian's i386 and s390x builds of
//! `mdb_dump` and `mdb_stat`. A store in another layout is reported without changing the image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, ROOTFS_A_PARTITION, debugfs_cat, debugfs_write_requests, e2fsck_clean,
    extract_partition, make_bare_data, make_fixture, offset_path, run_cli, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::{
    ForeignLmdb, ForeignLmdbTool, require_foreign_lmdb_tools, require_i386_lmdb_tools, require_tools,
};

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 4] = ["e2fsck", "debugfs", "openssl", "mdb_load"];

/// `e_machine` of 32-bit ARM.
const EM_ARM: u16 = 40;
/// `e_flags` of an armhf binary: EABI version 5, hard-float ABI.
const ARMHF_FLAGS: u32 = 0x0500_0400;

/// The i386 LMDB tools.
struct I386Tools {
    load: ForeignLmdbTool,
    dump: ForeignLmdbTool,
    stat: ForeignLmdbTool,
}

fn i386_tools(test: &str) -> Option<I386Tools> {
    let mut tools = require_i386_lmdb_tools(&["mdb_load", "mdb_dump", "mdb_stat"], test)?;
    let stat = tools.pop()?;
    let dump = tools.pop()?;
    let load = tools.pop()?;
    Some(I386Tools { load, dump, stat })
}

/// Runs `command` and returns its stdout, panicking with its stderr when it fails.
fn run_command(mut command: Command) -> String {
    let description = format!("{command:?}");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{description} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn host_command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("LC_ALL", "C");
    command
}

/// Makes an RSA key with openssl and returns its path.
fn openssl_rsa_key(dir: &Path) -> PathBuf {
    let path = dir.join("device.pem");
    let mut command = host_command("openssl");
    command.args(["genrsa", "-traditional", "-out", path.to_str().unwrap(), "2048"]);
    run_command(command);
    path
}

/// Replaces `/usr/bin/mender` on rootfs A with the ELF header of a 32-bit little-endian ARM
/// executable for the hard-float ABI (`e_ident`, `e_type` 2, `e_machine` 40, `e_flags` as
/// Debian's armhf binaries have them).
fn make_rootfs_32_bit_arm(image: &Path, dir: &Path) {
    let mut header = vec![0u8; 52];
    header[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1]);
    header[16] = 2;
    header[18..20].copy_from_slice(&EM_ARM.to_le_bytes());
    header[36..40].copy_from_slice(&ARMHF_FLAGS.to_le_bytes());
    let arm_binary = dir.join("arm-mender");
    std::fs::write(&arm_binary, &header).unwrap();
    debugfs_write_requests(
        &offset_path(image, ROOTFS_A_PARTITION),
        &["rm /usr/bin/mender".to_string(), format!("write {} /usr/bin/mender", arm_binary.display())],
    );
}

/// Builds an LMDB file holding `records` (printable text) with `mdb_load` (MDB_NOSUBDIR).
fn load_store(mut mdb_load: Command, dir: &Path, name: &str, records: &[(&str, String)]) -> PathBuf {
    let dump = dir.join(format!("{name}.dump"));
    let mut text = String::from("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n");
    for (key, value) in records {
        text.push_str(&format!(" {key}\n {value}\n"));
    }
    text.push_str("DATA=END\n");
    std::fs::write(&dump, text).unwrap();
    let store = dir.join(name);
    mdb_load.args(["-n", "-f", dump.to_str().unwrap(), store.to_str().unwrap()]);
    run_command(mdb_load);
    store
}

/// Returns the records of an LMDB file as (key, value) text pairs, as `mdb_dump -p` prints them.
fn dump_records(mut mdb_dump: Command, store: &Path) -> Vec<(String, String)> {
    mdb_dump.args(["-n", "-p", store.to_str().unwrap()]);
    let text = run_command(mdb_dump);
    let data: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "HEADER=END")
        .skip(1)
        .take_while(|line| *line != "DATA=END")
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    data.chunks(2).map(|pair| (pair[0].to_string(), pair[1].to_string())).collect()
}

/// Returns the number after `field` in the main database section of `mdb_stat -n`.
fn main_db_stat(mut mdb_stat: Command, store: &Path, field: &str) -> u64 {
    mdb_stat.args(["-n", store.to_str().unwrap()]);
    let text = run_command(mdb_stat);
    let line = text
        .lines()
        .skip_while(|line| !line.starts_with("Status of Main DB"))
        .find(|line| line.trim_start().starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in mdb_stat output:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Copies mender-store out of a filesystem image into `dir` and returns its path.
fn store_from(fs: &Path, dir: &Path) -> PathBuf {
    let store = dir.join("store-copy");
    std::fs::write(&store, debugfs_cat(fs, "/mender/mender-store")).unwrap();
    store
}

fn put_store(image: &Path, store: &Path) {
    debugfs_write_requests(
        &offset_path(image, DATA_PARTITION),
        &[format!("write {} /mender/mender-store", store.display())],
    );
}

fn provision(image: &Path, key: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec!["provision", image.to_str().unwrap(), "--key", key.to_str().unwrap(), "-i", IDENTITY];
    args.extend_from_slice(extra);
    run_cli(args)
}

#[test]
fn arm_target_store_is_edited_in_32_bit_layout() {
    let test = "arm_target_store_is_edited_in_32_bit_layout";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let Some(i386) = i386_tools(test) else { return };
    make_rootfs_32_bit_arm(&image, dir.path());
    // A value of three pages lies on overflow pages, and 300 filler records need two leaf levels.
    let large_value = "0123456789abcdef".repeat(800);
    let mut records = vec![
        ("artifact-name", "release-7".to_string()),
        ("authtoken", "token-of-the-old-key".to_string()),
        ("update-control-maps", large_value.clone()),
    ];
    let filler: Vec<(String, String)> =
        (0..300).map(|index| (format!("filler-{index:04}"), format!("value number {index}"))).collect();
    records.extend(filler.iter().map(|(key, value)| (key.as_str(), value.clone())));
    let store = load_store(i386.load.command(), dir.path(), "mender-store", &records);
    assert!(main_db_stat(i386.stat.command(), &store, "Tree depth:") >= 2);
    put_store(&image, &store);
    let key = openssl_rsa_key(dir.path());

    let run = provision(&image, &key, &["-v"]);

    run.assert_success("provision for a 32-bit ARM target");
    assert!(
        run.stderr.contains("armhf (32-bit little-endian)"),
        "stderr does not name the target: {}",
        run.stderr
    );
    assert!(run.stderr.contains("removed authtoken from /mender/mender-store"), "{}", run.stderr);
    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = store_from(&data, dir.path());
    let mut expected: Vec<(String, String)> = records
        .iter()
        .filter(|(key, _)| *key != "authtoken")
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    expected.sort();
    assert_eq!(dump_records(i386.dump.command(), &written), expected);
    assert_eq!(main_db_stat(i386.stat.command(), &written, "Entries:"), expected.len() as u64);
    assert!(main_db_stat(i386.stat.command(), &written, "Overflow pages:") >= 3);
    assert_eq!(debugfs_cat(&data, "/mender/mender-agent.pem"), std::fs::read(&key).unwrap());

    let inspect = run_cli(["inspect", image.to_str().unwrap()]);
    inspect.assert_success("inspect the provisioned image");
    assert!(inspect.stdout.contains("target: armhf (32-bit little-endian) (32le)"), "{}", inspect.stdout);
    assert!(inspect.stdout.contains("32-bit little-endian LMDB): 302 records"), "{}", inspect.stdout);
    assert!(!inspect.stdout.contains("warning: mender-store"), "{}", inspect.stdout);
    let json = run_cli(["inspect", "--json", image.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["store"]["layout"], "32le");
    assert_eq!(report["target"]["layout"], "32le");
}

#[test]
fn arm_target_without_store_gets_32_bit_store() {
    let test = "arm_target_without_store_gets_32_bit_store";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let Some(i386) = i386_tools(test) else { return };
    make_rootfs_32_bit_arm(&image, dir.path());
    let key = openssl_rsa_key(dir.path());

    provision(&image, &key, &[]).assert_success("provision for a 32-bit ARM target");

    let data = extract_partition(&image, DATA_PARTITION, &dir.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = store_from(&data, dir.path());
    assert_eq!(&std::fs::read(&written).unwrap()[12..16], &0xBEEF_C0DEu32.to_le_bytes());
    assert_eq!(dump_records(i386.dump.command(), &written), Vec::<(String, String)>::new());
    assert_eq!(main_db_stat(i386.stat.command(), &written, "Entries:"), 0);
}

#[test]
fn store_in_other_layout_fails_and_changes_nothing() {
    let test = "store_in_other_layout_fails_and_changes_nothing";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(dir.path(), "device.sdimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    make_rootfs_32_bit_arm(&image, dir.path());
    let records = [("artifact-name", "release-7".to_string()), ("authtoken", "old".to_string())];
    let store_64 = load_store(host_command("mdb_load"), dir.path(), "mender-store", &records);
    put_store(&image, &store_64);
    let key = openssl_rsa_key(dir.path());
    let before = sha256_file(&image);

    let run = provision(&image, &key, &[]);

    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "not one line: {}", run.stderr);
    assert!(run.stderr.contains(image.to_str().unwrap()), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is in the 64-bit little-endian LMDB layout, but the target is 32-bit little-endian"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--target-layout"), "{}", run.stderr);
    assert_eq!(sha256_file(&image), before, "the image changed");

    let inspect = run_cli(["inspect", image.to_str().unwrap()]);
    inspect.assert_success("inspect the image");
    assert!(
        inspect.stdout.contains(
            "warning: mender-store is in the 64-bit little-endian LMDB layout, but the target is armhf (32-bit little-endian)"
        ),
        "{}",
        inspect.stdout
    );
}

#[test]
fn target_layout_option_chooses_store_layout() {
    let test = "target_layout_option_chooses_store_layout";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_bare_data(dir.path(), "data.dataimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };
    let Some(i386) = i386_tools(test) else { return };
    let Some(s390x) = require_foreign_lmdb_tools(ForeignLmdb::S390x, &["mdb_dump"], test) else { return };
    let key = openssl_rsa_key(dir.path());

    let big_32_dry = provision(&image, &key, &["--target-layout", "32be", "--dry-run"]);
    let big_32 = provision(&image, &key, &["--target-layout", "32be"]);

    big_32_dry.assert_success("provision --dry-run with --target-layout 32be");
    let would_leave = format!("{}: would leave /mender/mender-store alone: ", image.display());
    assert!(big_32_dry.stderr.contains(&would_leave), "{}", big_32_dry.stderr);
    big_32.assert_success("provision with --target-layout 32be");
    let left = format!("{}: left /mender/mender-store alone: ", image.display());
    assert!(big_32.stderr.contains(&left), "{}", big_32.stderr);
    assert!(big_32.stderr.contains("32-bit big-endian"), "{}", big_32.stderr);
    let listing = run_command({
        let mut command = host_command("debugfs");
        command.args(["-R", "ls /mender", image.to_str().unwrap()]);
        command
    });
    assert!(!listing.contains("mender-store"), "32be wrote a store: {listing}");

    provision(&image, &key, &["--target-layout", "32le"])
        .assert_success("provision with --target-layout 32le");

    e2fsck_clean(&image);
    let little_32 = store_from(&image, dir.path());
    assert_eq!(dump_records(i386.dump.command(), &little_32), Vec::<(String, String)>::new());

    let wrong = provision(&image, &key, &["--target-layout", "64le"]);

    assert_eq!(wrong.status.code(), Some(1), "stderr: {}", wrong.stderr);
    assert!(
        wrong.stderr.contains("is in the 32-bit little-endian LMDB layout, but the target is 64-bit"),
        "{}",
        wrong.stderr
    );

    let big_64_image = make_bare_data(dir.path(), "big.dataimg", &[], test).unwrap();
    provision(&big_64_image, &key, &["--target-layout", "64be"])
        .assert_success("provision with --target-layout 64be");
    e2fsck_clean(&big_64_image);
    let big_64 = store_from(&big_64_image, dir.path());
    assert_eq!(&std::fs::read(&big_64).unwrap()[16..20], &0xBEEF_C0DEu32.to_be_bytes());
    assert_eq!(dump_records(s390x[0].command(), &big_64), Vec::<(String, String)>::new());
}
