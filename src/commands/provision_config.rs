//! The client configuration options of `provision` (--server-url, --tenant-token,
//! --server-cert, --verification-key, --config-on-data, and --artifact-name for artifact_info),
//! and `provision` without an identity, which writes only the configuration and the Artifact
//! records, as `mender-artifact modify` does.

use anyhow::{Context, bail};

use crate::commands::UsageError;
use crate::commands::args::{ConfigArgs, ProvisionArgs, RecordsArgs, SectorSizeArg};
use crate::commands::output::{read_small_file, write_time};
use crate::commands::provision::{
    Tense, check_output_path, commit_all, data_context, describe_store_change, store_policy, xattr_policy,
};
use crate::commands::records::records_update;
use crate::image::disk_image::{Access, DiskImage};
use crate::mender::data_partition::{self, StorePolicy};
use crate::mender::image_config::{self, ClientConfig, WrittenFile};
use crate::mender::image_files::{ImageFiles, PartitionWrites};
use crate::mender::records::ROOTFS_VERSION_PROVIDE;
use crate::mender::roles::{self, ClassifiedPartition};

/// Reads the files the options name, so that a missing one fails before the image is opened.
pub fn client_config(args: &ConfigArgs, records: &RecordsArgs) -> anyhow::Result<ClientConfig> {
    if args.config_on_data
        && args.server_url.is_none()
        && args.tenant_token.is_none()
        && args.server_cert.is_none()
    {
        return Err(UsageError(
            "--config-on-data needs --server-url, --tenant-token or --server-cert, the settings it moves"
                .into(),
        )
        .into());
    }
    let read = |path: &Option<std::path::PathBuf>, option: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match path {
            None => Ok(None),
            Some(path) => read_small_file(path).map(Some).with_context(|| option.to_string()),
        }
    };
    Ok(ClientConfig {
        server_url: args.server_url.clone(),
        tenant_token: args.tenant_token.clone(),
        server_cert: read(&args.server_cert, "--server-cert")?,
        verification_key: read(&args.verification_key, "--verification-key")?,
        artifact_name: records.artifact_name.clone(),
        on_data: args.config_on_data,
    })
}

/// Plans the configuration's writes on `files`, naming the image in errors.
pub fn plan_config(
    files: &mut ImageFiles,
    image: &DiskImage,
    data: Option<&ClassifiedPartition>,
    config: &ClientConfig,
    time: i64,
) -> anyhow::Result<Vec<WrittenFile>> {
    let written = image_config::plan(files, data.map(|data| &data.partition), config, time)
        .with_context(|| image.path().display().to_string())?;
    for file in &written {
        log::debug!("{}: {} on {}", image.path().display(), file.path, file.partitions.join(" and "));
    }
    Ok(written)
}

