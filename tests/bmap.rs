//! The block map next to a changed image (`IMAGE.bmap`), judged by bmaptool 3.x from Debian's
//! bmap-tools. Maps are made with `bmaptool create`, and the image is changed by provision,
//! store set or a file command. Then `bmaptool copy` of the changed image must pass its checksum
//! checks and reproduce the image.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{COMMAND_TIMEOUT, EXT4_JUDGES, make_fixture, run_cli, run_with_timeout};
use mender_preauth::test_support::require_tools;
use sha2::{Digest, Sha256};

const IDENTITY: &str = "mac=02:12:61:13:6c:42";

/// Builds a fixture image with a map made by `bmaptool create`, or returns `None` after saying
/// which tool is missing.
fn fixture_with_map(work: &Path, test: &str) -> Option<PathBuf> {
    require_tools(&["bmaptool"], test)?;
    require_tools(&EXT4_JUDGES, test)?;
    let image = make_fixture(work, "core-image.sdimg", &["--rootfs-b"], test)?;
    bmaptool_ok(&["create", path_str(&image), "-o", path_str(&map_of(&image))]);
    Some(image)
}

fn map_of(image: &Path) -> PathBuf {
    let mut path = image.as_os_str().to_owned();
    path.push(".bmap");
    PathBuf::from(path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn bmaptool(args: &[&str]) -> Output {
    let mut command = Command::new("bmaptool");
    command.args(args);
    run_with_timeout(&mut command, COMMAND_TIMEOUT)
}

fn bmaptool_ok(args: &[&str]) {
    let output = bmaptool(args);
    assert!(
        output.status.success(),
        "bmaptool {args:?} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Copies `image` with `bmaptool copy` and its map, which checks every range checksum and the
/// map's own checksum, and returns the copy.
fn bmaptool_copy(image: &Path, map: &Path, work: &Path) -> Output {
    let copy = work.join("flashed.img");
    let _ = std::fs::remove_file(&copy);
    bmaptool(&["copy", "--bmap", path_str(map), path_str(image), path_str(&copy)])
}

/// Asserts that `bmaptool copy` with `map` passes its checks and writes a copy equal to `image`.
/// The copy has zeros wherever the map lists no data, so equality also proves that the map
/// covers every byte of data.
fn assert_map_verifies(image: &Path, map: &Path, work: &Path) {
    let output = bmaptool_copy(image, map, work);
    assert!(
        output.status.success(),
        "bmaptool copy with {} failed with {}; stderr:\n{}",
        map.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let copy = std::fs::read(work.join("flashed.img")).unwrap();
    let original = std::fs::read(image).unwrap();
    assert_eq!(copy.len(), original.len(), "bmaptool copy wrote a copy of another size");
    assert!(copy == original, "bmaptool copy wrote a copy that differs from {}", image.display());
}

/// Returns the trimmed text of the first `<name>` element of a map.
fn element(map_text: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = map_text.find(&open).unwrap_or_else(|| panic!("no <{name}> in the map")) + open.len();
    let end = start + map_text[start..].find(&format!("</{name}>")).unwrap();
    map_text[start..end].trim().to_string()
}

/// Returns the `version` attribute of a map's root element.
fn version(map_text: &str) -> String {
    let start = map_text.find("<bmap version=\"").expect("no <bmap version=") + "<bmap version=\"".len();
    let end = start + map_text[start..].find('"').unwrap();
    map_text[start..end].to_string()
}

/// Sets the version of a 2.0 map made by bmaptool with SHA-256 and stores its file checksum
/// anew, as bmaptool computes it: over the file with the checksum written as zeros.
fn rewrite_version(map: &Path, new_version: &str) {
    let text = std::fs::read_to_string(map).unwrap();
    let old_checksum = element(&text, "BmapFileChecksum");
    let zeros = "0".repeat(old_checksum.len());
    let zeroed =
        text.replace(&old_checksum, &zeros).replace("version=\"2.0\"", &format!("version=\"{new_version}\""));
    let checksum: String =
        Sha256::digest(zeroed.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
    std::fs::write(map, zeroed.replace(&zeros, &checksum)).unwrap();
}

/// Runs this tool and panics unless it succeeds.
fn cli_ok(args: &[&str]) {
    run_cli(args).assert_success(&format!("mender-preauth {args:?}"));
}

/// Provisions `image` with a generated Ed25519 key saved next to it, adding `extra` arguments.
fn provision(image: &Path, extra: &[&str]) -> common::CliRun {
    let keys = image.with_file_name("keys");
    let mut args = vec!["provision", path_str(image), "--identity", IDENTITY, "--type", "ed25519"];
    args.extend_from_slice(&["--keys-dir", path_str(&keys)]);
    args.extend_from_slice(extra);
    run_cli(&args)
}

#[test]
fn provision_rewrites_map() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "provision_rewrites_map") else { return };
    let map = map_of(&image);
    let old_map = std::fs::read_to_string(&map).unwrap();

    provision(&image, &[]).assert_success("provision");

    let new_map = std::fs::read_to_string(&map).unwrap();
    assert_ne!(new_map, old_map, "the map was not rewritten");
    assert_eq!(version(&new_map), "2.0");
    assert_eq!(element(&new_map, "ChecksumType"), "sha256");
    assert_eq!(element(&new_map, "BlockSize"), element(&old_map, "BlockSize"));
    assert_eq!(element(&new_map, "ImageSize"), std::fs::metadata(&image).unwrap().len().to_string());
    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn stale_map_fails_bmaptool_copy() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "stale_map_fails_bmaptool_copy") else { return };
    let map = map_of(&image);
    let old_map = std::fs::read(&map).unwrap();

    provision(&image, &["--no-bmap"]).assert_success("provision --no-bmap");

    assert_eq!(std::fs::read(&map).unwrap(), old_map, "--no-bmap changed the map");
    let output = bmaptool_copy(&image, &map, work.path());
    assert!(!output.status.success(), "bmaptool copy accepted a map from before provision");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("checksum mismatch"), "bmaptool copy failed for another reason:\n{stderr}");
}

#[test]
fn file_commands_rewrite_map() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "file_commands_rewrite_map") else { return };
    let map = map_of(&image);
    let host_file = work.path().join("payload.bin");
    let payload: Vec<u8> = (0..3 << 20).map(|index: usize| (index * 13 + index / 4096) as u8).collect();
    std::fs::write(&host_file, &payload).unwrap();
    let in_image = |path: &str| format!("{}:{path}", image.display());

    cli_ok(&["cp", path_str(&host_file), &in_image("/etc/payload.bin")]);
    assert_map_verifies(&image, &map, work.path());

    cli_ok(&["mkdir", "-p", &in_image("/data/extra/dir")]);
    cli_ok(&["ln", "-s", "/data/extra", &in_image("/etc/extra")]);
    cli_ok(&["chmod", "0700", &in_image("/data/extra")]);
    cli_ok(&["chown", "1:1", &in_image("/data/extra/dir")]);
    cli_ok(&["install", "-m", "0644", path_str(&host_file), &in_image("/data/extra/payload.bin")]);
    cli_ok(&["rm", &in_image("/etc/payload.bin")]);
    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn store_set_rewrites_map() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "store_set_rewrites_map") else { return };
    let map = map_of(&image);
    provision(&image, &["--no-bmap"]).assert_success("provision --no-bmap");

    cli_ok(&["store", "set", path_str(&image), "artifact-name", "release-2"]);

    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn output_gets_own_map() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "output_gets_own_map") else { return };
    let map = map_of(&image);
    let old_map = std::fs::read(&map).unwrap();
    let output = work.path().join("device-0001.sdimg");

    provision(&image, &["--output", path_str(&output)]).assert_success("provision --output");

    assert_eq!(std::fs::read(&map).unwrap(), old_map, "the source image's map changed");
    assert_map_verifies(&image, &map, work.path());
    assert_map_verifies(&output, &map_of(&output), work.path());
}

