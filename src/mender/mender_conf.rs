//! `mender.conf`, the Mender client's JSON configuration: parsed, edited and written back.
//!
//! The client 3.4 (`conf/config.go`, `LoadConfig`) reads two files into one structure: first
//! the fallback file `/var/lib/mender/mender.conf` (on a Yocto image the data partition's
//! `/mender/mender.conf`), then the main file `/etc/mender/mender.conf` over it. A key present
//! in the main file therefore wins, even with an empty value.
//!
//! Edits are made in the file's own text. A changed member gets its new value in place. A new
//! member goes after the last one, with that member's line break, indentation and separator.
//! A removed member takes its comma with it. Every other byte stays as it was, so keys keep
//! their order and the file keeps its formatting.
//!
//! Keys are matched ignoring ASCII case, because Go's `json.Unmarshal` matches them
//! case-insensitively: the client reads `"serverurl"` as `ServerURL`.

use serde_json::Value;

/// The main configuration file on the root filesystem.
pub const ROOTFS_CONF_PATH: &str = "/etc/mender/mender.conf";
/// The fallback configuration file, relative to the data partition's root. The device reads it
/// as `/var/lib/mender/mender.conf`, which leads to `/data/mender/mender.conf`.
pub const DATA_CONF_PATH: &str = "/mender/mender.conf";

/// Key of the server's URL.
pub const SERVER_URL_KEY: &str = "ServerURL";
/// Key of the list of servers that the client 3.4 accepts instead of `ServerURL`, never with it.
pub const SERVERS_KEY: &str = "Servers";
/// Key of the tenant token of a multi-tenant server (hosted Mender).
pub const TENANT_TOKEN_KEY: &str = "TenantToken";
/// Key of the path of the certificate that the server's TLS certificate is checked against.
pub const SERVER_CERTIFICATE_KEY: &str = "ServerCertificate";
/// Key of the path of the public key that verifies signed Artifacts.
pub const ARTIFACT_VERIFY_KEY_KEY: &str = "ArtifactVerifyKey";

/// Indentation and line break of the members of a file written from nothing.
const NEW_MEMBER_PREFIX: &str = "\n    ";

/// Failure to read a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenderConfError {
    #[error("not valid JSON: {message} at line {line}, column {column}")]
    InvalidJson { message: String, line: usize, column: usize },
    #[error("not a JSON object, which the Mender client expects at the top level")]
    NotAnObject,
}

/// One member of the top-level object, located in the text by byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: String,
    /// Offset of the key's opening quote.
    key_start: usize,
    /// Offset of the value's first byte.
    value_start: usize,
    /// Offset just after the value's last byte.
    value_end: usize,
}

impl Member {
    /// Returns true when the member's key names `key` for the client.
    // NOTE: Go's EqualFold also folds non-ASCII letters (the Kelvin sign matches `k`), which no
    // key of the client contains, so ASCII folding finds the same members in practice.
    fn is(&self, key: &str) -> bool {
        self.key.eq_ignore_ascii_case(key)
    }
}

/// A parsed configuration file: its text and where each top-level member lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenderConf {
    text: String,
    /// Offset of the top-level object's opening brace.
    open_brace: usize,
    members: Vec<Member>,
}

