//! `/etc/mender/artifact_info` on the root filesystem: the name of the Artifact a Yocto build
//! put there, which the Mender client 3.x reports while mender-store has no `artifact-name`.
//!
//! The rules are those of the client 3.4's `device.GetManifestData`. Each line is trimmed, and
//! lines starting with `#` are comments. Every other line must contain `=`. The key before the
//! first `=` is compared untrimmed, the value after it is trimmed, and a key given twice is an
//! error.

/// Path of the file on the root filesystem.
pub const ARTIFACT_INFO_PATH: &str = "/etc/mender/artifact_info";

/// Key of the Artifact name in the file.
const ARTIFACT_NAME_KEY: &str = "artifact_name";

/// Errors in the file, as the client would report them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactInfoError {
    /// A line that is neither a comment nor `key=value`; the client 3.4 rejects empty lines too.
    #[error("{ARTIFACT_INFO_PATH} line {line}: expected key=value, as the Mender client requires")]
    MissingEquals {
        /// Line number, from 1.
        line: usize,
    },

    /// The key appears on more than one line.
    #[error("{ARTIFACT_INFO_PATH} gives {ARTIFACT_NAME_KEY} more than once (lines {first} and {second})")]
    Repeated {
        /// Line of the first occurrence, from 1.
        first: usize,
        /// Line of the second occurrence, from 1.
        second: usize,
    },
}

/// Returns the `artifact_name` value of the file's text, or `None` when the file does not give
/// one. The value is returned as the bytes the file contains, because the client copies them
/// unchanged, invalid UTF-8 included. An empty value is returned as given; the client then
/// reports that the name is empty.
pub fn parse_artifact_name(text: &[u8]) -> Result<Option<Vec<u8>>, ArtifactInfoError> {
    let mut found: Option<(usize, Vec<u8>)> = None;

    // Go's bufio.Scanner splits at "\n", drops one "\r" before it (the trim covers that) and
    // yields the text after the last "\n" only when it is not empty.
    let mut lines: Vec<&[u8]> = text.split(|&byte| byte == b'\n').collect();
    if lines.last() == Some(&&b""[..]) {
        lines.pop();
    }
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let line = trim_space(line);
        if line.starts_with(b"#") {
            continue;
        }
        let Some(equals) = line.iter().position(|&byte| byte == b'=') else {
            return Err(ArtifactInfoError::MissingEquals { line: number });
        };
        let (key, value) = (&line[..equals], &line[equals + 1..]);
        if key != ARTIFACT_NAME_KEY.as_bytes() {
            continue;
        }
        if let Some((first, _)) = found {
            return Err(ArtifactInfoError::Repeated { first, second: number });
        }
        found = Some((number, trim_space(value).to_vec()));
    }
    Ok(found.map(|(_, name)| name))
}

/// Trims white space at both ends as Go's `strings.TrimSpace` does: Unicode white space is
/// removed, and bytes that are not valid UTF-8 stop the trim and are kept.
fn trim_space(mut bytes: &[u8]) -> &[u8] {
    while let Some(c) = first_char(bytes).filter(|c| c.is_whitespace()) {
        bytes = &bytes[c.len_utf8()..];
    }
    while let Some(c) = last_char(bytes).filter(|c| c.is_whitespace()) {
        bytes = &bytes[..bytes.len() - c.len_utf8()];
    }
    bytes
}

/// Decodes the character at the start of `bytes`, or `None` when they start with invalid UTF-8.
fn first_char(bytes: &[u8]) -> Option<char> {
    (1..=bytes.len().min(4)).find_map(|len| std::str::from_utf8(&bytes[..len]).ok()?.chars().next())
}

/// Decodes the character at the end of `bytes`, or `None` when they end with invalid UTF-8.
fn last_char(bytes: &[u8]) -> Option<char> {
    (1..=bytes.len().min(4))
        .find_map(|len| std::str::from_utf8(&bytes[bytes.len() - len..]).ok()?.chars().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yocto_file_gives_name() {
        assert_eq!(parse_artifact_name(b"artifact_name=release-1\n").unwrap(), Some(b"release-1".to_vec()));
    }

    #[test]
    fn value_is_trimmed_and_comments_skipped() {
        let text = b"# built by Yocto\n  artifact_name=  release 2 \r\nartifact_group=lab\n";

        assert_eq!(parse_artifact_name(text).unwrap(), Some(b"release 2".to_vec()));
    }

    #[test]
    fn invalid_utf8_name_is_kept_raw() {
        let text = b"artifact_name= r\xffel\xa0 \n";

        assert_eq!(parse_artifact_name(text).unwrap(), Some(b"r\xffel\xa0".to_vec()));
    }

    #[test]
    fn unicode_white_space_is_trimmed() {
        let text = "artifact_name=\u{a0}rel\u{2003}\n".as_bytes();

        assert_eq!(parse_artifact_name(text).unwrap(), Some(b"rel".to_vec()));
    }

    #[test]
    fn key_is_compared_untrimmed() {
        assert_eq!(parse_artifact_name(b"artifact_name =x\n").unwrap(), None);
    }

    #[test]
    fn empty_file_has_no_name() {
        assert_eq!(parse_artifact_name(b"").unwrap(), None);
        assert_eq!(parse_artifact_name(b"other=x").unwrap(), None);
    }

    #[test]
    fn lone_newline_is_an_empty_line() {
        assert_eq!(parse_artifact_name(b"\n"), Err(ArtifactInfoError::MissingEquals { line: 1 }));
    }

    #[test]
    fn line_without_equals_is_an_error() {
        assert_eq!(
            parse_artifact_name(b"artifact_name=a\n\nother=b\n"),
            Err(ArtifactInfoError::MissingEquals { line: 2 })
        );
    }

    #[test]
    fn repeated_name_is_an_error() {
        assert_eq!(
            parse_artifact_name(b"artifact_name=a\nartifact_name=b\n"),
            Err(ArtifactInfoError::Repeated { first: 1, second: 2 })
        );
    }
}