#[test]
fn output_without_source_map_writes_none() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "output_without_source_map_writes_none") else { return };
    std::fs::remove_file(map_of(&image)).unwrap();
    let output = work.path().join("device-0001.sdimg");

    provision(&image, &["--output", path_str(&output)]).assert_success("provision --output");

    assert!(!map_of(&output).exists(), "a map was written for an image that had none");
}

#[test]
fn version_1_4_is_kept() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "version_1_4_is_kept") else { return };
    let map = map_of(&image);
    rewrite_version(&map, "1.4");
    assert_map_verifies(&image, &map, work.path());

    provision(&image, &[]).assert_success("provision");

    let new_map = std::fs::read_to_string(&map).unwrap();
    assert_eq!(version(&new_map), "1.4");
    assert_eq!(element(&new_map, "ChecksumType"), "sha256");
    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn sha512_checksums_are_kept() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "sha512_checksums_are_kept") else { return };
    let map = map_of(&image);
    // The command line of bmaptool 3.6 always writes SHA-256, but its BmapCreate class takes
    // another hashlib name, so the map is made with the interpreter bmaptool itself runs with.
    let script = "import sys\nfrom bmaptools.BmapCreate import BmapCreate\nBmapCreate(sys.argv[1], sys.argv[2], 'sha512').generate()";
    let mut command = Command::new(bmaptool_interpreter());
    command.args(["-c", script, path_str(&image), path_str(&map)]);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(output.status.success(), "BmapCreate failed:\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(element(&std::fs::read_to_string(&map).unwrap(), "ChecksumType"), "sha512");

    provision(&image, &[]).assert_success("provision");

    let new_map = std::fs::read_to_string(&map).unwrap();
    assert_eq!(element(&new_map, "ChecksumType"), "sha512");
    assert_eq!(element(&new_map, "BmapFileChecksum").len(), 128);
    assert_map_verifies(&image, &map, work.path());
}

