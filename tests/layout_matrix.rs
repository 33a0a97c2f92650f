//! `provision`, `inspect` and the file commands on every image layout `scripts/make-fixtures`
//! builds: four MBR partitions, MBR with swap and the data partition in a logical partition
//! (p6), GPT, MBR without a boot partition, and a bare data filesystem. Each layout gets the same
//! checks, judged by `e2fsck -fn` and `debugfs` on every ext partition and by `mender-artifact`
//! 3.9 where it can read the layout. mender-artifact 3.9 reads only disk images of exactly four
//! partitions in the order boot, rootfs A, rootfs B, data ("invalid partition table" otherwise)
//! and no bare filesystems, so on the other layouts debugfs writes the files that this tool reads.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{
    EXT4_JUDGES, debugfs_cat, debugfs_stat, debugfs_write_requests, e2fsck_clean, extract_partition,
    make_bare_data, make_fixture, run_cli, run_judge,
};
use mender_preauth::test_support::require_tools;

/// Programs these tests use besides the fixture tools.
const JUDGES: [&str; 4] = ["e2fsck", "debugfs", "openssl", "mender-artifact"];

/// One image layout and where its partitions are.
struct Layout {
    /// Name of the image file. mender-artifact picks GPT images by the `.uefiimg` suffix.
    file_name: &'static str,
    /// Options of `scripts/make-fixtures`; `None` builds a bare data filesystem.
    fixture_options: Option<&'static [&'static str]>,
    /// Numbers of the rootfs A and B partitions; empty for a bare filesystem.
    rootfs: &'static [u32],
    /// Number of the data partition; 0 for a bare filesystem.
    data: u32,
    /// (number, role) of every partition as `inspect --json` lists it; `-` for no role.
    roles: &'static [(u64, &'static str)],
    /// Whether mender-artifact 3.9 can read and write this layout.
    artifact_reads: bool,
}

const FOUR_PARTITION_MBR: Layout = Layout {
    file_name: "device.sdimg",
    fixture_options: Some(&["--rootfs-b"]),
    rootfs: &[2, 3],
    data: 4,
    roles: &[(1, "boot"), (2, "rootfs-a"), (3, "rootfs-b"), (4, "data")],
    artifact_reads: true,
};

const MBR_WITH_SWAP: Layout = Layout {
    file_name: "device.sdimg",
    fixture_options: Some(&["--rootfs-b", "--swap-mib", "8"]),
    rootfs: &[2, 3],
    data: 6,
    roles: &[(1, "boot"), (2, "rootfs-a"), (3, "rootfs-b"), (5, "-"), (6, "data")],
    artifact_reads: false,
};

const GPT: Layout = Layout {
    file_name: "device.uefiimg",
    fixture_options: Some(&["--rootfs-b", "--label", "gpt"]),
    rootfs: &[2, 3],
    data: 4,
    roles: &[(1, "boot"), (2, "rootfs-a"), (3, "rootfs-b"), (4, "data")],
    artifact_reads: true,
};

const MBR_WITHOUT_BOOT: Layout = Layout {
    file_name: "device.sdimg",
    fixture_options: Some(&["--rootfs-b", "--no-boot"]),
    rootfs: &[1, 2],
    data: 3,
    roles: &[(1, "rootfs-a"), (2, "rootfs-b"), (3, "data")],
    artifact_reads: false,
};

const BARE_DATA: Layout = Layout {
    file_name: "data.dataimg",
    fixture_options: None,
    rootfs: &[],
    data: 0,
    roles: &[(0, "data")],
    artifact_reads: false,
};

/// A layout's image built in a temporary directory, with helpers for its partitions.
struct Fixture {
    layout: &'static Layout,
    work: tempfile::TempDir,
    image: PathBuf,
}

impl Fixture {
    /// Builds the image, or returns `None` after saying which tool is missing.
    fn build(layout: &'static Layout, test: &str) -> Option<Fixture> {
        require_tools(&JUDGES, test)?;
        require_tools(&EXT4_JUDGES, test)?;
        let work = tempfile::tempdir().unwrap();
        let image = match layout.fixture_options {
            Some(options) => make_fixture(work.path(), layout.file_name, options, test)?,
            None => make_bare_data(work.path(), layout.file_name, &[], test)?,
        };
        Some(Fixture { layout, work, image })
    }

    fn is_bare(&self) -> bool {
        self.layout.fixture_options.is_none()
    }

    /// Returns `IMAGE:PATH` for a path on the running device. On a bare data filesystem `/data`
    /// is the filesystem's root, because such an image has no mapping.
    fn arg(&self, device_path: &str) -> String {
        let path = match device_path.strip_prefix("/data") {
            Some(inner) if self.is_bare() => inner,
            _ => device_path,
        };
        format!("{}:{path}", self.image.display())
    }

