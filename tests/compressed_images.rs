//! Compressed images (`.sdimg.gz`, `.xz`, `.zst`, `.bz2`), made at test time with the real gzip,
//! pigz, xz, zstd and bzip2. Reading commands must give the same bytes as on the uncompressed
//! image. Modifying commands need --output, and the copy they write is decompressed by the real
//! tool and judged by e2fsck, debugfs and mender-artifact. Damaged archives fail with one line.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION, debugfs_cat,
    e2fsck_clean, extract_partition, make_fixture, run_cli, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// A compressor: its program, the suffix of its files and its arguments to compress standard
/// input to standard output.
struct Format {
    program: &'static str,
    suffix: &'static str,
    compress: &'static [&'static str],
}

const FORMATS: [Format; 5] = [
    Format { program: "gzip", suffix: "gz", compress: &["-c"] },
    Format { program: "pigz", suffix: "gz", compress: &["-c", "-b", "128"] },
    Format { program: "xz", suffix: "xz", compress: &["-c"] },
    Format { program: "zstd", suffix: "zst", compress: &["-q", "-c"] },
    Format { program: "bzip2", suffix: "bz2", compress: &["-c"] },
];

/// Programs every test here runs besides the fixture tools.
fn require_all(test: &str) -> bool {
    let programs: Vec<&str> = FORMATS.iter().map(|format| format.program).collect();
    require_tools(&programs, test).is_some() && require_tools(&EXT4_JUDGES, test).is_some()
}

