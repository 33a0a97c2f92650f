//! Artifact provides as the Mender client 3.x keeps them. The `artifact-provides` record of
//! mender-store is a JSON object of strings, written by Go's `json.Marshal` of a
//! `map[string]string`. The `clears_artifact_provides` patterns of an installed Artifact select
//! the stored provides it removes.
//!
//! Sources: client 3.4 `datastore/datastore.go` (`CommitArtifactData`, `LoadProvides`) and the
//! vendored mender-artifact `utils/attributes.go` (`StringsMatchingWildcards`).

use std::collections::BTreeMap;

use crate::preauth::json::write_go_json_string;

/// Provides by name, in the bytewise order in which Go's `json.Marshal` writes map keys.
pub type Provides = BTreeMap<String, String>;

/// Names that `mender show-provides` takes from other records (`artifact-name`,
/// `artifact-group`). The client 3.4 reads `artifact-provides` into the same map after them, so
/// a provide with one of these names would hide the real record.
pub const RESERVED_PROVIDE_NAMES: [&str; 2] = ["artifact_name", "artifact_group"];

/// Errors in provides or in a clears-provides pattern.
#[derive(Debug, thiserror::Error)]
pub enum ProvidesError {
    /// The stored record is not what the client writes.
    #[error("artifact-provides is not a JSON object of strings: {0}")]
    InvalidRecord(String),

    /// A `KEY:VALUE` argument has no colon or an empty key.
    #[error("invalid provide {argument:?}: expected KEY:VALUE with a non-empty KEY")]
    InvalidArgument {
        /// The argument as given.
        argument: String,
    },

    /// A provide name that the client reads from another record.
    #[error("invalid provide {name:?}: the client takes {name} from another record; use --artifact-name")]
    ReservedName {
        /// The name given.
        name: String,
    },

    /// Two `KEY:VALUE` arguments name the same provide, so one value would silently be lost.
    #[error("provide {name:?} is given more than once ({first:?} and {second:?}); give each name once")]
    RepeatedName {
        /// The name given twice.
        name: String,
        /// The first argument naming it.
        first: String,
        /// The later argument naming it.
        second: String,
    },

    /// A pattern the client rejects or would read as a regular expression.
    #[error("invalid clears-provides pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// The reason it is rejected.
        reason: &'static str,
    },
}

/// Parses an `artifact-provides` record. Like Go's `json.Unmarshal` into a map of strings, it
/// takes `null` as no provides and keeps the last of repeated names.
pub fn parse_provides(record: &[u8]) -> Result<Provides, ProvidesError> {
    let parsed: Option<Provides> =
        serde_json::from_slice(record).map_err(|error| ProvidesError::InvalidRecord(error.to_string()))?;
    Ok(parsed.unwrap_or_default())
}

/// Encodes provides as the client 3.4 stores them: `json.Marshal` of a `map[string]string`, with
/// keys sorted bytewise and Go's string escaping.
pub fn encode_provides(provides: &Provides) -> Vec<u8> {
    let mut out = String::from("{");
    for (index, (name, value)) in provides.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_go_json_string(&mut out, name.as_bytes());
        out.push(':');
        write_go_json_string(&mut out, value.as_bytes());
    }
    out.push('}');
    out.into_bytes()
}