impl MenderConf {
    /// Parses the bytes of a configuration file. They must be one JSON object, as the client
    /// requires (Go's `json.Unmarshal` into a structure).
    pub fn parse(bytes: &[u8]) -> Result<Self, MenderConfError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|error| MenderConfError::InvalidJson {
            message: invalid_json_message(&error),
            line: error.line(),
            column: error.column(),
        })?;
        if !value.is_object() {
            return Err(MenderConfError::NotAnObject);
        }
        // serde_json accepted the bytes, so they are UTF-8.
        let text = String::from_utf8_lossy(bytes).into_owned();
        Ok(Self::scan(text))
    }

    /// Returns an empty configuration, for a file that does not exist yet.
    pub fn empty() -> Self {
        Self::scan("{\n}\n".to_string())
    }

    /// Returns the file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// Returns the value of `key`, the last one when the key appears more than once, as the
    /// client takes it.
    pub fn get(&self, key: &str) -> Option<Value> {
        let member = self.members.iter().rev().find(|member| member.is(key))?;
        serde_json::from_str(&self.text[member.value_start..member.value_end]).ok()
    }

    /// Returns true when the file contains `key`, whatever its value.
    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|member| member.is(key))
    }

    /// Sets `key` to the string `value`. Every existing member of that name, in any case, gets
    /// the new value in place, and without one a member is added at the end. Returns false when the file
    /// already contained exactly that value.
    pub fn set_string(&mut self, key: &str, value: &str) -> bool {
        if self.get(key).as_ref().and_then(Value::as_str) == Some(value)
            && self.members.iter().filter(|member| member.is(key)).count() == 1
        {
            return false;
        }
        let encoded = Value::String(value.to_string()).to_string();

        let mut text = self.text.clone();
        let existing: Vec<&Member> = self.members.iter().filter(|member| member.is(key)).collect();
        if existing.is_empty() {
            let encoded_key = Value::String(key.to_string()).to_string();
            let (at, prefix, separator) = self.insertion_point();
            text.insert_str(at, &format!("{prefix}{encoded_key}{separator}{encoded}"));
        } else {
            // From the end, so that earlier offsets stay valid.
            for member in existing.iter().rev() {
                text.replace_range(member.value_start..member.value_end, &encoded);
            }
        }
        *self = Self::scan(text);
        true
    }

    /// Removes every member named `key`, in any case. Returns false when there was none.
    pub fn remove(&mut self, key: &str) -> bool {
        let mut removed = false;
        while let Some(index) = self.members.iter().position(|member| member.is(key)) {
            let span = self.member_span(index);
            let mut text = self.text.clone();
            text.replace_range(span, "");
            *self = Self::scan(text);
            removed = true;
        }
        removed
    }

    /// Returns the bytes that removing member `index` deletes. They run from the end of the
    /// member before it, so the comma goes too, or for the first member up to the next key.
    fn member_span(&self, index: usize) -> std::ops::Range<usize> {
        let member = &self.members[index];
        match (index.checked_sub(1), self.members.get(index + 1)) {
            (Some(previous), _) => self.members[previous].value_end..member.value_end,
            (None, Some(next)) => member.key_start..next.key_start,
            (None, None) => self.open_brace + 1..member.value_end,
        }
    }

    /// Returns where a new member goes (after the last one, else after the opening brace), and
    /// the text before its key and between its key and value, copied from the last member.
    fn insertion_point(&self) -> (usize, String, String) {
        let Some(last) = self.members.last() else {
            return (self.open_brace + 1, NEW_MEMBER_PREFIX.to_string(), ": ".to_string());
        };
        let before_key = match self.members.len() {
            1 => &self.text[self.open_brace + 1..last.key_start],
            len => {
                // The text between the previous value and this key: a comma and white space.
                let between = &self.text[self.members[len - 2].value_end..last.key_start];
                between.trim_start_matches(|c: char| c != ',').trim_start_matches(',')
            }
        };
        let key_end = self.key_end(last);
        let separator = self.text[key_end..last.value_start].to_string();
        (last.value_end, format!(",{before_key}"), separator)
    }

    /// Offset just after the closing quote of a member's key.
    fn key_end(&self, member: &Member) -> usize {
        string_end(self.text.as_bytes(), member.key_start)
    }

    /// Locates the top-level members of text that serde_json has accepted as a JSON object.
    fn scan(text: String) -> Self {
        let bytes = text.as_bytes();
        let mut members = Vec::new();
        let mut position = skip_space(bytes, 0);
        let open_brace = position;
        position += 1;
        loop {
            position = skip_space(bytes, position);
            match bytes.get(position) {
                Some(b'"') => {}
                Some(b',') => {
                    position += 1;
                    continue;
                }
                _ => break,
            }
            let key_start = position;
            let key_end = string_end(bytes, key_start);
            let key: String = serde_json::from_str(&text[key_start..key_end]).unwrap_or_default();
            position = skip_space(bytes, key_end) + 1; // the colon
            let value_start = skip_space(bytes, position);
            let value_end = value_end(bytes, value_start);
            members.push(Member { key, key_start, value_start, value_end });
            position = value_end;
        }
        MenderConf { text, open_brace, members }
    }
}

/// Drops serde_json's own " at line L column C" from its message, which the error adds back.
fn invalid_json_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    }
}

/// Skips JSON white space from `position`.
fn skip_space(bytes: &[u8], mut position: usize) -> usize {
    while bytes.get(position).is_some_and(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r')) {
        position += 1;
    }
    position
}

/// Offset just after the closing quote of the string that starts at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut position = start + 1;
    while let Some(&byte) = bytes.get(position) {
        match byte {
            b'\\' => position += 2,
            b'"' => return position + 1,
            _ => position += 1,
        }
    }
    bytes.len()
}

