//! Arguments that are wrong in themselves or together are usage errors: exit status 2, as the
//! README documents, a message naming the argument, and nothing written.

mod common;

use common::{run_cli, sha256_file};

#[test]
fn bad_arguments_exit_with_usage_status() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("device.sdimg");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.sdimg"), &image).unwrap();
    let keys = dir.path().join("keys");
    run_cli(["keygen", "-t", "ed25519", "-o", keys.to_str().unwrap()]).assert_success("keygen");
    let key = keys.join("private.key");
    let (image_arg, key_arg) = (image.to_str().unwrap(), key.to_str().unwrap());
    let generated_keys = dir.path().join("generated");
    let generated_arg = generated_keys.to_str().unwrap();
    let before = sha256_file(&image);

    let with_key = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["provision", image_arg, "-k", key_arg, "-i", "mac=aa"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let generating = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["provision", image_arg, "--keys-dir", generated_arg, "-i", "mac=aa"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|arg| arg.to_string()).collect() };

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("provides without colon", with_key(&["--provides", "nocolon"]), "nocolon"),
        ("provides with empty key", with_key(&["--provides", ":1"]), ":1"),
        ("reserved provide name", with_key(&["--provides", "artifact_name:x"]), "artifact_name"),
        ("identity without value", with_key(&["-i", "novalue"]), "novalue"),
        ("identity with colon", with_key(&["-i", "mac:02:12"]), "mac:02:12"),
        ("xattr outside the namespaces", with_key(&["--xattr", "foo=bar"]), "foo"),
        ("xattr with odd hex", with_key(&["--xattr", "user.hex=0xabc"]), "odd number of digits"),
        ("xattr given twice", with_key(&["--xattr", "user.a=1", "--xattr", "user.a=2"]), "user.a"),
        ("force with API v1", with_key(&["--api", "v1", "--force"]), "--force"),
        ("RSA key too short", generating(&["--bits", "1024"]), "1024"),
        ("bits for Ed25519", generating(&["-t", "ed25519", "-b", "4096"]), "--bits"),
        (
            "preauth force with API v1",
            owned(&["preauth", "-i", "mac=aa", "-k", key_arg, "--api", "v1", "--force"]),
            "--force",
        ),
        ("keygen key too short", owned(&["keygen", "-b", "1024", "-o", generated_arg]), "1024"),
        (
            "keygen bits for Ed25519",
            owned(&["keygen", "-t", "ed25519", "-b", "4096", "-o", generated_arg]),
            "--bits",
        ),
    ];

    for (case, args, named) in cases {
        let run = run_cli(&args);

        assert_eq!(
            run.status.code(),
            Some(2),
            "{case}: exit status {:?}, stderr: {}",
            run.status,
            run.stderr
        );
        assert!(run.stderr.contains(named), "{case}: stderr does not name {named}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{case}: stdout is not empty: {}", run.stdout);
        assert_eq!(sha256_file(&image), before, "{case}: the image changed");
        assert!(!generated_keys.exists(), "{case}: a key was saved");
    }
}
