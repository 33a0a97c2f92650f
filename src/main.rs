//! The `mender-preauth` binary: parse arguments, run the subcommand, map errors to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mender_preauth::commands::{self, Cli, WarningsFound};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);

    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader such as `head` that closes the pipe early wants no more output, so the run
        // ends quietly with status 0.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        // The report with its warnings is already printed, so one line and the status are enough.
        Err(error) if error.is::<WarningsFound>() => {
            eprintln!("mender-preauth: {error}");
            ExitCode::from(WarningsFound::EXIT_CODE)
        }
        Err(error) if commands::is_usage_error(&error) => {
            eprintln!("mender-preauth: error: {}", one_line_message(&error));
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("mender-preauth: error: {}", one_line_message(&error));
            ExitCode::FAILURE
        }
    }
}

/// Tells whether the error comes from writing to a pipe whose reader has gone away.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io_error| io_error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Joins the error and its causes with ": " on one line. A cause whose text the message already
/// contains is skipped, because many error types print their source inside their own message.
fn one_line_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message.replace(['\n', '\r'], " ")
}

/// Sends log lines to stderr: `info` and above by default, only warnings with -q, `debug` with
/// -v, `trace` with -vv.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Warn,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        // fatfs warns about valid but unusual boot sectors, such as mkfs.vfat's 4 reserved
        // sectors on FAT16, which a user cannot act on. Its errors arrive as results.
        .filter_module("fatfs", log::LevelFilter::Off)
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "mender-preauth: {}", record.args()),
            log::Level::Warn => writeln!(out, "mender-preauth: warning: {}", record.args()),
            level => writeln!(out, "mender-preauth: {}: {}", level.as_str().to_lowercase(), record.args()),
        })
        .target(env_logger::Target::Stderr)
        .init();
}
