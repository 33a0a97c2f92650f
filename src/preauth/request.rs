//! Request bodies of the Mender server's preauthorization endpoints.
//!
//! - Management API v2, `POST /api/management/v2/devauth/devices`:
//!   `{"identity_data":{...},"pubkey":"<PEM>"}`, with `,"force":true` appended on request.
//! - Management API v1, the device admission endpoint of Mender 1.x
//!   (`POST /api/management/v1/admission/devices`):
//!   `{"device_identity":"<identity JSON as a string>","key":"<PEM>"}`.
//!
//! The identity object is exactly the client's identity JSON and the key is the PEM the client
//! sends, so the server can match the device's first authentication request to the preauthorized
//! auth set. Strings are escaped like Go's `json.Marshal`.

use thiserror::Error;

use super::identity::IdentityData;
use super::json::write_go_json_string;
use crate::mender::device_key::DevicePublicKey;

/// Version of the device authentication management API that receives the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `/api/management/v2/devauth/devices`: identity as a JSON object, optional `force`.
    V2,
    /// Mender 1.x `/api/management/v1/admission/devices`: identity as a JSON string, no `force`.
    V1,
}

/// Errors from building a request body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// `force` was requested for the v1 API, which has no such field.
    #[error("force is only available with the v2 management API; drop it or use API v2")]
    ForceNeedsV2,
}

