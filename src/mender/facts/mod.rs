//! Read-only facts about the Mender client's configuration in an image, for `inspect`: the
//! `mender.conf` files the client 3.4 reads, the Artifact name in `artifact_info`, the device
//! type, and on each root filesystem the identity script and the `/var/lib/mender` link. With
//! them come the warnings about states that make a preauthorized device show up as pending or
//! generate its own key.
//!
//! Files are read through [`ImageFiles`], so symbolic links are followed as on the device.

mod config;

use serde::Serialize;

use crate::fs::ext::FileKind;
use crate::image::disk_image::DiskImage;
use crate::image::partition_table::TableKind;
use crate::mender::artifact_info::{ARTIFACT_INFO_PATH, parse_artifact_name};
use crate::mender::image_files::{ImageFiles, Resolved, RootfsSlot};
use crate::mender::image_path::Mount;

pub use config::{ConfigValues, DEFAULT_KEY_FILE, STATE_DIR};

/// The client's main configuration file on the root filesystem.
pub const MENDER_CONF_PATH: &str = "/etc/mender/mender.conf";
/// The client's second configuration file, `/var/lib/mender/mender.conf`, on the data partition.
pub const DATA_MENDER_CONF_PATH: &str = "/data/mender/mender.conf";
/// The script whose output is the device's identity.
pub const IDENTITY_SCRIPT_PATH: &str = "/usr/share/mender/identity/mender-device-identity";
/// The device type file the client reads when `DeviceTypeFile` is not set
/// (`/var/lib/mender/device_type`), on the data partition.
pub const DATA_DEVICE_TYPE_PATH: &str = "/data/mender/device_type";
/// The device key that `provision` writes, as a path on the running device.
pub const DEVICE_KEY_DEVICE_PATH: &str = "/var/lib/mender/mender-agent.pem";

/// Largest configuration, `artifact_info` or device type file read.
const MAX_SMALL_FILE_LEN: u64 = 1 << 20;

/// A state worth a warning, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

impl Warning {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Warning { code, message: message.into() }
    }
}

/// The Mender facts of one image.
#[derive(Debug, Clone, Serialize)]
pub struct MenderFacts {
    pub artifact_name: ArtifactNameFacts,
    pub device_type: DeviceTypeFact,
    /// The server URL the client on rootfs A connects to, after merging its two files.
    pub server_url: Option<String>,
    pub tenant_token: TenantTokenFact,
    /// The key file the client on rootfs A signs with, as a device path.
    pub key_file: String,
    pub config_files: Vec<ConfigFileFact>,
    pub rootfs: Vec<RootfsFacts>,
}

/// The Artifact name from `artifact_info` on rootfs A and from mender-store.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactNameFacts {
    pub artifact_info: Option<String>,
    /// Filled in by the caller, which reads the store.
    pub store: Option<String>,
}

/// The device type file the client reads.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceTypeFact {
    pub path: String,
    pub value: Option<String>,
    pub error: Option<String>,
}

/// Whether a tenant token is set; its value is never shown.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TenantTokenFact {
    pub set: bool,
    pub length: usize,
}

/// One `mender.conf`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFileFact {
    pub path: String,
    /// `rootfs-a`, `rootfs-b` or `data`.
    pub location: &'static str,
    pub present: bool,
    pub error: Option<String>,
    pub server_url: Option<String>,
    pub tenant_token: TenantTokenFact,
    pub auth_private_key: Option<String>,
    pub https_client_key: Option<String>,
    pub device_type_file: Option<String>,
    #[serde(skip)]
    values: ConfigValues,
}

/// The facts of one root filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct RootfsFacts {
    /// `a` or `b`.
    pub slot: &'static str,
    pub artifact_name: Option<String>,
    pub identity_script: IdentityScriptFact,
    pub var_lib_mender: StateDirFact,
    /// The key file the client on this root filesystem signs with.
    pub key_file: String,
    #[serde(skip)]
    config: ConfigValues,
}

/// The identity script on one root filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityScriptFact {
    pub present: bool,
    pub executable: bool,
    pub mode: Option<String>,
    pub error: Option<String>,
}

/// The target of `/var/lib/mender` on one root filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct StateDirFact {
    /// The link target, or `None` when `/var/lib/mender` is not a symbolic link.
    pub link_target: Option<String>,
    /// The device path it resolves to.
    pub resolved: Option<String>,
    /// True when it is the directory `mender` at the root of the data partition.
    pub leads_to_data: bool,
    pub error: Option<String>,
}

