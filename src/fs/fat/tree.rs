//! A check of the directory tree before `fatfs` follows any entry. `fatfs` trusts the first
//! cluster of every directory entry. A start past the last cluster makes it read and free
//! clusters outside the volume. Two entries that share a chain let a write or removal through
//! one of them damage the other. This walks every directory once from the root and
//! checks that each entry starts at cluster 0 (an empty file) or at its own allocated chain.
//! Entry layout follows "FAT: General Overview of On-Disk Format" (version 1.03), its
//! directory entry description.

use std::collections::HashMap;

use super::boot_sector::{FatType, Geometry};
use super::error::FatError;
use super::table::Chains;
use super::{
    DIR_ENTRY_LEN, FIRST_CLUSTER_HIGH_OFFSET, FIRST_CLUSTER_LOW_OFFSET, MAX_DEPTH, MAX_WALK_ENTRIES,
};
use crate::image::volume::Volume;

const ATTRIBUTES_OFFSET: usize = 0x0B;
const CASE_FLAGS_OFFSET: usize = 0x0C;
const LONG_NAME_CHECKSUM_OFFSET: usize = 0x0D;

const ATTRIBUTE_VOLUME_ID: u8 = 0x08;
const ATTRIBUTE_DIRECTORY: u8 = 0x10;
/// The attribute value that marks a long-name entry.
const ATTRIBUTE_LONG_NAME: u8 = 0x0F;

/// First name byte of the entry after the last one in use, and of a deleted entry.
const END_OF_DIRECTORY: u8 = 0x00;
const DELETED: u8 = 0xE5;
/// First name byte that stands for a real 0xE5 in the short name.
const KANJI_E5: u8 = 0x05;
/// Bit of the sequence number that marks the last (first stored) long-name entry of a name.
const LAST_LONG_ENTRY: u8 = 0x40;

/// Bits of the case flags (as Windows NT writes them) that show the base name and the
/// extension of a short name in lower case.
const LOWER_CASE_BASE: u8 = 0x08;
const LOWER_CASE_EXTENSION: u8 = 0x10;

/// Byte offsets of the three runs of UCS-2 characters in a long-name entry.
const LONG_NAME_RUNS: [(usize, usize); 3] = [(0x01, 5), (0x0E, 6), (0x1C, 2)];

/// A directory still to be read: its path, and its first cluster or `None` for the fixed root
/// directory of FAT12 and FAT16.
struct PendingDirectory {
    path: String,
    first_cluster: Option<u32>,
    depth: usize,
}

/// Walks the directory tree of the volume and checks the first cluster of every entry.
pub fn check_tree<V: Volume>(volume: &V, geometry: &Geometry, chains: &Chains) -> Result<(), FatError> {
    let mut walk = Walk { geometry, chains, starts: HashMap::new(), entries: 0 };
    if let Some(root) = geometry.root_cluster {
        walk.claim(root, "/")?;
    }
    let mut pending =
        vec![PendingDirectory { path: String::new(), first_cluster: geometry.root_cluster, depth: 0 }];
    while let Some(directory) = pending.pop() {
        let mut reader = DirectoryReader::default();
        match directory.first_cluster {
            None => {
                let mut region = vec![0u8; geometry.root_dir_len as usize];
                volume.read_at(geometry.root_dir_offset, &mut region)?;
                walk.read_entries(&directory, &region, &mut reader, &mut pending)?;
            }
            Some(first) => {
                let mut cluster_bytes = vec![0u8; geometry.cluster_len() as usize];
                let mut cluster = Some(first);
                while let Some(current) = cluster.filter(|_| !reader.ended) {
                    volume.read_at(geometry.cluster_offset(current), &mut cluster_bytes)?;
                    walk.read_entries(&directory, &cluster_bytes, &mut reader, &mut pending)?;
                    cluster = chains.next(current);
                }
            }
        }
    }
    Ok(())
}

/// The state of one walk: which entry starts at each cluster, and how many entries it saw.
struct Walk<'a> {
    geometry: &'a Geometry,
    chains: &'a Chains,
    starts: HashMap<u32, String>,
    entries: usize,
}

