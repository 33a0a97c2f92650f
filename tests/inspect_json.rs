//! `inspect --json` against its documented schema, and the warnings of `inspect` on images in
//! states that make a preauthorized device show up as pending. The states are planted with
//! `debugfs -w` into fixtures built by `scripts/make-fixtures`; python3's json module judges the
//! JSON, and openssl computes the key fingerprint independently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{
    BOOT_PARTITION, CliRun, DATA_PARTITION, EXT4_JUDGES, ROOTFS_A_PARTITION, ROOTFS_B_PARTITION,
    debugfs_write_requests, make_bare_data, make_fixture, offset_path, partition, run_cli, run_judge,
    sha256_file,
};
use mender_preauth::test_support::{find_program, require_tools};
use serde_json::Value;

/// Programs these tests run besides the fixture tools.
const JUDGES: [&str; 4] = ["openssl", "python3", "sha256sum", "debugfs"];

/// Exit status of `inspect --check` when the report has warnings.
const WARNINGS_EXIT_CODE: i32 = 3;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Builds a fixture with an ext4 rootfs B, so that both root filesystems are inspected.
fn fixture(dir: &Path, test: &str) -> Option<PathBuf> {
    let image = make_fixture(dir, "device.sdimg", &["--rootfs-b"], test)?;
    require_tools(&JUDGES, test)?;
    require_tools(&EXT4_JUDGES, test)?;
    Some(image)
}

/// Generates an RSA key with openssl.
fn openssl_rsa_key(dir: &Path) -> PathBuf {
    let path = dir.join("device-key.pem");
    run_judge("openssl", &["genrsa", "-traditional", "-out", path_str(&path), "2048"]);
    path
}

/// Provisions `image` with `key` and the Artifact name `release-1`, so the store has records.
fn provision(image: &Path, key: &Path) {
    run_cli([
        "provision",
        path_str(image),
        "--key",
        path_str(key),
        "--identity",
        "mac=02:12:61:13:6c:42",
        "--artifact-name",
        "release-1",
    ])
    .assert_success("provision");
}

/// Builds a provisioned fixture and returns it with the key file it got.
fn provisioned(dir: &Path, test: &str) -> Option<(PathBuf, PathBuf)> {
    let image = fixture(dir, test)?;
    let key = openssl_rsa_key(dir);
    provision(&image, &key);
    Some((image, key))
}

/// Runs `inspect --json IMAGE` with `extra` arguments.
fn inspect_json_run(image: &Path, extra: &[&str]) -> CliRun {
    let mut args = vec!["inspect", "--json"];
    args.extend_from_slice(extra);
    args.push(path_str(image));
    run_cli(args)
}

/// Runs `inspect --json`, checks the output with python3's json module and returns it parsed.
fn inspect_json(image: &Path, dir: &Path) -> Value {
    let run = inspect_json_run(image, &[]);
    run.assert_success("inspect --json");
    let output = dir.join("inspect.json");
    std::fs::write(&output, &run.stdout).unwrap();
    let checked = run_judge(
        "python3",
        &["-c", "import json, sys; print(type(json.load(open(sys.argv[1]))).__name__)", path_str(&output)],
    );
    assert_eq!(String::from_utf8_lossy(&checked).trim(), "dict", "python3 did not read one JSON object");
    serde_json::from_str(&run.stdout).unwrap()
}

/// Returns the codes of the report's warnings.
fn warning_codes(report: &Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .expect("warnings is a list")
        .iter()
        .map(|warning| warning["code"].as_str().expect("warning code is a string").to_string())
        .collect()
}

