//! The MODE argument of `chmod`: octal bits, or symbolic changes such as `u+x,go-w` or `a=rX`
//! as chmod(1) in GNU coreutils takes them, without the umask (no `who` means `a`).

use anyhow::bail;

use super::parse_mode;

/// One symbolic clause, such as `go-w`: the classes it touches, the operator and the
/// permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clause {
    /// Mask of the permission bits of the classes named (u, g, o), plus setuid, setgid and
    /// sticky where they belong.
    who: u16,
    operator: u8,
    /// Permissions named, as the rwx bits of all three classes.
    permissions: u16,
    /// `X`: execute only for directories and files that some class can already execute.
    conditional_execute: bool,
}

/// A parsed MODE argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeChange {
    Absolute(u16),
    Symbolic(Vec<Clause>),
}

const USER_BITS: u16 = 0o4700;
const GROUP_BITS: u16 = 0o2070;
const OTHER_BITS: u16 = 0o1007;

impl ModeChange {
    /// Parses octal digits or comma-separated symbolic clauses.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.chars().next().is_some_and(|first| first.is_ascii_digit()) {
            return Ok(ModeChange::Absolute(parse_mode(text)?));
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            clauses.extend(parse_clause(part, text)?);
        }
        Ok(ModeChange::Symbolic(clauses))
    }

    /// Returns the new permission bits of an inode with `mode`.
    pub fn apply(&self, mode: u16, is_directory: bool) -> u16 {
        let clauses = match self {
            ModeChange::Absolute(bits) => return *bits,
            ModeChange::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            let mut permissions = clause.permissions;
            if clause.conditional_execute && (is_directory || mode & 0o111 != 0) {
                permissions |= 0o111;
            }
            let bits = permissions & clause.who;
            mode = match clause.operator {
                b'+' => mode | bits,
                b'-' => mode & !bits,
                _ => (mode & !clause.who) | bits,
            };
        }
        mode
    }
}

/// Parses one clause such as `u+x` or `go=rw`, which may hold several operators (`u+r-w`).
fn parse_clause(part: &str, whole: &str) -> anyhow::Result<Vec<Clause>> {
    let invalid =
        || anyhow::anyhow!("invalid mode {whole:?}: expected octal bits or changes such as u+x,go-w");
    let bytes = part.as_bytes();
    let mut index = 0;
    let mut who = 0u16;
    while let Some(&class) = bytes.get(index) {
        who |= match class {
            b'u' => USER_BITS,
            b'g' => GROUP_BITS,
            b'o' => OTHER_BITS,
            b'a' => USER_BITS | GROUP_BITS | OTHER_BITS,
            _ => break,
        };
        index += 1;
    }
    if who == 0 {
        who = USER_BITS | GROUP_BITS | OTHER_BITS;
    }

    let mut clauses = Vec::new();
    while let Some(&operator) = bytes.get(index) {
        if !matches!(operator, b'+' | b'-' | b'=') {
            return Err(invalid());
        }
        index += 1;
        let mut clause = Clause { who, operator, permissions: 0, conditional_execute: false };
        while let Some(&permission) = bytes.get(index) {
            clause.permissions |= match permission {
                b'r' => 0o444,
                b'w' => 0o222,
                b'x' => 0o111,
                b'X' => {
                    clause.conditional_execute = true;
                    0
                }
                b's' => 0o6000,
                b't' => 0o1000,
                _ => break,
            };
            index += 1;
        }
        clauses.push(clause);
    }
    if clauses.is_empty() {
        bail!(invalid());
    }
    Ok(clauses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, mode: u16, is_directory: bool) -> u16 {
        ModeChange::parse(text).unwrap().apply(mode, is_directory)
    }

    #[test]
    fn symbolic_changes_follow_chmod() {
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("a=r", 0o755, false), 0o444);
        assert_eq!(apply("+x", 0o600, false), 0o711);
        assert_eq!(apply("u=rw,go=r", 0o777, false), 0o644);
        assert_eq!(apply("u+s", 0o755, false), 0o4755);
        assert_eq!(apply("+t", 0o777, true), 0o1777);
        assert_eq!(apply("u+r-w", 0o200, false), 0o400);
    }

    #[test]
    fn capital_x_executes_only_directories_and_executables() {
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(apply("a+X", 0o744, false), 0o755);
        assert_eq!(apply("a+X", 0o644, true), 0o755);
    }

    #[test]
    fn octal_and_invalid_modes() {
        assert_eq!(apply("0750", 0o644, false), 0o750);
        assert!(ModeChange::parse("u").is_err());
        assert!(ModeChange::parse("z+x").is_err());
        assert!(ModeChange::parse("u+q").is_err());
        assert!(ModeChange::parse("0999").is_err());
    }
}