/// Returns the interpreter of the `bmaptool` script, read from its `#!` line.
fn bmaptool_interpreter() -> PathBuf {
    let script = mender_preauth::test_support::find_program("bmaptool").expect("bmaptool is installed");
    let text = std::fs::read_to_string(&script).unwrap();
    let first_line = text.lines().next().unwrap_or_default();
    let interpreter = first_line.strip_prefix("#!").expect("bmaptool is a script with a #! line");
    PathBuf::from(interpreter.split_whitespace().next().unwrap())
}

#[test]
fn version_1_3_becomes_2_0() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "version_1_3_becomes_2_0") else { return };
    let map = map_of(&image);
    // A 1.3 map as bmaptool 2.x wrote it: SHA-1 in BmapFileSHA1 and sha1= attributes. Its
    // checksums are not checked, because only its version, block size and counts are read.
    let old_map = "<?xml version=\"1.0\" ?>\n<bmap version=\"1.3\">\n    <ImageSize> 1 </ImageSize>\n    \
        <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 1 </BlocksCount>\n    \
        <MappedBlocksCount> 1 </MappedBlocksCount>\n    \
        <BmapFileSHA1> 0000000000000000000000000000000000000000 </BmapFileSHA1>\n    <BlockMap>\n        \
        <Range sha1=\"0000000000000000000000000000000000000000\"> 0 </Range>\n    </BlockMap>\n</bmap>\n";
    std::fs::write(&map, old_map).unwrap();

    let run = provision(&image, &[]);

    run.assert_success("provision");
    assert!(run.stderr.contains("format 1.3 with SHA-1"), "no note about the old format:\n{}", run.stderr);
    let new_map = std::fs::read_to_string(&map).unwrap();
    assert_eq!(version(&new_map), "2.0");
    assert_eq!(element(&new_map, "ChecksumType"), "sha256");
    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn malformed_map_is_replaced_with_warning() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "malformed_map_is_replaced_with_warning") else { return };
    let map = map_of(&image);
    std::fs::write(&map, "not a block map\n").unwrap();

    let run = provision(&image, &[]);

    run.assert_success("provision");
    let warning = format!("{}: not a valid block map", map.display());
    assert!(run.stderr.contains(&warning), "no warning naming the map:\n{}", run.stderr);
    assert_map_verifies(&image, &map, work.path());
}

#[test]
fn map_with_bad_counts_is_replaced_with_warning() {
    let work = tempfile::tempdir().unwrap();
    let test = "map_with_bad_counts_is_replaced_with_warning";
    let Some(image) = fixture_with_map(work.path(), test) else { return };
    let map = map_of(&image);
    let made_by_bmaptool = std::fs::read_to_string(&map).unwrap();
    let image_size = format!("<ImageSize> {} </ImageSize>", element(&made_by_bmaptool, "ImageSize"));
    assert!(made_by_bmaptool.contains(&image_size), "no {image_size} in:\n{made_by_bmaptool}");
    let host = work.path().join("host.txt");
    std::fs::write(&host, b"host\n").unwrap();
    let cases = [
        ("unclosed", made_by_bmaptool.replace("</bmap>", ""), "no closing </bmap>"),
        (
            "negative",
            made_by_bmaptool.replace(&image_size, "<ImageSize> -5 </ImageSize>"),
            "invalid <ImageSize>",
        ),
    ];

    for (name, text, cause) in cases {
        std::fs::write(&map, &text).unwrap();

        let run = run_cli(["cp", path_str(&host), &format!("{}:/etc/{name}.txt", image.display())]);

        run.assert_success(name);
        let warning = format!("{}: not a valid block map ({cause}", map.display());
        assert!(run.stderr.contains(&warning), "{name}: no warning naming the map:\n{}", run.stderr);
        assert_ne!(std::fs::read_to_string(&map).unwrap(), text, "{name}: the map was kept");
        assert_map_verifies(&image, &map, work.path());
    }
}

