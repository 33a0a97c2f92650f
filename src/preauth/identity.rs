//! Identity data: the attributes that identify a device to the Mender server, and the JSON string the
//! Mender client builds from them.
//!
//! The client 3.4 runs its identity script and reads the output as `key=value` lines
//! (`utils/kvparser.go`). It splits lines at LF and removes one trailing CR (Go's
//! `bufio.ScanLines`). It skips empty lines, splits each line at its first `=`, and fails on a line
//! without `=`. A key seen once becomes a JSON string, a key seen several times an array
//! of strings in input order (`device/identity_data.go`). The map then goes through `json.Marshal`,
//! which sorts keys bytewise and escapes strings as [`super::json`] does.
//!
//! This module follows those rules with two deliberate differences, both errors where the client
//! would go on: an empty key is rejected, because a preauthorized attribute without a name is a
//! mistake, and a line longer than the client's scanner limit is rejected, because the client stops
//! reading there without reporting it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use thiserror::Error;

use super::json::write_go_json_string;

/// Maximum length of a line without its LF that the client's `bufio.Scanner` accepts. Its buffer
/// grows to at most `bufio.MaxScanTokenSize` (65536) bytes and must also contain the LF.
pub const MAX_LINE_LEN: usize = 65535;

/// The bytes of U+FEFF in UTF-8.
const UTF8_BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Errors from building identity data.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A command-line argument has no `=`.
    #[error("invalid identity argument {argument:?}: expected KEY=VALUE")]
    ArgumentWithoutEquals { argument: String },

    /// A command-line argument starts with `=`.
    #[error("invalid identity argument {argument:?}: the key before '=' is empty")]
    ArgumentEmptyKey { argument: String },

    /// A command-line argument contains LF, which no identity script output line can contain.
    #[error(
        "invalid identity argument {argument:?}: it contains a newline, which the Mender client's \
         identity script output cannot carry"
    )]
    ArgumentNewline { argument: String },

    /// A line of key-value text has no `=`.
    #[error("{input}: line {line}: {text:?} has no '=': expected KEY=VALUE")]
    LineWithoutEquals { input: String, line: usize, text: String },

    /// A line of key-value text starts with `=`.
    #[error("{input}: line {line}: {text:?} has an empty key before '='")]
    LineEmptyKey { input: String, line: usize, text: String },

    /// A line is longer than the Mender client reads.
    #[error(
        "{input}: line {line} is {length} bytes long; the Mender client stops reading identity data \
         at lines longer than {MAX_LINE_LEN} bytes"
    )]
    LineTooLong { input: String, line: usize, length: usize },

    /// The text starts with a UTF-8 byte order mark, which an editor adds and no identity script prints.
    #[error(
        "{input}: starts with a UTF-8 byte order mark, which would become part of the first key; \
         save the file without it"
    )]
    ByteOrderMark { input: String },

    /// The input contains no attribute at all.
    #[error("no identity data in {input}: give at least one KEY=VALUE attribute")]
    NoIdentityData { input: String },
}

