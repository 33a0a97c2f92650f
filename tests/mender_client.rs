//! End-to-end judge: the real Mender client (Debian's `mender` 3.4) bootstraps from the data
//! directory that `mender-preauth provision` wrote onto an image, and sends its authentication
//! request to a recording HTTPS server on 127.0.0.1 (`tests/auth_recorder.py`). The request must
//! carry exactly the identity and public key that the preauthorization JSON promised.
//!
//! The client runs the identity helper from a fixed path, so these tests replace
//! `/usr/share/mender/identity/mender-device-identity` for their duration and hold a file lock
//! meanwhile. A guard puts the original back, also when a test panics.

mod common;

use std::fs::{File, Permissions, TryLockError};
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DATA_PARTITION, EXT4_JUDGES, KillOnDrop, debugfs_dump_dir, debugfs_stat, e2fsck_clean, extract_partition,
    make_fixture, run_cli, run_with_timeout, sha256_file,
};
use mender_preauth::test_support::{REQUIRE_TOOLS_VAR, require_tools, tools_required};

/// Where the Mender client 3.4 runs its identity helper from (`device.IdentityDataHelper`).
const IDENTITY_HELPER: &str = "/usr/share/mender/identity/mender-device-identity";

/// Lock file that serializes every test process replacing the identity helper.
const IDENTITY_LOCK: &str = "/tmp/mender-preauth-tests-identity-helper.lock";

/// How long a test waits for another test process to give the identity helper back.
const IDENTITY_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Path of the client's authentication request, under the server URL.
const AUTH_REQUEST_PATH: &str = "/api/devices/v1/authentication/auth_requests";

/// Time limit for one `mender bootstrap`. Rejected with 401, it takes well under a second.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds after which the recording server exits by itself, should a test leave it running.
const RECORDER_LIFETIME_SECS: u32 = 180;

/// Time limit for the recording server to print its port.
const RECORDER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Identity of the test device, as `key=value` lines in the order the helper prints them. The
/// repeated key makes the client send a list, and the keys are not in sorted order.
const IDENTITY: [(&str, &str); 3] =
    [("mac", "02:12:61:13:6c:42"), ("interface", "eth0"), ("interface", "wlan0")];

/// The identity data the Mender client 3.4 sends for `IDENTITY`: Go's `json.Marshal` of a map,
/// which sorts the keys and turns repeated keys into a list.
const IDENTITY_ID_DATA: &str = r#"{"interface":["eth0","wlan0"],"mac":"02:12:61:13:6c:42"}"#;

/// Programs the client tests run besides the fixture tools.
const CLIENT_TOOLS: [&str; 3] = ["mender", "python3", "openssl"];

/// The replaced identity helper. Dropping it puts back whatever was at `IDENTITY_HELPER` before
/// and releases the lock.
struct IdentityHelper {
    previous: Option<(Vec<u8>, Permissions)>,
    created_dirs: Vec<PathBuf>,
    _lock: File,
}

impl IdentityHelper {
    /// Takes the lock and installs a helper printing `identity`. Returns `None` when the helper
    /// path is not writable for this user, which counts as a missing tool.
    fn install(identity: &[(&str, &str)], test: &str) -> Option<IdentityHelper> {
        let lock = lock_identity_helper();
        let helper = Path::new(IDENTITY_HELPER);

        let previous = match std::fs::read(helper) {
            Ok(bytes) => {
                let permissions = std::fs::metadata(helper)
                    .unwrap_or_else(|error| panic!("failed to stat {IDENTITY_HELPER}: {error}"))
                    .permissions();
                Some((bytes, permissions))
            }
            Err(error) if error.kind() == ErrorKind::NotFound => None,
            Err(error) => panic!("failed to read {IDENTITY_HELPER}: {error}"),
        };

        let mut created_dirs = Vec::new();
        let mut missing = helper.parent();
        while let Some(dir) = missing.filter(|dir| !dir.exists()) {
            created_dirs.push(dir.to_path_buf());
            missing = dir.parent();
        }
        created_dirs.reverse();

        let mut guard = IdentityHelper { previous, created_dirs: Vec::new(), _lock: lock };
        for dir in created_dirs {
            match std::fs::create_dir(&dir) {
                Ok(()) => guard.created_dirs.push(dir),
                Err(error) if error.kind() == ErrorKind::PermissionDenied => {
                    return skip_unwritable_helper(test, &error);
                }
                Err(error) => panic!("failed to create {}: {error}", dir.display()),
            }
        }

        let script = identity_script(identity);
        if let Err(error) = replace_file(helper, script.as_bytes(), Permissions::from_mode(0o755)) {
            if error.kind() == ErrorKind::PermissionDenied {
                return skip_unwritable_helper(test, &error);
            }
            panic!("failed to install {IDENTITY_HELPER}: {error}");
        }
        Some(guard)
    }
}

