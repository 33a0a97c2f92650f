//! The fields of `mender.conf` that decide where a preauthorized device connects and which key
//! it signs with, read as the Mender client 3.4 reads them (`conf/config.go`).
//!
//! The client decodes `/var/lib/mender/mender.conf` first and `/etc/mender/mender.conf` second
//! into the same Go struct with `encoding/json`. So a field present in the second file replaces
//! the first file's value, even with an empty string, while a field that is absent or `null`
//! leaves it. Nested objects (`Security`, `HttpsClient`) merge field by field, and the
//! `Servers` list is replaced whole. A field of the wrong JSON type fails the whole file, and
//! the client then refuses to start.

use serde_json::{Map, Value};

/// The key file name the client 3.4 uses when `mender.conf` names none (`conf.DefaultKeyFile`),
/// relative to its state directory.
pub const DEFAULT_KEY_FILE: &str = "mender-agent.pem";

/// The client's state directory (`conf.DefaultDataStore`), where relative key paths start.
pub const STATE_DIR: &str = "/var/lib/mender";

/// The fields of one `mender.conf` that inspection uses. `None` is a field that is absent or
/// `null`; `Some("")` is a field set to the empty string, which still replaces an earlier value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigValues {
    pub server_url: Option<String>,
    /// `ServerURL` of the first entry of `Servers`, which the client uses instead of `ServerURL`.
    pub first_server_url: Option<String>,
    pub tenant_token: Option<String>,
    /// `Security.AuthPrivateKey`, which takes precedence over `HttpsClient.Key`.
    pub auth_private_key: Option<String>,
    /// `HttpsClient.Key`.
    pub https_client_key: Option<String>,
    pub device_type_file: Option<String>,
    /// True when `Servers` is given (not absent or `null`), even as an empty list.
    pub servers_given: bool,
}

impl ConfigValues {
    /// Parses the text of a `mender.conf`. The error explains why the client would fail to load it.
    ///
    /// NOTE: Go matches keys case-insensitively and the last matching key wins. Here an exact key
    /// is preferred and otherwise the first key that matches ignoring ASCII case is taken, which
    /// differs only in files that spell one field twice. Fields this type does not read are not
    /// type-checked, although a wrong type there fails the file on the device too.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(text).map_err(|error| format!("invalid JSON: {error}"))?;
        let object = match &value {
            Value::Object(object) => object,
            // Go decodes `null` into a struct as no change at all.
            Value::Null => return Ok(ConfigValues::default()),
            other => return Err(format!("the top level is {}, not a JSON object", kind(other))),
        };

        let security = object_field(object, "Security")?;
        let https_client = object_field(object, "HttpsClient")?;
        Ok(ConfigValues {
            server_url: string_field(object, "ServerURL")?,
            first_server_url: first_server_url(object)?,
            tenant_token: string_field(object, "TenantToken")?,
            auth_private_key: security
                .map(|security| string_field(security, "AuthPrivateKey"))
                .transpose()?
                .flatten(),
            https_client_key: https_client.map(|https| string_field(https, "Key")).transpose()?.flatten(),
            device_type_file: string_field(object, "DeviceTypeFile")?,
            servers_given: !matches!(field(object, "Servers"), None | Some(Value::Null)),
        })
    }

    /// Merges two files as the client loads them: `main` (`/etc/mender/mender.conf`) over
    /// `fallback` (`/var/lib/mender/mender.conf`).
    pub fn merged(main: &ConfigValues, fallback: &ConfigValues) -> ConfigValues {
        let pick =
            |main: &Option<String>, fallback: &Option<String>| main.clone().or_else(|| fallback.clone());
        ConfigValues {
            server_url: pick(&main.server_url, &fallback.server_url),
            first_server_url: pick(&main.first_server_url, &fallback.first_server_url),
            tenant_token: pick(&main.tenant_token, &fallback.tenant_token),
            auth_private_key: pick(&main.auth_private_key, &fallback.auth_private_key),
            https_client_key: pick(&main.https_client_key, &fallback.https_client_key),
            device_type_file: pick(&main.device_type_file, &fallback.device_type_file),
            servers_given: main.servers_given || fallback.servers_given,
        }
    }

    /// True when the merged configuration gives both `Servers` and a non-empty `ServerURL`,
    /// which the client 3.4 refuses (`Validate` in `conf/config.go`).
    pub fn servers_conflict(&self) -> bool {
        self.servers_given && self.server_url.as_deref().is_some_and(|url| !url.is_empty())
    }

    /// Returns the server URL the client connects to: the first of `Servers` when given, else `ServerURL`.
    pub fn effective_server_url(&self) -> Option<&str> {
        self.first_server_url.as_deref().or(self.server_url.as_deref()).filter(|url| !url.is_empty())
    }

    /// True when the tenant token is a non-empty string.
    pub fn tenant_token_set(&self) -> bool {
        self.tenant_token.as_deref().is_some_and(|token| !token.is_empty())
    }

    /// Returns the key file the client signs with, picked as `commonInit` in the client 3.4's
    /// `cli/commands.go` picks it: a non-empty `Security.AuthPrivateKey`, else a non-empty
    /// `HttpsClient.Key`, else the default. The path is absolute, because the client opens a
    /// relative name in its state directory (`store/dirstore.go`). A `pkcs11:` URI, which names
    /// a key in an engine, is returned unchanged.
    pub fn key_file(&self) -> String {
        let non_empty = |value: &Option<String>| value.clone().filter(|text| !text.is_empty());
        let name = non_empty(&self.auth_private_key)
            .or_else(|| non_empty(&self.https_client_key))
            .unwrap_or_else(|| DEFAULT_KEY_FILE.to_string());
        if name.starts_with('/') || name.starts_with("pkcs11:") {
            name
        } else {
            format!("{STATE_DIR}/{name}")
        }
    }

    /// Returns the name of the field that sets the key file, or `None` when the default applies.
    pub fn key_file_field(&self) -> Option<&'static str> {
        let set = |value: &Option<String>| value.as_deref().is_some_and(|text| !text.is_empty());
        if set(&self.auth_private_key) {
            Some("Security.AuthPrivateKey")
        } else if set(&self.https_client_key) {
            Some("HttpsClient.Key")
        } else {
            None
        }
    }
}