/// Returns the preauthorization request body for `api` as one line of JSON without a trailing
/// newline. `force` (v2 only) asks the server to replace an existing auth set for the identity.
pub fn preauth_request_json(
    identity: &IdentityData,
    pubkey: &DevicePublicKey,
    api: ApiVersion,
    force: bool,
) -> Result<String, RequestError> {
    let pem = pubkey.to_pem();
    let mut out = String::new();

    match api {
        ApiVersion::V2 => {
            out.push_str("{\"identity_data\":");
            identity.write_json(&mut out);
            out.push_str(",\"pubkey\":");
            write_go_json_string(&mut out, pem.as_bytes());
            if force {
                out.push_str(",\"force\":true");
            }
            out.push('}');
        }
        ApiVersion::V1 => {
            if force {
                return Err(RequestError::ForceNeedsV2);
            }
            out.push_str("{\"device_identity\":");
            write_go_json_string(&mut out, identity.to_json().as_bytes());
            out.push_str(",\"key\":");
            write_go_json_string(&mut out, pem.as_bytes());
            out.push('}');
        }
    }

    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::require_tool;
    use serde_json::{Value, json};
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// An Ed25519 public key printed by `openssl pkey -pubout`.
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
                              MCowBQYDK2VwAyEAttSPLcvdZvbZQMUJ/5NmZ6dgHgRzUlFejXeTvMuQNUw=\n\
                              -----END PUBLIC KEY-----\n";
    /// [`PUBLIC_PEM`] as a JSON string.
    const PUBLIC_JSON: &str = r#""-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAttSPLcvdZvbZQMUJ/5NmZ6dgHgRzUlFejXeTvMuQNUw=\n-----END PUBLIC KEY-----\n""#;

    /// Identity text with HTML characters, quotes, a backslash, control bytes, a repeated key,
    /// non-ASCII and invalid UTF-8.
    const TRICKY_IDENTITY: &[u8] =
        b"mac=00:11\nserial=<a&b>\nquote=\"x\"\\y\nctl=\x01\t\x7f\nmac=22:33\nname=caf\xc3\xa9\nraw=\xff\n";
    const TRICKY_JSON: &str = concat!(
        r#"{"ctl":"\u0001\t"#,
        "\u{7f}",
        r#"","mac":["00:11","22:33"],"name":"caf"#,
        "\u{e9}",
        r#"","quote":"\"x\"\\y","raw":"\ufffd","serial":"\u003ca\u0026b\u003e"}"#
    );

    fn identity(text: &[u8]) -> IdentityData {
        IdentityData::from_key_value_text(text, "test identity").expect("valid identity")
    }

    fn public_key() -> DevicePublicKey {
        DevicePublicKey::from_pem(PUBLIC_PEM.as_bytes()).expect("valid public key")
    }

    fn body(text: &[u8], api: ApiVersion, force: bool) -> String {
        preauth_request_json(&identity(text), &public_key(), api, force).expect("valid request")
    }

    fn expected_identity_value() -> Value {
        json!({
            "ctl": "\u{1}\t\u{7f}",
            "mac": ["00:11", "22:33"],
            "name": "caf\u{e9}",
            "quote": "\"x\"\\y",
            "raw": "\u{fffd}",
            "serial": "<a&b>",
        })
    }

    #[test]
    fn tricky_identity_json_is_exact() {
        assert_eq!(identity(TRICKY_IDENTITY).to_json(), TRICKY_JSON);
    }

    #[test]
    fn v2_body_is_exact() {
        let expected = format!(r#"{{"identity_data":{TRICKY_JSON},"pubkey":{PUBLIC_JSON}}}"#);
        assert_eq!(body(TRICKY_IDENTITY, ApiVersion::V2, false), expected);
    }

    #[test]
    fn v2_force_is_appended() {
        let expected = format!(r#"{{"identity_data":{{"mac":"x"}},"pubkey":{PUBLIC_JSON},"force":true}}"#);
        assert_eq!(body(b"mac=x\n", ApiVersion::V2, true), expected);
    }

    #[test]
    fn v1_body_is_exact() {
        let expected = format!(r#"{{"device_identity":"{{\"mac\":\"x\\u003c\"}}","key":{PUBLIC_JSON}}}"#);
        assert_eq!(body(b"mac=x<\n", ApiVersion::V1, false), expected);
    }

    #[test]
    fn v1_rejects_force() {
        let error =
            preauth_request_json(&identity(b"mac=x\n"), &public_key(), ApiVersion::V1, true).unwrap_err();
        assert_eq!(error, RequestError::ForceNeedsV2);
    }

    #[test]
    fn bodies_are_one_line() {
        for (api, force) in [(ApiVersion::V2, false), (ApiVersion::V2, true), (ApiVersion::V1, false)] {
            let text = body(TRICKY_IDENTITY, api, force);
            assert!(!text.contains('\n'), "{api:?} body has a raw newline");
            assert!(text.ends_with('}'), "{api:?} body has trailing text");
        }
    }

    #[test]
    fn v2_body_parses_back() {
        let value: Value =
            serde_json::from_str(&body(TRICKY_IDENTITY, ApiVersion::V2, true)).expect("valid JSON");
        assert_eq!(value["identity_data"], expected_identity_value());
        assert_eq!(value["pubkey"], PUBLIC_PEM);
        assert_eq!(value["force"], true);
        assert_eq!(value.as_object().map(|object| object.len()), Some(3));
    }

    #[test]
    fn v1_body_parses_back() {
        let value: Value =
            serde_json::from_str(&body(TRICKY_IDENTITY, ApiVersion::V1, false)).expect("valid JSON");
        let device_identity = value["device_identity"].as_str().expect("device_identity is a string");
        assert_eq!(device_identity, TRICKY_JSON);
        let inner: Value = serde_json::from_str(device_identity).expect("device_identity is JSON");
        assert_eq!(inner, expected_identity_value());
        assert_eq!(value["key"], PUBLIC_PEM);
        assert_eq!(value.as_object().map(|object| object.len()), Some(2));
    }

    #[test]
    fn python_json_reads_bodies() {
        let Some(python) = require_tool("python3", "python_json_reads_bodies") else { return };
        let script = "import json, sys\n\
                      body = json.loads(sys.stdin.read())\n\
                      identity = body['identity_data']\n\
                      print(json.dumps([sorted(identity), identity['mac'], identity['raw'], body['pubkey']]))\n";
        let mut child = Command::new(python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let input = body(TRICKY_IDENTITY, ApiVersion::V2, false);
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to python3");
        let output = child.wait_with_output().expect("wait for python3");
        assert!(output.status.success(), "python3 could not parse the body");

        let printed: Value = serde_json::from_slice(&output.stdout).expect("python3 printed JSON");
        let keys = json!(["ctl", "mac", "name", "quote", "raw", "serial"]);
        assert_eq!(printed, json!([keys, ["00:11", "22:33"], "\u{fffd}", PUBLIC_PEM]));
    }
}
