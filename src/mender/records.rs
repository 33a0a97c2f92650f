//! The Artifact records of mender-store, `artifact-name` and `artifact-provides`, planned as the
//! Mender client 3.4 commits them after installing an Artifact (`datastore.CommitArtifactData`).
//! The stored provides that match a clears-provides pattern go, the new provides are added over
//! the rest, and the name is written beside them.

use crate::mender::provides::{self, ClearsPattern, Provides, ProvidesError};
use crate::mender::store::{Records, StoreEdit};

/// Key of the installed Artifact's name (`datastore.ArtifactNameKey`, since client 2.0).
pub const ARTIFACT_NAME_KEY: &str = "artifact-name";
/// Key of the installed Artifact's provides, a JSON object of strings
/// (`datastore.ArtifactTypeInfoProvidesKey`).
pub const ARTIFACT_PROVIDES_KEY: &str = "artifact-provides";

/// Provide names a bootstrap Artifact from meta-mender or mender-convert carries.
pub const ROOTFS_VERSION_PROVIDE: &str = "rootfs-image.version";
pub const ROOTFS_CHECKSUM_PROVIDE: &str = "rootfs-image.checksum";

/// Patterns that `--bootstrap-provides` clears before adding its provides: the defaults
/// mender-artifact 3.x gives a rootfs-image Artifact, less `artifact_group`, which is a record of
/// its own. Provides describing an earlier root filesystem must not outlive it.
pub const BOOTSTRAP_CLEARS: [&str; 2] = ["rootfs-image.*", "rootfs_image_checksum"];

/// Requested changes to the Artifact records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsUpdate {
    /// Name to store as `artifact-name`; without it the stored name is kept, or when there is
    /// none, `fallback_name` is stored.
    pub artifact_name: Option<String>,
    /// Name read from the root filesystem's artifact_info, as the bytes the file contains, or
    /// why there is none.
    pub fallback_name: Result<Vec<u8>, String>,
    /// Patterns of stored provides to remove.
    pub clears: Vec<ClearsPattern>,
    /// SHA-256 (lower-case hex) of the root filesystem, for the bootstrap provides.
    pub rootfs_checksum: Option<String>,
    /// Provides to set, after the bootstrap provides, so they win over them.
    pub provides: Vec<(String, String)>,
}

/// Errors planning the Artifact records.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// No name given, none stored, none on the root filesystem.
    #[error(
        "no Artifact name: mender-store has no {ARTIFACT_NAME_KEY} record and {reason}; give --artifact-name"
    )]
    NoArtifactName {
        /// The reason the root filesystem gave none.
        reason: String,
    },

    /// The name is empty, which the client reports as an error.
    #[error("the Artifact name is empty; the Mender client rejects an empty name")]
    EmptyArtifactName,

    /// The stored provides cannot be read.
    #[error(transparent)]
    Provides(#[from] ProvidesError),
}

/// The records an update writes, and the name it chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsPlan {
    /// The records to set.
    pub edit: StoreEdit,
    /// The Artifact name after the update, as the bytes stored, which need not be UTF-8.
    pub artifact_name: Vec<u8>,
    /// The provides after the update.
    pub provides: Provides,
    /// Provides that were stored and are removed.
    pub cleared: Vec<String>,
    /// The `rootfs-image.version` kept from the store when a new Artifact name is given and
    /// neither --bootstrap-provides nor --provides sets the version, if it differs from the name.
    pub stale_rootfs_version: Option<String>,
}

/// No change: the Artifact records stay as they are.
impl Default for RecordsUpdate {
    fn default() -> Self {
        RecordsUpdate {
            artifact_name: None,
            fallback_name: Err("artifact_info was not read".to_string()),
            clears: Vec::new(),
            rootfs_checksum: None,
            provides: Vec::new(),
        }
    }
}

impl RecordsUpdate {
    /// Returns true when the update changes nothing, so the Artifact records stay as they are.
    pub fn is_empty(&self) -> bool {
        self.artifact_name.is_none()
            && self.clears.is_empty()
            && self.rootfs_checksum.is_none()
            && self.provides.is_empty()
    }