impl Walk<'_> {
    /// Checks each entry in `bytes`, part of `directory`, and queues its subdirectories.
    fn read_entries(
        &mut self,
        directory: &PendingDirectory,
        bytes: &[u8],
        reader: &mut DirectoryReader,
        pending: &mut Vec<PendingDirectory>,
    ) -> Result<(), FatError> {
        for raw in bytes.chunks_exact(DIR_ENTRY_LEN as usize) {
            let Some(name) = reader.next_name(raw) else {
                if reader.ended {
                    return Ok(());
                }
                continue;
            };
            self.entries += 1;
            if self.entries > MAX_WALK_ENTRIES {
                return Err(FatError::TooManyEntries { path: "/".to_string(), limit: MAX_WALK_ENTRIES });
            }

            let path = format!("{}/{name}", directory.path);
            let is_directory = raw[ATTRIBUTES_OFFSET] & ATTRIBUTE_DIRECTORY != 0;
            let first_cluster = self.first_cluster(raw);
            if first_cluster == 0 {
                if is_directory {
                    return Err(corrupt(format!(
                        "directory {path} has first cluster 0, which only `..` of a directory in the root may have"
                    )));
                }
                continue;
            }
            self.claim(first_cluster, &path)?;
            if is_directory {
                if directory.depth + 1 >= MAX_DEPTH {
                    return Err(corrupt(format!("{path} is more than {MAX_DEPTH} directories deep")));
                }
                pending.push(PendingDirectory {
                    path,
                    first_cluster: Some(first_cluster),
                    depth: directory.depth + 1,
                });
            }
        }
        Ok(())
    }

    /// Returns the first cluster of a short entry. As in `fatfs` 0.3, the high half counts only
    /// on FAT32, because FAT12 and FAT16 reserve those bytes.
    fn first_cluster(&self, raw: &[u8]) -> u32 {
        let low =
            u32::from(u16::from_le_bytes([raw[FIRST_CLUSTER_LOW_OFFSET], raw[FIRST_CLUSTER_LOW_OFFSET + 1]]));
        if self.geometry.fat_type != FatType::Fat32 {
            return low;
        }
        let high = u32::from(u16::from_le_bytes([
            raw[FIRST_CLUSTER_HIGH_OFFSET],
            raw[FIRST_CLUSTER_HIGH_OFFSET + 1],
        ]));
        (high << 16) | low
    }

    /// Records that the entry at `path` starts at `cluster`, after checking that the cluster
    /// lies inside the volume, is allocated, and starts no other entry or lies inside its chain.
    fn claim(&mut self, cluster: u32, path: &str) -> Result<(), FatError> {
        let last = self.geometry.cluster_count + 1;
        if cluster < 2 || cluster > last {
            return Err(corrupt(format!("{path} starts at cluster {cluster}, outside clusters 2 to {last}")));
        }
        if self.chains.is_unused(cluster) {
            return Err(corrupt(format!(
                "{path} starts at cluster {cluster}, which the FAT marks free or bad"
            )));
        }
        if self.chains.is_linked_from(cluster) {
            return Err(corrupt(format!(
                "{path} starts at cluster {cluster}, inside the cluster chain of another entry"
            )));
        }
        if let Some(other) = self.starts.get(&cluster) {
            return Err(corrupt(format!(
                "{path} starts at cluster {cluster}, the first cluster of {other} too"
            )));
        }
        self.starts.insert(cluster, path.to_string());
        Ok(())
    }
}

fn corrupt(detail: String) -> FatError {
    FatError::Corrupt { structure: "directory tree", detail }
}

/// Reads the entries of one directory in order and pairs each short entry with the long name
/// stored before it.
#[derive(Default)]
struct DirectoryReader {
    /// UCS-2 characters of the long name read so far, in order.
    long_name: Vec<u16>,
    /// Checksum of the short name that the long-name entries carry.
    long_name_checksum: Option<u8>,
    /// Whether the end-of-directory entry has been read.
    ended: bool,
}