/// Gathers the Mender facts of `image` and the warnings they raise.
pub fn gather(image: &DiskImage) -> std::io::Result<(MenderFacts, Vec<Warning>)> {
    let mut files = ImageFiles::new(image)?;
    let bare = image.table().kind == TableKind::Bare;
    let mut warnings = Vec::new();

    let data_conf = read_config(&mut files, &data_path(bare, DATA_MENDER_CONF_PATH), "data", RootfsSlot::A);
    let mut config_files = Vec::new();
    let mut rootfs = Vec::new();
    if !bare {
        let mut slots = vec![(RootfsSlot::A, "a", "rootfs-a")];
        if files.has_rootfs_b() {
            slots.push((RootfsSlot::B, "b", "rootfs-b"));
        }
        for (slot, name, location) in slots {
            // An image without a usable root filesystem has no client settings to report.
            if files.resolve("/", true, slot).is_err() {
                continue;
            }
            let main = read_config(&mut files, MENDER_CONF_PATH, location, slot);
            rootfs.push(rootfs_facts(&mut files, slot, name, &main, &data_conf));
            config_files.push(main);
        }
    }
    config_files.push(data_conf.clone());

    let effective = match rootfs.first() {
        Some(rootfs_a) => rootfs_a.config.clone(),
        None => data_conf.values.clone(),
    };
    let device_type_path = match &effective.device_type_file {
        Some(path) if !path.is_empty() => path.clone(),
        _ => data_path(bare, DATA_DEVICE_TYPE_PATH),
    };

    warnings.extend(config_warnings(&config_files));
    warnings.extend(rootfs_warnings(&rootfs, bare, &effective));
    let facts = MenderFacts {
        artifact_name: ArtifactNameFacts {
            artifact_info: rootfs.first().and_then(|rootfs_a| rootfs_a.artifact_name.clone()),
            store: None,
        },
        device_type: read_device_type(&mut files, &device_type_path),
        server_url: effective.effective_server_url().map(str::to_string),
        tenant_token: token_fact(&effective),
        key_file: effective.key_file(),
        config_files,
        rootfs,
    };
    Ok((facts, warnings))
}

/// Maps a device path under `/data` onto a bare data filesystem, whose root is the data partition.
fn data_path(bare: bool, path: &str) -> String {
    match path.strip_prefix("/data") {
        Some(inner) if bare => inner.to_string(),
        _ => path.to_string(),
    }
}

fn token_fact(values: &ConfigValues) -> TenantTokenFact {
    TenantTokenFact {
        set: values.tenant_token_set(),
        length: values.tenant_token.as_deref().map_or(0, str::len),
    }
}

/// Reads the regular file at the device path `path` (links followed), or `None` when it does not
/// exist. The error explains why it could not be read.
fn read_file(
    files: &mut ImageFiles,
    path: &str,
    slot: RootfsSlot,
) -> Result<Option<(Resolved, Vec<u8>)>, String> {
    let resolved = files.resolve(path, true, slot).map_err(|error| error.to_string())?;
    if resolved.node.is_none() {
        return Ok(None);
    }
    let metadata = files.metadata(&resolved).map_err(|error| error.to_string())?;
    if metadata.kind != FileKind::Regular {
        return Err(format!("{path}: not a regular file"));
    }
    let Some((ext, ino)) = files.ext_file(&resolved) else {
        return Err(format!("{path}: not on an ext2/3/4 filesystem"));
    };
    let bytes = ext.read_file(ino, MAX_SMALL_FILE_LEN).map_err(|error| format!("{path}: {error}"))?;
    Ok(Some((resolved, bytes)))
}

fn read_config(
    files: &mut ImageFiles,
    path: &str,
    location: &'static str,
    slot: RootfsSlot,
) -> ConfigFileFact {
    let (present, parsed) = match read_file(files, path, slot) {
        Ok(None) => (false, Ok(ConfigValues::default())),
        Ok(Some((_, bytes))) => (true, ConfigValues::parse(&bytes)),
        Err(error) => (false, Err(error)),
    };
    let (values, error) = match parsed {
        Ok(values) => (values, None),
        Err(error) => (ConfigValues::default(), Some(error)),
    };
    ConfigFileFact {
        path: path.to_string(),
        location,
        present,
        error,
        server_url: values.effective_server_url().map(str::to_string),
        tenant_token: token_fact(&values),
        auth_private_key: values.auth_private_key.clone(),
        https_client_key: values.https_client_key.clone(),
        device_type_file: values.device_type_file.clone(),
        values,
    }
}

