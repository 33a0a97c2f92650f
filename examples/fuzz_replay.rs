//! Replays fuzz inputs through the ext entry points of `src/fuzzing.rs` without libFuzzer and
//! counts the errors they end in, by kind and by the structure a corruption error names. Used to
//! see which checks a corpus reaches and to pick regression inputs; see `fuzz/README.md`.
//!
//! Usage: cargo run --release --example fuzz_replay -- ext_read|ext_write FILE_OR_DIR...
//!
//! With `FUZZ_REPLAY_WRITTEN=DIR`, `ext_write` also saves the image left by each input whose
//! writes all succeeded to `DIR/NAME`, for e2fsck to judge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mender_preauth::fs::ext::ExtError;
use mender_preauth::fuzzing;

/// Short name of an error for the counts: the structure of a corruption error, else the variant.
fn error_key(error: &ExtError) -> String {
    match error {
        ExtError::Corrupt { structure, .. } => format!("corrupt: {structure}"),
        other => {
            let debug = format!("{other:?}");
            debug.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
        }
    }
}

/// Lists the files named on the command line, reading directories one level deep.
fn input_files(arguments: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for argument in arguments {
        let path = Path::new(argument);
        if path.is_dir() {
            for entry in std::fs::read_dir(path).with_context(|| format!("reading {argument}"))? {
                files.push(entry?.path());
            }
        } else {
            files.push(path.to_path_buf());
        }
    }
    files.sort();
    Ok(files)
}

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, inputs)) = arguments.split_first() else {
        bail!("usage: fuzz_replay ext_read|ext_write FILE_OR_DIR...");
    };

    let written_dir = std::env::var_os("FUZZ_REPLAY_WRITTEN").map(PathBuf::from);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut smallest: BTreeMap<String, (u64, PathBuf)> = BTreeMap::new();
    for file in input_files(inputs)? {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let errors = match target.as_str() {
            "ext_read" => fuzzing::ext_read(&bytes).errors,
            "ext_write" => {
                let run = fuzzing::ext_write(&bytes);
                if !run.wrote_on_error.is_empty() {
                    println!("{}: wrote and then failed: {:?}", file.display(), run.wrote_on_error);
                }
                if let (Some(dir), Some(written), true) = (&written_dir, &run.written, run.errors.is_empty())
                {
                    let name = file.file_name().context("input without a file name")?;
                    std::fs::write(dir.join(name), written).context("saving the written image")?;
                }
                run.errors
            }
            other => bail!("unknown target {other:?}; expected ext_read or ext_write"),
        };
        let first = errors.first().map(error_key).unwrap_or_else(|| "no error".to_string());
        *counts.entry(first.clone()).or_default() += 1;
        let len = bytes.len() as u64;
        let entry = smallest.entry(first).or_insert((len, file.clone()));
        if len < entry.0 {
            *entry = (len, file);
        }
    }

    println!("first error of each input, with the smallest input that ends in it:");
    for (key, count) in &counts {
        let (len, file) = &smallest[key];
        println!("{count:6}  {key}  ({len} bytes: {})", file.display());
    }
    Ok(())
}