/// Runs `program args` with `input` as standard input and `output` as standard output.
fn pipe(program: &str, args: &[&str], input: &Path, output: &Path) {
    let mut command = Command::new(program);
    command.args(args).stdin(File::open(input).unwrap()).stdout(File::create(output).unwrap());
    command.stderr(Stdio::piped());
    let child = command.spawn().unwrap_or_else(|error| panic!("failed to start {program}: {error}"));
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Compresses `image` with `format` into `image.SUFFIX` (or `name` when given) and returns it.
fn compress(image: &Path, format: &Format, name: &str) -> PathBuf {
    let compressed = image.with_file_name(name);
    pipe(format.program, format.compress, image, &compressed);
    compressed
}

/// Compresses the two halves of `image` separately and joins them, as a multi-member gzip or a
/// multi-stream xz, zstd or bzip2 file.
fn compress_in_two_parts(image: &Path, format: &Format, name: &str) -> PathBuf {
    let bytes = std::fs::read(image).unwrap();
    let half = bytes.len() / 2 + 12_345;
    let dir = image.parent().unwrap();
    let mut joined = Vec::new();
    for (index, part) in [&bytes[..half], &bytes[half..]].into_iter().enumerate() {
        let raw = dir.join(format!("part{index}.raw"));
        std::fs::write(&raw, part).unwrap();
        let packed = compress(&raw, format, &format!("part{index}.{}", format.suffix));
        joined.extend(std::fs::read(&packed).unwrap());
        std::fs::remove_file(&raw).unwrap();
        std::fs::remove_file(&packed).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, joined).unwrap();
    path
}

/// Decompresses `compressed` with the real tool of `format` into `output`.
fn decompress(compressed: &Path, format: &Format, output: &Path) {
    pipe(format.program, &["-d", "-c"], compressed, output);
}

fn image_arg(image: &Path, path: &str) -> String {
    format!("{}:{path}", image.display())
}

/// Runs this tool and returns its stdout as bytes, panicking unless it succeeds.
fn cli_bytes(args: &[&str]) -> Vec<u8> {
    let output =
        run_with_timeout(Command::new(env!("CARGO_BIN_EXE_mender-preauth")).args(args), COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-preauth {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `mender-artifact` with `args` and returns its stdout, panicking when it fails.
fn mender_artifact(args: &[&str]) -> Vec<u8> {
    let output = run_with_timeout(Command::new("mender-artifact").args(args), COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-artifact {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A file that repeats no 4 KiB block, so a read from a wrong offset shows.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index * 7 + index / 4096) as u8).collect()
}

/// Builds a fixture with rootfs B and a 3 MiB file in /etc on both root filesystems.
fn fixture_with_payload(work: &Path, test: &str) -> Option<(PathBuf, Vec<u8>)> {
    let image = make_fixture(work, "device.sdimg", &["--rootfs-b", "--rootfs-mib", "32"], test)?;
    let payload = patterned(3 << 20);
    let host = work.join("payload.bin");
    std::fs::write(&host, &payload).unwrap();
    cli_bytes(&["cp", host.to_str().unwrap(), &image_arg(&image, "/etc/payload.bin")]);
    Some((image, payload))
}

/// The output of each reading command on `image`, with the image's path replaced by IMAGE.
fn read_outputs(image: &Path, work: &Path) -> Vec<(String, Vec<u8>)> {
    let copied = work.join("copied.bin");
    let _ = std::fs::remove_file(&copied);
    cli_bytes(&["cp", &image_arg(image, "/etc/payload.bin"), copied.to_str().unwrap()]);
    let mut outputs = vec![("cp out".to_string(), std::fs::read(&copied).unwrap())];
    let commands: [&[&str]; 5] = [
        &["ls", "-l", "-R", &image_arg(image, "/etc")],
        &["ls", "-l", &image_arg(image, "/var/lib/mender")],
        &["cat", &image_arg(image, "/etc/payload.bin")],
        &["stat", &image_arg(image, "/data/mender/device_type")],
        &["inspect", image.to_str().unwrap()],
    ];
    for args in commands {
        let mut stdout = cli_bytes(args);
        if args[0] == "inspect" {
            // The first line names the file and its compression; the rest must be equal.
            let text = String::from_utf8(stdout).unwrap();
            stdout = text.split_once('\n').unwrap().1.as_bytes().to_vec();
        }
        outputs.push((args.join(" ").replace(image.to_str().unwrap(), "IMAGE"), stdout));
    }
    outputs
}

#[test]
fn reading_commands_match_uncompressed() {
    let test = "reading_commands_match_uncompressed";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some((image, payload)) = fixture_with_payload(work.path(), test) else { return };
    let expected = read_outputs(&image, work.path());
    assert_eq!(expected[0].1, payload);

    for format in &FORMATS {
        let single = compress(&image, format, &format!("single-{}.sdimg.{}", format.program, format.suffix));
        let parts = compress_in_two_parts(
            &image,
            format,
            &format!("parts-{}.sdimg.{}", format.program, format.suffix),
        );
        for compressed in [single, parts] {
            let before = sha256_file(&compressed);

            let outputs = read_outputs(&compressed, work.path());

            for ((command, output), (_, wanted)) in outputs.iter().zip(&expected) {
                assert!(
                    output == wanted,
                    "{}: `{command}` differs from the uncompressed image",
                    compressed.display()
                );
            }
            assert_eq!(sha256_file(&compressed), before, "{}", compressed.display());
        }
    }
}

#[test]
fn compression_is_detected_by_content() {
    let test = "compression_is_detected_by_content";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some((image, payload)) = fixture_with_payload(work.path(), test) else { return };
    let xz = compress(&image, &FORMATS[2], "renamed.img");

    let cat = cli_bytes(&["cat", &image_arg(&xz, "/etc/payload.bin")]);
    let inspect = String::from_utf8(cli_bytes(&["inspect", xz.to_str().unwrap()])).unwrap();

    assert!(cat == payload, "cat of an xz image named .img read other bytes");
    let first_line = inspect.lines().next().unwrap();
    assert!(first_line.contains("xz-compressed, 100663296 bytes decompressed"), "{first_line}");
}

#[test]
fn provision_output_is_recompressed() {
    let test = "provision_output_is_recompressed";
    if !require_all(test) || require_tools(&["mender-artifact", "openssl"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &["--rootfs-b"], test) else { return };
    let key = work.path().join("device.key");
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    for format in FORMATS.iter().filter(|format| format.program != "pigz") {
        let source = compress(&image, format, &format!("device.sdimg.{}", format.suffix));
        let source_hash = sha256_file(&source);
        let output = work.path().join(format!("provisioned.sdimg.{}", format.suffix));

        let run = run_cli([
            "provision",
            source.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-i",
            IDENTITY,
            "--output",
            output.to_str().unwrap(),
        ]);

        run.assert_success(&format!("provision of {}", source.display()));
        assert_eq!(sha256_file(&source), source_hash, "{} changed", source.display());
        let plain = work.path().join(format!("provisioned-{}.sdimg", format.program));
        decompress(&output, format, &plain);
        let data = extract_partition(&plain, DATA_PARTITION, &work.path().join("data.ext4"));
        e2fsck_clean(&data);
        let key_in_image = debugfs_cat(&data, "/mender/mender-agent.pem");
        assert!(key_in_image.starts_with(b"-----BEGIN PRIVATE KEY-----"), "{}", output.display());
        let read_by_artifact = mender_artifact(&["cat", &image_arg(&plain, "/data/mender/mender-agent.pem")]);
        assert!(read_by_artifact == key_in_image, "{}: mender-artifact read another key", output.display());
    }
}

#[test]
fn provision_output_without_suffix_is_uncompressed() {
    let test = "provision_output_without_suffix_is_uncompressed";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], test) else { return };
    let source = compress(&image, &FORMATS[3], "device.sdimg.zst");
    let output = work.path().join("provisioned.sdimg");

    let run = run_cli([
        "provision",
        source.to_str().unwrap(),
        "-t",
        "ed25519",
        "--keys-dir",
        work.path().join("keys").to_str().unwrap(),
        "-i",
        IDENTITY,
        "--output",
        output.to_str().unwrap(),
    ]);

    run.assert_success("provision into an uncompressed image");
    assert_eq!(std::fs::metadata(&output).unwrap().len(), std::fs::metadata(&image).unwrap().len());
    let data = extract_partition(&output, DATA_PARTITION, &work.path().join("data.ext4"));
    e2fsck_clean(&data);
    assert!(debugfs_cat(&data, "/mender/mender-agent.pem").starts_with(b"-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn file_cp_output_keeps_compression() {
    let test = "file_cp_output_keeps_compression";
    if !require_all(test) || require_tools(&["mender-artifact"], test).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &["--rootfs-b"], test) else { return };
    let host = work.path().join("payload.bin");
    let content = patterned(200 * 1024);
    std::fs::write(&host, &content).unwrap();

    for format in FORMATS.iter().filter(|format| format.program != "pigz") {
        let source = compress_in_two_parts(&image, format, &format!("device.sdimg.{}", format.suffix));
        let source_hash = sha256_file(&source);
        let output = work.path().join(format!("changed.sdimg.{}", format.suffix));

        cli_bytes(&[
            "cp",
            "--output",
            output.to_str().unwrap(),
            host.to_str().unwrap(),
            &image_arg(&source, "/etc/payload.bin"),
        ]);

        assert_eq!(sha256_file(&source), source_hash, "{} changed", source.display());
        let plain = work.path().join(format!("changed-{}.sdimg", format.program));
        decompress(&output, format, &plain);
        for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
            let rootfs = extract_partition(&plain, number, &work.path().join(format!("p{number}.ext4")));
            e2fsck_clean(&rootfs);
            assert!(debugfs_cat(&rootfs, "/etc/payload.bin") == content, "{}: p{number}", output.display());
        }
        let copied = work.path().join("artifact-copy.bin");
        mender_artifact(&["cp", &image_arg(&plain, "/etc/payload.bin"), copied.to_str().unwrap()]);
        assert!(
            std::fs::read(&copied).unwrap() == content,
            "{}: mender-artifact read other bytes",
            output.display()
        );
        let hostname = mender_artifact(&["cat", &image_arg(&plain, "/etc/hostname")]);
        assert_eq!(hostname, b"qemux86-64\n");
    }
}

#[test]
fn plain_image_output_is_compressed_by_suffix() {
    let test = "plain_image_output_is_compressed_by_suffix";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], test) else { return };
    let image_hash = sha256_file(&image);
    let host = work.path().join("motd");
    std::fs::write(&host, b"compressed copy\n").unwrap();
    let output = work.path().join("changed.sdimg.bz2");

    cli_bytes(&[
        "cp",
        "--output",
        output.to_str().unwrap(),
        host.to_str().unwrap(),
        &image_arg(&image, "/etc/motd"),
    ]);

    assert_eq!(sha256_file(&image), image_hash);
    assert_eq!(&std::fs::read(&output).unwrap()[..3], b"BZh");
    let plain = work.path().join("changed.sdimg");
    decompress(&output, &FORMATS[4], &plain);
    assert_eq!(std::fs::metadata(&plain).unwrap().len(), std::fs::metadata(&image).unwrap().len());
    let rootfs = extract_partition(&plain, ROOTFS_A_PARTITION, &work.path().join("rootfs.ext4"));
    e2fsck_clean(&rootfs);
    assert_eq!(debugfs_cat(&rootfs, "/etc/motd"), b"compressed copy\n");
}

#[test]
fn modifying_without_output_is_usage_error() {
    let test = "modifying_without_output_is_usage_error";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], test) else { return };
    let source = compress(&image, &FORMATS[2], "device.sdimg.xz");
    let source_hash = sha256_file(&source);
    let host = work.path().join("host.txt");
    std::fs::write(&host, b"host\n").unwrap();
    let host = host.to_str().unwrap();
    let file = image_arg(&source, "/etc/hostname");
    let new_dir = image_arg(&source, "/etc/new");
    let image_name = source.to_str().unwrap();
    let commands: [&[&str]; 10] = [
        &["cp", host, &file],
        &["install", "-m", "0644", host, &file],
        &["rm", &file],
        &["mkdir", &new_dir],
        &["ln", "-s", "/etc/hostname", &new_dir],
        &["chmod", "0600", &file],
        &["chown", "1:1", &file],
        &["provision", image_name, "-t", "ed25519", "-i", IDENTITY],
        &["store", "set", image_name, "artifact-name", "release-2"],
        &["store", "delete", image_name, "artifact-name"],
    ];

    for args in commands {
        let run = run_cli(args);

        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("compressed with xz"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--output"), "{args:?}: {}", run.stderr);
        assert_eq!(sha256_file(&source), source_hash, "{args:?} changed the image");
    }
    assert!(!work.path().join("keys-client-generated").exists());
}

