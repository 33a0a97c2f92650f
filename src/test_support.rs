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

/// Environment variable naming the folder into which `.ci/run` unpacks Debian's i386
/// `lmdb-utils` and `liblmdb0` with `dpkg -x`. They judge 32-bit stores, and cannot be installed
/// beside the amd64 packages.
pub const I386_LMDB_VAR: &str = "MENDER_PREAUTH_I386_LMDB";

/// An LMDB tool built for i386, run with the i386 library from the same folder.
#[derive(Debug, Clone)]
pub struct I386LmdbTool {
    /// The program, such as `ROOT/usr/bin/mdb_dump`.
    pub program: PathBuf,
    /// The folder holding the i386 `liblmdb.so.0`.
    pub library_dir: PathBuf,
}

impl I386LmdbTool {
    /// Returns a command that runs the tool with its library.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.env("LD_LIBRARY_PATH", &self.library_dir).env("LC_ALL", "C");
        command
    }
}

/// Finds the i386 build of the LMDB tool `program` (`mdb_dump`, `mdb_stat`, `mdb_load`,
/// `mdb_copy`) for `test`, under the folder that [`I386_LMDB_VAR`] names, and checks that it runs.
/// When it is missing or cannot run, panics if tools are required and otherwise prints why the
/// test is skipped and returns `None`.
pub fn require_i386_lmdb_tool(program: &str, test: &str) -> Option<I386LmdbTool> {
    let problem = match std::env::var_os(I386_LMDB_VAR) {
        None => format!("{I386_LMDB_VAR} is not set"),
        Some(root) => {
            let root = PathBuf::from(root);
            let tool = I386LmdbTool {
                program: root.join("usr/bin").join(program),
                library_dir: root.join("usr/lib/i386-linux-gnu"),
            };
            match tool.command().arg("-V").output() {
                Ok(output) if output.status.success() => return Some(tool),
                Ok(output) => format!(
                    "{} -V failed with {}: {}",
                    tool.program.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(error) => format!("{} cannot run: {error}", tool.program.display()),
            }
        }
    };
    if tools_required() {
        panic!("{test}: the i386 `{program}` is required ({REQUIRE_TOOLS_VAR} is set), but {problem}");
    }
    eprintln!("skipped {test}: the i386 `{program}` is missing: {problem} (see .ci/run)");
    None
}

/// Finds every i386 LMDB tool in `programs`, or returns `None` after reporting the first missing
/// one as [`require_i386_lmdb_tool`] does.
pub fn require_i386_lmdb_tools(programs: &[&str], test: &str) -> Option<Vec<I386LmdbTool>> {
    programs.iter().map(|program| require_i386_lmdb_tool(program, test)).collect()
}
