//! Hashed-index (htree) directories: the name hash functions and the walk from the index root
//! in block 0 down to the leaf block that holds a hash.

use super::Ext;
use super::bytes::{read_u8, read_u16le, read_u32le};
use super::checksum::crc32c;
use super::error::ExtError;
use super::features;
use super::inode::Inode;
use crate::image::volume::Volume;

/// Offsets in the root block, after the fake `.` and `..` entries.
const ROOT_INFO_RESERVED_ZERO: usize = 0x18;
const ROOT_INFO_HASH_VERSION: usize = 0x1C;
pub(crate) const ROOT_INFO_LENGTH: usize = 0x1D;
pub(crate) const ROOT_INFO_INDIRECT_LEVELS: usize = 0x1E;
/// Offset of the count/limit header (and the entries) in the root block.
pub(crate) const ROOT_ENTRIES: usize = 0x20;
/// Offset of the count/limit header in an interior index block, after a fake empty entry.
pub(crate) const NODE_ENTRIES: usize = 0x8;
pub(crate) const COUNT_LIMIT_LIMIT: usize = 0x0;
pub(crate) const COUNT_LIMIT_COUNT: usize = 0x2;
pub(crate) const DX_ENTRY_SIZE: usize = 8;
pub(crate) const DX_ENTRY_HASH: usize = 0x0;
pub(crate) const DX_ENTRY_BLOCK: usize = 0x4;
/// Size of the checksum tail after the last possible index entry.
pub(crate) const DX_TAIL_SIZE: usize = 8;
/// Only the low 28 bits of an index entry's block are the logical block number.
pub(crate) const DX_BLOCK_MASK: u32 = 0x0FFF_FFFF;
pub(crate) const ROOT_INFO_SIZE: u8 = 8;

/// Hash algorithms of `s_def_hash_version` and the root's `hash_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashVersion {
    Legacy { unsigned: bool },
    HalfMd4 { unsigned: bool },
    Tea { unsigned: bool },
}

impl HashVersion {
    /// Decodes a stored hash version. The signed variants (0-2) become unsigned when the
    /// superblock flags directory hashes as unsigned.
    pub fn from_disk(version: u8, unsigned_flag: bool) -> Option<Self> {
        match version {
            0 => Some(HashVersion::Legacy { unsigned: unsigned_flag }),
            1 => Some(HashVersion::HalfMd4 { unsigned: unsigned_flag }),
            2 => Some(HashVersion::Tea { unsigned: unsigned_flag }),
            3 => Some(HashVersion::Legacy { unsigned: true }),
            4 => Some(HashVersion::HalfMd4 { unsigned: true }),
            5 => Some(HashVersion::Tea { unsigned: true }),
            _ => None,
        }
    }
}

/// Computes the 32-bit major hash of `name`, low bit clear, as the kernel does.
pub(crate) fn name_hash(version: HashVersion, name: &[u8], seed: &[u32; 4]) -> u32 {
    let mut state = if seed.iter().any(|&word| word != 0) {
        *seed
    } else {
        [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476]
    };
    let hash = match version {
        HashVersion::Legacy { unsigned } => legacy_hash(name, unsigned),
        HashVersion::HalfMd4 { unsigned } => {
            for (index, chunk) in name.chunks(32).enumerate() {
                let input = pack_name(chunk, name.len() - index * 32, 8, unsigned);
                half_md4_transform(&mut state, &input);
            }
            state[1]
        }
        HashVersion::Tea { unsigned } => {
            for (index, chunk) in name.chunks(16).enumerate() {
                let input = pack_name(chunk, name.len() - index * 16, 4, unsigned);
                tea_transform(&mut state, &input);
            }
            state[0]
        }
    };
    let hash = hash & !1;
    // The kernel keeps the largest 31-bit value for the end-of-directory marker.
    const EOF_HASH: u32 = 0x7FFF_FFFF << 1;
    if hash == EOF_HASH { (0x7FFF_FFFF - 1) << 1 } else { hash }
}

/// Byte of a name as the kernel reads it: sign-extended unless the hash is unsigned.
fn name_byte(byte: u8, unsigned: bool) -> u32 {
    if unsigned { u32::from(byte) } else { i32::from(byte as i8) as u32 }
}

