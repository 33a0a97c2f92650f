//! The file commands on FAT12, FAT16 and FAT32 boot partitions (`/uboot`, `/boot/efi`,
//! `/boot/grub`), judged by mtools (`mdir`, `mtype`, `mcopy`, `mmd`), `fsck.vfat -n` from
//! dosfstools and `mender-artifact` 3.9, which itself reads and writes vfat with mtools.
//! Each fixture is a `scripts/make-fixtures` disk whose boot partition is replaced by a fresh
//! `mkfs.vfat -F BITS` filesystem holding files that `mcopy` and `mmd` put there.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    BOOT_PARTITION, COMMAND_TIMEOUT, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION, debugfs_cat,
    e2fsck_clean, extract_partition, make_fixture, partition, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::{find_program, require_tools};

/// Programs that build and judge the FAT fixtures.
const FAT_TOOLS: [&str; 6] = ["mkfs.vfat", "fsck.vfat", "mcopy", "mmd", "mdir", "mtype"];

/// The modification time every write in these tests carries, 2023-11-14 22:13:20 UTC.
const SOURCE_DATE_EPOCH: &str = "1700000000";

/// Size of the boot partition: room for a FAT32 filesystem of 512-byte clusters.
const BOOT_MIB: &str = "48";

fn image_arg(image: &Path, path: &str) -> String {
    format!("{}:{path}", image.display())
}

/// Runs this tool with SOURCE_DATE_EPOCH set and returns the run.
fn cli(args: &[&str]) -> common::CliRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mender-preauth"));
    command.args(args).env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    common::CliRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs this tool and panics unless it succeeds; returns stdout.
fn cli_ok(args: &[&str]) -> String {
    let run = cli(args);
    run.assert_success(&format!("mender-preauth {args:?}"));
    run.stdout
}

/// Runs `program` with `args` (mtools with `MTOOLS_SKIP_CHECK`, times in UTC) and returns
/// its output, panicking when it fails.
fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let path = find_program(program).unwrap_or_else(|| panic!("`{program}` is not installed"));
    let mut command = Command::new(path);
    command.args(args).env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").env("LC_ALL", "C");
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{program} {args:?} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The mtools drive for the boot partition of `image`: `IMAGE@@OFFSET`.
fn boot_drive(image: &Path) -> String {
    format!("{}@@{}", image.display(), partition(image, BOOT_PARTITION).start_bytes)
}

/// Lists `dir` of the boot partition with `mdir -a`.
fn mdir(image: &Path, dir: &str) -> String {
    String::from_utf8(tool("mdir", &["-a", "-i", &boot_drive(image), &format!("::{dir}")])).unwrap()
}

/// Reads `file` of the boot partition with `mtype`.
fn mtype(image: &Path, file: &str) -> Vec<u8> {
    tool("mtype", &["-i", &boot_drive(image), &format!("::{file}")])
}

/// Copies the boot partition out and checks it with `fsck.vfat -n`, which exits 0 only when it
/// found nothing to fix.
fn assert_fat_clean(image: &Path, work: &Path) {
    let copy = extract_partition(image, BOOT_PARTITION, &work.join("boot.vfat"));
    let mut command = Command::new(find_program("fsck.vfat").expect("`fsck.vfat` is not installed"));
    command.arg("-n").arg(&copy);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "fsck.vfat -n found problems:\n{report}");
    assert_eq!(
        report.lines().count(),
        2,
        "fsck.vfat -n printed more than its version and summary:\n{report}"
    );
}

/// Host files `mcopy` puts on every fixture's boot partition: names that need long-name entries,
/// a nested directory and a file larger than one cluster.
fn seed_files(work: &Path) -> PathBuf {
    let seed = work.join("seed");
    std::fs::create_dir_all(seed.join("EFI/BOOT")).unwrap();
    std::fs::write(seed.join("EFI/BOOT/grub.cfg"), b"set root=(hd0,2)\n").unwrap();
    std::fs::write(seed.join("Mender Boot Script.txt"), b"bootm 0x80000\n").unwrap();
    std::fs::write(seed.join("uboot.env"), patterned(70_000)).unwrap();
    seed
}

