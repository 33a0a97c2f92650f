//! Helpers shared by unit and integration tests: finding the external programs that act as judges
//! (e2fsck, debugfs, mdb_dump, the Mender client). Not part of the tool's interface.

use std::path::{Path, PathBuf};

/// Environment variable that turns a missing judge from a skipped test into a failed one. CI sets it.
pub const REQUIRE_TOOLS_VAR: &str = "MENDER_PREAUTH_REQUIRE_TOOLS";

/// Directories searched besides `PATH`, because Debian puts e2fsck and debugfs in `/sbin`.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

/// Finds `program` in `PATH` or the sbin directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Returns true when a missing judge must fail the test.
pub fn tools_required() -> bool {
    std::env::var_os(REQUIRE_TOOLS_VAR).is_some_and(|value| !value.is_empty() && value != "0")
}

/// Finds the judge `program` for `test`. When it is missing, panics if tools are required and
/// otherwise prints why the test is skipped and returns `None`.
pub fn require_tool(program: &str, test: &str) -> Option<PathBuf> {
    if let Some(found) = find_program(program) {
        return Some(found);
    }
    if tools_required() {
        panic!("{test}: required tool `{program}` is not installed ({REQUIRE_TOOLS_VAR} is set)");
    }
    eprintln!("skipped {test}: `{program}` is not installed (set {REQUIRE_TOOLS_VAR}=1 to fail instead)");
    None
}

/// Finds every program in `programs`, or returns `None` after reporting the first missing one as
/// [`require_tool`] does.
pub fn require_tools(programs: &[&str], test: &str) -> Option<Vec<PathBuf>> {
    programs.iter().map(|program| require_tool(program, test)).collect()
}