impl Drop for IdentityHelper {
    fn drop(&mut self) {
        let helper = Path::new(IDENTITY_HELPER);
        let restored = match self.previous.take() {
            Some((bytes, permissions)) => replace_file(helper, &bytes, permissions),
            None => match std::fs::remove_file(helper) {
                Err(error) if error.kind() != ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
        };
        if let Err(error) = restored {
            eprintln!("failed to restore {IDENTITY_HELPER}: {error}");
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Reports the skip, or panics when tools are required, and returns `None`.
fn skip_unwritable_helper(test: &str, error: &std::io::Error) -> Option<IdentityHelper> {
    if tools_required() {
        panic!("{test}: cannot replace {IDENTITY_HELPER} ({error}) and {REQUIRE_TOOLS_VAR} is set");
    }
    eprintln!("skipped {test}: cannot replace {IDENTITY_HELPER} ({error}); run the tests as root");
    None
}

/// Takes the exclusive lock on `IDENTITY_LOCK`, waiting for other test processes to release it.
fn lock_identity_helper() -> File {
    // Another user may have created the lock file, and flock works on a file opened read-only.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(IDENTITY_LOCK)
        .or_else(|_| File::open(IDENTITY_LOCK))
        .unwrap_or_else(|error| panic!("failed to open {IDENTITY_LOCK}: {error}"));
    let deadline = Instant::now() + IDENTITY_LOCK_TIMEOUT;
    loop {
        match lock.try_lock() {
            Ok(()) => return lock,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => {
                panic!("{IDENTITY_LOCK} is still locked after {} s", IDENTITY_LOCK_TIMEOUT.as_secs())
            }
            Err(TryLockError::Error(error)) => panic!("failed to lock {IDENTITY_LOCK}: {error}"),
        }
    }
}

/// Returns a shell script that prints `identity` as `key=value` lines.
fn identity_script(identity: &[(&str, &str)]) -> String {
    let mut script = String::from("#!/bin/sh\n");
    for (key, value) in identity {
        let line = format!("{key}={value}").replace('\'', r"'\''");
        script.push_str(&format!("printf '%s\\n' '{line}'\n"));
    }
    script
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so the client
/// never runs a half-written helper.
fn replace_file(path: &Path, bytes: &[u8], permissions: Permissions) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".mender-preauth-test");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)?;
    std::fs::set_permissions(&temporary, permissions)?;
    std::fs::rename(&temporary, path)
}

/// An HTTPS server on 127.0.0.1 that records requests and rejects authentication with 401.
struct AuthRecorder {
    port: u16,
    dir: tempfile::TempDir,
    _process: KillOnDrop,
}

/// One authentication request as the recorder received it.
#[derive(Debug)]
struct AuthRequest {
    body: String,
    id_data: String,
    pubkey: String,
    tenant_token: String,
    /// The `X-MEN-Signature` header: base64 of the signature over `body`.
    signature_base64: String,
}

impl AuthRecorder {
    /// Makes a self-signed certificate for 127.0.0.1 and starts the server on an ephemeral port.
    fn start() -> AuthRecorder {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory for the recorder");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        let mut openssl = Command::new("openssl");
        openssl
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert);
        assert_command_success(run_with_timeout(&mut openssl, CLIENT_TIMEOUT), "openssl req");

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth_recorder.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--out")
            .arg(dir.path())
            .arg("--lifetime")
            .arg(RECORDER_LIFETIME_SECS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", script.display()));
        let stdout = child.stdout.take().expect("recorder stdout is piped");
        let process = KillOnDrop(child);

        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let line = match receiver.recv_timeout(RECORDER_START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(error)) => panic!("failed to read the recorder's port: {error}"),
            Err(_) => panic!("the recorder printed no port within {} s", RECORDER_START_TIMEOUT.as_secs()),
        };
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("the recorder printed {line:?} instead of a port: {error}"));

        AuthRecorder { port, dir, _process: process }
    }