fn legacy_hash(name: &[u8], unsigned: bool) -> u32 {
    let (mut hash0, mut hash1) = (0x12A3_FE2Du32, 0x37AB_E8F9u32);
    for &byte in name {
        let mut hash = hash1.wrapping_add(hash0 ^ name_byte(byte, unsigned).wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7FFF_FFFF);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// Packs up to `words * 4` bytes of `chunk` into words, padding with the remaining length as
/// the kernel's `str2hashbuf` does.
fn pack_name(chunk: &[u8], remaining: usize, words: usize, unsigned: bool) -> Vec<u32> {
    let length = remaining as u32;
    let mut pad = length | length.wrapping_shl(8);
    pad |= pad.wrapping_shl(16);
    let mut packed = Vec::with_capacity(words);
    let mut value = pad;
    let take = remaining.min(words * 4).min(chunk.len());
    for (index, &byte) in chunk.iter().take(take).enumerate() {
        value = name_byte(byte, unsigned).wrapping_add(value << 8);
        if index % 4 == 3 {
            packed.push(value);
            value = pad;
        }
    }
    if packed.len() < words && !take.is_multiple_of(4) {
        packed.push(value);
    }
    packed.resize(words, pad);
    packed
}

fn half_md4_transform(state: &mut [u32; 4], input: &[u32]) {
    let word = |index: usize| input.get(index).copied().unwrap_or(0);
    let (mut a, mut b, mut c, mut d) = (state[0], state[1], state[2], state[3]);
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let round = |func: &dyn Fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, x: u32, shift: u32| {
        a.wrapping_add(func(b, c, d)).wrapping_add(x).rotate_left(shift)
    };

    a = round(&f, a, b, c, d, word(0), 3);
    d = round(&f, d, a, b, c, word(1), 7);
    c = round(&f, c, d, a, b, word(2), 11);
    b = round(&f, b, c, d, a, word(3), 19);
    a = round(&f, a, b, c, d, word(4), 3);
    d = round(&f, d, a, b, c, word(5), 7);
    c = round(&f, c, d, a, b, word(6), 11);
    b = round(&f, b, c, d, a, word(7), 19);

    a = round(&g, a, b, c, d, word(1).wrapping_add(K2), 3);
    d = round(&g, d, a, b, c, word(3).wrapping_add(K2), 5);
    c = round(&g, c, d, a, b, word(5).wrapping_add(K2), 9);
    b = round(&g, b, c, d, a, word(7).wrapping_add(K2), 13);
    a = round(&g, a, b, c, d, word(0).wrapping_add(K2), 3);
    d = round(&g, d, a, b, c, word(2).wrapping_add(K2), 5);
    c = round(&g, c, d, a, b, word(4).wrapping_add(K2), 9);
    b = round(&g, b, c, d, a, word(6).wrapping_add(K2), 13);

    a = round(&h, a, b, c, d, word(3).wrapping_add(K3), 3);
    d = round(&h, d, a, b, c, word(7).wrapping_add(K3), 9);
    c = round(&h, c, d, a, b, word(2).wrapping_add(K3), 11);
    b = round(&h, b, c, d, a, word(6).wrapping_add(K3), 15);
    a = round(&h, a, b, c, d, word(1).wrapping_add(K3), 3);
    d = round(&h, d, a, b, c, word(5).wrapping_add(K3), 9);
    c = round(&h, c, d, a, b, word(0).wrapping_add(K3), 11);
    b = round(&h, b, c, d, a, word(4).wrapping_add(K3), 15);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

fn tea_transform(state: &mut [u32; 4], input: &[u32]) {
    const DELTA: u32 = 0x9E37_79B9;
    let word = |index: usize| input.get(index).copied().unwrap_or(0);
    let (mut b0, mut b1) = (state[0], state[1]);
    let (a, b, c, d) = (word(0), word(1), word(2), word(3));
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0
            .wrapping_add(((b1 << 4).wrapping_add(a)) ^ (b1.wrapping_add(sum)) ^ ((b1 >> 5).wrapping_add(b)));
        b1 = b1
            .wrapping_add(((b0 << 4).wrapping_add(c)) ^ (b0.wrapping_add(sum)) ^ ((b0 >> 5).wrapping_add(d)));
    }
    state[0] = state[0].wrapping_add(b0);
    state[1] = state[1].wrapping_add(b1);
}

/// One index block on the path from the root: its (count, entries) view.
struct IndexNode<'a> {
    entries: &'a [u8],
    count: usize,
}

impl IndexNode<'_> {
    /// Logical blocks of every child.
    fn children(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.count).map(|index| {
            let entry = self.entries.get(index * DX_ENTRY_SIZE..).unwrap_or_default();
            read_u32le(entry, DX_ENTRY_BLOCK) & DX_BLOCK_MASK
        })
    }

    /// Index and logical block of the child whose hash range holds `hash`: the last entry whose
    /// hash is not above it (entry 0 covers everything below entry 1).
    fn child_for(&self, hash: u32) -> (usize, u32) {
        let mut chosen = (0, read_u32le(self.entries, DX_ENTRY_BLOCK));
        for index in 1..self.count {
            let entry = self.entries.get(index * DX_ENTRY_SIZE..).unwrap_or_default();
            if read_u32le(entry, DX_ENTRY_HASH) > hash {
                break;
            }
            chosen = (index, read_u32le(entry, DX_ENTRY_BLOCK));
        }
        (chosen.0, chosen.1 & DX_BLOCK_MASK)
    }
}

