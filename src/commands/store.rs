//! `mender-preauth store`: list, read and change the records of mender-store on an image's
//! data partition. Changes go through the same all-or-nothing machinery as `provision`.

use std::io::Write;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::commands::args::{
    SectorSizeArg, StoreArgs, StoreCommand, StoreDeleteArgs, StoreGetArgs, StoreImageArgs, StoreListArgs,
    StoreSetArgs, StoreWriteArgs,
};
use crate::commands::output::{escape_control, print_line, write_time};
use crate::commands::provision::{
    FoundTarget, Tense, check_output_path, commit, describe_store_change, find_target, store_policy,
};
use crate::fs::ext::Ext;
use crate::image::disk_image::{Access, DiskImage, reject_compressed};
use crate::image::volume::Staged;
use crate::mender::data_partition::{self, STORE_PATH, StoreChange, StorePolicy, XattrPolicy};
use crate::mender::provides::parse_provides;
use crate::mender::records::{ARTIFACT_NAME_KEY, ARTIFACT_PROVIDES_KEY};
use crate::mender::roles::{self, partition_name};
use crate::mender::store::{CLIENT_KEYS, Records, STALE_AUTH_KEYS, StoreEdit, StoreLayout};

/// Runs the `store` operation that `args` names.
pub fn run(args: &StoreArgs) -> anyhow::Result<()> {
    match &args.command {
        StoreCommand::List(args) => list(args),
        StoreCommand::Get(args) => get(args),
        StoreCommand::Set(args) => set(args),
        StoreCommand::Delete(args) => delete(args),
    }
}

/// One record in `store list --json`.
#[derive(Debug, Serialize)]
struct RecordEntry {
    key: String,
    size: usize,
    /// The value when it is UTF-8 text and not a secret.
    value: Option<String>,
    /// True for authentication records, whose values are never shown.
    secret: bool,
}

fn list(args: &StoreListArgs) -> anyhow::Result<()> {
    let records = match read_store_and_warn(&args.image)? {
        Some(records) => records,
        None => {
            log::info!("{}: there is no {STORE_PATH} on the data partition", args.image.image.display());
            Records::new()
        }
    };
    let entries: Vec<RecordEntry> = records.iter().map(|(key, value)| record_entry(key, value)).collect();

    if args.json {
        let json = serde_json::to_string_pretty(&entries).context("encoding the records as JSON")?;
        return print_line(&json);
    }
    let lines: Vec<String> = entries.iter().map(render_entry).collect();
    if lines.is_empty() {
        return Ok(());
    }
    print_line(&lines.join("\n"))
}

fn record_entry(key: &[u8], value: &[u8]) -> RecordEntry {
    let secret = STALE_AUTH_KEYS.iter().any(|auth_key| auth_key.as_bytes() == key);
    let text = std::str::from_utf8(value).ok().filter(|_| !secret).map(str::to_string);
    RecordEntry { key: String::from_utf8_lossy(key).into_owned(), size: value.len(), value: text, secret }
}

/// Renders a record as `KEY=VALUE`, with control characters in the key escaped. Values that would break the line (control characters) or
/// that are secret or binary are described by size instead.
fn render_entry(entry: &RecordEntry) -> String {
    let key = escape_control(&entry.key);
    match &entry.value {
        Some(value) if !value.chars().any(char::is_control) => format!("{key}={value}"),
        _ if entry.secret => format!("{key}=<{} bytes, not shown>", entry.size),
        Some(_) => format!("{key}=<{} bytes of text with control characters>", entry.size),
        None => format!("{key}=<{} bytes of binary data>", entry.size),
    }
}