    /// Writes a client configuration whose only server is this recorder.
    fn write_client_config(&self, path: &Path) {
        let config = serde_json::json!({ "ServerURL": format!("https://127.0.0.1:{}", self.port) });
        std::fs::write(path, config.to_string())
            .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
    }

    /// Returns the authentication requests received so far, oldest first.
    fn auth_requests(&self) -> Vec<AuthRequest> {
        let log = self.dir.path().join("requests.jsonl");
        let text = match std::fs::read_to_string(&log) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(error) => panic!("failed to read {}: {error}", log.display()),
        };

        let mut requests = Vec::new();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("invalid line in {} ({error}): {line}", log.display()));
            assert_eq!(entry["path"], AUTH_REQUEST_PATH, "the client requested another path: {entry}");
            assert_eq!(entry["method"], "POST", "the client used another method: {entry}");
            requests.push(parse_auth_request(&entry));
        }
        requests
    }
}

fn parse_auth_request(entry: &serde_json::Value) -> AuthRequest {
    let body = entry["body"].as_str().unwrap_or_else(|| panic!("recorded request without body: {entry}"));
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("auth request body is not JSON ({error}): {body}"));
    let field = |name: &str| -> String {
        json[name].as_str().unwrap_or_else(|| panic!("auth request has no string {name}: {body}")).to_owned()
    };
    let headers = entry["headers"].as_object().unwrap_or_else(|| panic!("recorded request without headers"));
    let signature = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("X-MEN-Signature"))
        .and_then(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("auth request without X-MEN-Signature: {entry}"));

    AuthRequest {
        body: body.to_owned(),
        id_data: field("id_data"),
        pubkey: field("pubkey"),
        tenant_token: field("tenant_token"),
        signature_base64: signature.to_owned(),
    }
}

fn assert_command_success(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `mender bootstrap` on `data_dir` with `config`, without `--forcebootstrap`, so the client
/// uses the key it finds and generates one only when there is none.
fn run_client_bootstrap(data_dir: &Path, config: &Path) -> Output {
    let mut client = Command::new("mender");
    client
        .arg("--no-syslog")
        .arg("--skipverify")
        .arg("--log-level")
        .arg("info")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data_dir)
        .arg("bootstrap");
    run_with_timeout(&mut client, CLIENT_TIMEOUT)
}