/// Checks that `inspect` reports `code` in both forms and that `--check` fails with status 3.
fn assert_warns(image: &Path, dir: &Path, code: &str) -> Value {
    let report = inspect_json(image, dir);
    let codes = warning_codes(&report);
    assert!(codes.iter().any(|found| found == code), "no {code} warning in {codes:?}");

    let text = run_cli(["inspect", path_str(image)]);
    text.assert_success("inspect");
    let line = text.stdout.lines().find(|line| line.ends_with(&format!("[{code}]")));
    assert!(line.is_some_and(|line| line.starts_with("warning: ")), "no {code} line in:\n{}", text.stdout);

    let check = inspect_json_run(image, &["--check"]);
    assert_eq!(check.status.code(), Some(WARNINGS_EXIT_CODE), "stderr: {}", check.stderr);
    let checked: Value = serde_json::from_str(&check.stdout).expect("--check still prints the report");
    assert_eq!(checked["warnings"], report["warnings"]);
    report
}

/// Replaces the file at `path` on the filesystem at `fs` with `content`, mode 0600 or 0644,
/// owner 0:0, using debugfs.
fn plant_file(fs: &Path, dir: &Path, path: &str, content: &[u8], mode: &str) {
    let host = dir.join("planted");
    std::fs::write(&host, content).unwrap();
    let requests = [
        format!("rm {path}"),
        format!("write {} {path}", path_str(&host)),
        format!("sif {path} mode 0100{mode}"),
        format!("sif {path} uid 0"),
        format!("sif {path} gid 0"),
    ];
    // `rm` of a missing file is the one request allowed to fail, so it runs alone.
    let debugfs = find_program("debugfs").expect("the test required debugfs");
    let _ = std::process::Command::new(debugfs).args(["-w", "-R", &requests[0]]).arg(fs).output();
    debugfs_write_requests(fs, &requests[1..]);
}

/// Returns the SHA-256 of the public key's DER form, computed with `openssl pkey` and `sha256sum`.
fn openssl_fingerprint(key: &Path, dir: &Path) -> String {
    let der = dir.join("public.der");
    run_judge(
        "openssl",
        &["pkey", "-in", path_str(key), "-pubout", "-outform", "DER", "-out", path_str(&der)],
    );
    let sum = run_judge("sha256sum", &[path_str(&der)]);
    String::from_utf8(sum).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn provisioned_image_has_no_warnings() {
    let test = "provisioned_image_has_no_warnings";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, key)) = provisioned(dir.path(), test) else { return };

    let report = inspect_json(&image, dir.path());

    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["warnings"], serde_json::json!([]));
    let fingerprint = report["device_key"]["fingerprint_sha256"].as_str().unwrap().replace(':', "");
    assert_eq!(fingerprint, openssl_fingerprint(&key, dir.path()));
    assert_eq!(report["device_key"]["key_type"], "RSA 2048");
    let mender = &report["mender"];
    // provision --artifact-name writes artifact_info too, as mender-artifact modify -n does.
    assert_eq!(mender["artifact_name"]["artifact_info"], "release-1");
    assert_eq!(mender["artifact_name"]["store"], "release-1");
    assert_eq!(mender["device_type"]["value"], "qemux86-64");
    assert_eq!(mender["server_url"], "https://docker.mender.io");
    assert_eq!(mender["tenant_token"]["set"], false);
    assert_eq!(mender["key_file"], "/var/lib/mender/mender-agent.pem");
    assert_eq!(mender["rootfs"].as_array().unwrap().len(), 2);
    for rootfs in mender["rootfs"].as_array().unwrap() {
        assert_eq!(rootfs["identity_script"]["executable"], true);
        assert_eq!(rootfs["var_lib_mender"]["link_target"], "/data/mender");
        assert_eq!(rootfs["var_lib_mender"]["leads_to_data"], true);
    }
    assert_eq!(report["partitions"][3]["uuid"], "0e4b2f3a-9c8d-4e7f-8a6b-5c4d3e2f1a0b");

    let check = inspect_json_run(&image, &["--check"]);
    assert_eq!(check.status.code(), Some(0), "stderr: {}", check.stderr);
    let text = run_cli(["inspect", "--check", path_str(&image)]);
    assert_eq!(text.status.code(), Some(0), "stderr: {}", text.stderr);
    assert!(!text.stdout.contains("warning:"), "{}", text.stdout);
}

