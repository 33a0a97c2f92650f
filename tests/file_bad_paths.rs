//! Bad `IMAGE:/PATH` arguments across the file commands. A malformed argument (`IMAGE:relative`,
//! `IMAGE:`, a bad mode, no image path at all) is a usage error with exit status 2. A path that
//! cannot be used exits with 1: a missing image, `..` climbing out of a partition, a missing
//! partition, a directory where a file is expected or the reverse, or a symbolic link leading out
//! of the image, also as the destination of `cp`. Either way stderr holds exactly one line naming
//! the argument and the cause, stdout stays empty, and the image keeps its SHA-256.

mod common;

use std::path::{Path, PathBuf};

use common::{make_fixture, run_cli, sha256_file};

/// Sizes that keep the images small, because every case hashes its image twice.
const SMALL: [&str; 6] = ["--rootfs-mib", "8", "--data-mib", "8", "--boot-mib", "8"];

/// One rejected command: its arguments, the exit status and the text its error line contains.
struct Case {
    args: Vec<String>,
    status: i32,
    cause: String,
}

fn case(args: &[&str], status: i32, cause: &str) -> Case {
    Case { args: args.iter().map(|arg| arg.to_string()).collect(), status, cause: cause.to_string() }
}

fn image_arg(image: &Path, path: &str) -> String {
    format!("{}:{path}", image.display())
}

/// Builds a fixture with `options` added to the small sizes.
fn small_fixture(dir: &Path, name: &str, options: &[&str], test: &str) -> Option<PathBuf> {
    let mut all = SMALL.to_vec();
    all.extend_from_slice(options);
    make_fixture(dir, name, &all, test)
}

/// Runs each case against `image` and checks status, the one stderr line, stdout and the hash.
fn assert_all_rejected(image: &Path, cases: &[Case]) {
    for case in cases {
        let before = sha256_file(image);

        let run = run_cli(&case.args);

        let args = &case.args;
        assert_eq!(run.status.code(), Some(case.status), "{args:?}: stderr:\n{}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} printed other than one line:\n{}", run.stderr);
        assert!(lines[0].contains(&case.cause), "{args:?}: expected {:?} in {:?}", case.cause, lines[0]);
        assert!(run.stdout.is_empty(), "{args:?} printed on stdout: {:?}", run.stdout);
        assert_eq!(sha256_file(image), before, "{args:?} changed the image");
    }
}

/// Runs this tool and panics unless it succeeds.
fn cli_ok(args: &[&str]) {
    run_cli(args).assert_success(&format!("mender-preauth {args:?}"));
}