fn rootfs_facts(
    files: &mut ImageFiles,
    slot: RootfsSlot,
    name: &'static str,
    main: &ConfigFileFact,
    data_conf: &ConfigFileFact,
) -> RootfsFacts {
    let artifact_name = match read_file(files, ARTIFACT_INFO_PATH, slot) {
        Ok(Some((_, bytes))) => {
            parse_artifact_name(&bytes).ok().flatten().map(|name| String::from_utf8_lossy(&name).into_owned())
        }
        _ => None,
    };
    let config = ConfigValues::merged(&main.values, &data_conf.values);
    RootfsFacts {
        slot: name,
        artifact_name,
        identity_script: identity_script(files, slot),
        var_lib_mender: state_dir(files, slot),
        key_file: config.key_file(),
        config,
    }
}

fn identity_script(files: &mut ImageFiles, slot: RootfsSlot) -> IdentityScriptFact {
    let missing = |error| IdentityScriptFact { present: false, executable: false, mode: None, error };
    let resolved = match files.resolve(IDENTITY_SCRIPT_PATH, true, slot) {
        Ok(resolved) if resolved.node.is_some() => resolved,
        Ok(_) => return missing(None),
        Err(error) => return missing(Some(error.to_string())),
    };
    match files.metadata(&resolved) {
        Ok(metadata) => IdentityScriptFact {
            present: true,
            executable: metadata.kind == FileKind::Regular && metadata.mode & 0o111 != 0,
            mode: Some(format!("{:04o}", metadata.mode)),
            error: (metadata.kind != FileKind::Regular).then(|| "not a regular file".to_string()),
        },
        Err(error) => missing(Some(error.to_string())),
    }
}

fn state_dir(files: &mut ImageFiles, slot: RootfsSlot) -> StateDirFact {
    let mut fact = StateDirFact { link_target: None, resolved: None, leads_to_data: false, error: None };
    match files.resolve(STATE_DIR, false, slot) {
        Ok(link) if link.node.is_some() => {
            let is_link = files.metadata(&link).is_ok_and(|metadata| metadata.kind == FileKind::Symlink);
            if is_link {
                fact.link_target =
                    files.read_link(&link).ok().map(|target| String::from_utf8_lossy(&target).into_owned());
            }
        }
        Ok(_) => {
            fact.error = Some(format!("{STATE_DIR}: no such file or directory"));
            return fact;
        }
        Err(error) => {
            fact.error = Some(error.to_string());
            return fact;
        }
    }
    match files.resolve(STATE_DIR, true, slot) {
        Ok(target) => {
            let is_dir = target.node.is_some()
                && files.metadata(&target).is_ok_and(|metadata| metadata.kind == FileKind::Directory);
            fact.leads_to_data = is_dir && target.mount == Mount::Data && target.inner == "/mender";
            if target.node.is_none() {
                fact.error = Some(format!("{}: no such file or directory", target.device_path));
            }
            fact.resolved = Some(target.device_path);
        }
        Err(error) => fact.error = Some(error.to_string()),
    }
    fact
}

fn read_device_type(files: &mut ImageFiles, path: &str) -> DeviceTypeFact {
    let (value, error) = match read_file(files, path, RootfsSlot::A) {
        Ok(Some((_, bytes))) => match parse_device_type(&bytes) {
            Some(value) => (Some(value), None),
            None => (None, Some("no device_type= line".to_string())),
        },
        Ok(None) => (None, Some("no such file".to_string())),
        Err(error) => (None, Some(error)),
    };
    DeviceTypeFact { path: path.to_string(), value, error }
}

/// Returns the value of the first `device_type=` line, trimmed.
fn parse_device_type(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix("device_type="))
        .map(|value| value.trim().to_string())
}

/// Warns about configuration files the client cannot load: invalid ones, and ones that exist but
/// cannot be read (a directory, a symlink loop), which the client fails on as well.
fn config_warnings(config_files: &[ConfigFileFact]) -> Vec<Warning> {
    config_files
        .iter()
        .filter_map(|file| {
            let error = file.error.as_ref()?;
            Some(Warning::new(
                "conf-invalid",
                format!(
                    "{} on {} cannot be loaded ({error}): the Mender client refuses to start",
                    file.path,
                    location_name(file.location)
                ),
            ))
        })
        .collect()
}

