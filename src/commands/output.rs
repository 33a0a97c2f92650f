//! Helpers the commands share: loading identity and keys named on the command line, the time
//! stamped on written files, and printing a result line.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::commands::UsageError;
use crate::commands::args::{ApiArg, IdentityArgs, KeyTypeArg, RequestArgs};
use crate::mender::device_key::{DEFAULT_RSA_BITS, DevicePrivateKey, DevicePublicKey, KeyType, MIN_RSA_BITS};
use crate::preauth::identity::IdentityData;
use crate::preauth::request::{ApiVersion, preauth_request_json};

/// Largest key or identity file read, so that a wrong path (a disk image, say) fails quickly.
const MAX_SMALL_FILE_LEN: u64 = 1 << 20;

/// Reads a small text file such as a key or an identity file. Only regular files are read,
/// and at most [`MAX_SMALL_FILE_LEN`] bytes of them, so a device or a FIFO named by mistake
/// fails at once instead of blocking or filling memory.
pub fn read_small_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if !metadata.is_file() {
        bail!("{}: is not a regular file", path.display());
    }
    let file = File::open(path).with_context(|| path.display().to_string())?;
    let mut text = Vec::new();
    file.take(MAX_SMALL_FILE_LEN + 1).read_to_end(&mut text).with_context(|| path.display().to_string())?;
    if text.len() as u64 > MAX_SMALL_FILE_LEN {
        bail!(
            "{}: file is too large (over {MAX_SMALL_FILE_LEN} bytes) for a key or identity file",
            path.display()
        );
    }
    Ok(text)
}

/// Reads standard input, at most [`MAX_SMALL_FILE_LEN`] bytes.
fn read_small_stdin() -> anyhow::Result<Vec<u8>> {
    let mut text = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_SMALL_FILE_LEN + 1)
        .read_to_end(&mut text)
        .context("reading standard input")?;
    if text.len() as u64 > MAX_SMALL_FILE_LEN {
        bail!("standard input is too large (over {MAX_SMALL_FILE_LEN} bytes) for identity data");
    }
    Ok(text)
}

impl IdentityArgs {
    /// Builds the identity data from --identity-file, then the --identity values.
    pub fn load(&self) -> anyhow::Result<IdentityData> {
        let from_file = match &self.identity_file {
            Some(path) if path.as_os_str() == "-" => {
                let text = read_small_stdin()?;
                Some(IdentityData::from_key_value_text(&text, "standard input")?)
            }
            Some(path) => {
                let text = read_small_file(path)?;
                Some(IdentityData::from_key_value_text(&text, &path.display().to_string())?)
            }
            None => None,
        };
        let from_args = match self.identity.is_empty() {
            true => None,
            false => Some(IdentityData::from_args(&self.identity)?),
        };

        match (from_file, from_args) {
            (Some(mut identity), Some(more)) => {
                identity.merge(more);
                Ok(identity)
            }
            (Some(identity), None) | (None, Some(identity)) => Ok(identity),
            (None, None) => {
                bail!("no identity data: give at least one --identity KEY=VALUE or an --identity-file")
            }
        }
    }
}

/// Reads a private key file; errors name the file. Warns about a short RSA key.
pub fn load_private_key(path: &Path) -> anyhow::Result<DevicePrivateKey> {
    let pem = read_small_file(path)?;
    let key = DevicePrivateKey::from_pem(&pem).with_context(|| path.display().to_string())?;
    warn_if_weak(path, &key.public_key());
    Ok(key)
}

/// Reads a public key file; errors name the file. Warns about a short RSA key.
pub fn load_public_key(path: &Path) -> anyhow::Result<DevicePublicKey> {
    let pem = read_small_file(path)?;
    let key = DevicePublicKey::from_pem(&pem).with_context(|| path.display().to_string())?;
    warn_if_weak(path, &key);
    Ok(key)
}

/// Warns that an RSA key shorter than keygen makes is weak. Such a key is still used, because
/// the Mender client accepts it.
fn warn_if_weak(path: &Path, key: &DevicePublicKey) {
    if let Some(bits) = key.rsa_bits().filter(|&bits| (bits as usize) < MIN_RSA_BITS) {
        log::warn!(
            "{}: RSA key of {bits} bits is weak (under {MIN_RSA_BITS} bits); it is used anyway, but \
             prefer a new key of 3072 bits",
            path.display()
        );
    }
}