    /// Plans the records for a store that contains `existing`. The name is written even when only
    /// provides change, because the client 3.4 always commits both together, and a 4.x client
    /// takes a store without `artifact-name` as never provisioned.
    pub fn plan(&self, existing: &Records) -> Result<RecordsPlan, RecordsError> {
        let artifact_name = self.choose_name(existing)?;

        let mut provides = match existing.get(ARTIFACT_PROVIDES_KEY.as_bytes()) {
            Some(record) => provides::parse_provides(record)?,
            None => Provides::new(),
        };
        let bootstrap_clears = match self.rootfs_checksum {
            Some(_) => {
                BOOTSTRAP_CLEARS.iter().map(|text| ClearsPattern::parse(text)).collect::<Result<_, _>>()?
            }
            None => Vec::new(),
        };
        let cleared: Vec<String> = provides
            .keys()
            .filter(|name| self.clears.iter().chain(&bootstrap_clears).any(|pattern| pattern.matches(name)))
            .cloned()
            .collect();
        for name in &cleared {
            provides.remove(name);
        }

        if let Some(checksum) = &self.rootfs_checksum {
            // Go's json.Marshal writes invalid UTF-8 as U+FFFD, as the lossy conversion does.
            let version = String::from_utf8_lossy(&artifact_name).into_owned();
            provides.insert(ROOTFS_VERSION_PROVIDE.to_string(), version);
            provides.insert(ROOTFS_CHECKSUM_PROVIDE.to_string(), checksum.clone());
        }
        for (name, value) in &self.provides {
            provides.insert(name.clone(), value.clone());
        }

        let edit = StoreEdit {
            remove: Vec::new(),
            set: vec![
                (ARTIFACT_NAME_KEY.as_bytes().to_vec(), artifact_name.clone()),
                (ARTIFACT_PROVIDES_KEY.as_bytes().to_vec(), provides::encode_provides(&provides)),
            ],
        };
        let stale_rootfs_version = self.stale_rootfs_version(&provides, &artifact_name);
        Ok(RecordsPlan { edit, artifact_name, provides, cleared, stale_rootfs_version })
    }

    /// Returns the `rootfs-image.version` in `provides` when a new name is given, this update does
    /// not set the version itself, and the version differs from `artifact_name`. A bootstrap
    /// Artifact gives both the same value, so the mismatch most likely means a stale version.
    fn stale_rootfs_version(&self, provides: &Provides, artifact_name: &[u8]) -> Option<String> {
        let sets_version = self.rootfs_checksum.is_some()
            || self.provides.iter().any(|(name, _)| name == ROOTFS_VERSION_PROVIDE);
        if self.artifact_name.is_none() || sets_version {
            return None;
        }
        let version = provides.get(ROOTFS_VERSION_PROVIDE)?;
        (version.as_bytes() != artifact_name).then(|| version.clone())
    }