#[test]
fn unprovisioned_image_warns_key_missing() {
    let test = "unprovisioned_image_warns_key_missing";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = fixture(dir.path(), test) else { return };

    let report = assert_warns(&image, dir.path(), "key-missing");

    assert_eq!(warning_codes(&report), ["key-missing"]);
    assert_eq!(report["device_key"], Value::Null);
}

#[test]
fn key_mode_0644_warns() {
    let test = "key_mode_0644_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    debugfs_write_requests(&data, &["sif /mender/mender-agent.pem mode 0100644".to_string()]);

    let report = assert_warns(&image, dir.path(), "key-mode");

    assert_eq!(warning_codes(&report), ["key-mode"]);
    assert_eq!(report["device_key"]["mode"], "0644");
}

#[test]
fn key_owned_by_user_warns() {
    let test = "key_owned_by_user_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    debugfs_write_requests(&data, &["sif /mender/mender-agent.pem uid 1000".to_string()]);

    let report = assert_warns(&image, dir.path(), "key-owner");

    assert_eq!(warning_codes(&report), ["key-owner"]);
    assert_eq!(report["device_key"]["uid"], 1000);
}

#[test]
fn garbage_key_warns_unparsable() {
    let test = "garbage_key_warns_unparsable";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    plant_file(&data, dir.path(), "/mender/mender-agent.pem", b"not a key\n", "600");

    let report = assert_warns(&image, dir.path(), "key-unparsable");

    assert_eq!(warning_codes(&report), ["key-unparsable"]);
    assert_eq!(report["device_key"]["key_type"], Value::Null);
    assert!(report["device_key"]["error"].is_string());
}

#[test]
fn auth_private_key_elsewhere_warns() {
    let test = "auth_private_key_elsewhere_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let conf = br#"{"ServerURL": "https://docker.mender.io", "Security": {"AuthPrivateKey": "/etc/mender/hsm-key.pem"}}"#;
    for partition in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        plant_file(&offset_path(&image, partition), dir.path(), "/etc/mender/mender.conf", conf, "644");
    }

    let report = assert_warns(&image, dir.path(), "conf-key-path");

    assert_eq!(warning_codes(&report), ["conf-key-path", "conf-key-path"]);
    assert_eq!(report["mender"]["key_file"], "/etc/mender/hsm-key.pem");
    assert_eq!(report["mender"]["config_files"][0]["auth_private_key"], "/etc/mender/hsm-key.pem");
}

#[test]
fn https_client_key_relative_name_warns() {
    let test = "https_client_key_relative_name_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    plant_file(&data, dir.path(), "/mender/mender.conf", br#"{"HttpsClient": {"Key": "other.pem"}}"#, "600");

    let report = assert_warns(&image, dir.path(), "conf-key-path");

    assert_eq!(report["mender"]["key_file"], "/var/lib/mender/other.pem");
    assert_eq!(report["mender"]["config_files"][2]["location"], "data");
    assert_eq!(report["mender"]["config_files"][2]["https_client_key"], "other.pem");
}

#[test]
fn var_lib_mender_to_tmp_warns() {
    let test = "var_lib_mender_to_tmp_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let rootfs_a = offset_path(&image, ROOTFS_A_PARTITION);
    debugfs_write_requests(
        &rootfs_a,
        &["rm /var/lib/mender".to_string(), "symlink /var/lib/mender /tmp".to_string()],
    );

    let report = assert_warns(&image, dir.path(), "var-lib-mender");

    assert_eq!(warning_codes(&report), ["var-lib-mender", "rootfs-mismatch"]);
    let rootfs_a = &report["mender"]["rootfs"][0]["var_lib_mender"];
    assert_eq!(rootfs_a["link_target"], "/tmp");
    assert_eq!(rootfs_a["leads_to_data"], false);
    assert_eq!(report["mender"]["rootfs"][1]["var_lib_mender"]["leads_to_data"], true);
}