/// One index node on the way from the root to a leaf.
#[derive(Clone, Debug)]
pub(crate) struct PathNode {
    /// Logical block of the node in the directory; 0 is the root.
    pub logical: u64,
    pub bytes: Vec<u8>,
    /// Index of the entry the walk followed.
    pub chosen: usize,
}

/// The walk from an htree root to the leaf for one hash.
#[derive(Clone, Debug)]
pub(crate) struct HtreePath {
    pub version: HashVersion,
    pub hash: u32,
    /// `indirect_levels` of the root: 0 when the root points straight at leaves.
    pub levels: u8,
    /// Maximum indirect levels this filesystem allows: 1, or 2 under `large_dir`.
    pub max_levels: u8,
    /// The root first, then one node per indirect level.
    pub nodes: Vec<PathNode>,
    pub leaf: u64,
}

/// True when the leaf that `path` reached may not hold every name of its hash: the next leaf
/// in hash order starts with the same hash, marked by the low bit of its index entry.
pub(crate) fn htree_continues(path: &HtreePath) -> bool {
    for (depth, node) in path.nodes.iter().enumerate().rev() {
        let entries_at = if depth == 0 { ROOT_ENTRIES } else { NODE_ENTRIES };
        let count = usize::from(read_u16le(&node.bytes, entries_at + COUNT_LIMIT_COUNT));
        let next = node.chosen + 1;
        if next < count {
            let next_hash = read_u32le(&node.bytes, entries_at + next * DX_ENTRY_SIZE + DX_ENTRY_HASH);
            return next_hash & 1 == 1 && next_hash & !1 == path.hash;
        }
        // The followed entry is the last of its node: the next leaf hangs off the next entry
        // one level up.
    }
    false
}

impl<V: Volume> Ext<V> {
    /// Walks the index of the htree directory `dir` to the leaf for `name`, checking every
    /// node on the way.
    pub(crate) fn htree_path(&self, dir: &Inode, name: &[u8]) -> Result<HtreePath, ExtError> {
        let structure = format!("inode {} htree root", dir.index);
        let corrupt = |structure: &str, detail: String| ExtError::corrupt(structure, detail);
        let root = self.read_dir_logical_block(dir, 0)?;
        if read_u32le(&root, ROOT_INFO_RESERVED_ZERO) != 0
            || read_u8(&root, ROOT_INFO_LENGTH) != ROOT_INFO_SIZE
        {
            return Err(corrupt(&structure, "root info header is invalid".to_string()));
        }
        let stored_version = read_u8(&root, ROOT_INFO_HASH_VERSION);
        let Some(version) = HashVersion::from_disk(stored_version, self.sb.unsigned_hash) else {
            return Err(ExtError::unsupported(
                format!("directory hash version {stored_version}"),
                "only the legacy, half_md4 and tea hashes are implemented",
            ));
        };
        let levels = read_u8(&root, ROOT_INFO_INDIRECT_LEVELS);
        let max_levels = if self.sb.has_incompat(features::INCOMPAT_LARGEDIR) { 3 } else { 2 };
        if levels >= max_levels {
            return Err(corrupt(&structure, format!("{levels} indirect levels exceed {}", max_levels - 1)));
        }

        let hash = name_hash(version, name, &self.sb.hash_seed);
        let mut node_block = root;
        let mut node_logical = 0u64;
        let mut entries_at = ROOT_ENTRIES;
        let mut node_structure = structure;
        let mut nodes = Vec::new();
        // Logical blocks known to hold index nodes: the root, and every child of a node above
        // the last level. A leaf among them would have its entries written over the index.
        // NOTE: with three levels (large_dir) the index nodes in other branches of the middle
        // level are not read, so a leaf pointer to one of them goes unnoticed.
        let mut index_blocks = vec![0u64];
        for level in 0..=levels {
            let node = self.index_node(dir, &node_block, entries_at, &node_structure)?;
            if level < levels {
                index_blocks.extend(node.children().map(u64::from));
            }
            let (chosen, child) = node.child_for(hash);
            let child = u64::from(child);
            nodes.push(PathNode { logical: node_logical, bytes: node_block.clone(), chosen });
            if level == levels {
                if index_blocks.contains(&child) {
                    let role = if child == 0 { "the index root" } else { "an index block" };
                    return Err(corrupt(
                        &node_structure,
                        format!("the leaf for this name is block {child}, which is {role}"),
                    ));
                }
                return Ok(HtreePath {
                    version,
                    hash,
                    levels,
                    max_levels: max_levels - 1,
                    nodes,
                    leaf: child,
                });
            }
            if child == 0 {
                return Err(corrupt(&node_structure, "an index entry points to the index root".to_string()));
            }
            if nodes.iter().any(|node| node.logical == child) {
                return Err(corrupt(
                    &node_structure,
                    format!("index block {child} appears twice on one path"),
                ));
            }
            node_block = self.read_dir_logical_block(dir, child)?;
            node_logical = child;
            entries_at = NODE_ENTRIES;
            node_structure = format!("inode {} htree index block {child}", dir.index);
        }
        Err(corrupt(&node_structure, "walk ended without reaching a leaf".to_string()))
    }