/// Warns about root filesystems whose client would not use the provisioned key, and about
/// rootfs A and B disagreeing on what the device connects with.
fn rootfs_warnings(rootfs: &[RootfsFacts], bare: bool, effective: &ConfigValues) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if bare {
        warnings.extend(key_file_warning(effective, "the data partition's mender.conf"));
        warnings.extend(servers_warning(effective, "the data partition's mender.conf"));
        return warnings;
    }
    for facts in rootfs {
        let name = format!("rootfs {}", facts.slot.to_uppercase());
        warnings.extend(key_file_warning(&facts.config, &format!("mender.conf on {name}")));
        warnings.extend(servers_warning(&facts.config, &format!("mender.conf on {name}")));
        if !facts.var_lib_mender.leads_to_data {
            let place = match (&facts.var_lib_mender.link_target, &facts.var_lib_mender.resolved) {
                (Some(target), _) => format!("is a link to {target}"),
                (None, Some(resolved)) => format!("resolves to {resolved}"),
                (None, None) => "cannot be resolved".to_string(),
            };
            warnings.push(Warning::new(
                "var-lib-mender",
                format!(
                    "{STATE_DIR} on {name} {place}, not to the data partition's mender/: the client \
                     there will not find the device key and will generate its own"
                ),
            ));
        }
        let script = &facts.identity_script;
        if !script.present || !script.executable {
            let state = if script.present { "is not executable" } else { "is missing" };
            warnings.push(Warning::new(
                "identity-script",
                format!("{IDENTITY_SCRIPT_PATH} on {name} {state}: the client cannot send its identity"),
            ));
        }
    }
    if let [rootfs_a, rootfs_b] = rootfs {
        warnings.extend(mismatch_warnings(rootfs_a, rootfs_b));
    }
    warnings
}

/// Warns when the merged configuration gives both `Servers` and `ServerURL`, which makes the
/// client refuse to start.
fn servers_warning(config: &ConfigValues, source: &str) -> Option<Warning> {
    config.servers_conflict().then(|| {
        Warning::new(
            "conf-invalid",
            format!(
                "{source} gives both Servers and ServerURL (counting {STATE_DIR}/mender.conf): \
                 the Mender client refuses to start"
            ),
        )
    })
}

/// Warns when the client signs with another file than the one `provision` writes.
fn key_file_warning(config: &ConfigValues, source: &str) -> Option<Warning> {
    let field = config.key_file_field()?;
    let key_file = config.key_file();
    let same = key_file == DEVICE_KEY_DEVICE_PATH || key_file == "/data/mender/mender-agent.pem";
    (!same).then(|| {
        Warning::new(
            "conf-key-path",
            format!(
                "{source} sets {field}, so the client signs with {key_file} instead of the \
                 provisioned {DEVICE_KEY_DEVICE_PATH}"
            ),
        )
    })
}

/// Warns about each setting that differs between rootfs A and B, because the device switches to
/// the other root filesystem after an update.
fn mismatch_warnings(rootfs_a: &RootfsFacts, rootfs_b: &RootfsFacts) -> Vec<Warning> {
    let (a, b) = (&rootfs_a.config, &rootfs_b.config);
    let mut differences = Vec::new();
    if a.effective_server_url() != b.effective_server_url() {
        differences.push("the server URL");
    }
    if a.tenant_token.as_deref().unwrap_or("") != b.tenant_token.as_deref().unwrap_or("") {
        differences.push("the tenant token");
    }
    if rootfs_a.key_file != rootfs_b.key_file {
        differences.push("the key file");
    }
    if rootfs_a.var_lib_mender.resolved != rootfs_b.var_lib_mender.resolved {
        differences.push("where /var/lib/mender leads");
    }
    let scripts = (&rootfs_a.identity_script, &rootfs_b.identity_script);
    if (scripts.0.present, scripts.0.executable) != (scripts.1.present, scripts.1.executable) {
        differences.push("the identity script");
    }
    differences
        .into_iter()
        .map(|what| {
            Warning::new(
                "rootfs-mismatch",
                format!("rootfs A and rootfs B differ in {what}: the device changes after its next update"),
            )
        })
        .collect()
}

fn location_name(location: &str) -> &str {
    match location {
        "rootfs-a" => "rootfs A",
        "rootfs-b" => "rootfs B",
        _ => "the data partition",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_type_line_is_found() {
        assert_eq!(parse_device_type(b"# c\ndevice_type=qemux86-64\n").as_deref(), Some("qemux86-64"));
        assert_eq!(parse_device_type(b"other=1\n"), None);
    }

    #[test]
    fn data_paths_map_onto_bare_filesystem() {
        assert_eq!(data_path(true, DATA_MENDER_CONF_PATH), "/mender/mender.conf");
        assert_eq!(data_path(false, DATA_MENDER_CONF_PATH), DATA_MENDER_CONF_PATH);
    }
}
