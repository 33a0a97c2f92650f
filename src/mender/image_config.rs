//! The client configuration of an image, written as `mender-artifact modify` writes it. The
//! server's URL, tenant token and certificate, the Artifact verification key and the Artifact
//! name go to every root filesystem of the image. With --config-on-data the server settings go
//! to the data partition's `mender.conf` instead.
//!
//! mender-artifact 3.9 (`cli/modify.go`) sets `ServerURL` and `TenantToken` in
//! `/etc/mender/mender.conf`, copies the certificate to `/etc/mender/server.crt` and the key to
//! `/etc/mender/artifact-verify-key.pem`, and replaces `/etc/mender/artifact_info` with
//! `artifact_name=NAME`. It does not reference the certificate or the key from `mender.conf`.
//! Here `ServerCertificate` and `ArtifactVerifyKey` are set too, because the client 3.4 reads
//! both files only through those keys.

use crate::fs::ext::{ExtError, FileKind, NewAttrs};
use crate::image::partition_table::Partition;
use crate::mender::artifact_info::ARTIFACT_INFO_PATH;
use crate::mender::data_partition::MENDER_DIR;
use crate::mender::image_files::{FilesError, ImageFiles, Resolved, RootfsSlot};
use crate::mender::mender_conf::{
    ARTIFACT_VERIFY_KEY_KEY, DATA_CONF_PATH, MenderConf, MenderConfError, ROOTFS_CONF_PATH,
    SERVER_CERTIFICATE_KEY, SERVER_URL_KEY, SERVERS_KEY, TENANT_TOKEN_KEY,
};

/// The server certificate on the root filesystem.
pub const SERVER_CERT_PATH: &str = "/etc/mender/server.crt";
/// The server certificate with --config-on-data, relative to the data partition's root.
pub const DATA_SERVER_CERT_PATH: &str = "/mender/server.crt";
/// The device path of that file, the value of `ServerCertificate` with --config-on-data.
pub const DATA_SERVER_CERT_DEVICE_PATH: &str = "/data/mender/server.crt";
/// The Artifact verification key on the root filesystem.
pub const VERIFY_KEY_PATH: &str = "/etc/mender/artifact-verify-key.pem";

/// Mode of `mender.conf`, which may hold a tenant token: 0600, as meta-mender installs it.
const CONF_MODE: u16 = 0o600;
/// Mode of the certificate, the verification key and artifact_info, which hold nothing secret.
const PUBLIC_FILE_MODE: u16 = 0o644;
/// Mode of `/mender` when it has to be created.
const MENDER_DIR_MODE: u16 = 0o755;
/// Largest `mender.conf` read from an image.
const MAX_CONF_LEN: u64 = 1 << 20;

/// The configuration to write; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    pub server_url: Option<String>,
    pub tenant_token: Option<String>,
    /// Contents of the server certificate file (PEM).
    pub server_cert: Option<Vec<u8>>,
    /// Contents of the Artifact verification key file (PEM).
    pub verification_key: Option<Vec<u8>>,
    pub artifact_name: Option<String>,
    /// Put the server settings and the certificate on the data partition instead of the root
    /// filesystem.
    pub on_data: bool,
}

impl ClientConfig {
    /// Returns true when nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.server_url.is_none()
            && self.tenant_token.is_none()
            && self.server_cert.is_none()
            && self.verification_key.is_none()
            && self.artifact_name.is_none()
    }

    /// Returns the server settings as (key, value), with the certificate's device path.
    fn server_settings(&self) -> Vec<(&'static str, String)> {
        let certificate_path = if self.on_data { DATA_SERVER_CERT_DEVICE_PATH } else { SERVER_CERT_PATH };
        let mut settings = Vec::new();
        if let Some(url) = &self.server_url {
            settings.push((SERVER_URL_KEY, url.clone()));
        }
        if let Some(token) = &self.tenant_token {
            settings.push((TENANT_TOKEN_KEY, token.clone()));
        }
        if self.server_cert.is_some() {
            settings.push((SERVER_CERTIFICATE_KEY, certificate_path.to_string()));
        }
        settings
    }
}

/// One file written, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Device path of the file.
    pub path: String,
    /// The partitions changed, as listings name them: `rootfs A (partition 2)`.
    pub partitions: Vec<String>,
    /// The `mender.conf` keys set or removed; empty for other files.
    pub keys: Vec<String>,
}

