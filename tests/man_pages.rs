//! The man pages in `man/` are rendered from the same clap definitions as `--help`; this test
//! fails when they drift. Regenerate them with `MENDER_PREAUTH_UPDATE_MAN=1 cargo test --test man_pages`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use mender_preauth::commands::Cli;

const UPDATE_VAR: &str = "MENDER_PREAUTH_UPDATE_MAN";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// Renders the top-level page, one page per subcommand, and one per subcommand of a subcommand
/// (`mender-preauth-store-list`), as (file name, troff text).
fn render_pages() -> Vec<(String, Vec<u8>)> {
    // Building propagates the global options (-v, -q) into every subcommand, as --help shows them.
    let mut command = Cli::command();
    command.build();
    let mut pages = Vec::new();

    let mut top = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut top).unwrap();
    pages.push(("mender-preauth.1".to_string(), top));

    let version = command.get_version().unwrap_or_default().to_string();
    for subcommand in command.get_subcommands() {
        let name = format!("mender-preauth-{}", subcommand.get_name());
        pages.push(render_page(subcommand, &name, &version));
        // clap adds a `help` subcommand, with one subcommand per topic, to every command with
        // subcommands; the page of the top-level `help` documents it once.
        if subcommand.get_name() == "help" {
            continue;
        }
        for nested in subcommand.get_subcommands().filter(|nested| nested.get_name() != "help") {
            let nested_name = format!("{name}-{}", nested.get_name());
            pages.push(render_page(nested, &nested_name, &version));
        }
    }
    pages
}

fn render_page(command: &clap::Command, name: &str, version: &str) -> (String, Vec<u8>) {
    let page_command = command.clone().name(name.to_string()).version(version.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(page_command).render(&mut page).unwrap();
    (format!("{name}.1"), page)
}

#[test]
fn man_pages_match_help() {
    let pages = render_pages();
    if std::env::var_os(UPDATE_VAR).is_some() {
        std::fs::create_dir_all(man_dir()).unwrap();
        for (name, text) in &pages {
            std::fs::write(man_dir().join(name), text).unwrap();
        }
    }

    for (name, expected) in &pages {
        let path = man_dir().join(name);
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == *expected,
            "{} is out of date with --help; run {UPDATE_VAR}=1 cargo test --test man_pages",
            path.display()
        );
    }
}

#[test]
fn man_dir_has_no_stale_pages() {
    let expected: Vec<String> = render_pages().into_iter().map(|(name, _)| name).collect();
    for entry in std::fs::read_dir(man_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(expected.contains(&name), "man/{name} documents no current subcommand; remove it");
    }
}
