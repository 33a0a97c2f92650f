//! `mender-preauth identity` and `mender-preauth preauth`: print what the server is told.

use crate::commands::args::{IdentityArgs, PreauthArgs};
use crate::commands::output::{load_private_key, load_public_key, print_line};

/// Prints the identity data as the JSON string the Mender client sends.
pub fn run_identity(args: &IdentityArgs) -> anyhow::Result<()> {
    let identity = args.load()?;
    print_line(&identity.to_json())
}

/// Prints the preauthorization request body.
pub fn run_preauth(args: &PreauthArgs) -> anyhow::Result<()> {
    let identity = args.identity.load()?;
    let pubkey = match (&args.pubkey, &args.key) {
        (Some(path), _) => load_public_key(path)?,
        (None, Some(path)) => load_private_key(path)?.public_key(),
        (None, None) => anyhow::bail!("give the device key with --key FILE or --pubkey FILE"),
    };

    let request = args.request.request_json(&identity, &pubkey)?;
    print_line(&request)
}