/// Maps the command-line key type and --bits to the library's key type.
pub fn key_type(kind: KeyTypeArg, bits: Option<usize>) -> anyhow::Result<KeyType> {
    match (kind, bits) {
        (KeyTypeArg::Rsa, bits) => Ok(KeyType::Rsa { bits: bits.unwrap_or(DEFAULT_RSA_BITS) }),
        (_, Some(_)) => Err(UsageError("--bits applies only to --type rsa".to_string()).into()),
        (KeyTypeArg::EcdsaP256, None) => Ok(KeyType::EcdsaP256),
        (KeyTypeArg::Ed25519, None) => Ok(KeyType::Ed25519),
    }
}

impl RequestArgs {
    /// Builds the request body for `identity` and `pubkey` in the chosen API version.
    pub fn request_json(&self, identity: &IdentityData, pubkey: &DevicePublicKey) -> anyhow::Result<String> {
        if self.force && self.api == ApiArg::V1 {
            return Err(UsageError(
                "--force applies only to --api v2; the v1 API has no force field".to_string(),
            )
            .into());
        }
        let api = match self.api {
            ApiArg::V2 => ApiVersion::V2,
            ApiArg::V1 => ApiVersion::V1,
        };
        Ok(preauth_request_json(identity, pubkey, api, self.force)?)
    }
}

/// Destination of a result line: stdout, or a file that is created before an image is written,
/// so that an unwritable path fails the run while the image is still unchanged.
pub enum LineOutput {
    Stdout,
    /// `regular` is false for a device, FIFO or socket such as `/dev/null` or `/dev/stdout`,
    /// which is neither synced nor removed.
    File {
        path: PathBuf,
        file: File,
        regular: bool,
    },
}

impl LineOutput {
    /// Opens the destination: stdout, or `path` created (or truncated) now.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            None => Ok(LineOutput::Stdout),
            Some(path) => {
                let file = File::create(path).with_context(|| path.display().to_string())?;
                let regular = file.metadata().with_context(|| path.display().to_string())?.is_file();
                Ok(LineOutput::File { path: path.to_path_buf(), file, regular })
            }
        }
    }

    /// Writes `line` and a newline.
    pub fn write_line(self, line: &str) -> anyhow::Result<()> {
        match self {
            LineOutput::Stdout => {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{line}").and_then(|()| stdout.flush()).context("writing to stdout")
            }
            LineOutput::File { path, mut file, regular } => writeln!(file, "{line}")
                .and_then(|()| if regular { file.sync_all() } else { Ok(()) })
                .with_context(|| path.display().to_string()),
        }
    }

    /// Removes a regular file created by [`LineOutput::open`] when the run fails before writing
    /// to it.
    pub fn discard(self) {
        if let LineOutput::File { path, regular: true, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Prints `line` and a newline to stdout.
pub fn print_line(line: &str) -> anyhow::Result<()> {
    LineOutput::Stdout.write_line(line)
}

/// Escapes the control characters of `text` as Rust string literals write them (`\n`, `\u{1b}`),
/// so that a key, name or label read from an image can neither split a line of human output nor
/// send terminal escape sequences. Other characters are kept as they are.
pub fn escape_control(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Environment variable that fixes every timestamp the tool writes, for reproducible builds.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Time stamped on written files: $SOURCE_DATE_EPOCH when set, else the current time, in
/// seconds since the Unix epoch.
pub fn write_time() -> anyhow::Result<i64> {
    match std::env::var(SOURCE_DATE_EPOCH) {
        Ok(value) => {
            value.trim().parse::<i64>().ok().filter(|seconds| *seconds >= 0).with_context(|| {
                format!("{SOURCE_DATE_EPOCH}={value:?} is not a number of seconds since 1970")
            })
        }
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Ok(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("a\nb"), "a\\nb");
        assert_eq!(escape_control("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape_control("tab\there\r"), "tab\\there\\r");
    }

    #[test]
    fn printable_text_is_kept() {
        assert_eq!(escape_control("rootfs-image.version"), "rootfs-image.version");
        assert_eq!(escape_control("Zoë \\ 名前"), "Zoë \\ 名前");
    }
}