/// `provision` without --identity: writes the client configuration, and the Artifact records
/// when their options are given, but no device key, and prints no request.
pub fn run_config_only(args: &ProvisionArgs, config: &ClientConfig) -> anyhow::Result<()> {
    if args.key.is_some() || args.preauth_out.is_some() {
        return Err(UsageError(
            "--key and --preauth-out need --identity or --identity-file; without an identity, provision \
             writes only the client configuration"
                .into(),
        )
        .into());
    }
    let xattr_policy = xattr_policy(&args.xattrs)?;
    let time = write_time()?;
    check_output_path(args.output.as_deref(), &args.image)?;

    let sector_size = args.sector_size.map(SectorSizeArg::sector_size);
    let access = if args.output.is_none() && !args.dry_run { Access::ReadWrite } else { Access::ReadOnly };
    let image = DiskImage::open_with_sector_size(&args.image, access, sector_size)?;
    let path = args.image.display();
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{path}: reading partitions"))?;
    let needs_data = config.on_data || args.records.requested();
    let data = match needs_data {
        true => Some(
            roles::find_data_partition(&partitions, args.data_partition).with_context(|| path.to_string())?,
        ),
        false => None,
    };
    let mut files = ImageFiles::new(&image).with_context(|| format!("{path}: reading partitions"))?;

    let mut store_summary = String::new();
    if let (Some(data), true) = (data, args.records.requested()) {
        let layout = match store_policy(&image, &partitions, args.target_layout)? {
            StorePolicy::Reconcile { layout } => layout,
            StorePolicy::LeaveAlone { reason } => {
                bail!("{path}: cannot write the Artifact records: {reason}")
            }
        };
        let records = records_update(&args.records, &image, &partitions)?;
        let mut stale_rootfs_version = None;
        let ext = files.partition_ext(&data.partition).with_context(|| data_context(&image, data))?;
        let plan = |current: &_| -> anyhow::Result<_> {
            let plan = records.plan(current)?;
            stale_rootfs_version = plan.stale_rootfs_version;
            Ok(plan.edit)
        };
        let changes = data_partition::edit_store(ext, layout, plan, &xattr_policy, time)
            .with_context(|| data_context(&image, data))?;
        if let (Some(version), Some(name)) = (&stale_rootfs_version, &args.records.artifact_name) {
            log::warn!(
                "{path}: {ROOTFS_VERSION_PROVIDE} stays {version:?} although the Artifact name is now {name:?}; \
                 add --bootstrap-provides or --provides {ROOTFS_VERSION_PROVIDE}:{name} to change it"
            );
        }
        let tense = if args.dry_run { Tense::Planned } else { Tense::Done };
        store_summary = format!("; {}", describe_store_change(&changes.store, tense));
    }
    let written = plan_config(&mut files, &image, data, config, time)?;
    let (writes, changed) = files.into_writes().with_context(|| path.to_string())?;

    if args.dry_run {
        log::info!(
            "{path}: dry run, nothing was written: {}{store_summary}; {}",
            summarize_files(&written, Tense::Planned),
            describe_bytes(&writes, &changed)
        );
        return Ok(());
    }
    if writes.is_empty() && args.output.is_none() {
        log::info!("{path}: the configuration was already as requested; nothing needed to change");
        return Ok(());
    }
    let target = commit_all(&image, &writes, args.output.as_deref(), &args.bmap)?;
    log::info!("{}: {}{store_summary}", target.display(), summarize_files(&written, Tense::Done));
    Ok(())
}

/// Describes the configuration files written, as a phrase to append to provision's summary:
/// empty when there are none.
pub fn summarize(written: &[WrittenFile], tense: Tense) -> String {
    match written.is_empty() {
        true => String::new(),
        false => format!(", {}", summarize_files(written, tense)),
    }
}

/// Describes the files written: `wrote /etc/mender/mender.conf (ServerURL) on rootfs A
/// (partition 2) and rootfs B (partition 3)`.
fn summarize_files(written: &[WrittenFile], tense: Tense) -> String {
    if written.is_empty() {
        return format!("{} the client configuration as it was", tense.verb("would keep", "kept"));
    }
    // Files written to the same partitions are listed together.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for file in written {
        let partitions = file.partitions.join(" and ");
        let keys = match file.keys.is_empty() {
            true => String::new(),
            false => format!(" ({})", file.keys.join(", ")),
        };
        let described = format!("{}{keys}", file.path);
        match groups.iter_mut().find(|(existing, _)| *existing == partitions) {
            Some((_, files)) => files.push(described),
            None => groups.push((partitions, vec![described])),
        }
    }
    let groups: Vec<String> = groups
        .into_iter()
        .map(|(partitions, files)| format!("{} on {partitions}", files.join(", ")))
        .collect();
    format!("{} {}", tense.verb("would write", "wrote"), groups.join("; "))
}

/// Describes how many bytes of which partitions a dry run would change.
pub fn describe_bytes(writes: &[PartitionWrites], changed: &[String]) -> String {
    let bytes: usize = writes.iter().flat_map(|(_, writes)| writes.values()).map(Vec::len).sum();
    match changed.is_empty() {
        true => "no bytes would change".to_string(),
        false => format!("{bytes} bytes of {} would change", changed.join(" and ")),
    }
}
