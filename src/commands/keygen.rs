//! `mender-preauth keygen`: generate a device key pair as Mender's keygen-client script does.

use anyhow::Context;

use crate::commands::args::KeygenArgs;
use crate::commands::output::key_type;
use crate::mender::device_key::{DevicePrivateKey, write_key_pair};

/// Generates the key pair and writes it to the output directory.
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = DevicePrivateKey::generate(key_type(args.key_type, args.bits))?;

    let (private_path, public_path) = write_key_pair(&args.out_dir, &args.prefix, &key)
        .with_context(|| args.out_dir.display().to_string())?;

    log::info!("wrote {} private key to {}", key.description(), private_path.display());
    log::info!("wrote public key to {}", public_path.display());
    Ok(())
}
