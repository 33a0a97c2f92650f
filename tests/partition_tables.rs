//! `provision` and `inspect` on GPT images, on images with 4096-byte sectors and on an MBR image
//! without a boot partition, all built by `scripts/make-fixtures` with sfdisk or fdisk.
//!
//! The partition table must stay unchanged, as `sfdisk --verify` and `sfdisk -d` judge it, or
//! `fdisk -b 4096`, because sfdisk 2.38 cannot set the sector size of an image file. `e2fsck -fn`
//! and `debugfs` judge the data partition, and `mender-artifact cat` reads the key back out of a
//! GPT image.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, debugfs_cat, e2fsck_clean, extract_partition, make_fixture,
    run_cli, run_judge, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::{find_program, require_tools};

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 5] = ["e2fsck", "debugfs", "openssl", "fdisk", "mender-artifact"];

/// Offset of the primary GPT header's disk GUID in a 512-byte-sector image: LBA 1, field 0x38.
const PRIMARY_HEADER_GUID_OFFSET: u64 = 512 + 0x38;
/// Offset of the name of the first entry in the primary partition entry array (LBA 2).
const PRIMARY_ENTRY_NAME_OFFSET: u64 = 2 * 512 + 0x38;

/// Checks for every program the tests here run. Returns false when one is missing and the test
/// is skipped.
fn tools_present(test: &str) -> bool {
    require_tools(&JUDGES, test).is_some() && require_tools(&EXT4_JUDGES, test).is_some()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Makes an RSA key with openssl and returns its path.
fn openssl_rsa_key(dir: &Path) -> PathBuf {
    let path = dir.join("device-key.pem");
    run_judge("openssl", &["genrsa", "-traditional", "-out", path_str(&path), "2048"]);
    path
}

/// Returns the public key of a private key in `pem` as `openssl pkey -pubout` prints it.
fn openssl_pubout(pem: &[u8], dir: &Path) -> String {
    let key = dir.join("key-for-pubout.pem");
    std::fs::write(&key, pem).unwrap();
    let public = run_judge("openssl", &["pkey", "-pubout", "-in", path_str(&key)]);
    std::fs::remove_file(&key).unwrap();
    String::from_utf8(public).unwrap()
}

/// Runs `provision IMAGE --key KEY -i IDENTITY` with `extra` arguments after them.
fn provision(image: &Path, key: &Path, extra: &[&str]) -> common::CliRun {
    let mut args = vec!["provision", path_str(image), "--key", path_str(key), "-i", IDENTITY];
    args.extend_from_slice(extra);
    run_cli(args)
}

/// Returns `sfdisk -d IMAGE`: the partition table as a script, which names every field sfdisk reads.
fn sfdisk_dump(image: &Path) -> String {
    String::from_utf8(run_judge("sfdisk", &["-d", path_str(image)])).unwrap()
}

/// Runs `sfdisk --verify IMAGE` and panics unless it finds no errors.
fn sfdisk_verify(image: &Path) {
    let report = String::from_utf8(run_judge("sfdisk", &["--verify", path_str(image)])).unwrap();
    assert!(report.contains("No errors detected."), "sfdisk --verify {}:\n{report}", image.display());
}

/// Returns `fdisk -b 4096 -l IMAGE`, the table as fdisk lists it with 4096-byte sectors.
fn fdisk_4096_list(image: &Path) -> String {
    String::from_utf8(run_judge("fdisk", &["-b", "4096", "-l", path_str(image)])).unwrap()
}

/// Runs fdisk's verify command on IMAGE with 4096-byte sectors and panics unless it finds no errors.
fn fdisk_4096_verify(image: &Path) {
    let fdisk = find_program("fdisk").unwrap();
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg("printf 'v\\nq\\n' | \"$0\" -b 4096 \"$1\"")
        .arg(fdisk)
        .arg(image)
        .env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("No errors detected."), "fdisk -b 4096 verify {}:\n{report}", image.display());
}

