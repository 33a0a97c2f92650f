//! A check of the file allocation table before `fatfs` follows its chains. `fatfs` walks a chain
//! until it ends and trusts every link, so a cluster linked to itself would make it loop forever
//! and a link past the last cluster would make it read outside the data region. Entry values
//! follow "FAT: General Overview of On-Disk Format": 0 is free, the top values are "bad
//! cluster" and "end of chain", anything else links to the next cluster.

use super::boot_sector::{FatType, Geometry};
use super::error::FatError;

/// The state of one cluster as its FAT entry records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Free,
    Bad,
    EndOfChain,
    Next(u32),
}

/// Decodes the entry of `cluster` from the bytes of a whole FAT.
fn entry(fat: &[u8], fat_type: FatType, cluster: u32) -> Option<Entry> {
    let index = cluster as usize;
    let (value, bad, end) = match fat_type {
        FatType::Fat12 => {
            // Two entries share three bytes: the even one takes the low 12 bits of the pair.
            let offset = index + index / 2;
            let pair = u16::from_le_bytes([*fat.get(offset)?, *fat.get(offset + 1)?]);
            let value = if index.is_multiple_of(2) { pair & 0x0FFF } else { pair >> 4 };
            (u32::from(value), 0xFF7, 0xFF8)
        }
        FatType::Fat16 => {
            let offset = index * 2;
            (u32::from(u16::from_le_bytes([*fat.get(offset)?, *fat.get(offset + 1)?])), 0xFFF7, 0xFFF8)
        }
        FatType::Fat32 => {
            let offset = index * 4;
            let bytes =
                [*fat.get(offset)?, *fat.get(offset + 1)?, *fat.get(offset + 2)?, *fat.get(offset + 3)?];
            // The top four bits are reserved and ignored.
            (u32::from_le_bytes(bytes) & 0x0FFF_FFFF, 0x0FFF_FFF7, 0x0FFF_FFF8)
        }
    };
    Some(match value {
        0 => Entry::Free,
        value if value == bad => Entry::Bad,
        value if value >= end => Entry::EndOfChain,
        value => Entry::Next(value),
    })
}

fn corrupt(detail: String) -> FatError {
    FatError::Corrupt { structure: "file allocation table", detail }
}

/// The links of a FAT whose chains [`check_chains`] found to end and to share no cluster.
#[derive(Debug)]
pub struct Chains {
    /// The cluster each cluster links to, 0 where its entry is free, bad or ends a chain.
    next: Vec<u32>,
    /// Whether another cluster links to this one, so that it lies inside a chain, not at its start.
    linked_from: Vec<bool>,
    /// Whether the FAT entry of this cluster is free or marks it bad.
    unused: Vec<bool>,
}

impl Chains {
    /// Returns the cluster after `cluster` in its chain, or `None` at the end of the chain.
    pub fn next(&self, cluster: u32) -> Option<u32> {
        self.next.get(cluster as usize).copied().filter(|&next| next != 0)
    }

    /// Returns whether another cluster links to `cluster`, which then cannot start a chain of its own.
    pub fn is_linked_from(&self, cluster: u32) -> bool {
        self.linked_from.get(cluster as usize).copied().unwrap_or(false)
    }

    /// Returns whether the FAT marks `cluster` free or bad, so that no file may start there.
    pub fn is_unused(&self, cluster: u32) -> bool {
        self.unused.get(cluster as usize).copied().unwrap_or(true)
    }
}