#[test]
fn broken_mender_conf_warns_invalid() {
    let test = "broken_mender_conf_warns_invalid";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    for partition in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        plant_file(
            &offset_path(&image, partition),
            dir.path(),
            "/etc/mender/mender.conf",
            b"{\"ServerURL\": ",
            "644",
        );
    }

    let report = assert_warns(&image, dir.path(), "conf-invalid");

    assert_eq!(warning_codes(&report), ["conf-invalid", "conf-invalid"]);
    let error = report["mender"]["config_files"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("invalid JSON"), "{error}");
}

#[test]
fn unreadable_mender_conf_warns_invalid() {
    let test = "unreadable_mender_conf_warns_invalid";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let conf = "/etc/mender/mender.conf";
    let symlink_loop = [format!("rm {conf}"), format!("symlink {conf} {conf}")];
    debugfs_write_requests(&offset_path(&image, ROOTFS_A_PARTITION), &symlink_loop);
    let directory = [format!("rm {conf}"), format!("mkdir {conf}")];
    debugfs_write_requests(&offset_path(&image, ROOTFS_B_PARTITION), &directory);

    let report = assert_warns(&image, dir.path(), "conf-invalid");

    assert_eq!(warning_codes(&report), ["conf-invalid", "conf-invalid"]);
    let files = &report["mender"]["config_files"];
    for index in 0..2 {
        assert_eq!(files[index]["path"], conf);
        assert_eq!(files[index]["present"], false);
        assert!(files[index]["error"].is_string(), "no error for {}", files[index]);
    }
    assert_eq!(files[0]["location"], "rootfs-a");
    assert_eq!(files[1]["location"], "rootfs-b");
    assert_eq!(files[1]["error"], "/etc/mender/mender.conf: not a regular file");
}

#[test]
fn wrong_field_type_warns_invalid() {
    let test = "wrong_field_type_warns_invalid";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    plant_file(&data, dir.path(), "/mender/mender.conf", br#"{"TenantToken": 42}"#, "600");

    let report = assert_warns(&image, dir.path(), "conf-invalid");

    assert_eq!(warning_codes(&report), ["conf-invalid"]);
    assert_eq!(report["mender"]["config_files"][2]["error"], "TenantToken is a number, not a string");
}

#[test]
fn damaged_fat_boot_sector_warns_boot_unreadable() {
    let test = "damaged_fat_boot_sector_warns_boot_unreadable";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    // Zero the bytes per sector (0x0B), sectors per cluster (0x0D), number of FATs (0x10) and
    // the 16-bit FAT size (0x16) of the boot sector, keeping its "FAT16" type string.
    let boot_start = usize::try_from(partition(&image, BOOT_PARTITION).start_bytes).unwrap();
    let mut bytes = std::fs::read(&image).unwrap();
    for offset in [0x0B, 0x0C, 0x0D, 0x10, 0x16, 0x17] {
        bytes[boot_start + offset] = 0;
    }
    std::fs::write(&image, &bytes).unwrap();
    let before = sha256_file(&image);

    let report = assert_warns(&image, dir.path(), "boot-unreadable");

    assert_eq!(warning_codes(&report), ["boot-unreadable"]);
    let boot = &report["partitions"][0];
    assert_eq!(boot["number"], BOOT_PARTITION);
    assert_eq!(boot["role"], "boot");
    assert_eq!(boot["filesystem"], "unknown");
    let reason = boot["role_reason"].as_str().unwrap();
    assert!(reason.starts_with("FAT filesystem could not be opened: "), "{reason}");
    let message = report["warnings"][0]["message"].as_str().unwrap();
    assert_eq!(message, format!("partition 1, the boot partition: {reason}"));
    assert_eq!(sha256_file(&image), before, "inspect changed the image");
}

#[test]
fn rootfs_b_other_server_warns_mismatch() {
    let test = "rootfs_b_other_server_warns_mismatch";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let rootfs_b = offset_path(&image, ROOTFS_B_PARTITION);
    plant_file(
        &rootfs_b,
        dir.path(),
        "/etc/mender/mender.conf",
        br#"{"ServerURL": "https://other.example"}"#,
        "644",
    );

    let report = assert_warns(&image, dir.path(), "rootfs-mismatch");

    assert_eq!(warning_codes(&report), ["rootfs-mismatch"]);
    let message = report["warnings"][0]["message"].as_str().unwrap();
    assert!(message.contains("server URL"), "{message}");
    assert_eq!(report["mender"]["config_files"][1]["server_url"], "https://other.example");
}

#[test]
fn identity_script_not_executable_warns() {
    let test = "identity_script_not_executable_warns";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    for partition in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        let script = "/usr/share/mender/identity/mender-device-identity";
        debugfs_write_requests(&offset_path(&image, partition), &[format!("sif {script} mode 0100644")]);
    }

    let report = assert_warns(&image, dir.path(), "identity-script");

    assert_eq!(warning_codes(&report), ["identity-script", "identity-script"]);
    assert_eq!(report["mender"]["rootfs"][0]["identity_script"]["mode"], "0644");
}