/// Parses a `KEY:VALUE` provide argument, split at the first colon as mender-artifact's
/// `--provides` does. The value may be empty or contain more colons.
pub fn parse_provide_argument(argument: &str) -> Result<(String, String), ProvidesError> {
    let Some((name, value)) = argument.split_once(':') else {
        return Err(ProvidesError::InvalidArgument { argument: argument.to_string() });
    };
    if name.is_empty() {
        return Err(ProvidesError::InvalidArgument { argument: argument.to_string() });
    }
    if RESERVED_PROVIDE_NAMES.contains(&name) {
        return Err(ProvidesError::ReservedName { name: name.to_string() });
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parses every `KEY:VALUE` provide argument with [`parse_provide_argument`] and rejects a name
/// given twice.
pub fn parse_provide_arguments(arguments: &[String]) -> Result<Vec<(String, String)>, ProvidesError> {
    let mut provides: Vec<(String, String)> = Vec::with_capacity(arguments.len());
    let mut first_argument: BTreeMap<String, &str> = BTreeMap::new();
    for argument in arguments {
        let (name, value) = parse_provide_argument(argument)?;
        if let Some(first) = first_argument.insert(name.clone(), argument) {
            return Err(ProvidesError::RepeatedName {
                name,
                first: first.to_string(),
                second: argument.clone(),
            });
        }
        provides.push((name, value));
    }
    Ok(provides)
}

/// One `clears_artifact_provides` pattern: `*` matches any run of characters, and a backslash
/// makes the next character literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearsPattern {
    text: String,
    parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternPart {
    Literal(char),
    Star,
}

impl ClearsPattern {
    /// Parses a pattern with the client's rules. The client turns the pattern into a Go regular
    /// expression and copies a backslash and the character after it unchanged, so `\*` is a
    /// literal star but `\d` would be a digit class. Only escapes of punctuation mean the same
    /// in both readings, so escapes of letters, digits and other characters are rejected.
    pub fn parse(text: &str) -> Result<Self, ProvidesError> {
        let invalid = |reason| ProvidesError::InvalidPattern { pattern: text.to_string(), reason };
        let mut parts = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => parts.push(PatternPart::Star),
                '\\' => match chars.next() {
                    None => return Err(invalid("it ends with a backslash")),
                    Some(escaped) if escaped.is_ascii_punctuation() => {
                        parts.push(PatternPart::Literal(escaped))
                    }
                    Some(_) => return Err(invalid("a backslash may only precede punctuation such as \\*")),
                },
                c => parts.push(PatternPart::Literal(c)),
            }
        }
        Ok(ClearsPattern { text: text.to_string(), parts })
    }

    /// Returns the pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns true when the pattern matches the whole of `name`. A star does not match a
    /// newline, because Go's `.` does not.
    pub fn matches(&self, name: &str) -> bool {
        matches_all(&self.parts, name)
    }
}

/// Matches `parts` against all of `name` by running the pattern as an automaton: `reachable[i]`
/// is true when the name read so far can end just before part `i`. Each character of the name
/// updates every part once, so matching takes O(name length × pattern length) steps whatever the
/// number of stars, where trying every length for each star took exponential time.
fn matches_all(parts: &[PatternPart], name: &str) -> bool {
    let mut reachable = vec![false; parts.len() + 1];
    reachable[0] = true;
    close_over_stars(parts, &mut reachable);

    let mut next = vec![false; parts.len() + 1];
    for c in name.chars() {
        next.fill(false);
        for (index, part) in parts.iter().enumerate() {
            if !reachable[index] {
                continue;
            }
            match part {
                PatternPart::Literal(expected) if *expected == c => next[index + 1] = true,
                PatternPart::Literal(_) => {}
                PatternPart::Star if c != '\n' => next[index] = true,
                PatternPart::Star => {}
            }
        }
        close_over_stars(parts, &mut next);
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut reachable, &mut next);
    }
    reachable[parts.len()]
}