/// Runs the client against a fresh recorder and returns the one authentication request it sent.
fn bootstrap_and_record(data_dir: &Path, work: &Path) -> AuthRequest {
    let recorder = AuthRecorder::start();
    let config = work.join("mender.conf");
    recorder.write_client_config(&config);

    let output = run_client_bootstrap(data_dir, &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut requests = recorder.auth_requests();

    assert_eq!(requests.len(), 1, "the client sent {} auth requests; its stderr:\n{stderr}", requests.len());
    assert!(!output.status.success(), "the client accepted a 401 answer; its stderr:\n{stderr}");
    assert!(
        !stderr.contains("generating"),
        "the client generated a device key instead of using the one in {}; its stderr:\n{stderr}",
        data_dir.display()
    );
    requests.remove(0)
}

/// Checks with openssl that the request's signature verifies with the request's public key.
fn assert_signature_verifies(request: &AuthRequest, work: &Path) {
    let pubkey = work.join("request-pubkey.pem");
    let body = work.join("request-body.json");
    let signature_base64 = work.join("request-signature.b64");
    let signature = work.join("request-signature.bin");
    std::fs::write(&pubkey, &request.pubkey).expect("failed to write the request's public key");
    std::fs::write(&body, &request.body).expect("failed to write the request body");
    std::fs::write(&signature_base64, &request.signature_base64).expect("failed to write the signature");

    let mut decode = Command::new("openssl");
    decode.args(["base64", "-d", "-A", "-in"]).arg(&signature_base64).arg("-out").arg(&signature);
    assert_command_success(run_with_timeout(&mut decode, CLIENT_TIMEOUT), "openssl base64 -d");

    let mut verify = Command::new("openssl");
    verify.args(["dgst", "-sha256", "-verify"]).arg(&pubkey).arg("-signature").arg(&signature).arg(&body);
    let output = run_with_timeout(&mut verify, CLIENT_TIMEOUT);
    assert!(
        output.status.success(),
        "the auth request's X-MEN-Signature does not verify with its pubkey: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the public key of the private key file `key` as `openssl pkey -pubout` prints it.
fn openssl_public_key(key: &Path) -> String {
    let mut pubout = Command::new("openssl");
    pubout.args(["pkey", "-pubout", "-in"]).arg(key);
    let output =
        assert_command_success(run_with_timeout(&mut pubout, CLIENT_TIMEOUT), "openssl pkey -pubout");
    String::from_utf8(output.stdout).expect("openssl printed a public key that is not UTF-8")
}

/// Writes a 3072-bit RSA key in the traditional PKCS#1 form the Mender client 3.4 writes itself.
fn generate_rsa_key(path: &Path) {
    let mut genrsa = Command::new("openssl");
    genrsa.args(["genrsa", "-traditional", "-out"]).arg(path).arg("3072");
    assert_command_success(run_with_timeout(&mut genrsa, CLIENT_TIMEOUT), "openssl genrsa");
}

/// Returns `--identity KEY=VALUE` arguments for `identity`.
fn identity_arguments(identity: &[(&str, &str)]) -> Vec<String> {
    identity.iter().flat_map(|(key, value)| ["--identity".to_owned(), format!("{key}={value}")]).collect()
}

/// Provisions a fresh fixture image, checks the data partition with e2fsck, and returns the
/// preauthorization JSON and a copy of `/mender` taken out with debugfs.
fn provision_and_dump(
    work: &Path,
    extra_arguments: &[&str],
    test: &str,
) -> Option<(serde_json::Value, PathBuf)> {
    let image = make_fixture(work, "device.sdimg", &[], test)?;

    let mut arguments = vec!["provision".to_owned(), image.display().to_string()];
    arguments.extend(identity_arguments(&IDENTITY));
    arguments.extend(extra_arguments.iter().map(|argument| argument.to_string()));
    if !extra_arguments.contains(&"--key") {
        // A generated key pair is saved under --keys-dir; keep it out of the working directory.
        arguments.extend(["--keys-dir".to_owned(), work.join("keys").display().to_string()]);
    }
    let provision = run_cli(&arguments);
    provision.assert_success("mender-preauth provision");
    let preauth = provision.stdout_json_line();

    let data = extract_partition(&image, DATA_PARTITION, &work.join("data.ext4"));
    e2fsck_clean(&data);
    let key = debugfs_stat(&data, "/mender/mender-agent.pem");
    assert_eq!(key.file_type, "regular", "/mender/mender-agent.pem type");
    assert_eq!(key.mode, 0o600, "/mender/mender-agent.pem permissions");
    assert_eq!((key.uid, key.gid), (0, 0), "/mender/mender-agent.pem owner");
    let mender_dir = debugfs_dump_dir(&data, "/mender", &work.join("dump"));
    Some((preauth, mender_dir))
}

fn require_client_tools(test: &str) -> Option<()> {
    require_tools(&CLIENT_TOOLS, test)?;
    require_tools(&EXT4_JUDGES, test)?;
    Some(())
}

#[test]
fn client_sends_hand_made_key_and_identity() {
    const TEST: &str = "client_sends_hand_made_key_and_identity";
    if require_client_tools(TEST).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let data_dir = work.path().join("data");
    std::fs::create_dir(&data_dir).expect("failed to create the data directory");
    let key = data_dir.join("mender-agent.pem");
    generate_rsa_key(&key);
    std::fs::write(data_dir.join("device_type"), "device_type=qemux86-64\n")
        .expect("failed to write device_type");
    let key_sha256 = sha256_file(&key);
    let expected_pubkey = openssl_public_key(&key);

    let Some(_helper) = IdentityHelper::install(&IDENTITY, TEST) else { return };
    let request = bootstrap_and_record(&data_dir, work.path());

    assert_eq!(request.pubkey, expected_pubkey, "pubkey differs from `openssl pkey -pubout` of the key");
    assert_eq!(request.id_data, IDENTITY_ID_DATA);
    assert_eq!(request.tenant_token, "");
    assert_signature_verifies(&request, work.path());
    assert_eq!(sha256_file(&key), key_sha256, "the client changed {}", key.display());
}

#[test]
fn client_authenticates_with_provisioned_key_and_identity() {
    const TEST: &str = "client_authenticates_with_provisioned_key_and_identity";
    if require_client_tools(TEST).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let Some((preauth, mender_dir)) = provision_and_dump(work.path(), &[], TEST) else { return };
    let key = mender_dir.join("mender-agent.pem");
    assert!(key.is_file(), "provision wrote no /mender/mender-agent.pem");
    assert!(mender_dir.join("mender-store").is_file(), "provision wrote no /mender/mender-store");
    let key_sha256 = sha256_file(&key);

    let identity = run_cli(["identity"].into_iter().map(str::to_owned).chain(identity_arguments(&IDENTITY)));
    identity.assert_success("mender-preauth identity");
    let identity_string = identity.stdout.strip_suffix('\n').unwrap_or(&identity.stdout);

    let Some(_helper) = IdentityHelper::install(&IDENTITY, TEST) else { return };
    let request = bootstrap_and_record(&mender_dir, work.path());

    assert_eq!(request.id_data, identity_string, "id_data differs from `mender-preauth identity`");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&request.id_data).expect("id_data is not JSON"),
        preauth["identity_data"],
        "id_data differs from the preauthorization's identity_data"
    );
    assert_eq!(request.id_data, IDENTITY_ID_DATA, "id_data differs from what the client 3.4 sends");
    assert_eq!(
        Some(request.pubkey.as_str()),
        preauth["pubkey"].as_str(),
        "pubkey differs from the preauthorization's"
    );
    assert_eq!(request.pubkey, openssl_public_key(&key), "pubkey differs from the key on the image");
    assert_eq!(request.tenant_token, "");
    assert_signature_verifies(&request, work.path());
    assert_eq!(sha256_file(&key), key_sha256, "the client replaced the provisioned key");
}

#[test]
fn client_authenticates_with_key_given_to_provision() {
    const TEST: &str = "client_authenticates_with_key_given_to_provision";
    if require_client_tools(TEST).is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let given_key = work.path().join("given-key.pem");
    generate_rsa_key(&given_key);
    let given_key_argument = given_key.display().to_string();
    let Some((preauth, mender_dir)) = provision_and_dump(work.path(), &["--key", &given_key_argument], TEST)
    else {
        return;
    };
    let key = mender_dir.join("mender-agent.pem");
    let key_sha256 = sha256_file(&key);
    let expected_pubkey = openssl_public_key(&given_key);
    assert_eq!(preauth["pubkey"].as_str(), Some(expected_pubkey.as_str()), "preauthorization pubkey");

    let Some(_helper) = IdentityHelper::install(&IDENTITY, TEST) else { return };
    let request = bootstrap_and_record(&mender_dir, work.path());

    assert_eq!(
        request.pubkey, expected_pubkey,
        "the client sent another key than the one given to provision"
    );
    assert_eq!(request.id_data, IDENTITY_ID_DATA);
    assert_signature_verifies(&request, work.path());
    assert_eq!(sha256_file(&key), key_sha256, "the client replaced the provisioned key");
}

#[test]
fn identity_output_matches_client_id_data() {
    const TEST: &str = "identity_output_matches_client_id_data";
    if require_client_tools(TEST).is_none() {
        return;
    }
    // Go's encoder escapes <, > and & as \u003c, \u003e and \u0026, keeps non-ASCII as UTF-8 and
    // escapes quotes, backslashes and tabs. The keys come unsorted and one of them repeats.
    let identity = [
        ("serial", "SN-0042"),
        ("site", "lab \"A\" & <rack 3>"),
        ("path", "C:\\mender\tdevice"),
        ("owner", "Zoë"),
        ("serial", "SN-0043"),
    ];
    let work = tempfile::tempdir().expect("failed to create a temporary directory");
    let data_dir = work.path().join("data");
    std::fs::create_dir(&data_dir).expect("failed to create the data directory");
    let key = data_dir.join("mender-agent.pem");
    generate_rsa_key(&key);
    std::fs::write(data_dir.join("device_type"), "device_type=qemux86-64\n")
        .expect("failed to write device_type");

    let cli = run_cli(["identity"].into_iter().map(str::to_owned).chain(identity_arguments(&identity)));
    cli.assert_success("mender-preauth identity");
    let identity_string = cli.stdout.strip_suffix('\n').unwrap_or(&cli.stdout);

    let Some(_helper) = IdentityHelper::install(&identity, TEST) else { return };
    let request = bootstrap_and_record(&data_dir, work.path());

    assert_eq!(
        identity_string, request.id_data,
        "`mender-preauth identity` differs from the client's id_data"
    );
}