#[test]
fn tenant_token_value_never_printed() {
    let test = "tenant_token_value_never_printed";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let token = "tenant-token-value-1234";
    let conf = format!(r#"{{"ServerURL": "https://docker.mender.io", "TenantToken": "{token}"}}"#);
    for partition in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
        plant_file(
            &offset_path(&image, partition),
            dir.path(),
            "/etc/mender/mender.conf",
            conf.as_bytes(),
            "644",
        );
    }

    let report = inspect_json(&image, dir.path());
    let text = run_cli(["inspect", path_str(&image)]);

    assert_eq!(report["mender"]["tenant_token"]["set"], true);
    assert_eq!(report["mender"]["tenant_token"]["length"], token.len());
    assert_eq!(report["warnings"], serde_json::json!([]));
    text.assert_success("inspect");
    assert!(!text.stdout.contains(token), "{}", text.stdout);
    assert!(!serde_json::to_string(&report).unwrap().contains(token));
}

#[test]
fn rootfs_conf_empty_token_overrides_data_conf() {
    let test = "rootfs_conf_empty_token_overrides_data_conf";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    let conf = br#"{"TenantToken": "from-data", "ServerURL": "https://data.example"}"#;
    plant_file(&data, dir.path(), "/mender/mender.conf", conf, "600");

    let report = inspect_json(&image, dir.path());

    // The fixture's /etc/mender/mender.conf has "TenantToken": "", which the client 3.4 loads
    // last, so the empty string replaces the data partition's token; its ServerURL wins too.
    let mender = &report["mender"];
    assert_eq!(mender["config_files"][2]["tenant_token"]["set"], true);
    assert_eq!(mender["tenant_token"]["set"], false);
    assert_eq!(mender["server_url"], "https://docker.mender.io");
}

#[test]
fn bare_data_image_reads_data_conf() {
    let test = "bare_data_image_reads_data_conf";
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = make_bare_data(dir.path(), "data.dataimg", &[], test) else { return };
    let Some(_) = require_tools(&JUDGES, test) else { return };

    let report = assert_warns(&image, dir.path(), "key-missing");

    assert_eq!(warning_codes(&report), ["key-missing"]);
    assert_eq!(report["mender"]["rootfs"], serde_json::json!([]));
    assert_eq!(report["mender"]["device_type"]["path"], "/mender/device_type");
    assert_eq!(report["mender"]["device_type"]["value"], "qemux86-64");
    assert_eq!(report["mender"]["config_files"][0]["path"], "/mender/mender.conf");
}

/// Reads the field table of `docs/inspect-json.md`: path to its type column.
fn documented_fields() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/inspect-json.md")).unwrap();
    let table = doc.split("## Fields").nth(1).unwrap().split("\n## ").next().unwrap();
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let path = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
            Some((path.to_string(), cells.get(1)?.trim().to_string()))
        })
        .collect()
}