/// Returns (start, size) in bytes of partition `number` as `fdisk -b 4096 -l` lists it.
fn fdisk_4096_partition(image: &Path, number: u32) -> (u64, u64) {
    let listing = fdisk_4096_list(image);
    let device = format!("{}{number} ", image.display());
    let line = listing
        .lines()
        .find(|line| line.starts_with(&device))
        .unwrap_or_else(|| panic!("fdisk lists no partition {number}:\n{listing}"));
    let fields: Vec<u64> =
        line[device.len()..].split_whitespace().map_while(|field| field.parse().ok()).collect();
    // The fields after the device name are Start, End and Sectors (a "*" boot flag is skipped).
    let [start, _end, sectors, ..] = fields[..] else {
        panic!("unexpected fdisk line {line:?}");
    };
    (start * 4096, sectors * 4096)
}

/// Copies `len` bytes at `start` of `image` to `dest`.
fn extract_bytes(image: &Path, start: u64, len: u64, dest: &Path) -> PathBuf {
    let file = std::fs::File::open(image).unwrap();
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, start).unwrap();
    std::fs::write(dest, bytes).unwrap();
    dest.to_path_buf()
}

/// Inverts the byte at `offset` of `image`.
fn corrupt(image: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(image).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[!byte[0]], offset).unwrap();
}

/// Returns the offset of the backup GPT header of a 512-byte-sector image: its last sector.
fn backup_header_offset(image: &Path) -> u64 {
    std::fs::metadata(image).unwrap().len() / 512 * 512 - 512
}

/// Returns the bytes `mender-artifact cat IMAGE:PATH` prints, panicking when it fails.
fn mender_artifact_cat(image: &Path, path: &str) -> Vec<u8> {
    run_judge("mender-artifact", &["cat", &format!("{}:{path}", image.display())])
}

/// Runs `inspect --json IMAGE` with `extra` arguments and returns the parsed object.
fn inspect_json(image: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["inspect", "--json", path_str(image)];
    args.extend_from_slice(extra);
    let run = run_cli(args);
    run.assert_success("inspect --json");
    serde_json::from_str(&run.stdout).unwrap_or_else(|error| panic!("inspect printed invalid JSON: {error}"))
}

