//! The subcommands of the `mender-preauth` binary: argument definitions (clap derive) and one
//! module per subcommand that runs the job as a short sequence of calls into the library.

mod args;
mod inspect;
mod keygen;
mod output;
mod preauth;
mod provision;

use clap::{Parser, Subcommand};

pub use args::{IdentityArgs, InspectArgs, KeygenArgs, PreauthArgs, ProvisionArgs};

/// Preauthorize Mender devices offline.
///
/// Writes the device key and the Mender client's database (mender-store) onto the data
/// partition of disk images, in place and unprivileged, and prints the identity and public key
/// as the JSON body of the Mender server's preauthorization API.
#[derive(Debug, Parser)]
#[command(name = "mender-preauth", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print each step on stderr; repeat (-vv) for more detail.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand and its arguments.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a device key pair, as Mender's keygen-client script does.
    Keygen(KeygenArgs),
    /// Print the identity data as the JSON string the Mender client sends.
    Identity(IdentityArgs),
    /// Print the preauthorization request body for an identity and a key.
    Preauth(PreauthArgs),
    /// Write the device key and mender-store into an image and print the preauthorization request.
    #[command(visible_alias = "modify")]
    Provision(ProvisionArgs),
    /// Show an image's partitions, their roles, the device key and the mender-store records.
    Inspect(InspectArgs),
}

/// Runs the subcommand that `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Identity(args) => preauth::run_identity(&args),
        Command::Preauth(args) => preauth::run_preauth(&args),
        Command::Provision(args) => provision::run(&args),
        Command::Inspect(args) => inspect::run(&args),
    }
}
