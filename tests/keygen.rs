//! `mender-preauth keygen`: the files Mender's keygen-client makes, and no silent replacement
//! of a key that may already be preauthorized.

mod common;

use common::run_cli;

#[test]
fn keygen_refuses_to_replace_keys_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let out_arg = out.to_str().unwrap();
    run_cli(["keygen", "--type", "ed25519", "--out-dir", out_arg]).assert_success("first keygen");
    let private = std::fs::read(out.join("private.key")).unwrap();
    let public = std::fs::read(out.join("public.key")).unwrap();

    let second = run_cli(["keygen", "--type", "ed25519", "--out-dir", out_arg]);

    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    assert!(
        second.stderr.contains("already exists") && second.stderr.contains("--force"),
        "{}",
        second.stderr
    );
    assert_eq!(std::fs::read(out.join("private.key")).unwrap(), private);
    assert_eq!(std::fs::read(out.join("public.key")).unwrap(), public);

    run_cli(["keygen", "--type", "ed25519", "--out-dir", out_arg, "--force"])
        .assert_success("keygen --force");
    assert_ne!(std::fs::read(out.join("private.key")).unwrap(), private);
}

#[test]
fn keygen_writes_prefixed_files_with_private_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");

    run_cli(["keygen", "--type", "ecdsa-p256", "--out-dir", out.to_str().unwrap(), "--prefix", "unit7-"])
        .assert_success("keygen with a prefix");

    let mode = |name: &str| std::fs::metadata(out.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("unit7-private.key"), 0o600);
    assert_eq!(mode("unit7-public.key"), 0o644);
    let private = std::fs::read_to_string(out.join("unit7-private.key")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{private}");
    let public = std::fs::read_to_string(out.join("unit7-public.key")).unwrap();
    assert!(
        public.starts_with("-----BEGIN PUBLIC KEY-----\n") && public.ends_with("-----END PUBLIC KEY-----\n")
    );
}

#[test]
fn keygen_rejects_bits_for_curve_keys() {
    let dir = tempfile::tempdir().unwrap();

    let run =
        run_cli(["keygen", "--type", "ed25519", "--bits", "4096", "--out-dir", dir.path().to_str().unwrap()]);

    assert_eq!(run.status.code(), Some(2), "usage errors exit with 2: {}", run.stderr);
    assert!(run.stderr.contains("--bits applies only to --type rsa"), "{}", run.stderr);
    assert!(!dir.path().join("private.key").exists());
}