/// A fixture disk whose boot partition holds a fresh FAT of `bits` (12, 16 or 32) with the
/// seed files, or `None` when a tool is missing.
fn fat_fixture(work: &Path, bits: u32, test: &str) -> Option<PathBuf> {
    require_tools(&FAT_TOOLS, test)?;
    require_tools(&EXT4_JUDGES, test)?;
    let image = make_fixture(work, "device.sdimg", &["--rootfs-b", "--boot-mib", BOOT_MIB], test)?;
    let boot = partition(&image, BOOT_PARTITION);
    let vfat = work.join(format!("fat{bits}.vfat"));
    // With 512-byte clusters FAT12 holds at most 4084 clusters (2 MiB) and FAT16 at most 65524
    // (32 MiB), so those get a smaller filesystem at the start of the partition.
    let len = match bits {
        12 => 2 << 20,
        16 => 16 << 20,
        _ => boot.size_bytes,
    };
    std::fs::File::create(&vfat).unwrap().set_len(len).unwrap();
    let bits_arg = bits.to_string();
    tool("mkfs.vfat", &["-F", &bits_arg, "-s", "1", "-n", "BOOT", vfat.to_str().unwrap()]);
    let seed = seed_files(work);
    let drive = vfat.to_str().unwrap();
    tool("mmd", &["-i", drive, "::/EFI", "::/EFI/BOOT"]);
    tool("mcopy", &["-i", drive, seed.join("EFI/BOOT/grub.cfg").to_str().unwrap(), "::/EFI/BOOT/"]);
    tool("mcopy", &["-i", drive, seed.join("Mender Boot Script.txt").to_str().unwrap(), "::/"]);
    tool("mcopy", &["-i", drive, seed.join("uboot.env").to_str().unwrap(), "::/"]);

    let mut disk = OpenOptions::new().write(true).open(&image).unwrap();
    disk.seek(SeekFrom::Start(boot.start_bytes)).unwrap();
    disk.write_all(&std::fs::read(&vfat).unwrap()).unwrap();
    Some(image)
}

/// A file of `len` bytes that repeats no 512-byte sector.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index * 7 + index / 509) as u8).collect()
}

/// Asserts that a run failed with exit status 1 and one line of stderr containing `expected`.
fn assert_one_line_error(run: &common::CliRun, args: &[&str], expected: &str) {
    assert_eq!(run.status.code(), Some(1), "{args:?} did not exit 1; stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} printed more than one line:\n{}", run.stderr);
    assert!(lines[0].contains(expected), "{args:?}: expected {expected:?} in {:?}", lines[0]);
}

/// Writes files and directories through every boot mount point and judges them with mtools
/// and fsck.vfat.
fn writes_are_read_by_mtools(bits: u32) {
    let test = format!("fat{bits}_writes_are_read_by_mtools");
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), bits, &test) else { return };
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"console=ttyS0\n").unwrap();
    let large = work.path().join("kernel.img");
    let content = patterned(300_000);
    std::fs::write(&large, &content).unwrap();

    cli_ok(&["cp", small.to_str().unwrap(), &image_arg(&image, "/uboot/Command Line Options.txt")]);
    cli_ok(&["mkdir", "-p", &image_arg(&image, "/boot/efi/EFI/mender/Long Directory Name")]);
    cli_ok(&[
        "cp",
        large.to_str().unwrap(),
        &image_arg(&image, "/boot/grub/EFI/mender/Long Directory Name/"),
    ]);
    cli_ok(&["cp", small.to_str().unwrap(), &image_arg(&image, "/uboot/uboot.env")]);

    assert_eq!(mtype(&image, "/Command Line Options.txt"), b"console=ttyS0\n");
    assert_eq!(mtype(&image, "/uboot.env"), b"console=ttyS0\n");
    let copied = mtype(&image, "/EFI/mender/Long Directory Name/kernel.img");
    assert!(copied == content, "kernel.img read back with other bytes ({} bytes)", copied.len());
    let root = mdir(&image, "/");
    assert!(root.contains("Command Line Options.txt"), "{root}");
    assert!(root.contains("Mender Boot Script.txt"), "{root}");
    let listed = mdir(&image, "/EFI/mender");
    assert!(listed.contains("Long Directory Name"), "{listed}");
    assert!(listed.contains("2023-11-14  22:13"), "SOURCE_DATE_EPOCH is not the time mdir shows:\n{listed}");
    assert_fat_clean(&image, work.path());
}