    /// Copies partition `number` out for the judges and returns the copy, or the image itself
    /// for a bare filesystem.
    fn extract(&self, number: u32) -> PathBuf {
        if self.is_bare() {
            return self.image.clone();
        }
        extract_partition(&self.image, number, &self.work.path().join(format!("p{number}.ext4")))
    }

    /// Runs `e2fsck -fn` on every ext partition.
    fn assert_all_clean(&self) {
        for &number in self.layout.rootfs.iter().chain([&self.layout.data]) {
            e2fsck_clean(&self.extract(number));
        }
    }

    fn host_file(&self, name: &str, content: &[u8], mode: u32) -> String {
        let path = self.work.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// Runs this tool and panics unless it succeeds; returns stdout.
fn cli_ok(args: &[&str]) -> String {
    let run = run_cli(args);
    run.assert_success(&format!("mender-preauth {args:?}"));
    run.stdout
}

fn mender_artifact(args: &[&str]) -> Vec<u8> {
    run_judge("mender-artifact", args)
}

/// Returns `len` bytes in which no two offsets within a block repeat.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index * 7 + index / 4096) as u8).collect()
}

/// Checks the roles `inspect --json` gives every partition.
fn check_roles(fixture: &Fixture) {
    let run = run_cli(["inspect", "--json", fixture.image.to_str().unwrap()]);
    run.assert_success("inspect --json");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let roles: Vec<(u64, String)> = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|partition| {
            let role = partition["role"].as_str().unwrap_or("-").to_string();
            (partition["number"].as_u64().unwrap(), role)
        })
        .collect();
    let expected: Vec<(u64, String)> =
        fixture.layout.roles.iter().map(|&(number, role)| (number, role.to_string())).collect();
    assert_eq!(roles, expected, "inspect --json:\n{}", run.stdout);
}