#[test]
fn failed_command_leaves_map_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "failed_command_leaves_map_unchanged") else { return };
    let map = map_of(&image);
    let old_map = std::fs::read(&map).unwrap();

    let run = run_cli(["rm", &format!("{}:/etc/no-such-file", image.display())]);

    assert!(!run.status.success(), "rm of a missing file succeeded");
    assert_eq!(std::fs::read(&map).unwrap(), old_map, "a failed rm changed the map");
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn linked_map_is_replaced_at_target() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "linked_map_is_replaced_at_target") else { return };
    // Yocto's deploy directory links IMAGE.bmap to a map named with the build's date.
    let map = map_of(&image);
    let dated = work.path().join("core-image-20261205.sdimg.bmap");
    std::fs::rename(&map, &dated).unwrap();
    std::os::unix::fs::symlink("core-image-20261205.sdimg.bmap", &map).unwrap();

    provision(&image, &[]).assert_success("provision");

    assert!(std::fs::symlink_metadata(&map).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_map_verifies(&image, &dated, work.path());
}

#[test]
fn dangling_map_link_fails_before_writing() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), "dangling_map_link_fails_before_writing") else { return };
    let map = map_of(&image);
    std::fs::remove_file(&map).unwrap();
    std::os::unix::fs::symlink("core-image-missing.sdimg.bmap", &map).unwrap();
    let old_image = std::fs::read(&image).unwrap();

    let run = provision(&image, &[]);

    assert!(!run.status.success(), "provision succeeded with a dangling map link");
    let message = format!("{}: cannot follow the symbolic link", map.display());
    assert!(run.stderr.contains(&message), "no error naming the link:\n{}", run.stderr);
    assert!(std::fs::read(&image).unwrap() == old_image, "the image changed although the run failed");
}

/// Compresses `image` with the real `xz` into `IMAGE.xz`, keeping `image`.
fn xz_compressed(image: &Path, test: &str) -> Option<PathBuf> {
    require_tools(&["xz"], test)?;
    let status =
        std::process::Command::new("xz").args(["-k", "-1", "-T1", path_str(image)]).status().unwrap();
    assert!(status.success(), "xz failed");
    let mut compressed = image.as_os_str().to_owned();
    compressed.push(".xz");
    Some(PathBuf::from(compressed))
}

#[test]
fn compressed_source_uses_map_named_after_uncompressed_image() {
    let test = "compressed_source_uses_map_named_after_uncompressed_image";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), test) else { return };
    let Some(compressed) = xz_compressed(&image, test) else { return };
    // Yocto deploys core-image.sdimg.xz beside core-image.sdimg.bmap.
    std::fs::remove_file(&image).unwrap();
    let output = work.path().join("device-0001.sdimg");

    provision(&compressed, &["--output", path_str(&output)]).assert_success("provision --output");

    assert_map_verifies(&output, &map_of(&output), work.path());
}

#[test]
fn compressed_output_warns_about_its_stale_map() {
    let test = "compressed_output_warns_about_its_stale_map";
    let work = tempfile::tempdir().unwrap();
    let Some(image) = fixture_with_map(work.path(), test) else { return };
    let Some(compressed) = xz_compressed(&image, test) else { return };
    let output = work.path().join("device-0001.sdimg.xz");
    let stale = map_of(&output);
    std::fs::copy(map_of(&image), &stale).unwrap();
    let old_map = std::fs::read(&stale).unwrap();

    let run = provision(&compressed, &["--output", path_str(&output)]);

    run.assert_success("provision --output IMAGE.xz");
    let warning = format!("{}: left as it was, so it no longer matches", stale.display());
    assert!(run.stderr.contains(&warning), "{}", run.stderr);
    assert_eq!(std::fs::read(&stale).unwrap(), old_map);
}