/// Failure to plan the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("{path} on {partition}: {source}")]
    Conf { path: String, partition: String, source: MenderConfError },
    #[error("{path} on {partition}: {source}")]
    Ext { path: String, partition: String, source: ExtError },
    #[error("{path} on {partition} is not a regular file")]
    NotRegular { path: String, partition: String },
    #[error(
        "{path} on {partition} sets Servers, and the Mender client 3.4 rejects ServerURL beside it; \
         change Servers there instead of giving --server-url"
    )]
    ServersConflict { path: String, partition: String },
    #[error(
        "a bare filesystem image has no root filesystem for {0}; give a whole disk image \
         (--config-on-data puts the server settings on the data partition)"
    )]
    NoRootfs(String),
}

/// Plans every write of `config` on `files`, with `data` as the data partition for
/// --config-on-data. The root filesystem's writes go to rootfs A and B.
pub fn plan(
    files: &mut ImageFiles,
    data: Option<&Partition>,
    config: &ClientConfig,
    time: i64,
) -> Result<Vec<WrittenFile>, ConfigError> {
    let server_settings = config.server_settings();
    let mut rootfs_set: Vec<(&str, String)> = Vec::new();
    let mut rootfs_removed: Vec<&str> = Vec::new();
    if config.on_data {
        // The client reads /etc/mender/mender.conf over the data partition's file, so the same
        // keys there would hide the new values.
        rootfs_removed = server_settings.iter().map(|(key, _)| *key).collect();
    } else {
        rootfs_set.extend(server_settings.iter().cloned());
    }
    if config.verification_key.is_some() {
        rootfs_set.push((ARTIFACT_VERIFY_KEY_KEY, VERIFY_KEY_PATH.to_string()));
    }
    // A bare data image has no artifact_info to write; --artifact-name still sets the record
    // in mender-store there, as it did before these options existed.
    if files.is_bare() && !rootfs_set.is_empty() {
        return Err(ConfigError::NoRootfs(rootfs_needs(config)));
    }

    let mut written = Vec::new();
    if !files.is_bare() && (!rootfs_set.is_empty() || !rootfs_removed.is_empty()) {
        let sets_url = config.server_url.is_some();
        if let Some(file) = edit_rootfs_conf(files, &rootfs_set, &rootfs_removed, sets_url, time)? {
            written.push(file);
        }
    }
    let public = NewAttrs { mode: PUBLIC_FILE_MODE, uid: 0, gid: 0, time };
    if let (Some(cert), false) = (&config.server_cert, config.on_data) {
        written.extend(write_rootfs_file(files, SERVER_CERT_PATH, cert, &public)?);
    }
    if let Some(key) = &config.verification_key {
        written.extend(write_rootfs_file(files, VERIFY_KEY_PATH, key, &public)?);
    }
    if let (Some(name), false) = (&config.artifact_name, files.is_bare()) {
        let text = format!("artifact_name={name}\n");
        written.extend(write_rootfs_file(files, ARTIFACT_INFO_PATH, text.as_bytes(), &public)?);
    }
    if config.on_data && !server_settings.is_empty() {
        let data = data.ok_or_else(|| FilesError::NoPartition {
            path: format!("/data{DATA_CONF_PATH}"),
            mount: "data partition",
            detail: String::new(),
        })?;
        written.extend(edit_data_conf(files, data, config, &server_settings, time)?);
    }
    Ok(written)
}

/// Names what the root filesystem was needed for, for the error on a bare image.
fn rootfs_needs(config: &ClientConfig) -> String {
    let mut needs = Vec::new();
    if !config.on_data && !config.server_settings().is_empty() {
        needs.push(ROOTFS_CONF_PATH);
    }
    if config.verification_key.is_some() {
        needs.push(VERIFY_KEY_PATH);
    }
    needs.join(", ")
}