/// Offset just after the value that starts at `start`: a string, an object or array with
/// everything inside it, or a number or literal up to the next delimiter.
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b'"') => string_end(bytes, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut position = start;
            while let Some(&byte) = bytes.get(position) {
                match byte {
                    b'"' => {
                        position = string_end(bytes, position);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return position + 1;
                        }
                    }
                    _ => {}
                }
                position += 1;
            }
            bytes.len()
        }
        _ => {
            let mut position = start;
            while bytes
                .get(position)
                .is_some_and(|byte| !matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                position += 1;
            }
            position
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YOCTO_CONF: &str = r#"{
    "InventoryPollIntervalSeconds": 28800,
    "ServerURL": "https://docker.mender.io",
    "TenantToken": "",
    "UpdatePollIntervalSeconds": 1800
}
"#;

    fn parse(text: &str) -> MenderConf {
        MenderConf::parse(text.as_bytes()).expect("valid configuration")
    }

    fn text(conf: &MenderConf) -> &str {
        std::str::from_utf8(conf.as_bytes()).expect("UTF-8")
    }

    #[test]
    fn existing_value_is_replaced_in_place() {
        let mut conf = parse(YOCTO_CONF);

        assert!(conf.set_string(SERVER_URL_KEY, "https://hosted.mender.io"));

        assert_eq!(text(&conf), YOCTO_CONF.replace("https://docker.mender.io", "https://hosted.mender.io"));
    }

    #[test]
    fn new_member_copies_last_members_layout() {
        let mut conf = parse(YOCTO_CONF);

        conf.set_string(SERVER_CERTIFICATE_KEY, "/etc/mender/server.crt");

        let expected = YOCTO_CONF.replace(
            "\"UpdatePollIntervalSeconds\": 1800\n",
            "\"UpdatePollIntervalSeconds\": 1800,\n    \"ServerCertificate\": \"/etc/mender/server.crt\"\n",
        );
        assert_eq!(text(&conf), expected);
    }

    #[test]
    fn compact_file_stays_compact() {
        let mut conf = parse(r#"{"A":1,"B":{"C":[1,"}"]}}"#);

        conf.set_string("D", "x");

        assert_eq!(text(&conf), r#"{"A":1,"B":{"C":[1,"}"]},"D":"x"}"#);
    }

    #[test]
    fn tab_indentation_is_kept() {
        let mut conf = parse("{\n\t\"A\" : 1\n}");

        conf.set_string("B", "y");

        assert_eq!(text(&conf), "{\n\t\"A\" : 1,\n\t\"B\" : \"y\"\n}");
    }

    #[test]
    fn empty_object_gets_indented_member() {
        let mut conf = parse("{}");

        conf.set_string(SERVER_URL_KEY, "https://a");

        assert_eq!(text(&conf), "{\n    \"ServerURL\": \"https://a\"}");
        assert_eq!(conf.get(SERVER_URL_KEY), Some(Value::String("https://a".into())));
    }

    #[test]
    fn new_file_is_valid_json() {
        let mut conf = MenderConf::empty();

        conf.set_string(TENANT_TOKEN_KEY, "t\"o\\k\u{1}");

        let value: Value = serde_json::from_slice(conf.as_bytes()).expect("valid JSON");
        assert_eq!(value[TENANT_TOKEN_KEY], "t\"o\\k\u{1}");
    }

    #[test]
    fn same_value_changes_nothing() {
        let mut conf = parse(YOCTO_CONF);

        assert!(!conf.set_string(SERVER_URL_KEY, "https://docker.mender.io"));
        assert_eq!(text(&conf), YOCTO_CONF);
    }

    #[test]
    fn repeated_key_is_set_everywhere() {
        let mut conf = parse(r#"{"ServerURL":"a","X":1,"ServerURL":"b"}"#);

        conf.set_string(SERVER_URL_KEY, "c");

        assert_eq!(text(&conf), r#"{"ServerURL":"c","X":1,"ServerURL":"c"}"#);
    }

    #[test]
    fn get_takes_last_of_repeated_key() {
        let conf = parse(r#"{"ServerURL":"a","ServerURL":"b"}"#);

        assert_eq!(conf.get(SERVER_URL_KEY), Some(Value::String("b".into())));
    }

    #[test]
    fn remove_middle_first_and_only_members() {
        let mut conf = parse(YOCTO_CONF);

        assert!(conf.remove(TENANT_TOKEN_KEY));
        assert_eq!(text(&conf), YOCTO_CONF.replace("    \"TenantToken\": \"\",\n", ""));

        assert!(conf.remove("InventoryPollIntervalSeconds"));
        assert!(text(&conf).starts_with("{\n    \"ServerURL\""));

        let mut single = parse("{ \"A\": [1, 2] }");
        assert!(single.remove("A"));
        assert_eq!(text(&single), "{ }");
        assert!(!single.remove("A"));
    }

    #[test]
    fn key_case_is_ignored_like_go() {
        let mut conf = parse(r#"{"serverurl":"a","tenantToken":"t"}"#);

        assert!(conf.contains(SERVER_URL_KEY));
        conf.set_string(SERVER_URL_KEY, "b");
        assert!(conf.remove(TENANT_TOKEN_KEY));

        assert_eq!(text(&conf), r#"{"serverurl":"b"}"#);
    }

    #[test]
    fn escaped_quotes_in_values_are_skipped() {
        let mut conf = parse(r#"{"A":"x\"y,\\","B":"z"}"#);

        conf.set_string("B", "w");

        assert_eq!(text(&conf), r#"{"A":"x\"y,\\","B":"w"}"#);
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let error = MenderConf::parse(b"{\n  \"A\": 1,\n}").unwrap_err();

        let MenderConfError::InvalidJson { line, .. } = &error else { panic!("unexpected {error:?}") };
        assert_eq!(*line, 3);
        assert!(error.to_string().starts_with("not valid JSON: "), "{error}");
    }

    #[test]
    fn array_at_top_level_is_rejected() {
        assert_eq!(MenderConf::parse(b"[1]"), Err(MenderConfError::NotAnObject));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert!(matches!(MenderConf::parse(b"{\"A\":\"\xff\"}"), Err(MenderConfError::InvalidJson { .. })));
    }
}
