//! The device key: the private key the Mender client keeps in `/mender/mender-agent.pem` and the
//! public key it sends to the server in its authentication request.
//!
//! Keys are RSA, ECDSA on P-256 or Ed25519. Private keys are read from PEM in the forms OpenSSL
//! writes (PKCS#1, SEC1, PKCS#8) and written back in the forms OpenSSL 3 writes: PKCS#1 for RSA, as
//! the client 3.4 itself does, and unencrypted PKCS#8 for the others. Public keys are printed
//! exactly as OpenSSL's `PEM_write_bio_PUBKEY` prints them, because that is the `pubkey` string the
//! client 3.4 sends and the server compares with the preauthorized key.

use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::KeypairBytes;
use ed25519_dalek::{SigningKey, VerifyingKey};
use getrandom::SysRng;
use getrandom::rand_core::TryRng;
use p256::elliptic_curve::Generate;
use p256::pkcs8::der::asn1::{AnyRef, ContextSpecific, ObjectIdentifier};
use p256::pkcs8::der::{self, Decode, Reader, SecretDocument, Tag, TagNumber, Tagged};
use p256::pkcs8::{
    EncodePrivateKey, EncodePublicKey, LineEnding, PrivateKeyInfoRef, SubjectPublicKeyInfoRef,
};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// Smallest RSA key [`DevicePrivateKey::generate`] makes, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA key [`DevicePrivateKey::generate`] makes, in bits. The `rsa` crate reads no larger
/// key either.
pub const MAX_RSA_BITS: usize = 8192;
/// RSA key size the Mender client 3.4 generates for itself (`RsaKeyLength` in `store/keystore.go`).
pub const DEFAULT_RSA_BITS: usize = 3072;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

const LABEL_PKCS8: &str = "PRIVATE KEY";
const LABEL_PKCS8_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";
const LABEL_PKCS1: &str = "RSA PRIVATE KEY";
const LABEL_SEC1: &str = "EC PRIVATE KEY";
const LABEL_SPKI: &str = "PUBLIC KEY";
const LABEL_PKCS1_PUBLIC: &str = "RSA PUBLIC KEY";

/// The advice every encrypted-key error gives.
const DECRYPT_HINT: &str = "decrypt it first, for example `openssl pkey -in KEY -out KEY.plain`";

