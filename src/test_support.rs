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

/// A build of LMDB's tools for another architecture than the host's, which `.ci/run` unpacks
/// from Debian's packages with `dpkg -x`, because they cannot be installed beside the host's.
/// Each judges the store layout of its architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignLmdb {
    /// i386 `lmdb-utils` and `liblmdb0`: the 32-bit little-endian layout, run natively with the
    /// i386 loader from `libc6:i386`.
    I386,
    /// s390x `lmdb-utils`, `liblmdb0` and `libc6`: the 64-bit big-endian layout, run under
    /// `qemu-s390x-static`.
    S390x,
}

impl ForeignLmdb {
    /// Environment variable naming the folder the packages were unpacked into.
    pub fn folder_var(self) -> &'static str {
        match self {
            ForeignLmdb::I386 => "MENDER_PREAUTH_I386_LMDB",
            ForeignLmdb::S390x => "MENDER_PREAUTH_S390X_LMDB",
        }
    }

    fn library_dir(self) -> &'static str {
        match self {
            ForeignLmdb::I386 => "usr/lib/i386-linux-gnu",
            ForeignLmdb::S390x => "usr/lib/s390x-linux-gnu",
        }
    }

    /// Returns the user-mode emulator that runs the programs, when the host cannot run them.
    fn emulator(self) -> Option<&'static str> {
        match self {
            ForeignLmdb::I386 => None,
            ForeignLmdb::S390x => Some("qemu-s390x-static"),
        }
    }
}

/// An LMDB tool of a [`ForeignLmdb`] build, run with the library from the same folder.
#[derive(Debug, Clone)]
pub struct ForeignLmdbTool {
    /// The folder the packages were unpacked into.
    pub root: PathBuf,
    /// The program, such as `ROOT/usr/bin/mdb_dump`.
    pub program: PathBuf,
    /// The folder holding the build's `liblmdb.so.0`.
    pub library_dir: PathBuf,
    /// The emulator that runs the program, if any, with `-L ROOT` for its loader and libraries.
    pub emulator: Option<PathBuf>,
}

impl ForeignLmdbTool {
    /// Returns a command that runs the tool with its library.
    pub fn command(&self) -> std::process::Command {
        let mut command = match &self.emulator {
            Some(emulator) => {
                let mut command = std::process::Command::new(emulator);
                command.arg("-L").arg(&self.root).arg(&self.program);
                command
            }
            None => std::process::Command::new(&self.program),
        };
        command.env("LD_LIBRARY_PATH", &self.library_dir).env("LC_ALL", "C");
        command
    }
}

/// Finds the `build` of the LMDB tool `program` (`mdb_dump`, `mdb_stat`, `mdb_load`, `mdb_copy`)
/// for `test` and checks that it runs. When it is missing or cannot run, panics if tools are
/// required and otherwise prints why the test is skipped and returns `None`.
pub fn require_foreign_lmdb_tool(build: ForeignLmdb, program: &str, test: &str) -> Option<ForeignLmdbTool> {
    let problem = match find_foreign_lmdb_tool(build, program) {
        Ok(tool) => return Some(tool),
        Err(problem) => problem,
    };
    if tools_required() {
        panic!("{test}: the {build:?} `{program}` is required ({REQUIRE_TOOLS_VAR} is set), but {problem}");
    }
    eprintln!("skipped {test}: the {build:?} `{program}` is missing: {problem} (see .ci/run)");
    None
}

fn find_foreign_lmdb_tool(build: ForeignLmdb, program: &str) -> Result<ForeignLmdbTool, String> {
    let root = std::env::var_os(build.folder_var())
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} is not set", build.folder_var()))?;
    let emulator = match build.emulator() {
        Some(name) => Some(find_program(name).ok_or_else(|| format!("`{name}` is not installed"))?),
        None => None,
    };
    let tool = ForeignLmdbTool {
        program: root.join("usr/bin").join(program),
        library_dir: root.join(build.library_dir()),
        root,
        emulator,
    };
    match tool.command().arg("-V").output() {
        Ok(output) if output.status.success() => Ok(tool),
        Ok(output) => Err(format!(
            "{} -V failed with {}: {}",
            tool.program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!("{} cannot run: {error}", tool.program.display())),
    }
}

/// Finds every tool in `programs` of the `build`, or returns `None` after reporting the first
/// missing one as [`require_foreign_lmdb_tool`] does.
pub fn require_foreign_lmdb_tools(
    build: ForeignLmdb,
    programs: &[&str],
    test: &str,
) -> Option<Vec<ForeignLmdbTool>> {
    programs.iter().map(|program| require_foreign_lmdb_tool(build, program, test)).collect()
}

/// Finds every i386 LMDB tool in `programs`, as [`require_foreign_lmdb_tools`] does.
pub fn require_i386_lmdb_tools(programs: &[&str], test: &str) -> Option<Vec<ForeignLmdbTool>> {
    require_foreign_lmdb_tools(ForeignLmdb::I386, programs, test)
}