/// Edits `/etc/mender/mender.conf` on each root filesystem: each keeps its own other keys. A
/// symbolic link is followed, and a file that both lead to is edited once. A missing file is
/// created when there is something to set. `sets_url` makes a `Servers` key an error.
fn edit_rootfs_conf(
    files: &mut ImageFiles,
    set: &[(&str, String)],
    removed: &[&str],
    sets_url: bool,
    time: i64,
) -> Result<Option<WrittenFile>, ConfigError> {
    let mut slots = vec![RootfsSlot::A];
    if files.has_rootfs_b() {
        slots.push(RootfsSlot::B);
    }
    let mut done: Vec<(u32, String)> = Vec::new();
    let mut written =
        WrittenFile { path: ROOTFS_CONF_PATH.to_string(), partitions: Vec::new(), keys: Vec::new() };
    for slot in slots {
        let target = files.resolve(ROOTFS_CONF_PATH, true, slot)?;
        if done.contains(&(target.partition.number, target.inner.clone())) {
            continue;
        }
        done.push((target.partition.number, target.inner.clone()));

        let existing = read_conf(files, &target)?;
        if existing.is_none() && set.is_empty() {
            continue;
        }
        let mut conf = existing.unwrap_or_else(MenderConf::empty);
        if sets_url && conf.contains(SERVERS_KEY) {
            return Err(ConfigError::ServersConflict {
                path: target.device_path.clone(),
                partition: target.partition_label.clone(),
            });
        }
        let keys = edit(&mut conf, set, removed);
        if keys.is_empty() {
            continue;
        }
        write_conf(files, &target, &conf, time)?;
        written.partitions.push(target.partition_label.clone());
        for key in keys {
            if !written.keys.contains(&key) {
                written.keys.push(key);
            }
        }
    }
    Ok((!written.partitions.is_empty()).then_some(written))
}

