//! The client configuration options of `provision` (alias `modify`): --server-url,
//! --tenant-token, --server-cert, --verification-key, --artifact-name and --config-on-data.
//! The judges are `mender-artifact cat` and debugfs on rootfs A and B, e2fsck, and
//! `mender-artifact modify` run on a copy of the same image. The Mender client 3.4 judges the
//! result too: its debug log prints the configuration it loaded from its main and fallback files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, DATA_PARTITION, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION, debugfs_cat,
    debugfs_stat, debugfs_write_requests, e2fsck_clean, extract_partition, make_bare_data, make_fixture,
    mdb_dump_pairs, offset_path, run_cli, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::require_tools;
use serde_json::{Value, json};

/// Programs these tests run besides the fixture tools and the ext4 judges.
const CONFIG_TOOLS: [&str; 3] = ["mender-artifact", "openssl", "mender"];

/// The configuration put on rootfs A before each test: keys out of order, a nested object, a
/// number and a key the client does not know, which must all survive.
const ROOTFS_A_CONF: &str = r#"{
  "UpdatePollIntervalSeconds": 1800,
  "ServerURL": "https://docker.mender.io",
  "HttpsClient": {"Certificate": "", "Key": ""},
  "TenantToken": "",
  "InventoryPollIntervalSeconds": 28800,
  "X-Vendor": [1, "two", {"three": 3}]
}
"#;

/// Rootfs B's configuration differs from rootfs A's, as after an update with another one.
const ROOTFS_B_CONF: &str = r#"{"ServerURL":"https://old.example","RetryPollIntervalSeconds":300}"#;

const SERVER_URL: &str = "https://mender.example.com";
const TENANT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.tenant";
const ARTIFACT_NAME: &str = "release-7";

/// A fixture with rootfs B formatted, both rootfs carrying their own mender.conf, and a
/// certificate and a verification key made by openssl.
struct Fixture {
    work: tempfile::TempDir,
    image: PathBuf,
    server_cert: PathBuf,
    verification_key: PathBuf,
}