/// Finds the field `name` as Go's `encoding/json` matches struct fields: the exact key, else a
/// key equal to it ignoring case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .get(name)
        .or_else(|| object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value))
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("{name} is {}, not a string", kind(other))),
    }
}

fn object_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(format!("{name} is {}, not a JSON object", kind(other))),
    }
}

/// Returns `ServerURL` of the first entry of `Servers`, or `None` when the list is absent or empty.
fn first_server_url(object: &Map<String, Value>) -> Result<Option<String>, String> {
    let servers = match field(object, "Servers") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(servers)) => servers,
        Some(other) => return Err(format!("Servers is {}, not a list", kind(other))),
    };
    match servers.first() {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(server)) => string_field(server, "ServerURL"),
        Some(other) => Err(format!("Servers[0] is {}, not a JSON object", kind(other))),
    }
}

/// Names the JSON type of `value` with its article, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_ignoring_case() {
        let values =
            ConfigValues::parse(br#"{"serverurl": "https://a", "Security": {"authprivatekey": "k.pem"}}"#)
                .unwrap();
        assert_eq!(values.server_url.as_deref(), Some("https://a"));
        assert_eq!(values.auth_private_key.as_deref(), Some("k.pem"));
    }

    #[test]
    fn main_file_replaces_fallback_even_with_empty_string() {
        let main = ConfigValues::parse(br#"{"TenantToken": "", "ServerURL": null}"#).unwrap();
        let fallback =
            ConfigValues::parse(br#"{"TenantToken": "secret", "ServerURL": "https://b"}"#).unwrap();
        let merged = ConfigValues::merged(&main, &fallback);
        assert!(!merged.tenant_token_set());
        assert_eq!(merged.effective_server_url(), Some("https://b"));
    }

    #[test]
    fn servers_beside_server_url_conflict_across_files() {
        let main = ConfigValues::parse(br#"{"Servers": [{"ServerURL": "https://a"}]}"#).unwrap();
        let fallback = ConfigValues::parse(br#"{"ServerURL": "https://b"}"#).unwrap();
        assert!(!main.servers_conflict());
        assert!(ConfigValues::merged(&main, &fallback).servers_conflict());
        let empty_url = ConfigValues::parse(br#"{"Servers": [], "ServerURL": ""}"#).unwrap();
        assert!(!empty_url.servers_conflict());
    }

    #[test]
    fn nested_objects_merge_field_by_field() {
        let main = ConfigValues::parse(br#"{"Security": {"SSLEngine": "x"}}"#).unwrap();
        let fallback = ConfigValues::parse(br#"{"Security": {"AuthPrivateKey": "/keys/a.pem"}}"#).unwrap();
        assert_eq!(ConfigValues::merged(&main, &fallback).key_file(), "/keys/a.pem");
    }

    #[test]
    fn auth_private_key_wins_over_https_client_key() {
        let values = ConfigValues::parse(
            br#"{"HttpsClient": {"Key": "b.pem"}, "Security": {"AuthPrivateKey": "a.pem"}}"#,
        )
        .unwrap();
        assert_eq!(values.key_file(), "/var/lib/mender/a.pem");
        assert_eq!(values.key_file_field(), Some("Security.AuthPrivateKey"));
    }

    #[test]
    fn default_key_file_without_fields() {
        let values = ConfigValues::parse(b"{}").unwrap();
        assert_eq!(values.key_file(), "/var/lib/mender/mender-agent.pem");
        assert_eq!(values.key_file_field(), None);
    }

    #[test]
    fn first_server_overrides_server_url() {
        let values = ConfigValues::parse(
            br#"{"Servers": [{"ServerURL": "https://one"}, {"ServerURL": "https://two"}]}"#,
        )
        .unwrap();
        assert_eq!(values.effective_server_url(), Some("https://one"));
    }

    #[test]
    fn wrong_types_and_broken_json_are_errors() {
        assert!(ConfigValues::parse(b"{\"ServerURL\": 5}").unwrap_err().contains("ServerURL is a number"));
        assert!(ConfigValues::parse(b"{\"Security\": []}").unwrap_err().contains("Security is a list"));
        assert!(ConfigValues::parse(b"{\"ServerURL\": ").unwrap_err().starts_with("invalid JSON"));
        assert!(ConfigValues::parse(b"[]").unwrap_err().contains("not a JSON object"));
    }
}