/// Names of the files in `dir`.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn damaged_archive_fails_with_one_line() {
    let test = "damaged_archive_fails_with_one_line";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], test) else { return };
    let host = work.path().join("host.txt");
    std::fs::write(&host, b"host\n").unwrap();
    let damaged_dir = work.path().join("damaged");
    std::fs::create_dir(&damaged_dir).unwrap();

    for format in FORMATS.iter().filter(|format| format.program != "pigz") {
        let compressed = compress(&image, format, &format!("device.sdimg.{}", format.suffix));
        let bytes = std::fs::read(&compressed).unwrap();
        let truncated = damaged_dir.join(format!("truncated.sdimg.{}", format.suffix));
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        for byte in &mut flipped[middle..middle + 64] {
            *byte ^= 0x5A;
        }
        let corrupt = damaged_dir.join(format!("corrupt.sdimg.{}", format.suffix));
        std::fs::write(&corrupt, &flipped).unwrap();

        for damaged in [&truncated, &corrupt] {
            let names_before = file_names(&damaged_dir);
            let output = damaged_dir.join(format!("out.sdimg.{}", format.suffix));
            let read = run_cli(["ls", &image_arg(damaged, "/etc")]);
            let write = run_cli([
                "cp",
                "--output",
                output.to_str().unwrap(),
                host.to_str().unwrap(),
                &image_arg(damaged, "/etc/host.txt"),
            ]);

            for (what, run) in [("ls", &read), ("cp --output", &write)] {
                assert_eq!(run.status.code(), Some(1), "{what} {}: {}", damaged.display(), run.stderr);
                assert_eq!(run.stderr.lines().count(), 1, "{what} {}: {}", damaged.display(), run.stderr);
                assert!(run.stderr.contains(damaged.to_str().unwrap()), "{what}: {}", run.stderr);
                assert!(
                    run.stderr.contains(&format!("{} data is corrupt", format.name())),
                    "{what}: {}",
                    run.stderr
                );
            }
            assert_eq!(file_names(&damaged_dir), names_before, "{} left files behind", damaged.display());
        }
    }
}