#[test]
fn fat12_writes_are_read_by_mtools() {
    writes_are_read_by_mtools(12);
}

#[test]
fn fat16_writes_are_read_by_mtools() {
    writes_are_read_by_mtools(16);
}

#[test]
fn fat32_writes_are_read_by_mtools() {
    writes_are_read_by_mtools(32);
}

#[test]
fn mtools_files_are_read() {
    let test = "mtools_files_are_read";
    let work = tempfile::tempdir().unwrap();
    for bits in [12, 16, 32] {
        let dir = work.path().join(format!("fat{bits}"));
        std::fs::create_dir(&dir).unwrap();
        let Some(image) = fat_fixture(&dir, bits, test) else { return };

        let listing = cli_ok(&["ls", &image_arg(&image, "/uboot")]);
        let env = cli_ok(&["cat", &image_arg(&image, "/boot/efi/EFI/BOOT/grub.cfg")]);
        let long = cli_ok(&["ls", "-l", &image_arg(&image, "/uboot/Mender Boot Script.txt")]);
        let stat = cli_ok(&["stat", &image_arg(&image, "/boot/grub/EFI")]);
        let out = dir.join("out");
        cli_ok(&["cp", "-r", &image_arg(&image, "/uboot"), out.to_str().unwrap()]);

        assert_eq!(listing, "EFI\nMender Boot Script.txt\nuboot.env\n", "FAT{bits}");
        assert_eq!(env, "set root=(hd0,2)\n", "FAT{bits}");
        assert!(long.starts_with("-rwxr-xr-x 1 0 0 14 "), "FAT{bits}: {long}");
        assert!(stat.contains("directory"), "FAT{bits}: {stat}");
        assert!(std::fs::read(out.join("uboot.env")).unwrap() == patterned(70_000), "FAT{bits}: uboot.env");
        assert_eq!(std::fs::read(out.join("EFI/BOOT/grub.cfg")).unwrap(), b"set root=(hd0,2)\n");
    }
}

#[test]
fn rm_and_mkdir_are_seen_by_mdir() {
    let test = "rm_and_mkdir_are_seen_by_mdir";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };

    cli_ok(&["rm", &image_arg(&image, "/uboot/Mender Boot Script.txt")]);
    cli_ok(&["rm", "-r", &image_arg(&image, "/uboot/EFI")]);
    cli_ok(&["mkdir", &image_arg(&image, "/uboot/overlays")]);
    let not_empty = cli(&["rm", &image_arg(&image, "/uboot/overlays")]);

    let root = mdir(&image, "/");
    assert!(!root.contains("Mender Boot Script"), "{root}");
    assert!(!root.contains("EFI"), "{root}");
    assert!(root.contains("OVERLAYS"), "{root}");
    assert!(root.to_uppercase().contains("UBOOT    ENV"), "{root}");
    assert_eq!(not_empty.status.code(), Some(1), "rm without -r removed a directory");
    assert_fat_clean(&image, work.path());
}

#[test]
fn rm_stamps_the_parent_directory_with_the_write_time() {
    let test = "rm_stamps_the_parent_directory_with_the_write_time";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };

    cli_ok(&["rm", &image_arg(&image, "/uboot/EFI/BOOT/grub.cfg")]);

    let efi = mdir(&image, "/EFI");
    let boot = efi.lines().find(|line| line.starts_with("BOOT")).unwrap_or_else(|| panic!("{efi}"));
    assert!(boot.contains("2023-11-14  22:13"), "rm did not stamp SOURCE_DATE_EPOCH on the parent:\n{efi}");
    assert_fat_clean(&image, work.path());
}

#[test]
fn full_fat_leaves_image_unchanged() {
    let test = "full_fat_leaves_image_unchanged";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 12, test) else { return };
    let huge = work.path().join("huge.bin");
    std::fs::write(&huge, patterned(3 << 20)).unwrap();
    let before = sha256_file(&image);
    let args = ["cp", huge.to_str().unwrap(), &image_arg(&image, "/uboot/huge.bin")];

    let run = cli(&args);

    assert_one_line_error(&run, &args, "no space left on the FAT filesystem");
    assert_eq!(sha256_file(&image), before, "a failed write changed the image");
}