/// Reads the warning codes table of `docs/inspect-json.md`.
fn documented_codes() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/inspect-json.md")).unwrap();
    let table = doc.split("## Warning codes").nth(1).unwrap().split("\n## ").next().unwrap();
    table.lines().filter_map(|line| Some(line.strip_prefix("| `")?.split('`').next()?.to_string())).collect()
}

/// Names the JSON type of `value` as the documentation's type column does.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Collects every field path of `value` with the types seen there. The elements of a list of
/// objects are not fields themselves; their fields are `LIST[].FIELD`.
fn collect_fields(value: &Value, path: &str, fields: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    let is_list_of_objects = path.ends_with("[]") && value.is_object();
    if !path.is_empty() && !is_list_of_objects {
        fields.entry(path.to_string()).or_default().insert(type_name(value));
    }
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                let inner_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                collect_fields(inner, &inner_path, fields);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_fields(item, &format!("{path}[]"), fields);
            }
        }
        _ => {}
    }
}

#[test]
fn output_and_documentation_agree() {
    let test = "output_and_documentation_agree";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let data = offset_path(&image, DATA_PARTITION);
    plant_file(&data, dir.path(), "/mender/mender.conf", br#"{"HttpsClient": {"Key": "other.pem"}}"#, "644");
    let unprovisioned_dir = dir.path().join("unprovisioned");
    std::fs::create_dir(&unprovisioned_dir).unwrap();
    let Some(unprovisioned) = fixture(&unprovisioned_dir, test) else { return };

    let mut fields = BTreeMap::new();
    let mut codes = BTreeSet::new();
    for report in [inspect_json(&image, dir.path()), inspect_json(&unprovisioned, dir.path())] {
        collect_fields(&report, "", &mut fields);
        codes.extend(warning_codes(&report));
    }

    let documented = documented_fields();
    let undocumented: Vec<&String> = fields.keys().filter(|path| !documented.contains_key(*path)).collect();
    assert!(undocumented.is_empty(), "fields missing from docs/inspect-json.md: {undocumented:?}");
    let unseen: Vec<&String> = documented.keys().filter(|path| !fields.contains_key(*path)).collect();
    assert!(unseen.is_empty(), "documented fields the output lacks: {unseen:?}");
    for (path, types) in &fields {
        let allowed = &documented[path];
        for found in types {
            let matches = allowed == found
                || (*found == "null" && allowed.ends_with(" or null"))
                || allowed.strip_suffix(" or null") == Some(found);
            assert!(matches, "{path} is {found}, documented as {allowed}");
        }
    }
    let documented_codes = documented_codes();
    assert_eq!(documented_codes.len(), 13, "{documented_codes:?}");
    for code in &codes {
        assert!(documented_codes.contains(code), "warning code {code} is not documented");
    }
}

/// Returns the value of the string field `name` in the client's debug dump of its configuration
/// (`Loaded configuration = &conf.MenderConfig{...}`, Go's `%#v` inside a quoted log message).
fn dumped_field(dump: &str, name: &str) -> String {
    let marker = format!("{name}:\\\"");
    let start = dump.find(&marker).unwrap_or_else(|| panic!("no {name} in {dump}")) + marker.len();
    let length = dump[start..].find("\\\"").unwrap_or_else(|| panic!("{name} is not closed in {dump}"));
    dump[start..start + length].to_string()
}

/// Runs the real Mender client on `main` and `fallback` and returns its debug dump of the loaded
/// configuration, or `None` when it failed to load them or refused the merged result.
fn client_configuration(main: &Path, fallback: &Path, data_dir: &Path) -> Option<String> {
    let mender = find_program("mender").expect("the test required mender");
    let mut command = std::process::Command::new(mender);
    command.args([
        "--log-level",
        "debug",
        "--config",
        path_str(main),
        "--fallback-config",
        path_str(fallback),
    ]);
    command.args(["--data", path_str(data_dir), "show-artifact"]);
    let output = common::run_with_timeout(&mut command, common::COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // The first: a file the client cannot decode; the second: Validate refusing the merged result.
    if stderr.contains("Error loading configuration from file")
        || stderr.contains("Both Servers AND ServerURL given")
    {
        return None;
    }
    let line = stderr.lines().find(|line| line.contains("Loaded configuration = "));
    Some(line.unwrap_or_else(|| panic!("mender printed no configuration: {stderr}")).to_string())
}

#[test]
fn config_merge_matches_mender_client() {
    let test = "config_merge_matches_mender_client";
    let dir = tempfile::tempdir().unwrap();
    let Some((image, _)) = provisioned(dir.path(), test) else { return };
    let Some(_) = require_tools(&["mender"], test) else { return };
    // (main /etc/mender/mender.conf, fallback /var/lib/mender/mender.conf)
    let cases: [(&str, &str); 8] = [
        (
            r#"{"ServerURL": "https://main", "TenantToken": ""}"#,
            r#"{"TenantToken": "data-token", "ServerURL": "https://data"}"#,
        ),
        (
            r#"{"ServerURL": null, "security": {"SSLEngine": "x"}}"#,
            r#"{"ServerURL": "https://data", "Security": {"AuthPrivateKey": "k.pem"}}"#,
        ),
        (r#"{"HttpsClient": {"Key": "/etc/mender/tls.key"}, "serverurl": "https://lower"}"#, "{}"),
        (
            r#"{"TenantToken": "main-token"}"#,
            r#"{"HttpsClient": {"Key": "b.pem"}, "Security": {"AuthPrivateKey": "a.pem"}}"#,
        ),
        (r#"{"ServerURL": "https://main"}"#, r#"{"TenantToken": 42}"#),
        (r#"{"ServerURL": "#, "{}"),
        (r#"{"Servers": [{"ServerURL": "https://a"}], "ServerURL": "https://e"}"#, "{}"),
        (r#"{"Servers": [{"ServerURL": "https://a"}]}"#, r#"{"ServerURL": "https://data"}"#),
    ];
    let client_dir = dir.path().join("client-data");
    std::fs::create_dir(&client_dir).unwrap();

    for (main, fallback) in cases {
        for partition in [ROOTFS_A_PARTITION, ROOTFS_B_PARTITION] {
            plant_file(
                &offset_path(&image, partition),
                dir.path(),
                "/etc/mender/mender.conf",
                main.as_bytes(),
                "644",
            );
        }
        plant_file(
            &offset_path(&image, DATA_PARTITION),
            dir.path(),
            "/mender/mender.conf",
            fallback.as_bytes(),
            "600",
        );
        let (main_file, fallback_file) = (dir.path().join("main.conf"), dir.path().join("fallback.conf"));
        std::fs::write(&main_file, main).unwrap();
        std::fs::write(&fallback_file, fallback).unwrap();

        let report = inspect_json(&image, dir.path());
        let loaded = client_configuration(&main_file, &fallback_file, &client_dir);

        let case = format!("main {main}, fallback {fallback}");
        let invalid = warning_codes(&report).iter().any(|code| code == "conf-invalid");
        assert_eq!(invalid, loaded.is_none(), "{case}");
        let Some(dump) = loaded else { continue };
        let mender = &report["mender"];
        let server_url = dumped_field(&dump, " ServerURL");
        assert_eq!(mender["server_url"].as_str().unwrap_or(""), server_url, "{case}");
        let token = dumped_field(&dump, "TenantToken");
        assert_eq!(mender["tenant_token"]["set"], !token.is_empty(), "{case}");
        assert_eq!(mender["tenant_token"]["length"], token.len(), "{case}");
        let (auth_key, https_key) = (dumped_field(&dump, "AuthPrivateKey"), dumped_field(&dump, ", Key"));
        let key_name =
            [auth_key, https_key, "mender-agent.pem".to_string()].into_iter().find(|name| !name.is_empty());
        let key_name = key_name.unwrap();
        let key_file = match key_name.starts_with('/') {
            true => key_name,
            false => format!("/var/lib/mender/{key_name}"),
        };
        assert_eq!(mender["key_file"], key_file, "{case}");
    }
}
