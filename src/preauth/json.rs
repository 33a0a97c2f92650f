//! JSON string encoding that matches Go's `encoding/json` `Marshal` byte for byte.
//!
//! The Mender client 3.4 (built with Go 1.19) sends its identity data as the output of
//! `json.Marshal`, and the server compares the preauthorized identity with that string. Everything
//! this crate prints as JSON for the server therefore encodes strings the way Go 1.19 does, with
//! HTML escaping on (the `Marshal` default):
//! - `"` and `\` become `\"` and `\\`; newline, carriage return and tab become `\n`, `\r`, `\t`;
//! - every other byte below 0x20 becomes `\u00XX` with lowercase hex, so backspace and form feed are
//!   `\u0008` and `\u000c` (Go 1.22 and later write `\b` and `\f` instead);
//! - `<`, `>` and `&` become `\u003c`, `\u003e` and `\u0026`;
//! - U+2028 and U+2029 become `\u2028` and `\u2029`;
//! - each byte that is not part of a valid UTF-8 sequence becomes `\ufffd`, one per byte, because
//!   Go's `utf8.DecodeRune` consumes a single byte on error;
//! - everything else, DEL (0x7f) included, is copied unchanged.
//!
//! Source: `src/encoding/json/encode.go` (`encodeState.string`) and `tables.go` (`htmlSafeSet`).

use std::fmt::Write;

/// Appends `bytes` to `out` as a quoted JSON string, escaped exactly as Go 1.19's `json.Marshal`
/// escapes a Go string holding those bytes.
pub fn write_go_json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');

    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                write_valid_utf8(out, valid);
                rest = &[];
            }
            Err(error) => {
                let (valid, invalid) = rest.split_at(error.valid_up_to());
                // The prefix up to `valid_up_to` is valid UTF-8 by the contract of `Utf8Error`.
                write_valid_utf8(out, std::str::from_utf8(valid).unwrap_or_default());

                // `error_len` is the length of the invalid sequence, or `None` when the input
                // ends in the middle of a sequence. Go replaces every one of those bytes.
                let invalid_len = error.error_len().unwrap_or(invalid.len());
                for _ in 0..invalid_len {
                    out.push_str("\\ufffd");
                }
                rest = invalid.get(invalid_len..).unwrap_or_default();
            }
        }
    }

    out.push('"');
}

/// Returns `bytes` as a quoted JSON string, escaped as [`write_go_json_string`] escapes it.
pub fn go_json_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    write_go_json_string(&mut out, bytes);
    out
}

fn write_valid_utf8(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                // `fmt::Write` for String never returns an error.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(bytes: &[u8]) -> String {
        go_json_string(bytes)
    }

    #[test]
    fn plain_ascii_is_copied() {
        assert_eq!(encode(b"mac=00:11:22"), r#""mac=00:11:22""#);
        assert_eq!(encode(b""), r#""""#);
    }

    #[test]
    fn quote_and_backslash_get_short_escapes() {
        assert_eq!(encode(br#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn newline_return_tab_get_short_escapes() {
        assert_eq!(encode(b"\n\r\t"), r#""\n\r\t""#);
    }

    #[test]
    fn other_control_bytes_use_lowercase_u00xx() {
        assert_eq!(encode(b"\x00"), r#""\u0000""#);
        assert_eq!(encode(b"\x08"), r#""\u0008""#);
        assert_eq!(encode(b"\x0c"), r#""\u000c""#);
        assert_eq!(encode(b"\x1b"), r#""\u001b""#);
        assert_eq!(encode(b"\x1f"), r#""\u001f""#);
    }

    #[test]
    fn ascii_escapes_exactly_specials() {
        for byte in 0u8..0x80 {
            let encoded = encode(&[byte]);
            let escaped = matches!(byte, 0..=0x1f | b'"' | b'\\' | b'<' | b'>' | b'&');
            assert_eq!(encoded.starts_with("\"\\"), escaped, "byte {byte:#04x} encoded as {encoded}");
        }
    }

    #[test]
    fn html_characters_are_escaped() {
        assert_eq!(encode(b"<a href='x'>&</a>"), r#""\u003ca href='x'\u003e\u0026\u003c/a\u003e""#);
    }

    #[test]
    fn line_and_paragraph_separators_are_escaped() {
        assert_eq!(encode("a\u{2028}b\u{2029}c".as_bytes()), r#""a\u2028b\u2029c""#);
    }

    #[test]
    fn del_and_non_ascii_are_raw() {
        assert_eq!(encode("\u{7f}é€😀".as_bytes()), "\"\u{7f}é€😀\"");
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte() {
        // A lone continuation byte and a lone lead byte.
        assert_eq!(encode(b"a\x80b"), r#""a\ufffdb""#);
        assert_eq!(encode(b"\xff"), r#""\ufffd""#);
        // A 3-byte sequence cut short by an ASCII byte: Go replaces E2 and 80 separately.
        assert_eq!(encode(b"\xe2\x80a"), r#""\ufffd\ufffda""#);
        // A sequence truncated by the end of the input.
        assert_eq!(encode(b"x\xf0\x9f\x98"), r#""x\ufffd\ufffd\ufffd""#);
        // An encoded surrogate and an overlong encoding are invalid in Go too.
        assert_eq!(encode(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        assert_eq!(encode(b"\xc0\xaf"), r#""\ufffd\ufffd""#);
        // A valid character right after invalid bytes survives.
        assert_eq!(encode(b"\xff\xc3\xa9"), "\"\\ufffd\u{e9}\"");
    }

    #[test]
    fn output_parses_back_with_serde_json() {
        let input = "x\"\\\n\r\t\u{8}\u{c}\u{1}<>&\u{2028}\u{2029}\u{7f}é😀";
        let encoded = encode(input.as_bytes());
        let decoded: String = serde_json::from_str(&encoded).expect("valid JSON string");
        assert_eq!(decoded, input);
    }

    #[test]
    fn write_appends_to_existing_text() {
        let mut out = String::from("{\"k\":");
        write_go_json_string(&mut out, b"v");
        assert_eq!(out, r#"{"k":"v""#);
    }
}