/// Identity attributes: each key maps to its values in input order. Keys and values are bytes
/// because the identity script may print anything but LF. A value built by this module is never
/// empty, so its JSON is always a valid identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityData {
    attributes: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl IdentityData {
    /// Builds identity data from `KEY=VALUE` arguments, split at the first `=`. A key given several
    /// times keeps all its values in argument order.
    pub fn from_args<A: AsRef<OsStr>>(pairs: &[A]) -> Result<Self, IdentityError> {
        let mut attributes: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();

        for pair in pairs {
            let bytes = pair.as_ref().as_bytes();
            let argument = || String::from_utf8_lossy(bytes).into_owned();

            if bytes.contains(&b'\n') {
                return Err(IdentityError::ArgumentNewline { argument: argument() });
            }
            let Some((key, value)) = split_at_equals(bytes) else {
                return Err(IdentityError::ArgumentWithoutEquals { argument: argument() });
            };
            if key.is_empty() {
                return Err(IdentityError::ArgumentEmptyKey { argument: argument() });
            }

            attributes.entry(key.to_vec()).or_default().push(value.to_vec());
        }

        Self::non_empty(attributes, "the identity arguments")
    }

    /// Parses identity script output `text` by the Mender client's rules. `input` names the text in
    /// error messages, for example the file it came from.
    pub fn from_key_value_text(text: &[u8], input: &str) -> Result<Self, IdentityError> {
        if text.starts_with(UTF8_BYTE_ORDER_MARK) {
            return Err(IdentityError::ByteOrderMark { input: input.to_owned() });
        }
        let mut attributes: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();

        for (index, raw_line) in scan_lines(text).enumerate() {
            let line = index + 1;
            if raw_line.len() > MAX_LINE_LEN {
                return Err(IdentityError::LineTooLong {
                    input: input.to_owned(),
                    line,
                    length: raw_line.len(),
                });
            }

            let content = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
            if content.is_empty() {
                continue;
            }

            let text = || String::from_utf8_lossy(content).into_owned();
            let Some((key, value)) = split_at_equals(content) else {
                return Err(IdentityError::LineWithoutEquals { input: input.to_owned(), line, text: text() });
            };
            if key.is_empty() {
                return Err(IdentityError::LineEmptyKey { input: input.to_owned(), line, text: text() });
            }

            attributes.entry(key.to_vec()).or_default().push(value.to_vec());
        }

        Self::non_empty(attributes, input)
    }

    /// Adds the attributes of `other`. For a key present in both, the values of `other` follow
    /// those of `self`.
    pub fn merge(&mut self, other: IdentityData) {
        for (key, values) in other.attributes {
            self.attributes.entry(key).or_default().extend(values);
        }
    }

    /// Iterates over the attributes in key order, each with its values in input order.
    pub fn attributes(&self) -> impl Iterator<Item = (&[u8], &[Vec<u8>])> {
        self.attributes.iter().map(|(key, values)| (key.as_slice(), values.as_slice()))
    }

    /// Returns the identity as the Mender client's JSON string: keys sorted bytewise, a single value
    /// as a string, several as an array, compact, escaped like Go's `json.Marshal`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends [`Self::to_json`] to `out`.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        for (index, (key, values)) in self.attributes.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            write_go_json_string(out, key);
            out.push(':');
            write_values(out, values);
        }
        out.push('}');
    }

    fn non_empty(attributes: BTreeMap<Vec<u8>, Vec<Vec<u8>>>, input: &str) -> Result<Self, IdentityError> {
        if attributes.is_empty() {
            return Err(IdentityError::NoIdentityData { input: input.to_owned() });
        }
        Ok(IdentityData { attributes })
    }
}

fn write_values(out: &mut String, values: &[Vec<u8>]) {
    if let [single] = values {
        write_go_json_string(out, single);
        return;
    }

    out.push('[');
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_go_json_string(out, value);
    }
    out.push(']');
}

fn split_at_equals(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let position = bytes.iter().position(|&byte| byte == b'=')?;
    Some((bytes.get(..position)?, bytes.get(position + 1..)?))
}