/// Checks that every chain in `fat` (the bytes of the active FAT) ends: each link points to an
/// allocated cluster inside the volume, no cluster is linked from two others, and no chain
/// returns to itself. Returns the links for the check of the directory tree.
pub fn check_chains(fat: &[u8], geometry: &Geometry) -> Result<Chains, FatError> {
    let first = 2u32;
    let last = geometry.cluster_count + 1;
    let slots = geometry.cluster_count as usize + 2;
    // With the three flag vectors this takes 7 bytes per cluster, 7 MiB for a million clusters.
    let mut next = vec![0u32; slots];
    let mut linked_from = vec![false; slots];
    let mut unused = vec![true; slots];

    for cluster in first..=last {
        let Some(value) = entry(fat, geometry.fat_type, cluster) else {
            return Err(corrupt(format!("the FAT ends before the entry of cluster {cluster}")));
        };
        unused[cluster as usize] = matches!(value, Entry::Free | Entry::Bad);
        let Entry::Next(target) = value else { continue };
        if target < first || target > last {
            return Err(corrupt(format!(
                "cluster {cluster} links to {target}, outside clusters {first} to {last}"
            )));
        }
        if linked_from[target as usize] {
            return Err(corrupt(format!("cluster {target} is linked from two chains")));
        }
        linked_from[target as usize] = true;
        next[cluster as usize] = target;
    }

    // Every cluster has at most one predecessor now, so a walk from a cluster nothing links to
    // can never enter a loop. An allocated cluster that no such walk reaches lies on a loop.
    let mut reached = vec![false; slots];
    for head in first..=last {
        if linked_from[head as usize] || reached[head as usize] {
            continue;
        }
        let mut cluster = head;
        loop {
            reached[cluster as usize] = true;
            match next[cluster as usize] {
                0 => break,
                target => cluster = target,
            }
        }
    }
    for cluster in first..=last {
        if reached[cluster as usize] {
            continue;
        }
        let target = next[cluster as usize];
        if target != 0 {
            return Err(corrupt(format!("the chain through clusters {cluster} and {target} loops")));
        }
    }
    for cluster in first..=last {
        let target = next[cluster as usize];
        if target != 0 && matches!(entry(fat, geometry.fat_type, target), Some(Entry::Free | Entry::Bad)) {
            return Err(corrupt(format!("cluster {cluster} links to free or bad cluster {target}")));
        }
    }
    Ok(Chains { next, linked_from, unused })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(fat_type: FatType, cluster_count: u32) -> Geometry {
        Geometry {
            fat_type,
            bytes_per_sector: 512,
            sectors_per_cluster: 1,
            active_fat_offset: 512,
            fat_len: 512,
            cluster_count,
            root_cluster: None,
            root_dir_offset: 1024,
            root_dir_len: 512,
            data_offset: 1536,
        }
    }

    /// A FAT16 table with the given entries after the two reserved ones.
    fn fat16(entries: &[u16]) -> Vec<u8> {
        let mut fat = vec![0xF8, 0xFF, 0xFF, 0xFF];
        for entry in entries {
            fat.extend_from_slice(&entry.to_le_bytes());
        }
        fat
    }

    #[test]
    fn chains_that_end_pass() {
        let fat = fat16(&[3, 0xFFFF, 0, 0xFFF7, 7, 0xFFFF]);

        assert!(check_chains(&fat, &geometry(FatType::Fat16, 6)).is_ok());
    }

    #[test]
    fn loop_is_rejected() {
        let fat = fat16(&[3, 4, 2]);

        let error = check_chains(&fat, &geometry(FatType::Fat16, 3)).unwrap_err();

        assert!(error.to_string().contains("loops"), "{error}");
    }

    #[test]
    fn cluster_linked_to_itself_is_rejected() {
        let fat = fat16(&[2]);

        assert!(check_chains(&fat, &geometry(FatType::Fat16, 1)).is_err());
    }

    #[test]
    fn cross_link_and_outside_link_are_rejected() {
        let cross = fat16(&[4, 4, 0xFFFF]);
        let outside = fat16(&[9, 0xFFFF]);
        let into_free = fat16(&[3, 0]);

        assert!(
            check_chains(&cross, &geometry(FatType::Fat16, 3))
                .unwrap_err()
                .to_string()
                .contains("two chains")
        );
        assert!(
            check_chains(&outside, &geometry(FatType::Fat16, 2)).unwrap_err().to_string().contains("outside")
        );
        assert!(
            check_chains(&into_free, &geometry(FatType::Fat16, 2)).unwrap_err().to_string().contains("free")
        );
    }

    #[test]
    fn fat12_entries_share_bytes() {
        // Cluster 2 links to 3 and cluster 3 ends the chain: entries 0x003 and 0xFFF.
        let fat = vec![0xF8, 0xFF, 0xFF, 0x03, 0xF0, 0xFF];

        assert_eq!(entry(&fat, FatType::Fat12, 2), Some(Entry::Next(3)));
        assert_eq!(entry(&fat, FatType::Fat12, 3), Some(Entry::EndOfChain));
        assert!(check_chains(&fat, &geometry(FatType::Fat12, 2)).is_ok());
    }
}
