//! The `mender-preauth` binary: parse arguments, run the subcommand, map errors to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mender_preauth::commands::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);

    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("mender-preauth: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends log lines to stderr: `info` and above by default, `debug` with -v, `trace` with -vv.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "mender-preauth: {}", record.args()),
            level => writeln!(out, "mender-preauth: {}: {}", level.as_str().to_lowercase(), record.args()),
        })
        .target(env_logger::Target::Stderr)
        .init();
}