/// Errors from reading, generating and writing device keys. No message contains key material.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The private key is protected by a passphrase.
    #[error("the private key is encrypted ({format}), so {DECRYPT_HINT}")]
    Encrypted { format: &'static str },

    /// The key is well formed but not RSA, ECDSA P-256 or Ed25519.
    #[error("unsupported key: {description}. This tool supports RSA, ECDSA P-256 and Ed25519 device keys")]
    Unsupported { description: String },

    /// The input is not a key in any supported encoding.
    #[error("invalid key: {reason}")]
    Invalid { reason: String },

    /// A generated RSA key size is outside the accepted range.
    #[error("invalid RSA key size {bits} bits: choose {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")]
    RsaBits { bits: usize },

    /// The operating system's random number generator failed.
    #[error("failed to get random bytes from the operating system: {0}")]
    Random(getrandom::Error),

    /// Key generation failed for a reason other than the random number generator.
    #[error("failed to generate the {kind} key: {reason}")]
    Generate { kind: String, reason: String },

    /// Encoding a key to DER or PEM failed.
    #[error("failed to encode the {kind} key: {reason}")]
    Encode { kind: String, reason: String },

    /// The file name prefix of [`write_key_pair`] is not a plain name.
    #[error("invalid key file prefix {prefix:?}: it must not contain '/' or NUL")]
    InvalidPrefix { prefix: String },

    /// A file system operation of [`write_key_pair`] failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

/// The kind and size of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA with a modulus of `bits` bits and public exponent 65537.
    Rsa { bits: usize },
    /// ECDSA on NIST P-256 (prime256v1).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// A device private key. Its key material is zeroized on drop, and its `Debug` output shows only
/// the key type.
pub struct DevicePrivateKey {
    secret: Secret,
    public: DevicePublicKey,
    /// The PKCS#1 DER the key was read from, which is already the device form: writing it back
    /// as read keeps the device's file equal to the given one and skips a costly re-encoding.
    given_pkcs1: Option<SecretDocument>,
}

enum Secret {
    Rsa(Box<rsa::PrivateKey>),
    EcdsaP256(p256::SecretKey),
    Ed25519(SigningKey),
}

/// A device public key, kept as its DER SubjectPublicKeyInfo in the encoding OpenSSL writes.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePublicKey {
    kind: PublicKind,
    spki_der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicKind {
    Rsa { bits: u32 },
    EcdsaP256,
    Ed25519,
}

impl DevicePrivateKey {
    /// Generates a new key with the operating system's random number generator. RSA sizes outside
    /// [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`] are rejected. RSA generation is slow, seconds for 3072
    /// bits in an optimized build.
    pub fn generate(kind: KeyType) -> Result<Self, KeyError> {
        let secret = match kind {
            KeyType::Rsa { bits } => {
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(KeyError::RsaBits { bits });
                }
                let key = rsa::PrivateKey::new(&mut SysRng, bits).map_err(|error| match error {
                    rsa::Error::Rng => KeyError::Generate {
                        kind: format!("RSA {bits}"),
                        reason: "the operating system's random number generator failed".into(),
                    },
                    other => KeyError::Generate { kind: format!("RSA {bits}"), reason: other.to_string() },
                })?;
                Secret::Rsa(Box::new(key))
            }
            KeyType::EcdsaP256 => Secret::EcdsaP256(
                p256::SecretKey::try_generate_from_rng(&mut SysRng).map_err(KeyError::Random)?,
            ),
            KeyType::Ed25519 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                SysRng.try_fill_bytes(seed.as_mut()).map_err(KeyError::Random)?;
                Secret::Ed25519(SigningKey::from_bytes(&seed))
            }
        };
        Self::from_secret(secret)
    }

    /// Reads a private key from PEM text: PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY` (P-256)
    /// or PKCS#8 `PRIVATE KEY` (RSA, P-256, Ed25519). The first private key block counts, and other
    /// blocks such as the `EC PARAMETERS` that `openssl ecparam -genkey` prints are skipped. RSA
    /// keys of 1024 to 8192 bits are read, the range of the `rsa` crate, because the Mender client
    /// uses an existing key of any size OpenSSL loads (`store/keystore.go`, 3.4.0).
    /// Encrypted keys, PKCS#8 or with a legacy `Proc-Type: 4,ENCRYPTED` header, are rejected with
    /// [`KeyError::Encrypted`].
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        let blocks = parse_pem_blocks(text)?;
        let private_blocks = blocks.iter().filter(|block| is_private_key_label(&block.label)).count();
        if private_blocks > 1 {
            return Err(KeyError::Invalid {
                reason: format!("the file holds {private_blocks} private keys; give a file with exactly one"),
            });
        }
        let block = blocks
            .iter()
            .find(|block| is_private_key_label(&block.label))
            .ok_or_else(|| no_block_error("private key", &blocks))?;

        if block.legacy_encrypted {
            return Err(KeyError::Encrypted { format: "legacy PEM encryption" });
        }
        let der = &block.contents;

        let secret = match block.label.as_str() {
            LABEL_PKCS8_ENCRYPTED => return Err(KeyError::Encrypted { format: "encrypted PKCS#8" }),
            LABEL_PKCS1 => Secret::Rsa(Box::new(
                rsa::PrivateKey::from_pkcs1_der(der)
                    .map_err(|error| invalid("PKCS#1 RSA private key", error))?,
            )),
            LABEL_SEC1 => decode_sec1(der)?,
            LABEL_PKCS8 => decode_pkcs8(der)?,
            other => {
                return Err(KeyError::Unsupported { description: format!("PEM block \"{other}\"") });
            }
        };
        let mut key = Self::from_secret(secret)?;
        if block.label == LABEL_PKCS1 {
            key.given_pkcs1 = Some(
                SecretDocument::try_from(der.as_slice())
                    .map_err(|error| invalid("PKCS#1 RSA private key", error))?,
            );
        }
        Ok(key)
    }

    /// Returns the key as PEM for the device's `mender-agent.pem`: PKCS#1 `RSA PRIVATE KEY` for RSA
    /// and unencrypted PKCS#8 `PRIVATE KEY` otherwise, with LF line ends, 64-column base64 and a
    /// final newline.
    pub fn to_device_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let encode_error = |reason: String| KeyError::Encode { kind: self.description(), reason };

        if let Some(document) = &self.given_pkcs1 {
            return document
                .to_pem(LABEL_PKCS1, LineEnding::LF)
                .map_err(|error| encode_error(error.to_string()));
        }
        let (document, label): (SecretDocument, &'static str) = match &self.secret {
            Secret::Rsa(key) => {
                (key.to_pkcs1_der().map_err(|error| encode_error(error.to_string()))?, LABEL_PKCS1)
            }
            Secret::EcdsaP256(key) => {
                (key.to_pkcs8_der().map_err(|error| encode_error(error.to_string()))?, LABEL_PKCS8)
            }
            Secret::Ed25519(key) => {
                // OpenSSL writes Ed25519 keys as PKCS#8 version 1, without the optional public key.
                let keypair = KeypairBytes { secret_key: key.to_bytes(), public_key: None };
                (keypair.to_pkcs8_der().map_err(|error| encode_error(error.to_string()))?, LABEL_PKCS8)
            }
        };

        document.to_pem(label, LineEnding::LF).map_err(|error| encode_error(error.to_string()))
    }

    /// Returns the public half of the key.
    pub fn public_key(&self) -> DevicePublicKey {
        self.public.clone()
    }

    /// Returns the key type for people: "RSA 3072", "ECDSA P-256" or "Ed25519".
    pub fn description(&self) -> String {
        self.public.description()
    }

    fn from_secret(secret: Secret) -> Result<Self, KeyError> {
        let public = match &secret {
            Secret::Rsa(key) => DevicePublicKey::from_rsa(&key.to_public_key())?,
            Secret::EcdsaP256(key) => DevicePublicKey::from_p256(&key.public_key())?,
            Secret::Ed25519(key) => DevicePublicKey::from_ed25519(&key.verifying_key())?,
        };
        Ok(DevicePrivateKey { secret, public, given_pkcs1: None })
    }
}

impl fmt::Debug for DevicePrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePrivateKey").field("kind", &self.description()).finish_non_exhaustive()
    }
}

impl DevicePublicKey {
    /// Reads a public key from PEM text: SubjectPublicKeyInfo `PUBLIC KEY` (RSA, P-256, Ed25519) or
    /// PKCS#1 `RSA PUBLIC KEY`. The key is re-encoded the way OpenSSL writes it, so P-256 points
    /// given in compressed form come out uncompressed.
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        let blocks = parse_pem_blocks(text)?;
        let block = blocks
            .iter()
            .find(|block| matches!(block.label.as_str(), LABEL_SPKI | LABEL_PKCS1_PUBLIC))
            .ok_or_else(|| no_block_error("public key", &blocks))?;

        if block.label == LABEL_PKCS1_PUBLIC {
            let key = rsa::PublicKey::from_pkcs1_der(&block.contents)
                .map_err(|error| invalid("PKCS#1 RSA public key", error))?;
            return Self::from_rsa(&key);
        }