/// Splits `text` into lines the way Go's `bufio.ScanLines` does before the trailing CR is removed:
/// at each LF, plus a last line without LF when the text does not end in one.
fn scan_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let lines = if text.is_empty() { None } else { Some(body.split(|&byte| byte == b'\n')) };
    lines.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn parse(text: &[u8]) -> Result<IdentityData, IdentityError> {
        IdentityData::from_key_value_text(text, "identity.txt")
    }

    fn json(text: &[u8]) -> String {
        parse(text).expect("valid identity text").to_json()
    }

    #[test]
    fn single_values_become_strings() {
        assert_eq!(json(b"mac=00:11:22:33:44:55\n"), r#"{"mac":"00:11:22:33:44:55"}"#);
    }

    #[test]
    fn repeated_keys_become_arrays_in_input_order() {
        let text = b"mac=b\nserial=1\nmac=a\nmac=c\n";
        assert_eq!(json(text), r#"{"mac":["b","a","c"],"serial":"1"}"#);
    }

    #[test]
    fn keys_sort_bytewise() {
        // Uppercase sorts before lowercase and before non-ASCII, as Go compares string bytes.
        let text = "z=1\na=2\nB=3\né=4\n_=5\n".as_bytes();
        assert_eq!(json(text), r#"{"B":"3","_":"5","a":"2","z":"1","é":"4"}"#);
    }

    #[test]
    fn value_splits_at_first_equals() {
        assert_eq!(json(b"k=a=b==\n"), r#"{"k":"a=b=="}"#);
        assert_eq!(json(b"k=\n"), r#"{"k":""}"#);
    }

    #[test]
    fn empty_lines_skipped_and_crlf_stripped() {
        let text = b"\n\r\na=1\r\n\n\nb=2\r\n\r\n";
        assert_eq!(json(text), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn only_one_trailing_cr_is_stripped() {
        assert_eq!(json(b"a=1\r\r\n"), r#"{"a":"1\r"}"#);
        assert_eq!(json(b"a=x\ry\n"), r#"{"a":"x\ry"}"#);
    }

    #[test]
    fn last_line_without_newline_counts() {
        assert_eq!(json(b"a=1\nb=2"), r#"{"a":"1","b":"2"}"#);
        assert_eq!(json(b"a=1\r"), r#"{"a":"1"}"#);
    }

    #[test]
    fn spaces_are_kept() {
        assert_eq!(json(b" key = value \n"), r#"{" key ":" value "}"#);
    }

    #[test]
    fn line_without_equals_names_line() {
        let error = parse(b"a=1\n\nno equals here\n").unwrap_err();
        assert_eq!(
            error,
            IdentityError::LineWithoutEquals {
                input: "identity.txt".into(),
                line: 3,
                text: "no equals here".into()
            }
        );
        assert_eq!(
            error.to_string(),
            r#"identity.txt: line 3: "no equals here" has no '=': expected KEY=VALUE"#
        );
    }

    #[test]
    fn whitespace_only_line_is_an_error() {
        let error = parse(b"a=1\n \n").unwrap_err();
        assert!(matches!(error, IdentityError::LineWithoutEquals { line: 2, .. }), "{error:?}");
    }

    #[test]
    fn empty_key_line_is_rejected() {
        let error = parse(b"a=1\n=value\n").unwrap_err();
        assert_eq!(
            error,
            IdentityError::LineEmptyKey { input: "identity.txt".into(), line: 2, text: "=value".into() }
        );
    }

    #[test]
    fn empty_text_is_no_identity_data() {
        for text in [&b""[..], b"\n", b"\r\n\n\r\n"] {
            let error = parse(text).unwrap_err();
            assert_eq!(error, IdentityError::NoIdentityData { input: "identity.txt".into() });
        }
        assert_eq!(
            parse(b"").unwrap_err().to_string(),
            "no identity data in identity.txt: give at least one KEY=VALUE attribute"
        );
    }

    #[test]
    fn overlong_line_is_rejected() {
        let mut text = b"a=1\nkey=".to_vec();
        text.resize(text.len() + MAX_LINE_LEN, b'x');
        text.push(b'\n');
        let error = parse(&text).unwrap_err();
        assert_eq!(
            error,
            IdentityError::LineTooLong { input: "identity.txt".into(), line: 2, length: MAX_LINE_LEN + 4 }
        );
    }

    #[test]
    fn line_at_scanner_limit_is_accepted() {
        let mut text = b"key=".to_vec();
        text.resize(MAX_LINE_LEN, b'x');
        text.push(b'\n');
        let identity = parse(&text).expect("a line of exactly the limit is read by the client");
        let (key, values) = identity.attributes().next().expect("one attribute");
        assert_eq!(key, b"key");
        assert_eq!(values.first().map(Vec::len), Some(MAX_LINE_LEN - 4));
    }

    #[test]
    fn tricky_values_escape_like_go() {
        let text = b"html=<b>&</b>\nquote=\"q\"\nslash=a\\b\nctl=\x01\x08\x0c\x1f\x7f\n";
        assert_eq!(
            json(text),
            r#"{"ctl":"\u0001\u0008\u000c\u001f"#.to_owned()
                + "\u{7f}"
                + r#"","html":"\u003cb\u003e\u0026\u003c/b\u003e","quote":"\"q\"","slash":"a\\b"}"#
        );
    }

    #[test]
    fn non_ascii_and_invalid_utf8() {
        let text = b"name=caf\xc3\xa9\nraw=\xff\xfe\nsep=\xe2\x80\xa8\n";
        assert_eq!(json(text), "{\"name\":\"caf\u{e9}\",\"raw\":\"\\ufffd\\ufffd\",\"sep\":\"\\u2028\"}");
    }

    #[test]
    fn from_args_matches_text_parsing() {
        let args = ["mac=00:11", "serial=X=1", "mac=22:33"];
        let from_args = IdentityData::from_args(&args).expect("valid arguments");
        let from_text = parse(b"mac=00:11\nserial=X=1\nmac=22:33\n").expect("valid text");
        assert_eq!(from_args, from_text);
        assert_eq!(from_args.to_json(), r#"{"mac":["00:11","22:33"],"serial":"X=1"}"#);
    }

    #[test]
    fn from_args_takes_non_utf8_os_strings() {
        let args = [OsString::from_vec(b"k=\xff".to_vec())];
        let identity = IdentityData::from_args(&args).expect("valid argument");
        assert_eq!(identity.to_json(), r#"{"k":"\ufffd"}"#);
    }

    #[test]
    fn from_args_errors_name_argument() {
        let error = IdentityData::from_args(&["a=1", "bad"]).unwrap_err();
        assert_eq!(error, IdentityError::ArgumentWithoutEquals { argument: "bad".into() });
        assert_eq!(error.to_string(), r#"invalid identity argument "bad": expected KEY=VALUE"#);

        let error = IdentityData::from_args(&["=x"]).unwrap_err();
        assert_eq!(error, IdentityError::ArgumentEmptyKey { argument: "=x".into() });

        let error = IdentityData::from_args(&["k=a\nb"]).unwrap_err();
        assert_eq!(error, IdentityError::ArgumentNewline { argument: "k=a\nb".into() });
    }

    #[test]
    fn from_args_allows_cr_and_empty_value() {
        let identity = IdentityData::from_args(&["k=\r", "e="]).expect("valid arguments");
        assert_eq!(identity.to_json(), r#"{"e":"","k":"\r"}"#);
    }

    #[test]
    fn from_args_without_pairs_is_no_identity_data() {
        let error = IdentityData::from_args::<&str>(&[]).unwrap_err();
        assert_eq!(error, IdentityError::NoIdentityData { input: "the identity arguments".into() });
    }

    #[test]
    fn merge_appends_values_after_existing_ones() {
        let mut identity = parse(b"mac=1\nserial=s\n").expect("valid text");
        identity.merge(IdentityData::from_args(&["mac=2", "board=b"]).expect("valid arguments"));
        assert_eq!(identity.to_json(), r#"{"board":"b","mac":["1","2"],"serial":"s"}"#);
    }

    #[test]
    fn json_parses_back_to_same_values() {
        let text = b"b=2\na=x\"<\\\x01\na=\xe2\x80\xa9\nc=\xc3\xa9\n";
        let encoded = json(text);
        let value: serde_json::Value = serde_json::from_str(&encoded).expect("valid JSON");
        let expected = serde_json::json!({
            "a": ["x\"<\\\u{1}", "\u{2029}"],
            "b": "2",
            "c": "\u{e9}",
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn byte_order_mark_is_rejected() {
        let error =
            IdentityData::from_key_value_text(b"\xEF\xBB\xBFmac=02:12\n", "identity.txt").unwrap_err();

        assert_eq!(error, IdentityError::ByteOrderMark { input: "identity.txt".to_owned() });
    }
}