fn get(args: &StoreGetArgs) -> anyhow::Result<()> {
    let path = args.image.image.display();
    let Some(records) = read_records(&args.image)? else {
        bail!("{path}: there is no {STORE_PATH} on the data partition, so no record {:?}", args.key);
    };
    let Some(value) = records.get(args.key.as_bytes()) else {
        bail!("{path}: {STORE_PATH} has no record {:?}", args.key);
    };

    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(value)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

fn set(args: &StoreSetArgs) -> anyhow::Result<()> {
    let path = args.image.image.display();
    check_key(&args.key).with_context(|| path.to_string())?;
    check_value(&args.key, args.value.as_bytes()).with_context(|| path.to_string())?;

    let record = (args.key.as_bytes().to_vec(), args.value.as_bytes().to_vec());
    modify(&args.image, &args.write, |_| Ok(StoreEdit { remove: Vec::new(), set: vec![record] }))?;

    if !CLIENT_KEYS.contains(&args.key.as_str()) {
        log::warn!(
            "{path}: the Mender client does not use a record {:?}, so it ignores it; the records it uses are {}",
            args.key,
            CLIENT_KEYS.join(", ")
        );
    }
    Ok(())
}

/// Rejects keys that `store list` could not print as one `KEY=VALUE` line: keys containing `=`
/// or control characters.
fn check_key(key: &str) -> anyhow::Result<()> {
    if key.contains('=') {
        bail!("invalid key {key:?}: a key must not contain '=', because `store list` prints KEY=VALUE");
    }
    if key.chars().any(char::is_control) {
        bail!("invalid key {key:?}: a key must not contain control characters such as newlines");
    }
    Ok(())
}

/// Rejects values of the client's own records that the Mender client 3.4 fails on. An empty
/// Artifact name makes `show-artifact` report an error. Provides that are not a JSON object of
/// strings make `show-provides` and every update fail.
fn check_value(key: &str, value: &[u8]) -> anyhow::Result<()> {
    match key {
        ARTIFACT_NAME_KEY if value.is_empty() => {
            bail!("{ARTIFACT_NAME_KEY} must not be empty, because the Mender client rejects an empty name")
        }
        ARTIFACT_PROVIDES_KEY => parse_provides(value).map(|_| ()).map_err(anyhow::Error::from),
        _ => Ok(()),
    }
}

fn delete(args: &StoreDeleteArgs) -> anyhow::Result<()> {
    if args.write.output.is_none() && !args.write.dry_run {
        reject_compressed(&args.image.image)?;
    }
    if read_records(&args.image)?.is_none() {
        bail!(
            "{}: there is no {STORE_PATH} on the data partition, so no record to delete",
            args.image.image.display()
        );
    }
    modify(&args.image, &args.write, |records| {
        for key in &args.keys {
            if !records.contains_key(key.as_bytes()) {
                return Err(anyhow!("{STORE_PATH} has no record {key:?}"));
            }
        }
        let remove = args.keys.iter().map(|key| key.as_bytes().to_vec()).collect();
        Ok(StoreEdit { remove, set: Vec::new() })
    })
}

/// Reads the records of mender-store on the image's data partition, or `None` when it has no
/// store.
fn read_records(args: &StoreImageArgs) -> anyhow::Result<Option<Records>> {
    Ok(read_store(args)?.map(|read| read.records))
}

/// Reads the store as [`read_records`] does, and warns when it is in another LMDB layout than
/// the target that a binary on rootfs A shows, because the target's Mender client cannot open it.
fn read_store_and_warn(args: &StoreImageArgs) -> anyhow::Result<Option<Records>> {
    let Some(StoreRead { records, layout, target }) = read_store(args)? else { return Ok(None) };
    if let Ok(found) = target
        && StoreLayout::of_target(&found.target.layout) != layout
    {
        log::warn!(
            "{}: {STORE_PATH} is in the {layout} LMDB layout, but the target is {}, from {} on {}, \
             so its Mender client cannot open it",
            args.image.display(),
            found.target.layout.describe(),
            found.target.binary,
            found.partition
        );
    }
    Ok(Some(records))
}

/// mender-store as read from an image, with the target found on rootfs A.
struct StoreRead {
    records: Records,
    /// The LMDB layout the file is in.
    layout: StoreLayout,
    /// The target a binary on rootfs A shows, or why none was found.
    target: Result<FoundTarget, String>,
}

/// Reads mender-store and the target on rootfs A, or returns `None` when the image has no store.
fn read_store(args: &StoreImageArgs) -> anyhow::Result<Option<StoreRead>> {
    let path = args.image.display();
    let sector_size = args.sector_size.map(SectorSizeArg::sector_size);
    let image = DiskImage::open_with_sector_size(&args.image, Access::ReadOnly, sector_size)?;
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{path}: reading partitions"))?;
    let data =
        roles::find_data_partition(&partitions, args.data_partition).with_context(|| path.to_string())?;

    let context = || format!("{path}: {}", partition_name(&data.partition));
    let ext = Ext::open(image.volume(&data.partition)).with_context(context)?;
    let Some((records, layout)) = data_partition::read_store(&ext).with_context(context)? else {
        return Ok(None);
    };
    // The target only adds a warning, so a rootfs A that cannot be read does not fail the read.
    let target = find_target(&image, &partitions).unwrap_or_else(|error| Err(format!("{error:#}")));
    Ok(Some(StoreRead { records, layout, target }))
}

/// Changes the store by the edit `plan` makes from its records, in memory first, then in place
/// or into the copy --output names, all or nothing.
fn modify(
    image_args: &StoreImageArgs,
    write: &StoreWriteArgs,
    plan: impl FnOnce(&Records) -> anyhow::Result<StoreEdit>,
) -> anyhow::Result<()> {
    let path = image_args.image.display();
    let time = write_time()?;
    check_output_path(write.output.as_deref(), &image_args.image)?;
    let access = if write.output.is_none() && !write.dry_run { Access::ReadWrite } else { Access::ReadOnly };
    let sector_size = image_args.sector_size.map(SectorSizeArg::sector_size);
    let image = DiskImage::open_with_sector_size(&image_args.image, access, sector_size)?;
    let partitions = roles::classify(image.file(), image.table())
        .with_context(|| format!("{path}: reading partitions"))?;
    let data = roles::find_data_partition(&partitions, image_args.data_partition)
        .with_context(|| path.to_string())?;
    let layout = match store_policy(&image, &partitions, write.target_layout)? {
        StorePolicy::Reconcile { layout } => layout,
        StorePolicy::LeaveAlone { reason } => bail!("{path}: cannot write {STORE_PATH}: {reason}"),
    };

    let context = || format!("{path}: {}", partition_name(&data.partition));
    let mut ext = Ext::open(Staged::new(image.volume(&data.partition))).with_context(context)?;
    let changes = data_partition::edit_store(&mut ext, layout, plan, &XattrPolicy::InheritLabel, time)
        .with_context(context)?;
    let (_, writes) = ext.into_volume().into_parts().with_context(context)?;

    if write.dry_run {
        log::info!(
            "{path}: dry run, nothing was written: {}",
            describe_store_change(&changes.store, Tense::Planned)
        );
        return Ok(());
    }
    if changes.store == StoreChange::Unchanged && write.output.is_none() {
        log::info!("{path}: {}", describe_store_change(&changes.store, Tense::Done));
        return Ok(());
    }
    let written = commit(&image, &data.partition, &writes, write.output.as_deref(), &write.bmap)?;
    log::info!("{}: {}", written.display(), describe_store_change(&changes.store, Tense::Done));
    Ok(())
}