        let spki = SubjectPublicKeyInfoRef::from_der(&block.contents)
            .map_err(|error| invalid("SubjectPublicKeyInfo", error))?;
        match spki.algorithm.oid {
            OID_RSA_ENCRYPTION => {
                let key = rsa::PublicKey::try_from(spki).map_err(|error| invalid("RSA public key", error))?;
                Self::from_rsa(&key)
            }
            OID_EC_PUBLIC_KEY => {
                let curve =
                    spki.algorithm.parameters_oid().map_err(|error| invalid("EC public key", error))?;
                if curve != OID_PRIME256V1 {
                    return Err(unsupported_curve(curve));
                }
                let key =
                    p256::PublicKey::try_from(spki).map_err(|error| invalid("P-256 public key", error))?;
                Self::from_p256(&key)
            }
            OID_ED25519 => {
                let key =
                    VerifyingKey::try_from(spki).map_err(|error| invalid("Ed25519 public key", error))?;
                Self::from_ed25519(&key)
            }
            other => Err(unsupported_algorithm(other)),
        }
    }

    /// Returns the key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), LF line ends,
    /// 64-column base64, final newline: byte for byte what OpenSSL's `PEM_write_bio_PUBKEY` prints.
    pub fn to_pem(&self) -> String {
        let block = pem::Pem::new(LABEL_SPKI, self.spki_der.clone());
        pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF).set_line_wrap(64),
        )
    }

    /// Returns the DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Returns the SHA-256 of the DER SubjectPublicKeyInfo as lowercase hex bytes joined by colons
    /// (`ab:01:...`, 95 characters), the form `openssl dgst -sha256 -c` prints for that DER.
    pub fn fingerprint_sha256(&self) -> String {
        let digest = Sha256::digest(&self.spki_der);
        digest.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":")
    }

    /// Returns the modulus length in bits of an RSA key, `None` for other key types.
    pub fn rsa_bits(&self) -> Option<u32> {
        match self.kind {
            PublicKind::Rsa { bits } => Some(bits),
            PublicKind::EcdsaP256 | PublicKind::Ed25519 => None,
        }
    }

    /// Returns the key type for people: "RSA 3072", "ECDSA P-256" or "Ed25519".
    pub fn description(&self) -> String {
        match self.kind {
            PublicKind::Rsa { bits } => format!("RSA {bits}"),
            PublicKind::EcdsaP256 => "ECDSA P-256".to_owned(),
            PublicKind::Ed25519 => "Ed25519".to_owned(),
        }
    }

    fn from_rsa(key: &rsa::PublicKey) -> Result<Self, KeyError> {
        let bits = key.n().as_ref().bit_width_vartime();
        let kind = PublicKind::Rsa { bits };
        let der = key.to_public_key_der().map_err(|error| public_encode_error(kind, error))?;
        Ok(DevicePublicKey { kind, spki_der: der.into_vec() })
    }

    fn from_p256(key: &p256::PublicKey) -> Result<Self, KeyError> {
        let kind = PublicKind::EcdsaP256;
        let der = key.to_public_key_der().map_err(|error| public_encode_error(kind, error))?;
        Ok(DevicePublicKey { kind, spki_der: der.into_vec() })
    }

    fn from_ed25519(key: &VerifyingKey) -> Result<Self, KeyError> {
        let kind = PublicKind::Ed25519;
        let der = key.to_public_key_der().map_err(|error| public_encode_error(kind, error))?;
        Ok(DevicePublicKey { kind, spki_der: der.into_vec() })
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePublicKey")
            .field("kind", &self.description())
            .field("sha256", &self.fingerprint_sha256())
            .finish()
    }
}

/// Writes `key` as `{prefix}private.key` and its public key as `{prefix}public.key` in `dir`, the
/// file names of Mender's `keygen-client` script, and returns both paths.
///
/// `dir` is created like `mkdir -p`. A prefix containing `/` (or NUL) is rejected. Existing files
/// are replaced, as `keygen-client` replaces them: each file is written to a new temporary file in
/// `dir` and renamed over the target, so a symlink at the target is replaced rather than followed.
/// The private key's temporary file is created with mode 0600, so no other user can read the key at
/// any moment, whatever the umask. The public key file ends with mode 0644.
pub fn write_key_pair(
    dir: &Path,
    prefix: &str,
    key: &DevicePrivateKey,
) -> Result<(PathBuf, PathBuf), KeyError> {
    if prefix.contains(['/', '\0']) {
        return Err(KeyError::InvalidPrefix { prefix: prefix.to_owned() });
    }
    // A directory created here contains private keys, so only its owner may enter it.
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| KeyError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })?;

    let private_path = dir.join(format!("{prefix}private.key"));
    let public_path = dir.join(format!("{prefix}public.key"));
    let private_pem = key.to_device_pem()?;
    let public_pem = key.public_key().to_pem();

    replace_file(dir, &private_path, private_pem.as_bytes(), 0o600)?;
    replace_file(dir, &public_path, public_pem.as_bytes(), 0o644)?;
    sync_directory(dir)?;

    Ok((private_path, public_path))
}

/// Writes `contents` to a temporary file in `dir`, created with mode 0600 (the `tempfile` crate
/// passes that mode to `open`), sets `mode` and renames it to `path`.
fn replace_file(dir: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io_error = |action: &'static str| {
        move |source: io::Error| KeyError::Io { action, path: path.to_owned(), source }
    };

    let mut temporary = tempfile::Builder::new()
        .prefix(".mender-preauth-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file for"))?;
    temporary.write_all(contents).map_err(io_error("write"))?;
    temporary.as_file().set_permissions(Permissions::from_mode(mode)).map_err(io_error("set the mode of"))?;
    temporary.as_file().sync_all().map_err(io_error("sync"))?;
    temporary.persist(path).map_err(|error| io_error("rename a temporary file to")(error.error))?;
    Ok(())
}

fn sync_directory(dir: &Path) -> Result<(), KeyError> {
    let io_error = |source| KeyError::Io { action: "sync directory", path: dir.to_owned(), source };
    File::open(dir).map_err(io_error)?.sync_all().map_err(io_error)
}

fn is_private_key_label(label: &str) -> bool {
    // Other private key blocks, such as "DSA PRIVATE KEY" or "OPENSSH PRIVATE KEY", are found too
    // so that they are reported as unsupported instead of missing.
    label.ends_with(LABEL_PKCS8)
}

/// A decoded PEM block whose contents are zeroized on drop.
struct PemBlock {
    label: String,
    /// True when the block has a legacy `Proc-Type: 4,ENCRYPTED` header.
    legacy_encrypted: bool,
    contents: Zeroizing<Vec<u8>>,
}

/// Parses every PEM block of `text`. Errors never quote the input, because a malformed private key
/// file would otherwise leak base64 key material into the message.
///
/// NOTE: the `pem` crate keeps the base64 text in a temporary `String` that is not zeroized, so a
/// copy of private key material may stay in freed memory.
fn parse_pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, KeyError> {
    let blocks = pem::parse_many(text).map_err(|error| {
        let reason = match error {
            pem::PemError::MismatchedTags(..) => "PEM BEGIN and END labels differ",
            pem::PemError::MalformedFraming
            | pem::PemError::MissingBeginTag
            | pem::PemError::MissingEndTag => "malformed PEM framing",
            pem::PemError::MissingData => "PEM block without data",
            pem::PemError::InvalidData(_) => "PEM block with invalid base64",
            pem::PemError::InvalidHeader(_) => {
                "PEM block with an invalid header line or a blank line in its data"
            }
            pem::PemError::NotUtf8(_) => "PEM text is not UTF-8",
        };
        KeyError::Invalid { reason: reason.to_owned() }
    })?;

    if blocks.is_empty() {
        return Err(KeyError::Invalid {
            reason: "no PEM block found (expected -----BEGIN ...-----)".to_owned(),
        });
    }

    let blocks = blocks
        .into_iter()
        .map(|block| {
            let label = block.tag().to_owned();
            let legacy_encrypted =
                block.headers().get("Proc-Type").is_some_and(|value| value.contains("ENCRYPTED"));
            PemBlock { label, legacy_encrypted, contents: Zeroizing::new(block.into_contents()) }
        })
        .collect();
    Ok(blocks)
}