#[test]
fn cp_across_rootfs_and_boot_is_all_or_nothing() {
    let test = "cp_across_rootfs_and_boot_is_all_or_nothing";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 12, test) else { return };
    // `cp -r HOST/boot IMAGE:/` writes /boot/grub.conf on rootfs A and B and /boot/efi/... on
    // the FAT boot partition, all in one command.
    let tree = work.path().join("tree/boot");
    std::fs::create_dir_all(tree.join("efi")).unwrap();
    std::fs::write(tree.join("grub.conf"), b"timeout=0\n").unwrap();
    std::fs::write(tree.join("efi/startup.nsh"), b"bootx64.efi\n").unwrap();

    cli_ok(&["cp", "-r", tree.to_str().unwrap(), &image_arg(&image, "/")]);

    assert_eq!(mtype(&image, "/startup.nsh"), b"bootx64.efi\n");
    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let fs = extract_partition(&image, number, &work.path().join(format!("p{number}.ext4")));
        e2fsck_clean(&fs);
        assert_eq!(debugfs_cat(&fs, "/boot/grub.conf"), b"timeout=0\n", "partition {number}");
    }

    // The same copy with a file too large for the FAT changes no partition at all.
    std::fs::write(tree.join("grub.conf"), b"timeout=5\n").unwrap();
    std::fs::write(tree.join("efi/huge.bin"), patterned(3 << 20)).unwrap();
    let before = sha256_file(&image);
    let args = ["cp", "-r", tree.to_str().unwrap(), &image_arg(&image, "/")];

    let run = cli(&args);

    assert_one_line_error(&run, &args, "no space left on the FAT filesystem");
    assert_eq!(sha256_file(&image), before, "a failed copy changed the image");
}

#[test]
fn links_modes_and_owners_are_rejected_on_fat() {
    let test = "links_modes_and_owners_are_rejected_on_fat";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };
    let host = work.path().join("boot.scr");
    std::fs::write(&host, b"boot\n").unwrap();
    let host = host.to_str().unwrap();
    let script = image_arg(&image, "/uboot/uboot.env");
    let target = image_arg(&image, "/uboot/boot.scr");
    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["ln", "-s", "uboot.env", &target], "is FAT, which has no symbolic links"),
        (vec!["chmod", "0644", &script], "is FAT, which has no permission bits or owners"),
        (vec!["chown", "1:1", &script], "is FAT, which has no permission bits or owners"),
        (vec!["install", "-m", "0755", "-o", "1", host, &target], "is FAT, which has no owners"),
        (vec!["install", "-m", "0755", "-g", "root", host, &target], "is FAT, which has no owners"),
    ];
    for (args, expected) in &cases {
        let before = sha256_file(&image);
        let run = cli(args);
        assert_one_line_error(&run, args, expected);
        assert_eq!(sha256_file(&image), before, "{args:?} changed the image");
    }

    // `install -m` alone succeeds, as mender-artifact's does on vfat: FAT keeps no mode.
    cli_ok(&["install", "-m", "0700", host, &target]);

    assert_eq!(mtype(&image, "/boot.scr"), b"boot\n");
    let long = cli_ok(&["ls", "-l", &target]);
    assert!(long.starts_with("-rwxr-xr-x "), "{long}");
}