impl DirectoryReader {
    /// Returns the name of the file or directory that the 32-byte entry `raw` describes, or
    /// `None` for long-name, deleted, volume label, `.` and `..` entries and after the end.
    fn next_name(&mut self, raw: &[u8]) -> Option<String> {
        if self.ended || raw[0] == END_OF_DIRECTORY {
            self.ended = true;
            return None;
        }
        if raw[0] == DELETED {
            self.forget_long_name();
            return None;
        }
        let attributes = raw[ATTRIBUTES_OFFSET];
        if attributes & 0x3F == ATTRIBUTE_LONG_NAME {
            self.add_long_name_part(raw);
            return None;
        }
        let long_name = self.take_long_name(&raw[..11]);
        if attributes & ATTRIBUTE_VOLUME_ID != 0
            || raw[..11] == *b".          "
            || raw[..11] == *b"..         "
        {
            return None;
        }
        Some(long_name.unwrap_or_else(|| short_name(raw)))
    }

    /// Prepends the characters of a long-name entry; they are stored last part first.
    fn add_long_name_part(&mut self, raw: &[u8]) {
        if raw[0] & LAST_LONG_ENTRY != 0 {
            self.long_name.clear();
            self.long_name_checksum = Some(raw[LONG_NAME_CHECKSUM_OFFSET]);
        }
        let mut part = Vec::with_capacity(13);
        for (offset, count) in LONG_NAME_RUNS {
            for index in 0..count {
                let at = offset + 2 * index;
                part.push(u16::from_le_bytes([raw[at], raw[at + 1]]));
            }
        }
        part.extend_from_slice(&self.long_name);
        self.long_name = part;
    }

    /// Returns the long name read before the short name `short`, when its checksum matches.
    fn take_long_name(&mut self, short: &[u8]) -> Option<String> {
        let checksum = self.long_name_checksum.take();
        let units = std::mem::take(&mut self.long_name);
        if units.is_empty() || checksum != Some(short_name_checksum(short)) {
            return None;
        }
        let end = units.iter().position(|&unit| unit == 0).unwrap_or(units.len());
        Some(String::from_utf16_lossy(&units[..end]))
    }

    fn forget_long_name(&mut self) {
        self.long_name.clear();
        self.long_name_checksum = None;
    }
}

/// Computes the checksum of an 11-byte short name that its long-name entries carry.
fn short_name_checksum(short: &[u8]) -> u8 {
    short.iter().fold(0u8, |sum, &byte| sum.rotate_right(1).wrapping_add(byte))
}

/// Formats the 8.3 name of a short entry as `BASE.EXT`, in lower case where its case flags
/// mark it so. Bytes outside ASCII show as the Latin-1 character of the same value.
fn short_name(raw: &[u8]) -> String {
    let flags = raw[CASE_FLAGS_OFFSET];
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base[0] == KANJI_E5 {
        base[0] = DELETED;
    }
    let text = |bytes: &[u8], lower: bool| -> String {
        let trimmed = bytes.iter().rposition(|&byte| byte != b' ').map_or(&bytes[..0], |end| &bytes[..=end]);
        let text: String = trimmed.iter().map(|&byte| char::from(byte)).collect();
        if lower { text.to_ascii_lowercase() } else { text }
    };
    let base = text(&base, flags & LOWER_CASE_BASE != 0);
    let extension = text(&raw[8..11], flags & LOWER_CASE_EXTENSION != 0);
    if extension.is_empty() { base } else { format!("{base}.{extension}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_name_follows_case_flags() {
        let mut raw = [0u8; 32];
        raw[..11].copy_from_slice(b"UBOOT   ENV");
        raw[CASE_FLAGS_OFFSET] = LOWER_CASE_BASE | LOWER_CASE_EXTENSION;

        assert_eq!(short_name(&raw), "uboot.env");
    }

    #[test]
    fn short_name_checksum_matches_the_specification() {
        assert_eq!(short_name_checksum(b"README  TXT"), 0x73);
    }
}