fn no_block_error(expected: &str, blocks: &[PemBlock]) -> KeyError {
    let labels: Vec<String> = blocks.iter().map(|block| format!("\"{}\"", block.label)).collect();
    let mut reason = format!("no {expected} PEM block, only {}", labels.join(", "));
    let holds_public =
        blocks.iter().any(|block| matches!(block.label.as_str(), LABEL_SPKI | LABEL_PKCS1_PUBLIC));
    let holds_private = blocks.iter().any(|block| is_private_key_label(&block.label));
    if expected == "private key" && holds_public {
        reason.push_str("; this is a public key, and the device needs its private key");
    } else if expected == "public key" && holds_private {
        reason.push_str("; this is a private key, where a public key was expected");
    }
    KeyError::Invalid { reason }
}

fn decode_pkcs8(der: &[u8]) -> Result<Secret, KeyError> {
    let info = PrivateKeyInfoRef::from_der(der).map_err(|error| invalid("PKCS#8 private key", error))?;

    match info.algorithm.oid {
        OID_RSA_ENCRYPTION => {
            let key =
                rsa::PrivateKey::try_from(info).map_err(|error| invalid("PKCS#8 RSA private key", error))?;
            Ok(Secret::Rsa(Box::new(key)))
        }
        OID_EC_PUBLIC_KEY => {
            let curve =
                info.algorithm.parameters_oid().map_err(|error| invalid("PKCS#8 EC private key", error))?;
            if curve != OID_PRIME256V1 {
                return Err(unsupported_curve(curve));
            }
            let key = p256::SecretKey::try_from(info)
                .map_err(|error| invalid("PKCS#8 P-256 private key", error))?;
            Ok(Secret::EcdsaP256(key))
        }
        OID_ED25519 => {
            let key =
                SigningKey::try_from(info).map_err(|error| invalid("PKCS#8 Ed25519 private key", error))?;
            Ok(Secret::Ed25519(key))
        }
        other => Err(unsupported_algorithm(other)),
    }
}

fn decode_sec1(der: &[u8]) -> Result<Secret, KeyError> {
    match sec1_curve(der).map_err(|error| invalid("SEC1 EC private key", error))? {
        Sec1Curve::Named(OID_PRIME256V1) | Sec1Curve::Absent => {}
        Sec1Curve::Named(other) => return Err(unsupported_curve(other)),
        Sec1Curve::Explicit => {
            return Err(KeyError::Unsupported {
                description: "EC key with explicit curve parameters".to_owned(),
            });
        }
    }
    let key =
        p256::SecretKey::from_sec1_der(der).map_err(|error| invalid("SEC1 P-256 private key", error))?;
    Ok(Secret::EcdsaP256(key))
}

/// The `parameters` field of a SEC1 `ECPrivateKey`.
enum Sec1Curve {
    Named(ObjectIdentifier),
    Explicit,
    Absent,
}

/// Reads the curve of a SEC1 `ECPrivateKey` (RFC 5915): SEQUENCE { version INTEGER, privateKey
/// OCTET STRING, parameters [0] EXPLICIT ECParameters OPTIONAL, publicKey [1] ... OPTIONAL }.
fn sec1_curve(der: &[u8]) -> Result<Sec1Curve, der::Error> {
    AnyRef::from_der(der)?.sequence(|reader| {
        let _version = reader.decode::<AnyRef<'_>>()?;
        let _private_key = reader.decode::<AnyRef<'_>>()?;
        let parameters = ContextSpecific::<AnyRef<'_>>::decode_explicit(reader, TagNumber(0))?;
        while !reader.is_finished() {
            reader.decode::<AnyRef<'_>>()?;
        }

        Ok(match parameters {
            None => Sec1Curve::Absent,
            Some(field) if field.value.tag() == Tag::ObjectIdentifier => {
                Sec1Curve::Named(ObjectIdentifier::try_from(field.value)?)
            }
            Some(_) => Sec1Curve::Explicit,
        })
    })
}

fn invalid(structure: &str, error: impl fmt::Display) -> KeyError {
    KeyError::Invalid { reason: format!("malformed {structure}: {error}") }
}

fn unsupported_curve(curve: ObjectIdentifier) -> KeyError {
    let name = match curve.to_string().as_str() {
        "1.3.132.0.34" => " (P-384)",
        "1.3.132.0.35" => " (P-521)",
        "1.3.132.0.10" => " (secp256k1)",
        _ => "",
    };
    KeyError::Unsupported { description: format!("EC key on curve {curve}{name}") }
}

fn unsupported_algorithm(oid: ObjectIdentifier) -> KeyError {
    let name = match oid {
        OID_RSASSA_PSS => " (RSA-PSS)",
        _ => match oid.to_string().as_str() {
            "1.3.101.110" => " (X25519)",
            "1.3.101.111" => " (X448)",
            "1.3.101.113" => " (Ed448)",
            "1.2.840.10040.4.1" => " (DSA)",
            _ => "",
        },
    };
    KeyError::Unsupported { description: format!("key algorithm {oid}{name}") }
}