#[test]
fn malformed_image_paths_are_usage_errors() {
    let test = "malformed_image_paths_are_usage_errors";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = small_fixture(work.path(), "device.sdimg", &["--rootfs-b"], test) else { return };
    let host = work.path().join("file");
    std::fs::write(&host, b"x").unwrap();
    let host = host.to_str().unwrap();
    let other_host = work.path().join("other").to_str().unwrap().to_string();
    let relative = image_arg(&image, "etc/hostname");
    let empty = format!("{}:", image.display());
    let absolute_needed = "the path inside the image must be absolute";
    let no_path = "no path inside the image follows the colon";

    let cases = vec![
        case(&["cp", host, &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["cp", host, &empty], 2, &format!("{empty}: {no_path}")),
        case(&["cp", &relative, &other_host], 2, &format!("{relative}: {absolute_needed}")),
        case(&["cat", &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["cat", &empty], 2, &format!("{empty}: {no_path}")),
        case(&["ls", &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["stat", &empty], 2, &format!("{empty}: {no_path}")),
        case(&["rm", &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["mkdir", &empty], 2, &format!("{empty}: {no_path}")),
        case(&["ln", "-s", "x", &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["chmod", "0644", &empty], 2, &format!("{empty}: {no_path}")),
        case(&["chown", "0:0", &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["install", "-m", "0644", host, &relative], 2, &format!("{relative}: {absolute_needed}")),
        case(&["cp", host, &other_host], 2, "neither SRC nor DST is IMAGE:/PATH"),
        case(&["chmod", "u+q", &image_arg(&image, "/etc/hostname")], 2, "u+q"),
        case(&["install", "-m", "0999", host, &image_arg(&image, "/etc/x")], 2, "invalid mode \"0999\""),
        case(&["chown", ":", &image_arg(&image, "/etc/hostname")], 2, "invalid owner \":\""),
    ];
    assert_all_rejected(&image, &cases);
    assert!(!Path::new(&other_host).exists(), "a host file was written");
}

#[test]
fn unusable_paths_fail_in_one_line() {
    let test = "unusable_paths_fail_in_one_line";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = small_fixture(work.path(), "device.sdimg", &["--rootfs-b"], test) else { return };
    let host = work.path().join("file");
    std::fs::write(&host, b"x").unwrap();
    let host = host.to_str().unwrap();
    let host_out = work.path().join("out").to_str().unwrap().to_string();
    let host_dir = work.path().join("tree");
    std::fs::create_dir(&host_dir).unwrap();
    let host_dir = host_dir.to_str().unwrap();
    let missing = work.path().join("missing.sdimg");
    let img = |path: &str| image_arg(&image, path);
    cli_ok(&["ln", "-s", "../../..", &img("/etc/updir")]);
    cli_ok(&["ln", "-s", "../../../../outside", &img("/etc/outlink")]);

    let not_a_dir = "/etc/hostname: not a directory";
    let climbs_rootfs = "climbs out of the root filesystem";
    let cases = vec![
        // The image does not exist.
        case(&["cat", &image_arg(&missing, "/etc/hostname")], 1, "missing.sdimg does not exist"),
        case(&["ls", &image_arg(&missing, "/")], 1, "missing.sdimg does not exist"),
        case(&["cp", host, &image_arg(&missing, "/etc/x")], 1, "missing.sdimg does not exist"),
        case(&["rm", &image_arg(&missing, "/etc/x")], 1, "missing.sdimg does not exist"),
        // `..` that climbs out of a partition, written or reached through a symbolic link.
        case(&["cat", &img("/../etc/hostname")], 1, climbs_rootfs),
        case(&["cp", host, &img("/data/../etc/x")], 1, "climbs out of the data partition"),
        case(&["mkdir", &img("/data/../x")], 1, "climbs out of the data partition"),
        case(&["ln", "-s", "x", &img("/../x")], 1, climbs_rootfs),
        case(&["ls", &img("/var/lib/mender/../..")], 1, "climbs out of the data partition"),
        case(&["cp", host, &img("/etc/updir/x")], 1, climbs_rootfs),
        case(&["cat", &img("/etc/updir/etc/hostname")], 1, climbs_rootfs),
        case(&["cat", &img("/etc/outlink")], 1, climbs_rootfs),
        case(&["cp", &img("/etc/outlink"), &host_out], 1, climbs_rootfs),
        case(&["cp", host, &img("/etc/outlink")], 1, climbs_rootfs),
        case(&["install", "-m", "0644", host, &img("/etc/outlink")], 1, climbs_rootfs),
        case(&["chmod", "0600", &img("/etc/outlink")], 1, climbs_rootfs),
        // A directory where a file is expected.
        case(&["cat", &img("/etc")], 1, &format!("{}: is a directory", img("/etc"))),
        case(&["cp", &img("/etc"), &host_out], 1, "is a directory; use -r"),
        case(&["rm", &img("/etc/mender")], 1, "is a directory; use -r"),
        case(&["ln", "-s", "x", &img("/etc")], 1, &format!("{}: already exists", img("/etc"))),
        case(&["cp", "-r", host_dir, &img("/etc/hostname")], 1, "/etc/hostname: already exists"),
        // A file where a directory is expected, also through a trailing slash.
        case(&["cp", host, &img("/etc/hostname/x")], 1, not_a_dir),
        case(&["cp", host, &img("/etc/hostname/")], 1, not_a_dir),
        case(&["mkdir", &img("/etc/hostname/d")], 1, not_a_dir),
        case(&["mkdir", "-p", &img("/etc/hostname/a/b")], 1, not_a_dir),
        case(&["ln", "-s", "x", &img("/etc/hostname/l")], 1, not_a_dir),
        case(&["cat", &img("/etc/hostname/")], 1, not_a_dir),
        case(&["ls", &img("/etc/hostname/")], 1, not_a_dir),
        case(&["stat", &img("/etc/hostname/")], 1, not_a_dir),
        case(&["rm", &img("/etc/hostname/")], 1, not_a_dir),
        case(&["chmod", "0600", &img("/etc/hostname/")], 1, not_a_dir),
        case(&["rm", &img("/bin/sh/")], 1, "/bin/busybox: not a directory"),
    ];
    assert_all_rejected(&image, &cases);
    assert!(!Path::new(&host_out).exists(), "a host file was written");
    assert!(!Path::new("/outside").exists(), "a file was written outside the image");
}

#[test]
fn missing_partitions_fail_in_one_line() {
    let test = "missing_partitions_fail_in_one_line";
    let work = tempfile::tempdir().unwrap();
    let no_data_options = ["--no-mender-dir", "--data-label", "other"];
    let Some(no_data) = small_fixture(work.path(), "no-data.sdimg", &no_data_options, test) else { return };
    let Some(no_boot) = small_fixture(work.path(), "no-boot.sdimg", &["--no-boot"], test) else { return };
    let host = work.path().join("file");
    std::fs::write(&host, b"x").unwrap();
    let host = host.to_str().unwrap();
    cli_ok(&["ln", "-s", "/uboot/boot.scr", &image_arg(&no_boot, "/etc/bootlink")]);
    let no_data_partition = "the image has no data partition";

    let data = |path: &str| image_arg(&no_data, path);
    let cases = vec![
        case(&["cp", host, &data("/data/x")], 1, no_data_partition),
        case(&["cp", host, &data("/var/lib/mender/x")], 1, no_data_partition),
        case(&["install", "-m", "0600", host, &data("/data/mender/x")], 1, no_data_partition),
        case(&["install", "-d", &data("/data/app")], 1, no_data_partition),
        case(&["mkdir", "-p", &data("/data/app")], 1, no_data_partition),
        case(&["ln", "-s", "x", &data("/data/link")], 1, no_data_partition),
        case(&["rm", &data("/data/x")], 1, no_data_partition),
        case(&["ls", &data("/data")], 1, no_data_partition),
    ];
    assert_all_rejected(&no_data, &cases);

    let boot = |path: &str| image_arg(&no_boot, path);
    let no_boot_partition = "the image has no boot partition";
    let cases = vec![
        case(&["cp", host, &boot("/uboot/boot.scr")], 1, no_boot_partition),
        case(&["cp", host, &boot("/etc/bootlink")], 1, no_boot_partition),
        case(&["cat", &boot("/etc/bootlink")], 1, no_boot_partition),
    ];
    assert_all_rejected(&no_boot, &cases);
}

/// Replaces the only occurrence of `old` in `image` with `new`, which has the same length: a
/// directory entry's name on a filesystem without metadata checksums, so nothing else changes.
fn rename_entry_bytes(image: &Path, old: &[u8], new: &[u8]) {
    assert_eq!(old.len(), new.len());
    let mut bytes = std::fs::read(image).unwrap();
    let found: Vec<usize> =
        bytes.windows(old.len()).enumerate().filter(|(_, w)| *w == old).map(|(at, _)| at).collect();
    assert_eq!(found.len(), 1, "{} occurrences of the placeholder", found.len());
    bytes[found[0]..found[0] + new.len()].copy_from_slice(new);
    std::fs::write(image, bytes).unwrap();
}

/// Runs `cp -r IMAGE:/data DEST` and checks that it fails with one line containing `cause`.
fn assert_copy_out_refused(image: &Path, destination: &Path, cause: &str) {
    let run = run_cli(["cp", "-r", &image_arg(image, "/data"), destination.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(cause), "{}", run.stderr);
}

#[test]
fn entry_name_with_slash_cannot_lead_cp_out_of_its_destination() {
    let test = "entry_name_with_slash_cannot_lead_cp_out_of_its_destination";
    let dir = tempfile::tempdir().unwrap();
    let options = ["--data-fs-options", "-b 4096 -O ^metadata_csum"];
    let Some(image) = small_fixture(dir.path(), "hostile.sdimg", &options, test) else { return };
    let payload = dir.path().join("payload");
    std::fs::write(&payload, "from the image\n").unwrap();
    run_cli(["cp", payload.to_str().unwrap(), &image_arg(&image, "/data/QQQQQQQQQQQQQQQQ")])
        .assert_success("cp");
    rename_entry_bytes(&image, b"QQQQQQQQQQQQQQQQ", b"../escaped-file1");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    assert_copy_out_refused(&image, &out.join("data"), "../escaped-file1 has an invalid file name");

    assert!(!out.join("escaped-file1").exists(), "cp -r wrote outside its destination");
}

#[test]
fn link_and_directory_of_one_name_cannot_lead_cp_out_of_its_destination() {
    let test = "link_and_directory_of_one_name_cannot_lead_cp_out_of_its_destination";
    let dir = tempfile::tempdir().unwrap();
    let options = ["--data-fs-options", "-b 4096 -O ^metadata_csum"];
    let Some(image) = small_fixture(dir.path(), "hostile.sdimg", &options, test) else { return };
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, "from the image\n").unwrap();
    run_cli(["ln", "-s", victim.to_str().unwrap(), &image_arg(&image, "/data/LNKA")]).assert_success("ln");
    run_cli(["mkdir", &image_arg(&image, "/data/LNKB")]).assert_success("mkdir");
    run_cli(["cp", payload.to_str().unwrap(), &image_arg(&image, "/data/LNKB/payload")]).assert_success("cp");
    rename_entry_bytes(&image, b"LNKB", b"LNKA");

    assert_copy_out_refused(&image, &dir.path().join("out"), "exists and is not a directory");

    assert!(!victim.join("payload").exists(), "cp -r wrote through a link it made");
}