/// Writes the server settings, and the certificate, on the data partition.
fn edit_data_conf(
    files: &mut ImageFiles,
    data: &Partition,
    config: &ClientConfig,
    settings: &[(&'static str, String)],
    time: i64,
) -> Result<Vec<WrittenFile>, ConfigError> {
    let label = data_label(files, data);
    let ext_error = |path: &str| {
        let label = label.clone();
        let path = format!("/data{path}");
        move |source| ConfigError::Ext { path, partition: label, source }
    };
    let ext = files.partition_ext(data)?;
    match ext.lookup(MENDER_DIR).map_err(ext_error(MENDER_DIR))? {
        Some(_) => {}
        None => {
            let attrs = NewAttrs { mode: MENDER_DIR_MODE, uid: 0, gid: 0, time };
            ext.create_dir(MENDER_DIR, &attrs).map_err(ext_error(MENDER_DIR))?;
        }
    }

    let mut conf = match ext.lookup(DATA_CONF_PATH).map_err(ext_error(DATA_CONF_PATH))? {
        None => MenderConf::empty(),
        Some(ino) => {
            if ext.metadata(ino).map_err(ext_error(DATA_CONF_PATH))?.kind != FileKind::Regular {
                return Err(ConfigError::NotRegular {
                    path: format!("/data{DATA_CONF_PATH}"),
                    partition: label,
                });
            }
            let bytes = ext.read_file(ino, MAX_CONF_LEN).map_err(ext_error(DATA_CONF_PATH))?;
            MenderConf::parse(&bytes).map_err(|source| ConfigError::Conf {
                path: format!("/data{DATA_CONF_PATH}"),
                partition: label.clone(),
                source,
            })?
        }
    };
    if config.server_url.is_some() && conf.contains(SERVERS_KEY) {
        return Err(ConfigError::ServersConflict {
            path: format!("/data{DATA_CONF_PATH}"),
            partition: label,
        });
    }
    let keys = edit(&mut conf, settings, &[]);

    let mut written = Vec::new();
    if !keys.is_empty() {
        let attrs = NewAttrs { mode: CONF_MODE, uid: 0, gid: 0, time };
        ext.write_file(DATA_CONF_PATH, conf.as_bytes(), &attrs).map_err(ext_error(DATA_CONF_PATH))?;
        written.push(WrittenFile {
            path: format!("/data{DATA_CONF_PATH}"),
            partitions: vec![label.clone()],
            keys,
        });
    }
    let attrs = NewAttrs { mode: PUBLIC_FILE_MODE, uid: 0, gid: 0, time };
    let cert_unchanged = match (&config.server_cert, ext.lookup(DATA_SERVER_CERT_PATH)) {
        (Some(cert), Ok(Some(ino))) => {
            let metadata = ext.metadata(ino).map_err(ext_error(DATA_SERVER_CERT_PATH))?;
            metadata.kind == FileKind::Regular
                && (metadata.mode, metadata.uid, metadata.gid) == (attrs.mode, attrs.uid, attrs.gid)
                && metadata.size == cert.len() as u64
                && ext.read_file(ino, metadata.size).map_err(ext_error(DATA_SERVER_CERT_PATH))? == *cert
        }
        _ => false,
    };
    if let (Some(cert), false) = (&config.server_cert, cert_unchanged) {
        ext.write_file(DATA_SERVER_CERT_PATH, cert, &attrs).map_err(ext_error(DATA_SERVER_CERT_PATH))?;
        written.push(WrittenFile {
            path: DATA_SERVER_CERT_DEVICE_PATH.to_string(),
            partitions: vec![label],
            keys: Vec::new(),
        });
    }
    Ok(written)
}

/// Names the data partition as the listings do: `data partition (partition 4)`.
fn data_label(files: &ImageFiles, data: &Partition) -> String {
    if files.is_bare() {
        return "whole image".to_string();
    }
    format!("data partition ({})", crate::mender::roles::partition_name(data))
}

/// Sets and removes keys, and returns the names of those that changed.
fn edit(conf: &mut MenderConf, set: &[(&str, String)], removed: &[&str]) -> Vec<String> {
    let mut changed = Vec::new();
    for (key, value) in set {
        if conf.set_string(key, value) {
            changed.push(key.to_string());
        }
    }
    for key in removed {
        if conf.remove(key) {
            changed.push(format!("{key} removed"));
        }
    }
    changed
}

/// Reads and parses the configuration file at a resolved path, `None` when it is missing.
fn read_conf(files: &ImageFiles, target: &Resolved) -> Result<Option<MenderConf>, ConfigError> {
    let Some((ext, ino)) = files.ext_file(target) else { return Ok(None) };
    let ext_error = |source| ConfigError::Ext {
        path: target.device_path.clone(),
        partition: target.partition_label.clone(),
        source,
    };
    if ext.metadata(ino).map_err(ext_error)?.kind != FileKind::Regular {
        return Err(ConfigError::NotRegular {
            path: target.device_path.clone(),
            partition: target.partition_label.clone(),
        });
    }
    let bytes = ext.read_file(ino, MAX_CONF_LEN).map_err(ext_error)?;
    let conf = MenderConf::parse(&bytes).map_err(|source| ConfigError::Conf {
        path: target.device_path.clone(),
        partition: target.partition_label.clone(),
        source,
    })?;
    Ok(Some(conf))
}

/// Writes a configuration file at a resolved path with mode 0600, owner 0:0.
fn write_conf(
    files: &mut ImageFiles,
    target: &Resolved,
    conf: &MenderConf,
    time: i64,
) -> Result<(), ConfigError> {
    let attrs = NewAttrs { mode: CONF_MODE, uid: 0, gid: 0, time };
    let ext = files.partition_ext(&target.partition)?;
    ext.write_file(&target.inner, conf.as_bytes(), &attrs).map_err(|source| ConfigError::Ext {
        path: target.device_path.clone(),
        partition: target.partition_label.clone(),
        source,
    })?;
    Ok(())
}

/// Writes one file to rootfs A and B, as the `cp` command does, unless both already contain
/// it with the same mode and owner.
fn write_rootfs_file(
    files: &mut ImageFiles,
    path: &str,
    data: &[u8],
    attrs: &NewAttrs,
) -> Result<Option<WrittenFile>, ConfigError> {
    let mut slots = vec![RootfsSlot::A];
    if files.has_rootfs_b() {
        slots.push(RootfsSlot::B);
    }
    let mut unchanged = true;
    for slot in slots {
        let target = files.resolve(path, false, slot)?;
        unchanged &= contains_file(files, &target, data, attrs)?;
    }
    if unchanged {
        return Ok(None);
    }

    let targets = files.write_file(path, data, attrs)?;
    let mut partitions: Vec<String> = targets.iter().map(|target| target.partition_label.clone()).collect();
    partitions.dedup();
    Ok(Some(WrittenFile { path: path.to_string(), partitions, keys: Vec::new() }))
}

/// Returns true when a resolved path is a regular file with contents `data` and the mode and
/// owner of `attrs`.
fn contains_file(
    files: &ImageFiles,
    target: &Resolved,
    data: &[u8],
    attrs: &NewAttrs,
) -> Result<bool, ConfigError> {
    let Some((ext, ino)) = files.ext_file(target) else { return Ok(false) };
    let ext_error = |source| ConfigError::Ext {
        path: target.device_path.clone(),
        partition: target.partition_label.clone(),
        source,
    };
    let metadata = ext.metadata(ino).map_err(ext_error)?;
    let same_attrs = metadata.kind == FileKind::Regular
        && metadata.mode == attrs.mode
        && (metadata.uid, metadata.gid) == (attrs.uid, attrs.gid)
        && metadata.size == data.len() as u64;
    if !same_attrs {
        return Ok(false);
    }
    Ok(ext.read_file(ino, data.len() as u64).map_err(ext_error)? == data)
}
