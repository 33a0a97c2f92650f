//! What the commands share: loading identity and keys named on the command line, the time
//! stamped on written files, and printing a result line.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use crate::commands::args::{ApiArg, IdentityArgs, KeyTypeArg, RequestArgs};
use crate::mender::device_key::{DevicePrivateKey, DevicePublicKey, KeyType};
use crate::preauth::identity::IdentityData;
use crate::preauth::request::{ApiVersion, preauth_request_json};

/// Largest key or identity file read, so that a wrong path (a disk image, say) fails quickly.
const MAX_SMALL_FILE_LEN: u64 = 1 << 20;

/// Reads a small text file such as a key or an identity file.
pub fn read_small_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path).with_context(|| path.display().to_string())?.len();
    if len > MAX_SMALL_FILE_LEN {
        bail!("{}: file is too large ({len} bytes) for a key or identity file", path.display());
    }
    std::fs::read(path).with_context(|| path.display().to_string())
}

impl IdentityArgs {
    /// Builds the identity data from --identity-file, then the --identity values.
    pub fn load(&self) -> anyhow::Result<IdentityData> {
        let from_file = match &self.identity_file {
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

/// Reads a private key file; errors name the file.
pub fn load_private_key(path: &Path) -> anyhow::Result<DevicePrivateKey> {
    let pem = read_small_file(path)?;
    DevicePrivateKey::from_pem(&pem).with_context(|| path.display().to_string())
}

/// Reads a public key file; errors name the file.
pub fn load_public_key(path: &Path) -> anyhow::Result<DevicePublicKey> {
    let pem = read_small_file(path)?;
    DevicePublicKey::from_pem(&pem).with_context(|| path.display().to_string())
}

/// Maps the command-line key type to the library's.
pub fn key_type(kind: KeyTypeArg, bits: usize) -> KeyType {
    match kind {
        KeyTypeArg::Rsa => KeyType::Rsa { bits },
        KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        KeyTypeArg::Ed25519 => KeyType::Ed25519,
    }
}

impl RequestArgs {
    /// Builds the request body for `identity` and `pubkey` in the chosen API version.
    pub fn request_json(&self, identity: &IdentityData, pubkey: &DevicePublicKey) -> anyhow::Result<String> {
        let api = match self.api {
            ApiArg::V2 => ApiVersion::V2,
            ApiArg::V1 => ApiVersion::V1,
        };
        Ok(preauth_request_json(identity, pubkey, api, self.force)?)
    }
}

/// Prints `line` and a newline to stdout, or writes them to `path` when given.
pub fn emit_line(line: &str, path: Option<&Path>) -> anyhow::Result<()> {
    match path {
        Some(path) => std::fs::write(path, format!("{line}\n")).with_context(|| path.display().to_string()),
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}").and_then(|()| stdout.flush()).context("writing to stdout")
        }
    }
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