/// Returns (number, role, role_reason) of every partition in an `inspect --json` report.
fn roles(report: &serde_json::Value) -> Vec<(u64, String, String)> {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|partition| {
            (
                partition["number"].as_u64().unwrap(),
                partition["role"].as_str().unwrap_or("-").to_string(),
                partition["role_reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn role(number: u64, role: &str, reason: &str) -> (u64, String, String) {
    (number, role.to_string(), reason.to_string())
}

#[test]
fn gpt_image_provisions_end_to_end() {
    let test = "gpt_image_provisions_end_to_end";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    let table_before = sfdisk_dump(&image);

    let run = provision(&image, &key, &[]);

    run.assert_success("provision of a GPT image");
    assert!(!run.stderr.contains("warning"), "unexpected warning:\n{}", run.stderr);
    sfdisk_verify(&image);
    assert_eq!(sfdisk_dump(&image), table_before, "the partition table changed");
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    let read_back = mender_artifact_cat(&image, "/data/mender/mender-agent.pem");
    assert!(read_back == written, "mender-artifact read another key than debugfs");
    assert_eq!(
        openssl_pubout(&read_back, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path()),
        "the key on the image is not the key given to provision"
    );
}

#[test]
fn inspect_shows_gpt_names_types_and_roles() {
    let test = "inspect_shows_gpt_names_types_and_roles";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };

    let report = inspect_json(&image, &[]);

    assert_eq!(report["partition_table"], "gpt");
    assert_eq!(report["sector_size"], 512);
    assert_eq!(
        roles(&report),
        vec![
            role(1, "boot", "vfat filesystem"),
            role(2, "rootfs-a", "holds /etc/mender"),
            role(3, "rootfs-b", "unformatted, after rootfs A"),
            role(4, "data", "holds /mender"),
        ]
    );
    let partitions = report["partitions"].as_array().unwrap();
    let names: Vec<&str> = partitions.iter().map(|partition| partition["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boot", "rootfsa", "rootfsb", "data"]);
    assert_eq!(partitions[0]["type_id"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(partitions[0]["type_name"], "EFI System");
    assert_eq!(partitions[3]["type_id"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(partitions[3]["type_name"], "Linux filesystem");
    assert_eq!(partitions[3]["start"], 48 << 20);

    let text = run_cli(["inspect", path_str(&image)]);
    text.assert_success("inspect");
    assert!(text.stdout.contains("partition table: gpt, 512-byte sectors"), "{}", text.stdout);
    let data_line = text.stdout.lines().find(|line| line.starts_with("4 ")).unwrap();
    for cell in ["0FC63DAF-8483-4772-8E79-3D69D8477DE4", " data ", "data (holds /mender)"] {
        assert!(data_line.contains(cell), "{cell:?} missing from {data_line:?}");
    }
}

#[test]
fn damaged_primary_gpt_header_uses_backup() {
    let test = "damaged_primary_gpt_header_uses_backup";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    let table_before = sfdisk_dump(&image);
    corrupt(&image, PRIMARY_HEADER_GUID_OFFSET);
    let damaged_header = extract_bytes(&image, 0, 1 << 20, &work.path().join("header-before"));

    let run = provision(&image, &key, &[]);

    run.assert_success("provision with a damaged primary GPT header");
    assert!(
        run.stderr.contains("the primary GPT at LBA 1 is invalid (header CRC32"),
        "no warning about the primary header:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("the backup GPT at LBA"), "{}", run.stderr);
    let header_after = extract_bytes(&image, 0, 1 << 20, &work.path().join("header-after"));
    assert_eq!(sha256_file(&header_after), sha256_file(&damaged_header), "the damaged header was rewritten");
    // libfdisk reads the backup too when the primary is damaged, so it lists the same partitions.
    assert_eq!(sfdisk_dump(&image), table_before);
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    assert_eq!(
        openssl_pubout(&written, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path())
    );
}

#[test]
fn damaged_primary_entry_array_uses_backup() {
    let test = "damaged_primary_entry_array_uses_backup";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    corrupt(&image, PRIMARY_ENTRY_NAME_OFFSET);

    let run = provision(&image, &key, &[]);

    run.assert_success("provision with a damaged primary entry array");
    assert!(
        run.stderr.contains("the primary GPT at LBA 1 is invalid (partition entry array CRC32"),
        "no warning about the entry array:\n{}",
        run.stderr
    );
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    assert!(!debugfs_cat(&data, "/mender/mender-agent.pem").is_empty());
}

/// Provisions `image` and checks that the run fails with one line naming the image and `cause`,
/// leaving the image byte for byte as it was.
fn assert_rejected_unchanged(image: &Path, key: &Path, cause: &str) {
    let before = sha256_file(image);

    let run = provision(image, key, &[]);

    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    let error_lines: Vec<&str> = run.stderr.lines().filter(|line| line.contains("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{}", run.stderr);
    assert!(error_lines[0].contains(&image.display().to_string()), "{}", error_lines[0]);
    assert!(error_lines[0].contains(cause), "{cause:?} missing from {}", error_lines[0]);
    assert_eq!(sha256_file(image), before, "the rejected image changed");
}

#[test]
fn both_gpt_headers_damaged_is_rejected() {
    let test = "both_gpt_headers_damaged_is_rejected";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    corrupt(&image, PRIMARY_HEADER_GUID_OFFSET);
    corrupt(&image, backup_header_offset(&image) + 0x38);

    assert_rejected_unchanged(
        &image,
        &key,
        "invalid GPT partition table: the primary GPT at LBA 1 is invalid",
    );
}

#[test]
fn both_gpt_entry_arrays_damaged_is_rejected() {
    let test = "both_gpt_entry_arrays_damaged_is_rejected";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    // sfdisk puts the backup array in the 32 sectors before the backup header.
    let backup_array = backup_header_offset(&image) - 32 * 512;
    corrupt(&image, PRIMARY_ENTRY_NAME_OFFSET);
    corrupt(&image, backup_array + 0x38);

    assert_rejected_unchanged(&image, &key, "partition entry array CRC32");
}

#[test]
fn gpt_with_4096_byte_sectors_provisions() {
    let test = "gpt_with_4096_byte_sectors_provisions";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let options = ["--label", "gpt", "--sector-size", "4096"];
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &options, test) else { return };
    let key = openssl_rsa_key(work.path());
    let table_before = fdisk_4096_list(&image);
    let (data_start, data_len) = fdisk_4096_partition(&image, DATA_PARTITION);
    assert_eq!((data_start, data_len), (48 << 20, 16 << 20), "make-fixtures changed its layout");

    let report = inspect_json(&image, &[]);
    assert_eq!(report["sector_size"], 4096);
    assert_eq!(report["partitions"][3]["start"], data_start);
    let run = provision(&image, &key, &[]);

    run.assert_success("provision of a 4096-byte-sector GPT image");
    assert!(!run.stderr.contains("warning"), "unexpected warning:\n{}", run.stderr);
    assert_eq!(fdisk_4096_list(&image), table_before, "the partition table changed");
    fdisk_4096_verify(&image);
    let data = extract_bytes(&image, data_start, data_len, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    assert_eq!(
        openssl_pubout(&written, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path())
    );
}

#[test]
fn wrong_sector_size_option_is_rejected() {
    let test = "wrong_sector_size_option_is_rejected";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let options = ["--label", "gpt", "--sector-size", "4096"];
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &options, test) else { return };
    let key = openssl_rsa_key(work.path());
    let before = sha256_file(&image);

    let run = provision(&image, &key, &["--sector-size", "512"]);

    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("so the image has 4096-byte sectors, not the 512 requested"),
        "{}",
        run.stderr
    );
    assert_eq!(sha256_file(&image), before);
}

#[test]
fn mbr_with_4096_byte_sectors_provisions() {
    let test = "mbr_with_4096_byte_sectors_provisions";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &["--sector-size", "4096"], test) else {
        return;
    };
    let key = openssl_rsa_key(work.path());
    let table_before = fdisk_4096_list(&image);
    let (data_start, data_len) = fdisk_4096_partition(&image, DATA_PARTITION);

    let run = provision(&image, &key, &[]);

    run.assert_success("provision of a 4096-byte-sector MBR image");
    assert_eq!(fdisk_4096_list(&image), table_before, "the partition table changed");
    let data = extract_bytes(&image, data_start, data_len, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    assert_eq!(
        openssl_pubout(&written, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path())
    );
    let report = inspect_json(&image, &[]);
    assert_eq!(report["partition_table"], "mbr");
    assert_eq!(report["sector_size"], 4096);
}

#[test]
fn mbr_without_boot_partition_provisions() {
    let test = "mbr_without_boot_partition_provisions";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &["--no-boot"], test) else { return };
    let key = openssl_rsa_key(work.path());
    let table_before = sfdisk_dump(&image);

    let report = inspect_json(&image, &[]);
    assert_eq!(
        roles(&report),
        vec![
            role(1, "rootfs-a", "holds /etc/mender"),
            role(2, "rootfs-b", "unformatted, after rootfs A"),
            role(3, "data", "holds /mender"),
        ]
    );
    let run = provision(&image, &key, &["-v"]);

    run.assert_success("provision of an image without a boot partition");
    assert!(run.stderr.contains("data partition: partition 3"), "{}", run.stderr);
    sfdisk_verify(&image);
    assert_eq!(sfdisk_dump(&image), table_before, "the partition table changed");
    let data = extract_partition(&image, 3, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    assert_eq!(
        openssl_pubout(&written, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path())
    );
}

#[test]
fn ext_boot_partition_is_found_by_its_kernel() {
    let test = "ext_boot_partition_is_found_by_its_kernel";
    if require_tools(&["mkfs.ext4"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let staging = work.path().join("boot");
    std::fs::create_dir_all(staging.join("extlinux")).unwrap();
    std::fs::write(staging.join("zImage"), b"not really a kernel").unwrap();
    let boot_fs = work.path().join("boot.ext4");
    std::fs::File::create(&boot_fs).unwrap().set_len(8 << 20).unwrap();
    run_judge("mkfs.ext4", &["-q", "-F", "-L", "boot", "-d", path_str(&staging), path_str(&boot_fs)]);
    let image_file = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    image_file.write_all_at(&std::fs::read(&boot_fs).unwrap(), 8 << 20).unwrap();

    let report = inspect_json(&image, &[]);

    let boot = &report["partitions"][0];
    assert_eq!(boot["filesystem"], "ext4");
    assert_eq!(boot["role"], "boot");
    let reason = boot["role_reason"].as_str().unwrap();
    assert!(reason == "holds /zImage" || reason == "holds /extlinux", "unexpected reason {reason:?}");
    assert_eq!(report["partitions"][3]["role"], "data");
}

/// Replaces the protective MBR of `image` by a hybrid one that sfdisk writes: an 0xEE entry over
/// the GPT area and a FAT32 entry of `boot_sectors` sectors at the boot partition's start.
fn write_hybrid_mbr(image: &Path, boot_sectors: u64, work: &Path) {
    let scratch = work.join("hybrid-mbr.scratch");
    std::fs::File::create(&scratch).unwrap().set_len(std::fs::metadata(image).unwrap().len()).unwrap();
    let script = work.join("hybrid-mbr.sfdisk");
    let boot_start = (8 << 20) / 512;
    std::fs::write(
        &script,
        format!(
            "label: dos\nunit: sectors\n\nstart=1, size={}, type=ee\nstart={boot_start}, size={boot_sectors}, type=c\n",
            boot_start - 1
        ),
    )
    .unwrap();
    let sfdisk = find_program("sfdisk").unwrap();
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg("\"$0\" --quiet --no-reread --no-tell-kernel \"$1\" <\"$2\"")
        .arg(sfdisk)
        .arg(&scratch)
        .arg(&script);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(output.status.success(), "sfdisk failed: {}", String::from_utf8_lossy(&output.stderr));

    let mut mbr = [0u8; 512];
    std::fs::File::open(&scratch).unwrap().read_exact_at(&mut mbr, 0).unwrap();
    std::fs::OpenOptions::new().write(true).open(image).unwrap().write_all_at(&mbr, 0).unwrap();
}

#[test]
fn hybrid_mbr_matching_gpt_provisions() {
    let test = "hybrid_mbr_matching_gpt_provisions";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    write_hybrid_mbr(&image, (8 << 20) / 512, work.path());
    sfdisk_verify(&image);
    let table_before = sfdisk_dump(&image);
    let mbr_before = extract_bytes(&image, 0, 512, &work.path().join("mbr-before"));

    let run = provision(&image, &key, &[]);

    run.assert_success("provision of a GPT image with a hybrid MBR");
    assert_eq!(sfdisk_dump(&image), table_before, "the GPT changed");
    let mbr_after = extract_bytes(&image, 0, 512, &work.path().join("mbr-after"));
    assert_eq!(std::fs::read(mbr_after).unwrap(), std::fs::read(mbr_before).unwrap(), "the MBR changed");
    let data = extract_partition(&image, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    let written = debugfs_cat(&data, "/mender/mender-agent.pem");
    assert_eq!(
        openssl_pubout(&written, work.path()),
        openssl_pubout(&std::fs::read(&key).unwrap(), work.path())
    );
}

#[test]
fn hybrid_mbr_disagreeing_with_gpt_is_rejected() {
    let test = "hybrid_mbr_disagreeing_with_gpt_is_rejected";
    if !tools_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.uefiimg", &["--label", "gpt"], test) else { return };
    let key = openssl_rsa_key(work.path());
    write_hybrid_mbr(&image, (4 << 20) / 512, work.path());

    assert_rejected_unchanged(&image, &key, "hybrid MBR: its partition 2 (type 0x0c");
}
