//! The Artifact record options of `provision` (--artifact-name, --provides, --clears-provides,
//! --bootstrap-provides), turned into a [`RecordsUpdate`] with what they need from the image.

use anyhow::{Context, bail};

use crate::commands::args::RecordsArgs;
use crate::commands::progress::ProgressLine;
use crate::fs::ext::Ext;
use crate::image::disk_image::DiskImage;
use crate::mender::artifact_info::ARTIFACT_INFO_PATH;
use crate::mender::provides::{ClearsPattern, parse_provide_arguments};
use crate::mender::records::RecordsUpdate;
use crate::mender::roles::{self, ClassifiedPartition, Role, partition_name};
use crate::mender::rootfs::{read_artifact_name, volume_sha256};

/// Builds the update the options request. Arguments are checked first. Then the root filesystem
/// is read for artifact_info when no --artifact-name is given, and hashed whole for
/// --bootstrap-provides.
pub fn records_update(
    args: &RecordsArgs,
    image: &DiskImage,
    partitions: &[ClassifiedPartition],
) -> anyhow::Result<RecordsUpdate> {
    if !args.requested() {
        return Ok(RecordsUpdate::default());
    }
    let path = image.path().display();
    let provides = parse_provide_arguments(&args.provides).with_context(|| format!("{path}: --provides"))?;
    let clears = args
        .clears_provides
        .iter()
        .map(|pattern| ClearsPattern::parse(pattern).with_context(|| format!("{path}: --clears-provides")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rootfs = roles::find_role(partitions, Role::RootfsA);

    let fallback_name = match (&args.artifact_name, rootfs) {
        (Some(_), _) => Err("--artifact-name was given".to_string()),
        (None, Some(rootfs)) => artifact_info_name(image, rootfs)?,
        (None, None) => Err(format!(
            "the image has no root filesystem to read {ARTIFACT_INFO_PATH} from{}",
            roles::describe_unopened_ext(partitions)
        )),
    };

    let rootfs_checksum = match (args.bootstrap_provides, rootfs) {
        (false, _) => None,
        (true, Some(rootfs)) => Some(rootfs_checksum(image, rootfs)?),
        (true, None) => bail!(
            "{}: --bootstrap-provides needs rootfs A to hash, and the image has no root filesystem{}",
            image.path().display(),
            roles::describe_unopened_ext(partitions)
        ),
    };

    Ok(RecordsUpdate {
        artifact_name: args.artifact_name.clone(),
        fallback_name,
        clears,
        rootfs_checksum,
        provides,
    })
}

/// Reads the Artifact name from artifact_info on `rootfs`. A missing or broken file is not an
/// error yet, because the store may hold a name; the reason is kept for the message.
fn artifact_info_name(
    image: &DiskImage,
    rootfs: &ClassifiedPartition,
) -> anyhow::Result<Result<Vec<u8>, String>> {
    let name = partition_name(&rootfs.partition);
    let ext = Ext::open(image.volume(&rootfs.partition))
        .with_context(|| format!("{}: rootfs A ({name})", image.path().display()))?;
    Ok(match read_artifact_name(&ext) {
        Ok(Some(artifact_name)) => Ok(artifact_name),
        Ok(None) => Err(format!("rootfs A ({name}) has no artifact_name in {ARTIFACT_INFO_PATH}")),
        Err(error) => Err(format!("rootfs A ({name}): {error}")),
    })
}

/// Computes the SHA-256 of rootfs A's filesystem, with a progress line when it takes a while.
fn rootfs_checksum(image: &DiskImage, rootfs: &ClassifiedPartition) -> anyhow::Result<String> {
    let context = || format!("{}: rootfs A ({})", image.path().display(), partition_name(&rootfs.partition));
    let volume = image.volume(&rootfs.partition);
    let len = Ext::open(&volume).with_context(context)?.size_bytes();

    let started = std::time::Instant::now();
    let mut progress =
        ProgressLine::start(format!("hashing rootfs A ({})", partition_name(&rootfs.partition)), len);
    let checksum = volume_sha256(&volume, len, &mut |done| progress.update(done));
    progress.finish();
    let checksum = checksum.with_context(context)?;

    log::debug!("rootfs A: SHA-256 {checksum} over {len} bytes in {:.2} s", started.elapsed().as_secs_f64());
    Ok(checksum)
}