    /// Picks the name: the one given, else the stored one, else artifact_info's. A stored name
    /// is kept byte for byte, because the client reports whatever bytes it finds.
    fn choose_name(&self, existing: &Records) -> Result<Vec<u8>, RecordsError> {
        let stored = existing.get(ARTIFACT_NAME_KEY.as_bytes()).cloned();
        let name = match (&self.artifact_name, stored, &self.fallback_name) {
            (Some(given), _, _) => given.as_bytes().to_vec(),
            (None, Some(stored), _) => stored,
            (None, None, Ok(fallback)) => fallback.clone(),
            (None, None, Err(reason)) => return Err(RecordsError::NoArtifactName { reason: reason.clone() }),
        };
        if name.is_empty() {
            return Err(RecordsError::EmptyArtifactName);
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &str)]) -> Records {
        pairs.iter().map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec())).collect()
    }

    fn set_value<'a>(plan: &'a RecordsPlan, key: &str) -> &'a str {
        let (_, value) = plan.edit.set.iter().find(|(name, _)| name == key.as_bytes()).unwrap();
        std::str::from_utf8(value).unwrap()
    }

    fn update() -> RecordsUpdate {
        RecordsUpdate { fallback_name: Ok(b"from-artifact-info".to_vec()), ..RecordsUpdate::default() }
    }

    #[test]
    fn given_name_wins() {
        let update = RecordsUpdate { artifact_name: Some("given".into()), ..update() };

        let plan = update.plan(&records(&[("artifact-name", "stored")])).unwrap();

        assert_eq!(set_value(&plan, "artifact-name"), "given");
        assert_eq!(set_value(&plan, "artifact-provides"), "{}");
    }

    #[test]
    fn stored_name_is_kept() {
        let update = RecordsUpdate { provides: vec![("a".into(), "1".into())], ..update() };

        let plan = update.plan(&records(&[("artifact-name", "stored")])).unwrap();

        assert_eq!(set_value(&plan, "artifact-name"), "stored");
        assert_eq!(set_value(&plan, "artifact-provides"), r#"{"a":"1"}"#);
    }

    #[test]
    fn artifact_info_name_fills_empty_store() {
        let plan = update().plan(&Records::new()).unwrap();

        assert_eq!(plan.artifact_name, b"from-artifact-info");
    }

    #[test]
    fn invalid_utf8_stored_name_is_kept() {
        let existing: Records = [(b"artifact-name".to_vec(), b"r\xffel".to_vec())].into_iter().collect();
        let update = RecordsUpdate { provides: vec![("a".into(), "1".into())], ..update() };

        let plan = update.plan(&existing).unwrap();

        let (_, name) = plan.edit.set.iter().find(|(key, _)| key == b"artifact-name").unwrap();
        assert_eq!(name, b"r\xffel");
    }

    #[test]
    fn invalid_utf8_fallback_name_is_kept() {
        let update = RecordsUpdate { fallback_name: Ok(b"r\xffel".to_vec()), ..update() };

        let plan = update.plan(&Records::new()).unwrap();

        assert_eq!(plan.artifact_name, b"r\xffel");
    }

    #[test]
    fn missing_name_is_an_error() {
        let update = RecordsUpdate { fallback_name: Err("there is no root filesystem".into()), ..update() };

        let error = update.plan(&Records::new()).unwrap_err();

        assert!(error.to_string().contains("there is no root filesystem"), "{error}");
    }

    #[test]
    fn empty_name_is_an_error() {
        let update = RecordsUpdate { artifact_name: Some(String::new()), ..update() };

        assert!(matches!(update.plan(&Records::new()), Err(RecordsError::EmptyArtifactName)));
    }

    #[test]
    fn clears_remove_matching_stored_provides() {
        let existing =
            records(&[("artifact-provides", r#"{"app.version":"1","rootfs-image.version":"old","x":"y"}"#)]);
        let update = RecordsUpdate {
            clears: vec![ClearsPattern::parse("rootfs-image.*").unwrap(), ClearsPattern::parse("x").unwrap()],
            provides: vec![("rootfs-image.version".into(), "new".into())],
            ..update()
        };

        let plan = update.plan(&existing).unwrap();

        assert_eq!(
            set_value(&plan, "artifact-provides"),
            r#"{"app.version":"1","rootfs-image.version":"new"}"#
        );
        assert_eq!(plan.cleared, vec!["rootfs-image.version".to_string(), "x".to_string()]);
    }

    #[test]
    fn bootstrap_provides_replace_rootfs_provides() {
        let existing = records(&[
            ("artifact-name", "release-1"),
            (
                "artifact-provides",
                r#"{"app.version":"3","rootfs-image.foo":"old","rootfs_image_checksum":"old"}"#,
            ),
        ]);
        let update = RecordsUpdate { rootfs_checksum: Some("ab".repeat(32)), ..update() };

        let plan = update.plan(&existing).unwrap();

        let expected = format!(
            r#"{{"app.version":"3","rootfs-image.checksum":"{}","rootfs-image.version":"release-1"}}"#,
            "ab".repeat(32)
        );
        assert_eq!(set_value(&plan, "artifact-provides"), expected);
    }

    #[test]
    fn new_name_flags_stale_rootfs_version() {
        let existing = records(&[("artifact-provides", r#"{"rootfs-image.version":"demo-1.0"}"#)]);
        let renamed = RecordsUpdate { artifact_name: Some("rel-3".into()), ..update() };
        let versioned = RecordsUpdate {
            provides: vec![("rootfs-image.version".into(), "rel-3".into())],
            ..renamed.clone()
        };
        let bootstrapped = RecordsUpdate { rootfs_checksum: Some("00".repeat(32)), ..renamed.clone() };
        let same_name = RecordsUpdate { artifact_name: Some("demo-1.0".into()), ..update() };

        assert_eq!(renamed.plan(&existing).unwrap().stale_rootfs_version.as_deref(), Some("demo-1.0"));
        assert_eq!(versioned.plan(&existing).unwrap().stale_rootfs_version, None);
        assert_eq!(bootstrapped.plan(&existing).unwrap().stale_rootfs_version, None);
        assert_eq!(same_name.plan(&existing).unwrap().stale_rootfs_version, None);
        assert_eq!(update().plan(&existing).unwrap().stale_rootfs_version, None);
    }

    #[test]
    fn given_provides_win_over_bootstrap_provides() {
        let update = RecordsUpdate {
            rootfs_checksum: Some("00".repeat(32)),
            provides: vec![("rootfs-image.version".into(), "custom".into())],
            ..update()
        };

        let plan = update.plan(&Records::new()).unwrap();

        assert_eq!(plan.provides.get("rootfs-image.version").map(String::as_str), Some("custom"));
    }

    #[test]
    fn corrupt_stored_provides_are_an_error() {
        let existing = records(&[("artifact-provides", "[1]")]);
        let update = RecordsUpdate { provides: vec![("a".into(), "1".into())], ..update() };

        assert!(matches!(update.plan(&existing), Err(RecordsError::Provides(_))));
    }
}