impl Fixture {
    /// Builds the fixture, or returns `None` when a tool is missing.
    fn build(test: &str) -> Option<Fixture> {
        require_tools(&CONFIG_TOOLS, test)?;
        require_tools(&EXT4_JUDGES, test)?;
        let work = tempfile::tempdir().expect("failed to create a temporary directory");
        let image = make_fixture(work.path(), "device.sdimg", &["--rootfs-b"], test)?;
        put_conf(work.path(), &image, ROOTFS_A_PARTITION, ROOTFS_A_CONF);
        put_conf(work.path(), &image, ROOTFS_B_PARTITION, ROOTFS_B_CONF);

        let server_cert = work.path().join("server.crt");
        let server_key = work.path().join("server.key");
        let verification_private = work.path().join("verify-private.pem");
        let verification_key = work.path().join("verify.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mender.example.com",
            "-keyout",
            path_str(&server_key),
            "-out",
            path_str(&server_cert),
        ]);
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", path_str(&verification_private)]);
        openssl(&[
            "pkey",
            "-in",
            path_str(&verification_private),
            "-pubout",
            "-out",
            path_str(&verification_key),
        ]);
        Some(Fixture { work, image, server_cert, verification_key })
    }

    /// Copies the image, for a second tool to change.
    fn copy_image(&self, name: &str) -> PathBuf {
        let copy = self.work.path().join(name);
        std::fs::copy(&self.image, &copy).expect("failed to copy the image");
        copy
    }

    /// Extracts partition `number` of `image` for the judges.
    fn partition(&self, image: &Path, number: u32) -> PathBuf {
        let name = format!("{}-p{number}.ext4", image.file_name().unwrap().to_string_lossy());
        extract_partition(image, number, &self.work.path().join(name))
    }

    /// The arguments that set every configuration value, with the file paths of this fixture.
    fn config_args(&self) -> Vec<String> {
        vec![
            "--server-url".into(),
            SERVER_URL.into(),
            "--tenant-token".into(),
            TENANT_TOKEN.into(),
            "--server-cert".into(),
            path_str(&self.server_cert).into(),
            "--verification-key".into(),
            path_str(&self.verification_key).into(),
            "--artifact-name".into(),
            ARTIFACT_NAME.into(),
        ]
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn openssl(args: &[&str]) {
    let mut command = Command::new("openssl");
    command.args(args);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(output.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Replaces /etc/mender/mender.conf on partition `number` with `text`, mode 0600, owner 0:0.
fn put_conf(work: &Path, image: &Path, number: u32, text: &str) {
    let host = work.join(format!("mender-p{number}.conf"));
    std::fs::write(&host, text).expect("failed to write the configuration");
    debugfs_write_requests(
        &offset_path(image, number),
        &[
            "rm /etc/mender/mender.conf".to_string(),
            format!("write {} /etc/mender/mender.conf", host.display()),
            "sif /etc/mender/mender.conf mode 0100600".to_string(),
            "sif /etc/mender/mender.conf uid 0".to_string(),
            "sif /etc/mender/mender.conf gid 0".to_string(),
        ],
    );
}

/// Returns the bytes `mender-artifact cat IMAGE:PATH` prints.
fn mender_artifact_cat(image: &Path, path: &str) -> Vec<u8> {
    let mut command = Command::new("mender-artifact");
    command.arg("cat").arg(format!("{}:{path}", image.display()));
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-artifact cat {path} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn parse_json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|error| panic!("{what} is not JSON ({error}): {}", String::from_utf8_lossy(bytes)))
}

/// Returns the object `original` with `changes` set over it.
fn with_changes(original: &str, changes: &Value) -> Value {
    let mut expected: Value = serde_json::from_str(original).expect("the fixture's configuration is JSON");
    for (key, value) in changes.as_object().expect("changes are an object") {
        expected[key] = value.clone();
    }
    expected
}

/// Returns the values that the configuration options set in /etc/mender/mender.conf.
fn expected_changes() -> Value {
    json!({
        "ServerURL": SERVER_URL,
        "TenantToken": TENANT_TOKEN,
        "ServerCertificate": "/etc/mender/server.crt",
        "ArtifactVerifyKey": "/etc/mender/artifact-verify-key.pem",
    })
}

/// Runs the Mender client 3.4 with `main` and `fallback` as its configuration files and returns
/// the configuration it reports after validating them, as the text of its debug log line.
fn client_configuration(work: &Path, main: &[u8], fallback: Option<&[u8]>) -> String {
    let main_path = work.join("client-main.conf");
    let fallback_path = work.join("client-fallback.conf");
    let data_dir = work.join("client-data");
    std::fs::write(&main_path, main).expect("failed to write the main configuration");
    let _ = std::fs::remove_file(&fallback_path);
    if let Some(fallback) = fallback {
        std::fs::write(&fallback_path, fallback).expect("failed to write the fallback configuration");
    }
    std::fs::create_dir_all(&data_dir).expect("failed to create the client's data directory");

    let mut command = Command::new("mender");
    command
        .arg("--config")
        .arg(&main_path)
        .arg("--fallback-config")
        .arg(&fallback_path)
        .arg("--data")
        .arg(&data_dir)
        .args(["--log-level", "debug", "--no-syslog", "show-provides"]);
    // show-provides fails later without a store; the configuration is logged before that.
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr
        .lines()
        .find(|line| line.contains("Verified configuration = "))
        .unwrap_or_else(|| panic!("the Mender client did not accept the configuration:\n{stderr}"))
        .to_string()
}

/// Asserts the client's logged configuration sets `field` to `value` (Go's %#v of a string).
fn assert_client_field(configuration: &str, field: &str, value: &str) {
    let expected = format!("{field}:\\\"{value}\\\"");
    assert!(configuration.contains(&expected), "the client does not report {expected}:\n{configuration}");
}

#[test]
fn provision_writes_config_to_both_rootfs() {
    let test = "provision_writes_config_to_both_rootfs";
    let Some(fixture) = Fixture::build(test) else { return };
    let keys_dir = fixture.work.path().join("keys");

    let mut args: Vec<String> = vec![
        "provision".into(),
        path_str(&fixture.image).into(),
        "--identity".into(),
        "mac=02:12:61:13:6c:42".into(),
        "--keys-dir".into(),
        path_str(&keys_dir).into(),
    ];
    args.extend(fixture.config_args());
    let run = run_cli(&args);
    run.assert_success("provision with configuration options");
    assert!(run.stdout_json_line()["pubkey"].is_string(), "no request printed: {}", run.stdout);

    let rootfs_a_conf =
        parse_json(&mender_artifact_cat(&fixture.image, "/etc/mender/mender.conf"), "rootfs A");
    assert_eq!(rootfs_a_conf, with_changes(ROOTFS_A_CONF, &expected_changes()));
    let rootfs_b = fixture.partition(&fixture.image, ROOTFS_B_PARTITION);
    let rootfs_b_conf = parse_json(&debugfs_cat(&rootfs_b, "/etc/mender/mender.conf"), "rootfs B");
    assert_eq!(rootfs_b_conf, with_changes(ROOTFS_B_CONF, &expected_changes()));

    let rootfs_a = fixture.partition(&fixture.image, ROOTFS_A_PARTITION);
    let data = fixture.partition(&fixture.image, DATA_PARTITION);
    let cert = std::fs::read(&fixture.server_cert).unwrap();
    let verification_key = std::fs::read(&fixture.verification_key).unwrap();
    for rootfs in [&rootfs_a, &rootfs_b] {
        assert_eq!(debugfs_cat(rootfs, "/etc/mender/server.crt"), cert);
        assert_eq!(debugfs_cat(rootfs, "/etc/mender/artifact-verify-key.pem"), verification_key);
        assert_eq!(
            debugfs_cat(rootfs, "/etc/mender/artifact_info"),
            format!("artifact_name={ARTIFACT_NAME}\n").as_bytes()
        );
        for (file, mode) in [
            ("/etc/mender/mender.conf", 0o600),
            ("/etc/mender/server.crt", 0o644),
            ("/etc/mender/artifact-verify-key.pem", 0o644),
            ("/etc/mender/artifact_info", 0o644),
        ] {
            let stat = debugfs_stat(rootfs, file);
            assert_eq!(stat.file_type, "regular", "{file}");
            assert_eq!(stat.mode, mode, "{file}");
            assert_eq!((stat.uid, stat.gid), (0, 0), "{file}");
        }
    }
    for partition in [&rootfs_a, &rootfs_b, &data] {
        e2fsck_clean(partition);
    }

    let store = fixture.work.path().join("mender-store");
    std::fs::write(&store, debugfs_cat(&data, "/mender/mender-store")).unwrap();
    if require_tools(&["mdb_dump"], test).is_some() {
        let records = mdb_dump_pairs(&store);
        assert!(records.contains(&("artifact-name".to_string(), ARTIFACT_NAME.to_string())), "{records:?}");
    }

    let main = debugfs_cat(&rootfs_a, "/etc/mender/mender.conf");
    let configuration = client_configuration(fixture.work.path(), &main, None);
    assert_client_field(&configuration, "ServerURL", SERVER_URL);
    assert_client_field(&configuration, "TenantToken", TENANT_TOKEN);
    assert_client_field(&configuration, "ServerCertificate", "/etc/mender/server.crt");
    assert_client_field(&configuration, "ArtifactVerifyKey", "/etc/mender/artifact-verify-key.pem");
}

#[test]
fn modify_matches_mender_artifact_modify() {
    let test = "modify_matches_mender_artifact_modify";
    let Some(fixture) = Fixture::build(test) else { return };
    let theirs = fixture.copy_image("theirs.sdimg");

    let mut args: Vec<String> = vec!["modify".into(), path_str(&fixture.image).into()];
    args.extend(fixture.config_args());
    run_cli(&args).assert_success("modify without an identity");

    let mut command = Command::new("mender-artifact");
    command
        .args(["modify", "--server-uri", SERVER_URL, "--tenant-token", TENANT_TOKEN, "--server-cert"])
        .arg(&fixture.server_cert)
        .arg("--verification-key")
        .arg(&fixture.verification_key)
        .args(["-n", ARTIFACT_NAME])
        .arg(&theirs);
    let output = run_with_timeout(&mut command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "mender-artifact modify failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    for number in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let ours = fixture.partition(&fixture.image, number);
        let reference = fixture.partition(&theirs, number);
        let mut our_conf = parse_json(&debugfs_cat(&ours, "/etc/mender/mender.conf"), "our mender.conf");
        let their_conf = parse_json(&debugfs_cat(&reference, "/etc/mender/mender.conf"), "their mender.conf");
        // mender-artifact copies the files without naming them in mender.conf; these two are
        // the only keys that differ.
        let object = our_conf.as_object_mut().unwrap();
        assert_eq!(object.remove("ServerCertificate"), Some(json!("/etc/mender/server.crt")), "p{number}");
        assert_eq!(
            object.remove("ArtifactVerifyKey"),
            Some(json!("/etc/mender/artifact-verify-key.pem")),
            "p{number}"
        );
        if number == ROOTFS_A_PARTITION {
            assert_eq!(our_conf, their_conf, "partition {number}");
        } else {
            // mender-artifact edits rootfs A's file and copies it over rootfs B's, so the keys
            // only rootfs B had are lost. This tool edits each file on its own.
            let changes = json!({"ServerURL": SERVER_URL, "TenantToken": TENANT_TOKEN});
            assert_eq!(their_conf, with_changes(ROOTFS_A_CONF, &changes), "partition {number}");
            assert_eq!(our_conf, with_changes(ROOTFS_B_CONF, &changes), "partition {number}");
        }

        for file in ["/etc/mender/server.crt", "/etc/mender/artifact-verify-key.pem"] {
            assert_eq!(debugfs_cat(&ours, file), debugfs_cat(&reference, file), "{file} on p{number}");
        }
        let our_info = String::from_utf8(debugfs_cat(&ours, "/etc/mender/artifact_info")).unwrap();
        let their_info = String::from_utf8(debugfs_cat(&reference, "/etc/mender/artifact_info")).unwrap();
        assert_eq!(our_info.trim_end(), their_info.trim_end(), "artifact_info on p{number}");
        e2fsck_clean(&ours);
    }
}

#[test]
fn modify_without_identity_keeps_data_partition() {
    let test = "modify_without_identity_keeps_data_partition";
    let Some(fixture) = Fixture::build(test) else { return };
    let data_before = sha256_file(&fixture.partition(&fixture.image, DATA_PARTITION));

    let run = run_cli(["modify", path_str(&fixture.image), "--server-url", SERVER_URL]);

    run.assert_success("modify --server-url");
    assert_eq!(run.stdout, "", "a run without an identity prints no request");
    assert_eq!(sha256_file(&fixture.partition(&fixture.image, DATA_PARTITION)), data_before);
    let conf = parse_json(&mender_artifact_cat(&fixture.image, "/etc/mender/mender.conf"), "rootfs A");
    assert_eq!(conf, with_changes(ROOTFS_A_CONF, &json!({"ServerURL": SERVER_URL})));
    let text = String::from_utf8(mender_artifact_cat(&fixture.image, "/etc/mender/mender.conf")).unwrap();
    assert_eq!(text, ROOTFS_A_CONF.replace("https://docker.mender.io", SERVER_URL), "formatting is kept");
}

#[test]
fn config_on_data_moves_server_settings() {
    let test = "config_on_data_moves_server_settings";
    let Some(fixture) = Fixture::build(test) else { return };

    let run = run_cli([
        "modify",
        path_str(&fixture.image),
        "--config-on-data",
        "--server-url",
        SERVER_URL,
        "--tenant-token",
        TENANT_TOKEN,
        "--server-cert",
        path_str(&fixture.server_cert),
    ]);
    run.assert_success("modify --config-on-data");

    let data = fixture.partition(&fixture.image, DATA_PARTITION);
    let data_conf = parse_json(&debugfs_cat(&data, "/mender/mender.conf"), "/data/mender/mender.conf");
    assert_eq!(
        data_conf,
        json!({
            "ServerURL": SERVER_URL,
            "TenantToken": TENANT_TOKEN,
            "ServerCertificate": "/data/mender/server.crt",
        })
    );
    assert_eq!(debugfs_cat(&data, "/mender/server.crt"), std::fs::read(&fixture.server_cert).unwrap());
    assert_eq!(debugfs_stat(&data, "/mender/mender.conf").mode, 0o600);
    assert_eq!(debugfs_stat(&data, "/mender/server.crt").mode, 0o644);
    e2fsck_clean(&data);

    let rootfs_a = fixture.partition(&fixture.image, ROOTFS_A_PARTITION);
    let rootfs_b = fixture.partition(&fixture.image, ROOTFS_B_PARTITION);
    let mut expected_a: Value = serde_json::from_str(ROOTFS_A_CONF).unwrap();
    expected_a.as_object_mut().unwrap().remove("ServerURL");
    expected_a.as_object_mut().unwrap().remove("TenantToken");
    let main = debugfs_cat(&rootfs_a, "/etc/mender/mender.conf");
    assert_eq!(parse_json(&main, "rootfs A"), expected_a);
    assert_eq!(
        parse_json(&debugfs_cat(&rootfs_b, "/etc/mender/mender.conf"), "rootfs B"),
        json!({"RetryPollIntervalSeconds": 300})
    );
    e2fsck_clean(&rootfs_a);
    e2fsck_clean(&rootfs_b);

    let fallback = debugfs_cat(&data, "/mender/mender.conf");
    let configuration = client_configuration(fixture.work.path(), &main, Some(&fallback));
    assert_client_field(&configuration, "ServerURL", SERVER_URL);
    assert_client_field(&configuration, "TenantToken", TENANT_TOKEN);
    assert_client_field(&configuration, "ServerCertificate", "/data/mender/server.crt");
}

#[test]
fn bad_config_input_changes_nothing() {
    let test = "bad_config_input_changes_nothing";
    let Some(fixture) = Fixture::build(test) else { return };
    put_conf(fixture.work.path(), &fixture.image, ROOTFS_B_PARTITION, "{\"ServerURL\": \"x\",}\n");
    let servers_image = fixture.copy_image("servers.sdimg");
    put_conf(
        fixture.work.path(),
        &servers_image,
        ROOTFS_B_PARTITION,
        r#"{"Servers": [{"ServerURL": "https://a.example"}]}"#,
    );
    let missing = fixture.work.path().join("missing.crt");
    let image = path_str(&fixture.image);

    let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
        (
            "invalid JSON on rootfs B",
            vec!["modify", image, "--server-url", SERVER_URL],
            &["/etc/mender/mender.conf", "rootfs B", "not valid JSON", "line 1"],
        ),
        (
            "missing certificate",
            vec!["modify", path_str(&servers_image), "--server-cert", path_str(&missing)],
            &["--server-cert", "missing.crt"],
        ),
        (
            "Servers beside ServerURL",
            vec!["modify", path_str(&servers_image), "--server-url", SERVER_URL],
            &["/etc/mender/mender.conf", "rootfs B", "Servers"],
        ),
        (
            "output in a missing directory",
            vec!["modify", image, "--tenant-token", "t", "--output", "/nonexistent/dir/out.sdimg"],
            &["/nonexistent/dir"],
        ),
    ];
    let before = [sha256_file(&fixture.image), sha256_file(&servers_image)];
    for (case, args, named) in cases {
        let run = run_cli(&args);

        assert_eq!(run.status.code(), Some(1), "{case}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{case}: {}", run.stderr);
        for text in named {
            assert!(run.stderr.contains(text), "{case}: {text:?} not in {}", run.stderr);
        }
        assert_eq!([sha256_file(&fixture.image), sha256_file(&servers_image)], before, "{case}");
    }
}

#[test]
fn bare_image_has_no_rootfs_for_config() {
    let test = "bare_image_has_no_rootfs_for_config";
    if require_tools(&EXT4_JUDGES, test).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some(image) = make_bare_data(work.path(), "data.dataimg", &[], test) else { return };
    let before = sha256_file(&image);

    let run = run_cli(["modify", path_str(&image), "--server-url", SERVER_URL]);

    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("no root filesystem for /etc/mender/mender.conf"), "{}", run.stderr);
    assert_eq!(sha256_file(&image), before);

    let run = run_cli(["modify", path_str(&image), "--server-url", SERVER_URL, "--config-on-data"]);

    run.assert_success("modify --config-on-data on a bare data image");
    let conf = parse_json(&debugfs_cat(&image, "/mender/mender.conf"), "mender.conf");
    assert_eq!(conf, json!({"ServerURL": SERVER_URL}));
    e2fsck_clean(&image);
}