/// Provisions the image with an openssl key and checks the key file with every judge.
fn check_provision(fixture: &Fixture) {
    let key = fixture.work.path().join("device-key.pem");
    run_judge("openssl", &["genrsa", "-traditional", "-out", key.to_str().unwrap(), "2048"]);
    let key_bytes = std::fs::read(&key).unwrap();
    let mut args = vec!["provision", fixture.image.to_str().unwrap(), "--key", key.to_str().unwrap()];
    args.extend(["-i", "mac=02:12:61:13:6c:42"]);
    if fixture.is_bare() {
        args.extend(["--target-layout", "64le"]);
    }

    let run = run_cli(&args);

    run.assert_success("provision");
    let request = run.stdout_json_line();
    assert!(request["pubkey"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"), "{request}");
    fixture.assert_all_clean();
    let data = fixture.extract(fixture.layout.data);
    assert!(debugfs_cat(&data, "/mender/mender-agent.pem") == key_bytes, "debugfs read another key");
    let stat = debugfs_stat(&data, "/mender/mender-agent.pem");
    assert_eq!(stat.file_type, "regular");
    assert_eq!(stat.mode, 0o600);
    assert_eq!((stat.uid, stat.gid), (0, 0));
    assert!(!debugfs_cat(&data, "/mender/mender-store").is_empty(), "no mender-store");
    if fixture.layout.artifact_reads {
        let read_back = mender_artifact(&["cat", &fixture.arg("/data/mender/mender-agent.pem")]);
        assert!(read_back == key_bytes, "mender-artifact read another key");
    }
    assert!(cli_ok(&["cat", &fixture.arg("/data/mender/mender-agent.pem")]).as_bytes() == key_bytes);
}

/// Writes files with `cp` and `install` and checks them with debugfs and mender-artifact.
fn check_files_written_here(fixture: &Fixture) {
    // Larger than a block and not a whole number of blocks; under mender-artifact's 32 KiB
    // limit for `cat`.
    let content = patterned(20_000);
    let host = fixture.host_file("layout.bin", &content, 0o640);
    let config = fixture.host_file("layout.conf", b"answer=42\n", 0o644);

    cli_ok(&["install", "-m", "0600", "-o", "1000", "-g", "50", &config, &fixture.arg("/data/mender/")]);
    if !fixture.is_bare() {
        cli_ok(&["cp", &host, &fixture.arg("/etc/layout.bin")]);
    }

    fixture.assert_all_clean();
    for &number in fixture.layout.rootfs {
        let fs = fixture.extract(number);
        assert!(debugfs_cat(&fs, "/etc/layout.bin") == content, "partition {number} has other bytes");
        let stat = debugfs_stat(&fs, "/etc/layout.bin");
        assert_eq!(stat.mode, 0o640, "partition {number}");
        assert_eq!((stat.uid, stat.gid), (0, 0), "partition {number}");
        assert_eq!(stat.size, 20_000, "partition {number}");
    }
    let data = fixture.extract(fixture.layout.data);
    assert_eq!(debugfs_cat(&data, "/mender/layout.conf"), b"answer=42\n");
    let stat = debugfs_stat(&data, "/mender/layout.conf");
    assert_eq!(stat.mode, 0o600);
    assert_eq!((stat.uid, stat.gid), (1000, 50));
    if fixture.layout.artifact_reads {
        assert!(mender_artifact(&["cat", &fixture.arg("/etc/layout.bin")]) == content);
        assert_eq!(mender_artifact(&["cat", &fixture.arg("/data/mender/layout.conf")]), b"answer=42\n");
    }
}

/// Writes files with mender-artifact where it reads the layout, else with debugfs, and reads
/// them back with `cat`, `stat` and `ls -l`.
fn check_files_written_elsewhere(fixture: &Fixture) {
    let host = fixture.host_file("other.conf", b"{\"other\":1}\n", 0o644);
    if fixture.layout.artifact_reads {
        mender_artifact(&["cp", &host, &fixture.arg("/etc/mender/other.conf")]);
        mender_artifact(&["install", "-m", "0640", &host, &fixture.arg("/data/mender/other.conf")]);
    } else {
        for &number in fixture.layout.rootfs {
            let requests =
                [format!("write {host} /etc/mender/other.conf"), sif_mode("/etc/mender/other.conf", 0o644)];
            debugfs_write_requests(&common::offset_path(&fixture.image, number), &requests);
        }
        let requests = [format!("write {host} /mender/other.conf"), sif_mode("/mender/other.conf", 0o640)];
        let data = if fixture.is_bare() {
            fixture.image.clone()
        } else {
            common::offset_path(&fixture.image, fixture.layout.data)
        };
        debugfs_write_requests(&data, &requests);
    }

    if !fixture.is_bare() {
        assert_eq!(cli_ok(&["cat", &fixture.arg("/etc/mender/other.conf")]), "{\"other\":1}\n");
        let stat = cli_ok(&["stat", &fixture.arg("/etc/mender/other.conf")]);
        assert!(stat.contains("Access: (0644/-rw-r--r--)  Uid: 0  Gid: 0"), "{stat}");
    }
    assert_eq!(cli_ok(&["cat", &fixture.arg("/data/mender/other.conf")]), "{\"other\":1}\n");
    let stat = cli_ok(&["stat", &fixture.arg("/data/mender/other.conf")]);
    assert!(stat.contains("Access: (0640/-rw-r-----)  Uid: 0  Gid: 0"), "{stat}");
    let listing = cli_ok(&["ls", "-l", &fixture.arg("/data/mender")]);
    let line = listing.lines().find(|line| line.ends_with(" other.conf")).unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(..5), Some(&["-rw-r-----", "1", "0", "0", "12"][..]), "{listing}");
    fixture.assert_all_clean();
}

/// Returns the debugfs request that sets the permission bits of a regular file.
fn sif_mode(path: &str, mode: u32) -> String {
    format!("sif {path} mode 0{:o}", 0o100000 | mode)
}

/// Runs every check on one layout, each on a fresh image.
fn check_layout(layout: &'static Layout, test: &str) {
    let Some(fixture) = Fixture::build(layout, test) else { return };
    check_roles(&fixture);
    check_provision(&fixture);

    let Some(fixture) = Fixture::build(layout, test) else { return };
    check_files_written_here(&fixture);

    let Some(fixture) = Fixture::build(layout, test) else { return };
    check_files_written_elsewhere(&fixture);
}

#[test]
fn layout_four_partition_mbr() {
    check_layout(&FOUR_PARTITION_MBR, "layout_four_partition_mbr");
}

#[test]
fn layout_mbr_with_swap_logical_data() {
    let test = "layout_mbr_with_swap_logical_data";
    check_layout(&MBR_WITH_SWAP, test);

    let Some(fixture) = Fixture::build(&MBR_WITH_SWAP, test) else { return };
    let types: Vec<(u32, String)> = common::partitions(&fixture.image)
        .into_iter()
        .map(|partition| (partition.number, partition.partition_type))
        .collect();
    let expected = [(1, "c"), (2, "83"), (3, "83"), (4, "5"), (5, "82"), (6, "83")];
    let expected: Vec<(u32, String)> = expected.iter().map(|&(number, kind)| (number, kind.into())).collect();
    assert_eq!(types, expected, "sfdisk -J of the fixture");
    let swap = common::partition(&fixture.image, 5);
    let mut signature = vec![0u8; 10];
    let image = std::fs::File::open(&fixture.image).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&image, &mut signature, swap.start_bytes + 4096 - 10).unwrap();
    assert_eq!(signature, b"SWAPSPACE2", "partition 5 holds no swap signature");
}

#[test]
fn layout_gpt() {
    check_layout(&GPT, "layout_gpt");
}

#[test]
fn layout_mbr_without_boot() {
    check_layout(&MBR_WITHOUT_BOOT, "layout_mbr_without_boot");
}

#[test]
fn layout_bare_data_filesystem() {
    check_layout(&BARE_DATA, "layout_bare_data_filesystem");
}
