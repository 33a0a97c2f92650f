//! `mender-preauth keygen`: generate a device key pair as Mender's keygen-client script does.

use std::path::Path;

use anyhow::{Context, bail};

use crate::commands::args::KeygenArgs;
use crate::commands::output::key_type;
use crate::mender::device_key::{DevicePrivateKey, write_key_pair};

/// Generates the key pair and writes it to the output directory.
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let kind = key_type(args.key_type, args.bits)?;
    if !args.force {
        refuse_existing(&args.out_dir, &args.prefix)?;
    }
    let key = DevicePrivateKey::generate(kind)?;

    let (private_path, public_path) = write_key_pair(&args.out_dir, &args.prefix, &key)
        .with_context(|| args.out_dir.display().to_string())?;

    log::info!("wrote {} private key to {}", key.description(), private_path.display());
    log::info!("wrote public key to {}", public_path.display());
    Ok(())
}

/// Fails when either key file exists already.
fn refuse_existing(dir: &Path, prefix: &str) -> anyhow::Result<()> {
    for name in [format!("{prefix}private.key"), format!("{prefix}public.key")] {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            bail!("{}: key file already exists; move it away, or pass --force to replace it", path.display());
        }
    }
    Ok(())
}