#[test]
fn zstd_long_window_is_named_not_corrupt() {
    let test = "zstd_long_window_is_named_not_corrupt";
    if !require_all(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(image) = make_fixture(work.path(), "device.sdimg", &[], test) else { return };
    // Through standard input zstd does not know the size, so it keeps the whole window.
    let long_27 = work.path().join("long27.sdimg.zst");
    pipe("zstd", &["-q", "-c", "--long=27"], &image, &long_27);
    let long_31 = work.path().join("long31.sdimg.zst");
    pipe("zstd", &["-q", "-c", "--long=31"], &image, &long_31);
    let output = work.path().join("out.sdimg");

    let within = run_cli(["ls", &image_arg(&long_27, "/etc")]);
    within.assert_success("ls on a --long=27 image");
    assert_eq!(within.stdout, run_cli(["ls", &image_arg(&image, "/etc")]).stdout);

    let read = run_cli(["inspect", long_31.to_str().unwrap()]);
    let host = work.path().join("host.txt");
    std::fs::write(&host, b"host\n").unwrap();
    let write = run_cli([
        "cp",
        "--output",
        output.to_str().unwrap(),
        host.to_str().unwrap(),
        &image_arg(&long_31, "/etc/host.txt"),
    ]);
    for (what, run) in [("inspect", &read), ("cp --output", &write)] {
        assert_eq!(run.status.code(), Some(1), "{what}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{what}: {}", run.stderr);
        assert!(run.stderr.contains(long_31.to_str().unwrap()), "{what}: {}", run.stderr);
        assert!(
            run.stderr.contains("zstd data needs a window larger than 128 MiB (--long=27)"),
            "{what}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("corrupt"), "{what}: {}", run.stderr);
    }
    assert!(!output.exists(), "a failed provision left {}", output.display());
}

impl Format {
    /// Name of the format in the tool's messages.
    fn name(&self) -> &'static str {
        if self.program == "pigz" { "gzip" } else { self.program }
    }
}

#[test]
fn copy_out_rejects_output() {
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("device.sdimg.gz");
    std::fs::write(&image, b"not read").unwrap();
    let output = work.path().join("new.sdimg");

    let run = run_cli([
        "cp",
        "--output",
        output.to_str().unwrap(),
        &image_arg(&image, "/etc/hostname"),
        work.path().join("hostname").to_str().unwrap(),
    ]);

    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("applies only when copying into an image"), "{}", run.stderr);
    assert!(!output.exists());
    assert!(!work.path().join("hostname").exists());
}