fn public_encode_error(kind: PublicKind, error: impl fmt::Display) -> KeyError {
    let description = DevicePublicKey { kind, spki_der: Vec::new() }.description();
    KeyError::Encode { kind: format!("{description} public"), reason: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::require_tool;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// The `openssl` command-line tool, run in a scratch directory that contains the files it reads
    /// and writes.
    struct Openssl {
        program: PathBuf,
        dir: tempfile::TempDir,
    }

    impl Openssl {
        fn new(test: &str) -> Option<Self> {
            let program = require_tool("openssl", test)?;
            let dir = tempfile::tempdir().expect("create a scratch directory");
            Some(Openssl { program, dir })
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, contents).expect("write a scratch file");
            path
        }

        fn read(&self, name: &str) -> Vec<u8> {
            fs::read(self.path(name)).expect("read a scratch file")
        }

        fn output(&self, args: &[&str]) -> std::process::Output {
            Command::new(&self.program).args(args).current_dir(self.dir.path()).output().expect("run openssl")
        }

        /// Runs openssl, asserts that it succeeded and returns its standard output.
        fn run(&self, args: &[&str]) -> Vec<u8> {
            let output = self.output(args);
            assert!(
                output.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            output.stdout
        }

        /// Returns what `openssl pkey -pubout` prints for the private key in file `name`.
        fn pubout(&self, name: &str) -> String {
            String::from_utf8(self.run(&["pkey", "-in", name, "-pubout"])).expect("PEM is ASCII")
        }
    }

    fn first_line(pem: &str) -> &str {
        pem.lines().next().unwrap_or_default()
    }

    fn base64_lines(pem: &str) -> Vec<&str> {
        pem.lines().filter(|line| !line.starts_with("-----") && !line.is_empty()).collect()
    }

    fn assert_pem_layout(pem: &str, label: &str) {
        assert!(
            pem.starts_with(&format!("-----BEGIN {label}-----\n")),
            "bad first line in\n{}",
            first_line(pem)
        );
        assert!(pem.ends_with(&format!("-----END {label}-----\n")), "bad last line for {label}");
        assert!(!pem.contains('\r'), "{label} PEM has CR line ends");
        assert!(pem.lines().all(|line| line.len() <= 64), "{label} PEM has lines over 64 columns");
    }

    fn generate(kind: KeyType) -> DevicePrivateKey {
        DevicePrivateKey::generate(kind).expect("key generation")
    }

    fn load(text: &[u8]) -> DevicePrivateKey {
        DevicePrivateKey::from_pem(text).expect("valid private key")
    }

    #[test]
    fn generated_keys_pass_openssl_checks() {
        let Some(openssl) = Openssl::new("generated_keys_pass_openssl_checks") else { return };
        let cases = [
            (KeyType::EcdsaP256, "ECDSA P-256", LABEL_PKCS8),
            (KeyType::Ed25519, "Ed25519", LABEL_PKCS8),
            (KeyType::Rsa { bits: 2048 }, "RSA 2048", LABEL_PKCS1),
        ];

        for (kind, description, label) in cases {
            let key = generate(kind);
            assert_eq!(key.description(), description);
            let pem = key.to_device_pem().expect("encode the key");
            assert_pem_layout(&pem, label);
            openssl.write("generated.pem", pem.as_bytes());

            openssl.run(&["pkey", "-in", "generated.pem", "-noout"]);
            assert_eq!(
                key.public_key().to_pem(),
                openssl.pubout("generated.pem"),
                "{description} public key"
            );

            // OpenSSL re-encodes the key to the same bytes, so the encoding is OpenSSL's own.
            let reencoded = match kind {
                KeyType::Rsa { .. } => openssl.run(&["rsa", "-in", "generated.pem", "-traditional"]),
                _ => openssl.run(&["pkey", "-in", "generated.pem"]),
            };
            assert_eq!(
                String::from_utf8_lossy(&reencoded),
                pem.as_str(),
                "{description} re-encoded by openssl"
            );
        }
    }

    #[test]
    fn generated_rsa_and_ec_keys_are_consistent() {
        let Some(openssl) = Openssl::new("generated_rsa_and_ec_keys_are_consistent") else { return };
        for (kind, text) in [(KeyType::EcdsaP256, "prime256v1"), (KeyType::Rsa { bits: 2048 }, "2048 bit")] {
            let key = generate(kind);
            openssl.write("generated.pem", key.to_device_pem().expect("encode the key").as_bytes());
            let check = openssl.run(&["pkey", "-in", "generated.pem", "-check", "-noout", "-text"]);
            let check = String::from_utf8_lossy(&check);
            assert!(check.contains("valid"), "openssl -check output: {check}");
            assert!(check.contains(text), "openssl -text output lacks {text:?}");
        }
    }

    #[test]
    fn generated_keys_differ() {
        let first = generate(KeyType::Ed25519).public_key();
        let second = generate(KeyType::Ed25519).public_key();
        assert_ne!(first, second);
        let first = generate(KeyType::EcdsaP256).public_key();
        let second = generate(KeyType::EcdsaP256).public_key();
        assert_ne!(first, second);
    }

    #[test]
    fn openssl_input_forms_round_trip() {
        let Some(openssl) = Openssl::new("openssl_input_forms_round_trip") else { return };
        openssl.run(&["genrsa", "-traditional", "-out", "rsa-pkcs1.pem", "2048"]);
        openssl.run(&["pkcs8", "-topk8", "-nocrypt", "-in", "rsa-pkcs1.pem", "-out", "rsa-topk8.pem"]);
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            "rsa-genpkey.pem",
        ]);
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec-pkcs8.pem",
        ]);
        openssl.run(&["ec", "-in", "ec-pkcs8.pem", "-out", "ec-sec1.pem"]);
        openssl.run(&["ec", "-in", "ec-pkcs8.pem", "-no_public", "-out", "ec-sec1-no-public.pem"]);
        openssl.run(&["ecparam", "-name", "prime256v1", "-genkey", "-out", "ec-with-parameters.pem"]);
        openssl.run(&["genpkey", "-algorithm", "ED25519", "-out", "ed25519.pem"]);
        let crlf =
            String::from_utf8(openssl.read("ec-sec1.pem")).expect("PEM is ASCII").replace('\n', "\r\n");
        openssl.write("ec-sec1-crlf.pem", crlf.as_bytes());

        let cases = [
            ("rsa-pkcs1.pem", "RSA PRIVATE KEY", "RSA 2048"),
            ("rsa-topk8.pem", "PRIVATE KEY", "RSA 2048"),
            ("rsa-genpkey.pem", "PRIVATE KEY", "RSA 3072"),
            ("ec-pkcs8.pem", "PRIVATE KEY", "ECDSA P-256"),
            ("ec-sec1.pem", "EC PRIVATE KEY", "ECDSA P-256"),
            ("ec-sec1-no-public.pem", "EC PRIVATE KEY", "ECDSA P-256"),
            ("ec-with-parameters.pem", "EC PARAMETERS", "ECDSA P-256"),
            ("ec-sec1-crlf.pem", "EC PRIVATE KEY", "ECDSA P-256"),
            ("ed25519.pem", "PRIVATE KEY", "Ed25519"),
        ];

        for (name, label, description) in cases {
            let text = openssl.read(name);
            let text_str = String::from_utf8_lossy(&text);
            assert_eq!(
                first_line(&text_str),
                format!("-----BEGIN {label}-----"),
                "{name} has the intended form"
            );

            let key = load(&text);
            assert_eq!(key.description(), description, "{name}");
            let expected_public = openssl.pubout(name);
            assert_eq!(key.public_key().to_pem(), expected_public, "{name}: public key");

            let device_pem = key.to_device_pem().expect("encode the key");
            let reloaded = load(device_pem.as_bytes());
            assert_eq!(reloaded.public_key(), key.public_key(), "{name}: reloaded device PEM");
            openssl.write("device.pem", device_pem.as_bytes());
            assert_eq!(openssl.pubout("device.pem"), expected_public, "{name}: device PEM read by openssl");
        }
    }

    #[test]
    fn public_key_forms_normalize_to_spki() {
        let Some(openssl) = Openssl::new("public_key_forms_normalize_to_spki") else { return };
        openssl.run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ]);
        openssl.run(&["genpkey", "-algorithm", "ED25519", "-out", "ed25519.pem"]);

        let rsa_spki = openssl.pubout("rsa.pem");
        let rsa_pkcs1 = openssl.run(&["rsa", "-in", "rsa.pem", "-RSAPublicKey_out"]);
        assert!(String::from_utf8_lossy(&rsa_pkcs1).starts_with("-----BEGIN RSA PUBLIC KEY-----\n"));
        let ec_spki = openssl.pubout("ec.pem");
        let ec_compressed = openssl.run(&["ec", "-in", "ec.pem", "-pubout", "-conv_form", "compressed"]);
        assert_ne!(String::from_utf8_lossy(&ec_compressed), ec_spki, "openssl wrote a compressed point");
        let ed25519_spki = openssl.pubout("ed25519.pem");

        let cases = [
            (rsa_spki.as_bytes(), &rsa_spki, "RSA 2048"),
            (&rsa_pkcs1[..], &rsa_spki, "RSA 2048"),
            (ec_spki.as_bytes(), &ec_spki, "ECDSA P-256"),
            (&ec_compressed[..], &ec_spki, "ECDSA P-256"),
            (ed25519_spki.as_bytes(), &ed25519_spki, "Ed25519"),
        ];
        for (input, expected, description) in cases {
            let key = DevicePublicKey::from_pem(input).expect("valid public key");
            assert_eq!(&key.to_pem(), expected, "{description}");
            assert_eq!(key.description(), description);
            assert_pem_layout(&key.to_pem(), LABEL_SPKI);
        }
    }

    #[test]
    fn fingerprint_matches_openssl_dgst() {
        let Some(openssl) = Openssl::new("fingerprint_matches_openssl_dgst") else { return };
        for kind in [KeyType::EcdsaP256, KeyType::Ed25519] {
            let public = generate(kind).public_key();
            openssl.write("public.pem", public.to_pem().as_bytes());
            openssl.run(&["pkey", "-pubin", "-in", "public.pem", "-outform", "DER", "-out", "public.der"]);
            assert_eq!(openssl.read("public.der"), public.spki_der());

            let digest = openssl.run(&["dgst", "-sha256", "-c", "public.der"]);
            let digest = String::from_utf8_lossy(&digest);
            let expected = digest.trim_end().rsplit("= ").next().unwrap_or_default();
            let fingerprint = public.fingerprint_sha256();
            assert_eq!(fingerprint, expected);
            assert_eq!(fingerprint.len(), 95);
        }
    }

    #[test]
    fn encrypted_keys_are_rejected() {
        let Some(openssl) = Openssl::new("encrypted_keys_are_rejected") else { return };
        openssl.run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ]);
        let pass = ["-passout", "pass:x"];
        openssl.run(
            &[&["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "ec.pem", "-out", "ec-pkcs8.pem"][..], &pass]
                .concat(),
        );
        openssl.run(
            &[&["rsa", "-aes256", "-traditional", "-in", "rsa.pem", "-out", "rsa-legacy.pem"][..], &pass]
                .concat(),
        );
        openssl.run(&[&["ec", "-aes256", "-in", "ec.pem", "-out", "ec-legacy.pem"][..], &pass].concat());

        for (name, format) in [
            ("ec-pkcs8.pem", "encrypted PKCS#8"),
            ("rsa-legacy.pem", "legacy PEM encryption"),
            ("ec-legacy.pem", "legacy PEM encryption"),
        ] {
            let error = DevicePrivateKey::from_pem(&openssl.read(name)).unwrap_err();
            assert!(matches!(error, KeyError::Encrypted { format: f } if f == format), "{name}: {error}");
            let message = error.to_string();
            assert!(message.contains("decrypt it first"), "{message}");
            assert!(message.contains("openssl pkey -in KEY -out KEY.plain"), "{message}");
        }
    }

    #[test]
    fn other_curves_and_algorithms_are_unsupported() {
        let Some(openssl) = Openssl::new("other_curves_and_algorithms_are_unsupported") else { return };
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.pem",
        ]);
        openssl.run(&["ec", "-in", "p384.pem", "-out", "p384-sec1.pem"]);
        openssl.run(&["ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "k1-sec1.pem"]);
        let explicit = ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-param_enc", "explicit"];
        openssl.run(&[&explicit[..], &["-out", "explicit-sec1.pem"]].concat());
        openssl.run(&["genpkey", "-algorithm", "ED448", "-out", "ed448.pem"]);
        openssl.run(&["genpkey", "-algorithm", "X25519", "-out", "x25519.pem"]);
        openssl.run(&[
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "pss.pem",
        ]);

        let cases = [
            ("p384.pem", "1.3.132.0.34 (P-384)"),
            ("p384-sec1.pem", "1.3.132.0.34 (P-384)"),
            ("k1-sec1.pem", "1.3.132.0.10 (secp256k1)"),
            ("explicit-sec1.pem", "explicit curve parameters"),
            ("ed448.pem", "1.3.101.113 (Ed448)"),
            ("x25519.pem", "1.3.101.110 (X25519)"),
            ("pss.pem", "1.2.840.113549.1.1.10 (RSA-PSS)"),
        ];
        for (name, detail) in cases {
            let error = DevicePrivateKey::from_pem(&openssl.read(name)).unwrap_err();
            assert!(matches!(error, KeyError::Unsupported { .. }), "{name}: {error}");
            assert!(error.to_string().contains(detail), "{name}: {error}");
        }

        let p384_public = openssl.pubout("p384.pem");
        let error = DevicePublicKey::from_pem(p384_public.as_bytes()).unwrap_err();
        assert!(matches!(error, KeyError::Unsupported { .. }), "{error}");
        let ed448_public = openssl.pubout("ed448.pem");
        let error = DevicePublicKey::from_pem(ed448_public.as_bytes()).unwrap_err();
        assert!(matches!(error, KeyError::Unsupported { .. }), "{error}");

        let openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let error = DevicePrivateKey::from_pem(openssh).unwrap_err();
        assert!(error.to_string().contains("\"OPENSSH PRIVATE KEY\""), "{error}");
    }

    #[test]
    fn garbage_is_invalid() {
        let cases: [&[u8]; 7] = [
            b"",
            b"hello world",
            b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ];
        for text in cases {
            let error = DevicePrivateKey::from_pem(text).unwrap_err();
            assert!(
                matches!(error, KeyError::Invalid { .. }),
                "{:?}: {error}",
                String::from_utf8_lossy(text)
            );
            let error = DevicePublicKey::from_pem(text).unwrap_err();
            assert!(
                matches!(error, KeyError::Invalid { .. }),
                "{:?}: {error}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn public_and_private_blocks_are_not_swapped() {
        let key = generate(KeyType::EcdsaP256);
        let public_pem = key.public_key().to_pem();
        let error = DevicePrivateKey::from_pem(public_pem.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid key: no private key PEM block, only \"PUBLIC KEY\"; this is a public key, and the device needs its private key"
        );

        let private_pem = key.to_device_pem().expect("encode the key");
        let error = DevicePublicKey::from_pem(private_pem.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid key: no public key PEM block, only \"PRIVATE KEY\"; this is a private key, where a public key was expected"
        );
    }

    #[test]
    fn file_with_two_private_keys_is_rejected() {
        let first = generate(KeyType::Ed25519).to_device_pem().expect("encode the key");
        let second = generate(KeyType::EcdsaP256).to_device_pem().expect("encode the key");
        let both = format!("{}{}", first.as_str(), second.as_str());

        let error = DevicePrivateKey::from_pem(both.as_bytes()).unwrap_err();

        assert_eq!(
            error.to_string(),
            "invalid key: the file holds 2 private keys; give a file with exactly one"
        );
    }

    #[test]
    fn damaged_keys_fail_without_panic() {
        let keys = [generate(KeyType::EcdsaP256), generate(KeyType::Ed25519)];
        for key in &keys {
            let pem = key.to_device_pem().expect("encode the key");
            let der = pem::parse(pem.as_bytes()).expect("own PEM parses").into_contents();
            for label in [LABEL_PKCS8, LABEL_SEC1, LABEL_PKCS1] {
                for length in 0..der.len() {
                    let truncated = pem::encode(&pem::Pem::new(label, der.get(..length).unwrap_or_default()));
                    assert!(
                        DevicePrivateKey::from_pem(truncated.as_bytes()).is_err(),
                        "{label} cut at {length}"
                    );
                }
                for index in 0..der.len() {
                    let mut flipped = der.clone();
                    if let Some(byte) = flipped.get_mut(index) {
                        *byte ^= 0x81;
                    }
                    // A flipped byte may still decode (say, inside the private scalar); it must
                    // only never panic.
                    let _ =
                        DevicePrivateKey::from_pem(pem::encode(&pem::Pem::new(label, flipped)).as_bytes());
                }
            }
        }
    }

    #[test]
    fn damaged_rsa_keys_fail_without_panic() {
        let key = generate(KeyType::Rsa { bits: 2048 });
        let pem = key.to_device_pem().expect("encode the key");
        let der = pem::parse(pem.as_bytes()).expect("own PEM parses").into_contents();
        let pkcs8 = match &key.secret {
            Secret::Rsa(rsa_key) => rsa_key.to_pkcs8_der().expect("encode PKCS#8").to_bytes(),
            _ => unreachable!("generated an RSA key"),
        };

        for (label, der) in [(LABEL_PKCS1, &der[..]), (LABEL_PKCS8, &pkcs8[..])] {
            for length in 0..der.len() {
                let truncated = pem::encode(&pem::Pem::new(label, der.get(..length).unwrap_or_default()));
                assert!(DevicePrivateKey::from_pem(truncated.as_bytes()).is_err(), "{label} cut at {length}");
            }
            for index in 0..der.len() {
                let mut flipped = der.to_vec();
                if let Some(byte) = flipped.get_mut(index) {
                    *byte ^= 0x81;
                }
                let _ = DevicePrivateKey::from_pem(pem::encode(&pem::Pem::new(label, flipped)).as_bytes());
            }
        }
    }

    #[test]
    fn damaged_public_keys_fail_without_panic() {
        for kind in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa { bits: 2048 }] {
            let public = generate(kind).public_key();
            let der = public.spki_der();
            for label in [LABEL_SPKI, LABEL_PKCS1_PUBLIC] {
                for length in 0..der.len() {
                    let truncated = pem::encode(&pem::Pem::new(label, der.get(..length).unwrap_or_default()));
                    assert!(
                        DevicePublicKey::from_pem(truncated.as_bytes()).is_err(),
                        "{label} cut at {length}"
                    );
                }
                for index in 0..der.len() {
                    let mut flipped = der.to_vec();
                    if let Some(byte) = flipped.get_mut(index) {
                        *byte ^= 0x81;
                    }
                    let _ = DevicePublicKey::from_pem(pem::encode(&pem::Pem::new(label, flipped)).as_bytes());
                }
            }
        }
    }

    #[test]
    fn debug_and_errors_hide_key_material() {
        let key = generate(KeyType::Ed25519);
        let pem = key.to_device_pem().expect("encode the key");
        let secret_lines = base64_lines(&pem);
        assert!(!secret_lines.is_empty());

        let debug = format!("{key:?}");
        assert_eq!(debug, "DevicePrivateKey { kind: \"Ed25519\", .. }");

        // A blank line inside the base64 makes the PEM parser read the first half as headers.
        let damaged = pem.replacen('\n', "\n\n", 2);
        let error = DevicePrivateKey::from_pem(damaged.as_bytes()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, KeyError::Invalid { .. }), "{message}");
        for line in &secret_lines {
            assert!(!message.contains(line), "error message quotes key material: {message}");
        }
    }

    #[test]
    fn rsa_sizes_outside_range_are_rejected() {
        for bits in [0, 1024, 2047, 8193, 16384] {
            let error = DevicePrivateKey::generate(KeyType::Rsa { bits }).unwrap_err();
            assert!(matches!(error, KeyError::RsaBits { bits: b } if b == bits), "{bits}: {error}");
        }
        let error = DevicePrivateKey::generate(KeyType::Rsa { bits: 1024 }).unwrap_err();
        assert_eq!(error.to_string(), "invalid RSA key size 1024 bits: choose 2048 to 8192 bits");
    }

    const CHILD_DIR_VAR: &str = "MENDER_PREAUTH_TEST_KEY_PAIR_DIR";

    /// Writes a key pair in a child process of this test binary that runs with `umask` and returns
    /// the directory it wrote to.
    fn write_key_pair_in_child(umask: &str, test: &str) -> Option<tempfile::TempDir> {
        let shell = require_tool("sh", test)?;
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let test_binary = std::env::current_exe().expect("path of the test binary");
        let output = Command::new(shell)
            .arg("-c")
            .arg("umask \"$1\" && exec \"$0\" --exact \"$2\" --test-threads=1")
            .arg(test_binary)
            .arg(umask)
            .arg(format!("mender::device_key::tests::{test}"))
            .env(CHILD_DIR_VAR, dir.path().join("keys"))
            .output()
            .expect("run the test binary");
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "child test process failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Some(dir)
    }

    /// Writes a key pair into the directory the parent named and returns true when this process is
    /// the child of a umask test.
    fn write_key_pair_as_child() -> bool {
        let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else { return false };
        let key = generate(KeyType::EcdsaP256);
        write_key_pair(Path::new(&dir), "device-", &key).expect("write the key pair");
        true
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat a key file").permissions().mode() & 0o7777
    }

    #[test]
    fn key_pair_modes_under_umask_0() {
        if write_key_pair_as_child() {
            return;
        }
        let Some(dir) = write_key_pair_in_child("000", "key_pair_modes_under_umask_0") else { return };
        let keys = dir.path().join("keys");
        assert_eq!(mode(&keys.join("device-private.key")), 0o600);
        assert_eq!(mode(&keys.join("device-public.key")), 0o644);
        let leftovers: Vec<_> = fs::read_dir(&keys).expect("list the key directory").collect();
        assert_eq!(leftovers.len(), 2, "temporary files left behind");
    }

    #[test]
    fn key_pair_modes_under_umask_077() {
        if write_key_pair_as_child() {
            return;
        }
        let Some(dir) = write_key_pair_in_child("077", "key_pair_modes_under_umask_077") else { return };
        let keys = dir.path().join("keys");
        assert_eq!(mode(&keys.join("device-private.key")), 0o600);
        assert_eq!(mode(&keys.join("device-public.key")), 0o644);
    }

    #[test]
    fn key_pair_files_read_by_openssl() {
        let Some(openssl) = Openssl::new("key_pair_files_read_by_openssl") else { return };
        let key = generate(KeyType::Ed25519);
        let dir = openssl.path("nested/key/dir");
        let (private_path, public_path) = write_key_pair(&dir, "0001-", &key).expect("write the key pair");

        assert_eq!(private_path, dir.join("0001-private.key"));
        assert_eq!(public_path, dir.join("0001-public.key"));
        let private_text = fs::read(&private_path).expect("read the private key");
        assert_eq!(&private_text, key.to_device_pem().expect("encode the key").as_bytes());
        let expected_public = openssl.pubout("nested/key/dir/0001-private.key");
        assert_eq!(fs::read_to_string(&public_path).expect("read the public key"), expected_public);
    }

    #[test]
    fn key_pair_replaces_existing_files() {
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let private_path = dir.path().join("private.key");
        fs::write(&private_path, "old").expect("write an old key");
        fs::set_permissions(&private_path, Permissions::from_mode(0o666)).expect("chmod the old key");
        fs::write(dir.path().join("public.key"), "old").expect("write an old key");

        let key = generate(KeyType::EcdsaP256);
        write_key_pair(dir.path(), "", &key).expect("write the key pair");

        assert_eq!(mode(&private_path), 0o600);
        let reloaded = load(&fs::read(&private_path).expect("read the private key"));
        assert_eq!(reloaded.public_key(), key.public_key());
        let public_text = fs::read(dir.path().join("public.key")).expect("read the public key");
        assert_eq!(DevicePublicKey::from_pem(&public_text).expect("valid public key"), key.public_key());
    }

    #[test]
    fn key_pair_replaces_symlink_not_its_target() {
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "untouched").expect("write the symlink target");
        symlink(&target, dir.path().join("private.key")).expect("create a symlink");

        write_key_pair(dir.path(), "", &generate(KeyType::Ed25519)).expect("write the key pair");

        assert_eq!(fs::read_to_string(&target).expect("read the symlink target"), "untouched");
        let metadata = fs::symlink_metadata(dir.path().join("private.key")).expect("stat the key");
        assert!(metadata.file_type().is_file(), "the symlink was followed");
    }

    #[test]
    fn key_pair_prefix_with_slash_is_rejected() {
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let key = generate(KeyType::Ed25519);
        for prefix in ["a/", "../x-", "/abs-", "nul\0-"] {
            let error = write_key_pair(dir.path(), prefix, &key).unwrap_err();
            assert!(
                matches!(&error, KeyError::InvalidPrefix { prefix: p } if p == prefix),
                "{prefix:?}: {error}"
            );
        }
        let entries = fs::read_dir(dir.path()).expect("list the directory").count();
        assert_eq!(entries, 0, "files were written for a rejected prefix");
    }
}
