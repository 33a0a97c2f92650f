//! User and group names looked up in the image's own `/etc/passwd` and `/etc/group`, because the
//! device's names, not the host's, decide what an owner means there.

use anyhow::bail;

use crate::mender::image_files::ImageFiles;

/// Returns the user ID of `user`: a number, or a name from the image's /etc/passwd.
pub fn user_id(files: &mut ImageFiles, user: &str) -> anyhow::Result<u32> {
    id_of(files, user, "/etc/passwd", "user")
}

/// Returns the group ID of `group`: a number, or a name from the image's /etc/group.
pub fn group_id(files: &mut ImageFiles, group: &str) -> anyhow::Result<u32> {
    id_of(files, group, "/etc/group", "group")
}

/// Looks up `name` in a database of `name:password:id:...` lines, unless it is a number.
fn id_of(files: &mut ImageFiles, name: &str, database: &str, what: &str) -> anyhow::Result<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = read_database(files, database).map_err(|error| {
        anyhow::anyhow!("{what} {name:?} is not a number, and {database} could not be read: {error}")
    })?;
    for line in text.lines() {
        let mut fields = line.split(':');
        if fields.next() == Some(name)
            && let Some(id) = fields.nth(1).and_then(|id| id.parse().ok())
        {
            return Ok(id);
        }
    }
    bail!("{what} {name:?} is neither a number nor a name in the image's {database}")
}

/// Reads one of the small account databases from rootfs A.
fn read_database(files: &mut ImageFiles, database: &str) -> anyhow::Result<String> {
    let resolved = files.resolve_for_read(database, true)?;
    let mut contents = Vec::new();
    files.copy_out(&resolved, &mut contents)?;
    Ok(String::from_utf8_lossy(&contents).into_owned())
}