    /// Checks the count, limit and checksum of an index block and returns its entries.
    fn index_node<'a>(
        &self,
        dir: &Inode,
        block: &'a [u8],
        entries_at: usize,
        structure: &str,
    ) -> Result<IndexNode<'a>, ExtError> {
        let limit = usize::from(read_u16le(block, entries_at + COUNT_LIMIT_LIMIT));
        let count = usize::from(read_u16le(block, entries_at + COUNT_LIMIT_COUNT));
        let tail = if self.sb.metadata_csum() { DX_TAIL_SIZE } else { 0 };
        let expected_limit = (block.len() - entries_at - tail) / DX_ENTRY_SIZE;
        if limit != expected_limit || count == 0 || count > limit {
            return Err(ExtError::corrupt(
                structure,
                format!("count {count} and limit {limit} are invalid (limit should be {expected_limit})"),
            ));
        }
        if self.sb.metadata_csum() {
            let tail_at = entries_at + limit * DX_ENTRY_SIZE;
            let covered = block.get(..entries_at + count * DX_ENTRY_SIZE).unwrap_or_default();
            let crc = crc32c(self.sb.csum_seed, &dir.index.0.to_le_bytes());
            let crc = crc32c(crc, &dir.generation().to_le_bytes());
            let crc = crc32c(crc, covered);
            let crc = crc32c(crc, block.get(tail_at..tail_at + 4).unwrap_or_default());
            let computed = crc32c(crc, &[0; 4]);
            let stored = read_u32le(block, tail_at + 4);
            if stored != computed {
                return Err(ExtError::corrupt(
                    structure,
                    format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
                ));
            }
        }
        let entries = block.get(entries_at..entries_at + count * DX_ENTRY_SIZE).unwrap_or_default();
        Ok(IndexNode { entries, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u32; 4] = [0x2ef687f9, 0x0c43002a, 0x02d28782, 0x0fef7be7];

    #[test]
    fn hashes_have_low_bit_clear() {
        for version in [
            HashVersion::Legacy { unsigned: false },
            HashVersion::HalfMd4 { unsigned: false },
            HashVersion::Tea { unsigned: true },
        ] {
            assert_eq!(name_hash(version, b"mender-store", &SEED) & 1, 0);
        }
    }

    #[test]
    fn signedness_matters_only_for_high_bytes() {
        let signed = HashVersion::HalfMd4 { unsigned: false };
        let unsigned = HashVersion::HalfMd4 { unsigned: true };
        assert_eq!(name_hash(signed, b"ascii", &SEED), name_hash(unsigned, b"ascii", &SEED));
        assert_ne!(
            name_hash(signed, "ünïcode".as_bytes(), &SEED),
            name_hash(unsigned, "ünïcode".as_bytes(), &SEED)
        );
    }

    #[test]
    fn pack_name_pads_with_length() {
        // "abc": one partial word, then padding words of the length byte 3.
        let packed = pack_name(b"abc", 3, 4, true);
        assert_eq!(packed, [0x0361_6263, 0x0303_0303, 0x0303_0303, 0x0303_0303]);
    }
}
