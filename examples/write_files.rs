//! Writes every regular file of a host directory into a directory of a bare ext2/3/4 image, in
//! one all-or-nothing modification. `scripts/bench` uses it to time the ext writer against
//! `debugfs -w -f`; it is not part of the tool's command-line interface.
//!
//! Usage: cargo run --release --example write_files -- IMAGE HOST_DIR IMAGE_DIR

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use mender_preauth::fs::ext::{Ext, NewAttrs};
use mender_preauth::image::disk_image::{Access, DiskImage};
use mender_preauth::image::volume::Staged;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [image_path, host_dir, image_dir] = arguments.as_slice() else {
        bail!("usage: write_files IMAGE HOST_DIR IMAGE_DIR");
    };

    let image = DiskImage::open(&PathBuf::from(image_path), Access::ReadWrite)?;
    let partition = image.table().partitions[0];
    let mut ext = Ext::open(Staged::new(image.volume(&partition))).context("opening the filesystem")?;
    let attrs = NewAttrs { mode: 0o644, uid: 0, gid: 0, time: 1_700_000_000 };

    let mut entries: Vec<_> = std::fs::read_dir(host_dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let source = Arc::new(File::open(entry.path())?);
        ext.write_file_from(&format!("{image_dir}/{name}"), source, &attrs).with_context(|| name.clone())?;
    }

    // Whole blocks of the host files are copied from them only now, never held in memory.
    let (_, writes, copies) = ext.into_volume().into_parts_with_copies();
    image.apply_with_copies(&partition, &writes, &copies)?;
    Ok(())
}