#[test]
fn mender_artifact_agrees_on_fat_files() {
    let test = "mender_artifact_agrees_on_fat_files";
    if require_tools(&["mender-artifact"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };
    let ours = work.path().join("ours.txt");
    std::fs::write(&ours, b"written by mender-preauth\n").unwrap();
    let theirs = work.path().join("theirs.txt");
    std::fs::write(&theirs, b"written by mender-artifact\n").unwrap();

    cli_ok(&["cp", ours.to_str().unwrap(), &image_arg(&image, "/uboot/ours.txt")]);
    let mut command = Command::new("mender-artifact");
    command.args(["cat", &image_arg(&image, "/uboot/ours.txt")]);
    let read_by_artifact = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let mut command = Command::new("mender-artifact");
    command.args(["cp", theirs.to_str().unwrap(), &image_arg(&image, "/uboot/theirs.txt")]);
    let written_by_artifact = run_with_timeout(&mut command, COMMAND_TIMEOUT);

    assert!(read_by_artifact.status.success(), "{}", String::from_utf8_lossy(&read_by_artifact.stderr));
    assert_eq!(read_by_artifact.stdout, b"written by mender-preauth\n");
    assert!(written_by_artifact.status.success(), "{}", String::from_utf8_lossy(&written_by_artifact.stderr));
    assert_eq!(cli_ok(&["cat", &image_arg(&image, "/uboot/theirs.txt")]), "written by mender-artifact\n");
    assert_fat_clean(&image, work.path());
}

#[test]
fn damaged_fat_fails_in_one_line() {
    let test = "damaged_fat_fails_in_one_line";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };
    let start = partition(&image, BOOT_PARTITION).start_bytes;
    let pristine = std::fs::read(&image).unwrap();
    let reserved_sectors =
        u64::from(u16::from_le_bytes([pristine[start as usize + 14], pristine[start as usize + 15]]));
    let fat = start + reserved_sectors * 512;
    // Cluster 3 links to itself (FAT16 entry at byte 6 of the FAT), a chain that never ends.
    let cases: [(u64, &[u8], &str); 4] = [
        (fat + 6, &[3, 0], "the chain through clusters 3 and 3 loops"),
        (start + 0x0D, &[0], "sectors per cluster"),
        (start + 0x16, &[0xFF, 0xFF], "fill all"),
        (start + 0x0B, &[0x00, 0x03], "768 bytes per sector"),
    ];
    for (offset, bytes, expected) in cases {
        let damaged = work.path().join("damaged.sdimg");
        let mut content = pristine.clone();
        content[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&damaged, &content).unwrap();
        let args = ["ls", "-R", &image_arg(&damaged, "/uboot")];

        let run = cli(&args);

        assert_one_line_error(&run, &args, expected);
    }
}

#[test]
fn random_damage_never_panics() {
    let test = "random_damage_never_panics";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 12, test) else { return };
    let start = partition(&image, BOOT_PARTITION).start_bytes as usize;
    let pristine = std::fs::read(&image).unwrap();
    let damaged = work.path().join("damaged.sdimg");
    // A fixed linear congruential sequence, so that a failure repeats: it flips bytes of the
    // boot sector, the FATs, the root directory and the first data clusters.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let host = work.path().join("file");
    std::fs::write(&host, b"x\n").unwrap();
    for round in 0..60 {
        let mut content = pristine.clone();
        for _ in 0..8 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let offset = start + (state >> 33) as usize % (64 * 1024);
            content[offset] = (state >> 24) as u8;
        }
        std::fs::write(&damaged, &content).unwrap();
        let commands: [Vec<String>; 3] = [
            vec!["ls".into(), "-l".into(), "-R".into(), image_arg(&damaged, "/uboot")],
            vec!["cat".into(), image_arg(&damaged, "/uboot/uboot.env")],
            vec!["cp".into(), host.to_str().unwrap().into(), image_arg(&damaged, "/uboot/EFI/BOOT/new.txt")],
        ];
        for args in &commands {
            let run = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                matches!(run.status.code(), Some(0 | 1)),
                "round {round}: {args:?} exited {}",
                run.status
            );
            assert!(!run.stderr.contains("panicked"), "round {round}: {args:?} panicked:\n{}", run.stderr);
        }
    }
}

/// Byte offset in `image` of the root directory entry with the 11-byte short name `short`, found
/// through the BPB of the boot partition.
fn root_entry_offset(image: &[u8], start: usize, short: &[u8; 11]) -> usize {
    let u16_at =
        |offset: usize| usize::from(u16::from_le_bytes([image[start + offset], image[start + offset + 1]]));
    let u32_at = |offset: usize| {
        u32::from_le_bytes(image[start + offset..start + offset + 4].try_into().unwrap()) as usize
    };
    let bytes_per_sector = u16_at(0x0B);
    let sectors_per_cluster = usize::from(image[start + 0x0D]);
    let fat_sectors = if u16_at(0x16) != 0 { u16_at(0x16) } else { u32_at(0x24) };
    let root_entries = u16_at(0x11);
    let fats_end = (u16_at(0x0E) + usize::from(image[start + 0x10]) * fat_sectors) * bytes_per_sector;
    let data = fats_end + root_entries * 32;
    let root = if root_entries != 0 {
        fats_end
    } else {
        data + (u32_at(0x2C) - 2) * sectors_per_cluster * bytes_per_sector
    };
    (0..bytes_per_sector * sectors_per_cluster / 32)
        .map(|index| start + root + index * 32)
        .find(|&offset| &image[offset..offset + 11] == short)
        .unwrap_or_else(|| panic!("no root entry {:?}", String::from_utf8_lossy(short)))
}