/// Marks the part after each reachable star as reachable too, because a star may match nothing.
fn close_over_stars(parts: &[PatternPart], reachable: &mut [bool]) {
    for (index, part) in parts.iter().enumerate() {
        if reachable[index] && *part == PatternPart::Star {
            reachable[index + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> ClearsPattern {
        ClearsPattern::parse(text).unwrap()
    }

    #[test]
    fn encoding_sorts_names_and_escapes_like_go() {
        let provides = Provides::from([
            ("rootfs-image.version".to_string(), "release <1> & \"2\"".to_string()),
            ("data-partition.app.version".to_string(), "Zoë".to_string()),
        ]);

        let encoded = String::from_utf8(encode_provides(&provides)).unwrap();

        assert_eq!(
            encoded,
            r#"{"data-partition.app.version":"Zoë","rootfs-image.version":"release \u003c1\u003e \u0026 \"2\""}"#
        );
    }

    #[test]
    fn empty_provides_encode_as_empty_object() {
        assert_eq!(encode_provides(&Provides::new()), b"{}");
    }

    #[test]
    fn record_round_trips() {
        let record = br#"{"a.b":"1","rootfs-image.checksum":"ab12"}"#;

        let provides = parse_provides(record).unwrap();

        assert_eq!(provides.get("a.b").map(String::as_str), Some("1"));
        assert_eq!(encode_provides(&provides), record);
    }

    #[test]
    fn null_record_is_no_provides() {
        assert_eq!(parse_provides(b"null").unwrap(), Provides::new());
    }

    #[test]
    fn non_string_values_are_rejected() {
        assert!(parse_provides(br#"{"a":1}"#).is_err());
        assert!(parse_provides(br#"["a"]"#).is_err());
        assert!(parse_provides(b"not json").is_err());
    }

    #[test]
    fn provide_argument_splits_at_first_colon() {
        assert_eq!(parse_provide_argument("a.b:c:d").unwrap(), ("a.b".to_string(), "c:d".to_string()));
        assert_eq!(parse_provide_argument("a:").unwrap(), ("a".to_string(), String::new()));
    }

    #[test]
    fn provide_argument_needs_colon_and_key() {
        assert!(parse_provide_argument("no-colon").is_err());
        assert!(parse_provide_argument(":value").is_err());
        assert!(parse_provide_argument("artifact_name:x").is_err());
    }

    #[test]
    fn repeated_provide_name_is_rejected() {
        let arguments = ["x:1".to_string(), "y:1".to_string(), "x:2".to_string()];

        let error = parse_provide_arguments(&arguments).unwrap_err();

        assert!(matches!(&error, ProvidesError::RepeatedName { name, .. } if name == "x"), "{error}");
        assert!(error.to_string().contains("\"x:1\" and \"x:2\""), "{error}");
    }

    #[test]
    fn distinct_provide_names_keep_order() {
        let arguments = ["b:1".to_string(), "a:2:3".to_string()];

        let provides = parse_provide_arguments(&arguments).unwrap();

        assert_eq!(provides, [("b".to_string(), "1".to_string()), ("a".to_string(), "2:3".to_string())]);
    }

    #[test]
    fn star_matches_any_run() {
        let rootfs = pattern("rootfs-image.*");

        assert!(rootfs.matches("rootfs-image.version"));
        assert!(rootfs.matches("rootfs-image."));
        assert!(!rootfs.matches("rootfs-image"));
        assert!(!rootfs.matches("xrootfs-image.version"));
        assert!(pattern("*").matches(""));
        assert!(pattern("a*b*c").matches("a-b-b-c"));
        assert!(!pattern("a*b*c").matches("a-c-b"));
    }

    #[test]
    fn dot_is_literal() {
        assert!(!pattern("rootfs-image.version").matches("rootfs-imageXversion"));
    }

    #[test]
    fn star_stops_at_newline() {
        assert!(!pattern("a*").matches("a\nb"));
    }

    #[test]
    fn escaped_star_is_literal() {
        let literal = pattern(r"a\*");

        assert!(literal.matches("a*"));
        assert!(!literal.matches("ab"));
    }

    #[test]
    fn many_stars_match_without_backtracking() {
        let name = "a".repeat(60);
        let many_stars = pattern(&format!("{}*b", "*a".repeat(14)));

        assert!(!many_stars.matches(&name));
        assert!(many_stars.matches(&format!("{name}b")));
        assert!(pattern(&"*a".repeat(30)).matches(&name));
        assert!(!pattern(&"*a".repeat(61)).matches(&name));
    }

    #[test]
    fn star_stops_at_newline_between_literals() {
        assert!(pattern("a*\n*b").matches("ax\nyb"));
        assert!(!pattern("a*b").matches("a\nb"));
    }

    #[test]
    fn bad_escapes_are_rejected() {
        assert!(ClearsPattern::parse("a\\").is_err());
        assert!(ClearsPattern::parse(r"\d").is_err());
    }
}