/// Runs `ls`, `cat`, `rm` and `cp` on a damaged copy of `image` and asserts that each fails in
/// one line containing `expected` and leaves the copy unchanged.
fn assert_damage_rejected(image: &Path, work: &Path, damage: &[(usize, &[u8])], expected: &str) {
    let mut content = std::fs::read(image).unwrap();
    for (offset, bytes) in damage {
        content[*offset..*offset + bytes.len()].copy_from_slice(bytes);
    }
    let damaged = work.join("damaged.sdimg");
    std::fs::write(&damaged, &content).unwrap();
    let before = sha256_file(&damaged);
    let host = work.join("host.txt");
    std::fs::write(&host, b"x\n").unwrap();
    let commands: [Vec<String>; 4] = [
        vec!["ls".into(), "-R".into(), image_arg(&damaged, "/uboot")],
        vec!["cat".into(), image_arg(&damaged, "/uboot/uboot.env")],
        vec!["rm".into(), image_arg(&damaged, "/uboot/uboot.env")],
        vec!["cp".into(), host.to_str().unwrap().into(), image_arg(&damaged, "/uboot/new.txt")],
    ];
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let run = cli(&args);

        assert_one_line_error(&run, &args, expected);
        assert!(run.stderr.contains(&format!("partition {BOOT_PARTITION}")), "{args:?}: {:?}", run.stderr);
        assert_eq!(sha256_file(&damaged), before, "{args:?} changed the image");
    }
}

#[test]
fn cross_linked_entry_is_rejected() {
    let test = "cross_linked_entry_is_rejected";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };
    let start = partition(&image, BOOT_PARTITION).start_bytes as usize;
    let content = std::fs::read(&image).unwrap();
    let env = root_entry_offset(&content, start, b"UBOOT   ENV");
    let script = root_entry_offset(&content, start, b"MENDER~1TXT");
    let env_cluster = content[env + 0x1A..env + 0x1C].to_vec();

    // The script's entry starts at the first cluster of uboot.env, a cross-link as `fsck.vfat`
    // reports it. The error names the second of the two entries in on-disk order.
    assert_damage_rejected(
        &image,
        work.path(),
        &[(script + 0x1A, &env_cluster)],
        &format!("cluster {}", u16::from_le_bytes([env_cluster[0], env_cluster[1]])),
    );

    // mcopy writes the 70,000 bytes of uboot.env to consecutive clusters, so its first cluster
    // plus one lies in the middle of its chain.
    let inside = u16::from_le_bytes([env_cluster[0], env_cluster[1]]) + 1;
    assert_damage_rejected(
        &image,
        work.path(),
        &[(script + 0x1A, &inside.to_le_bytes())],
        &format!(
            "/Mender Boot Script.txt starts at cluster {inside}, inside the cluster chain of another entry"
        ),
    );
}

#[test]
fn start_cluster_beyond_volume_is_rejected() {
    let test = "start_cluster_beyond_volume_is_rejected";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 16, test) else { return };
    let start = partition(&image, BOOT_PARTITION).start_bytes as usize;
    let content = std::fs::read(&image).unwrap();
    let env = root_entry_offset(&content, start, b"UBOOT   ENV");

    assert_damage_rejected(
        &image,
        work.path(),
        &[(env + 0x1A, &0xFFF0u16.to_le_bytes())],
        "/uboot.env starts at cluster 65520, outside clusters 2 to",
    );
}

#[test]
fn fat32_high_cluster_half_is_checked() {
    let test = "fat32_high_cluster_half_is_checked";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fat_fixture(work.path(), 32, test) else { return };
    let start = partition(&image, BOOT_PARTITION).start_bytes as usize;
    let content = std::fs::read(&image).unwrap();
    let env = root_entry_offset(&content, start, b"UBOOT   ENV");

    assert_damage_rejected(
        &image,
        work.path(),
        &[(env + 0x14, &[0, 1])],
        "/uboot.env starts at cluster 1677",
    );
}
