//! Extended attributes (`ext_attr`): the entries an inode keeps after its extra fields, and the
//! one extended attribute block that `i_file_acl` points to, which several inodes may share.
//!
//! Both places hold a table of entries (name index, name, value offset and size, hash) that ends
//! with four zero bytes, and the values packed from the end of the area towards the table, each
//! padded to 4 bytes. In the inode the table follows a 4-byte magic, value offsets count from the
//! first entry and hashes are 0. In a block the table follows a 32-byte header (magic, reference
//! count, block count, hash of the entries, checksum) and value offsets count from the start of
//! the block. Block entries carry their hashes and are sorted by name index, name length and name.
//! The layout follows the kernel's ext4 disk-layout document ("Extended Attributes") and what
//! e2fsck 1.47 checks in pass 1.
//!
//! A block with a reference count above 1 belongs to several inodes: changing the attributes of
//! one of them copies the block, and freeing one of them only lowers the count.

use super::Ext;
use super::alloc::AllocPlan;
use super::block_group::BlockGroupIndex;
use super::bytes::{read_u8, read_u16le, read_u32le, write_u8, write_u16le, write_u32le, write_u64le};
use super::checksum::crc32c;
use super::error::ExtError;
use super::features;
use super::inode::{FLAG_EA_INODE, FLAG_INLINE_DATA, Inode, InodeIndex};
use super::write::Writes;
use crate::image::volume::{Volume, VolumeMut};

/// Magic of the in-inode table and of attribute blocks.
const XATTR_MAGIC: u32 = 0xEA02_0000;

const H_MAGIC: usize = 0x0;
const H_REFCOUNT: usize = 0x4;
const H_BLOCKS: usize = 0x8;
const H_HASH: usize = 0xC;
const H_CHECKSUM: usize = 0x10;
/// Size of the header of an attribute block.
const BLOCK_HEADER_SIZE: usize = 0x20;
/// Size of the magic that starts the attributes in an inode.
const IBODY_HEADER_SIZE: usize = 4;

const E_NAME_LEN: usize = 0x0;
const E_NAME_INDEX: usize = 0x1;
const E_VALUE_OFFS: usize = 0x2;
const E_VALUE_INUM: usize = 0x4;
const E_VALUE_SIZE: usize = 0x8;
const E_HASH: usize = 0xC;
const E_NAME: usize = 0x10;
/// Four zero bytes end the entry table.
const END_MARKER_SIZE: usize = 4;
/// Entries and values start on 4-byte boundaries.
const ALIGNMENT: usize = 4;

const NAME_HASH_SHIFT: u32 = 5;
const VALUE_HASH_SHIFT: u32 = 16;
const BLOCK_HASH_SHIFT: u32 = 16;

/// `compat` feature flag: the filesystem may hold extended attributes.
const COMPAT_EXT_ATTR: u32 = 0x8;
/// `incompat` feature flag: large attribute values may live in inodes of their own.
const INCOMPAT_EA_INODE: u32 = 0x400;

const INDEX_USER: u8 = 1;
const INDEX_TRUSTED: u8 = 4;
const INDEX_SECURITY: u8 = 6;

/// Name indexes and the prefixes they stand for, most specific first, so that
/// `system.posix_acl_access` is not taken for a `system.` name.
const PREFIXES: [(u8, &str); 8] = [
    (3, "system.posix_acl_default"),
    (2, "system.posix_acl_access"),
    (8, "system.richacl"),
    (INDEX_SECURITY, "security."),
    (INDEX_TRUSTED, "trusted."),
    (7, "system."),
    (INDEX_USER, "user."),
    (10, "gnu."),
];

/// Name indexes whose attributes [`Ext::set_xattr`] and [`Ext::remove_xattr`] change. Values of
/// `system.` names have formats of their own (the kernel's ACL encoding, inline data).
const WRITABLE_INDEXES: [u8; 3] = [INDEX_USER, INDEX_TRUSTED, INDEX_SECURITY];

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Xattr {
    /// `e_name_index`: the prefix of the name.
    pub index: u8,
    /// The name without its prefix.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Xattr {
    /// Splits `full_name` into name index and the rest, accepting only the prefixes of
    /// [`WRITABLE_INDEXES`] and names the kernel would store.
    fn parse_writable_name(full_name: &str) -> Result<(u8, Vec<u8>), ExtError> {
        let invalid = |reason| ExtError::InvalidXattrName(full_name.to_string(), reason);
        let Some((index, rest)) =
            PREFIXES.iter().find_map(|&(index, prefix)| Some((index, full_name.strip_prefix(prefix)?)))
        else {
            return Err(invalid("the name must start with user., trusted. or security."));
        };
        if !WRITABLE_INDEXES.contains(&index) {
            return Err(invalid("only user., trusted. and security. attributes can be written"));
        }
        if rest.is_empty() {
            return Err(invalid("the name is empty after its prefix"));
        }
        if rest.contains('\0') {
            return Err(invalid("the name contains a NUL byte"));
        }
        if rest.len() > usize::from(u8::MAX) {
            return Err(invalid("the name after its prefix is longer than 255 bytes"));
        }
        Ok((index, rest.as_bytes().to_vec()))
    }

    /// Returns the name with its prefix, as `getfattr` and debugfs print it. A name index without
    /// a known prefix adds nothing, as in debugfs.
    pub fn full_name(&self) -> String {
        let prefix = PREFIXES.iter().find(|(index, _)| *index == self.index).map_or("", |(_, prefix)| prefix);
        format!("{prefix}{}", String::from_utf8_lossy(&self.name))
    }

    fn is_named(&self, index: u8, name: &[u8]) -> bool {
        self.index == index && self.name == name
    }

    /// Bytes of the entry in the table: the fixed fields and the name, padded.
    fn entry_size(&self) -> usize {
        align(E_NAME + self.name.len())
    }

    /// Bytes the value takes, padded.
    fn value_size(&self) -> usize {
        align(self.value.len())
    }

    fn footprint(&self) -> usize {
        self.entry_size() + self.value_size()
    }

    /// Returns the key that orders entries in a block: name index, name length, name.
    fn sort_key(&self) -> (u8, usize, &[u8]) {
        (self.index, self.name.len(), &self.name)
    }
}

/// Rounds `size` up to the 4-byte alignment of entries and values.
fn align(size: usize) -> usize {
    size.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Computes `e_hash` of an entry from its name and its value with the value's padding. The
/// signed variant treats name bytes as `signed char`, as some older kernels did, and e2fsck
/// accepts either.
fn entry_hash(name: &[u8], padded_value: &[u8], signed: bool) -> u32 {
    let mut hash = 0u32;
    for &byte in name {
        let byte = if signed { byte as i8 as u32 } else { u32::from(byte) };
        hash = hash.rotate_left(NAME_HASH_SHIFT) ^ byte;
    }
    for chunk in padded_value.chunks(ALIGNMENT) {
        let mut word = [0u8; ALIGNMENT];
        word.get_mut(..chunk.len()).unwrap_or_default().copy_from_slice(chunk);
        hash = hash.rotate_left(VALUE_HASH_SHIFT) ^ u32::from_le_bytes(word);
    }
    hash
}

/// Computes `h_hash` of a block from its entries' hashes. An entry without a hash makes it 0.
fn block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash = 0u32;
    for &entry in entry_hashes {
        if entry == 0 {
            return 0;
        }
        hash = hash.rotate_left(BLOCK_HASH_SHIFT) ^ entry;
    }
    hash
}

/// CRC32C of the block number and the block with the checksum field zeroed.
fn block_checksum(seed: u32, block: u64, contents: &[u8]) -> u32 {
    let mut copy = contents.to_vec();
    write_u32le(&mut copy, H_CHECKSUM, 0);
    let mut number = [0u8; 8];
    write_u64le(&mut number, 0, block);
    crc32c(crc32c(seed, &number), &copy)
}

/// Kind of entry table, which decides where entries start, where value offsets count from and
/// whether entries carry hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    /// After the magic in the inode: offsets count from the first entry, hashes may be 0.
    Inode,
    /// In an attribute block: offsets count from the block start, every entry has its hash.
    Block,
}

impl Table {
    /// Offset of the first entry in the area the value offsets count from.
    fn first_entry(self) -> usize {
        match self {
            Table::Inode => 0,
            Table::Block => BLOCK_HEADER_SIZE,
        }
    }
}

/// Parses the entry table of `area` (the bytes value offsets count from) and checks it as e2fsck
/// does: entries and values inside the area, values after the end marker, hashes that match.
fn parse_entries(
    area: &[u8],
    table: Table,
    ea_inode: bool,
    structure: &dyn Fn() -> String,
) -> Result<Vec<Xattr>, ExtError> {
    let corrupt = |detail: String| ExtError::corrupt(structure(), detail);

    let mut raw = Vec::new();
    let mut position = table.first_entry();
    loop {
        if position.checked_add(END_MARKER_SIZE).is_none_or(|end| end > area.len()) {
            return Err(corrupt(format!("entry table runs past the end of the area at byte {position}")));
        }
        if read_u32le(area, position) == 0 {
            break;
        }
        let name_len = usize::from(read_u8(area, position + E_NAME_LEN));
        let entry_size = align(E_NAME + name_len);
        if position + entry_size + END_MARKER_SIZE > area.len() {
            return Err(corrupt(format!(
                "entry at byte {position} with a {name_len}-byte name runs past the end"
            )));
        }
        let index = read_u8(area, position + E_NAME_INDEX);
        if table == Table::Block && index == 0 {
            return Err(corrupt(format!("entry at byte {position} has name index 0")));
        }
        if read_u32le(area, position + E_VALUE_INUM) != 0 {
            if ea_inode {
                return Err(ExtError::unsupported(
                    "ea_inode",
                    format!("{}: values kept in separate inodes are not read", structure()),
                ));
            }
            return Err(corrupt(format!(
                "entry at byte {position} keeps its value in an inode without the ea_inode feature"
            )));
        }
        raw.push(RawEntry {
            position,
            index,
            name: area.get(position + E_NAME..position + E_NAME + name_len).unwrap_or_default().to_vec(),
            value_offset: usize::from(read_u16le(area, position + E_VALUE_OFFS)),
            value_size: read_u32le(area, position + E_VALUE_SIZE) as usize,
            hash: read_u32le(area, position + E_HASH),
        });
        position += entry_size;
    }
    let values_start = position + END_MARKER_SIZE;

    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let padded = if entry.value_size == 0 {
            &[][..]
        } else {
            let end = entry.value_offset.checked_add(align(entry.value_size));
            match end {
                Some(end) if entry.value_offset >= values_start && end <= area.len() => {
                    area.get(entry.value_offset..end).unwrap_or_default()
                }
                _ => {
                    return Err(corrupt(format!(
                        "value of entry at byte {} ({} bytes at offset {}) lies outside bytes {values_start}-{}",
                        entry.position,
                        entry.value_size,
                        entry.value_offset,
                        area.len()
                    )));
                }
            }
        };
        let hash_checked = table == Table::Block || entry.hash != 0;
        if hash_checked
            && entry.hash != entry_hash(&entry.name, padded, false)
            && entry.hash != entry_hash(&entry.name, padded, true)
        {
            return Err(corrupt(format!(
                "hash {:#010x} of entry at byte {} does not match its name and value",
                entry.hash, entry.position
            )));
        }
        let value = padded.get(..entry.value_size).unwrap_or_default().to_vec();
        entries.push(Xattr { index: entry.index, name: entry.name, value });
    }
    Ok(entries)
}

/// One entry as found in a table, before its value is checked.
struct RawEntry {
    position: usize,
    index: u8,
    name: Vec<u8>,
    value_offset: usize,
    value_size: usize,
    hash: u32,
}

/// Encodes `entries` into a zeroed area of `size` bytes, values packed from the end. The caller
/// has checked that they fit.
fn encode_entries(entries: &[Xattr], table: Table, size: usize) -> (Vec<u8>, Vec<u32>) {
    let mut area = vec![0u8; size];
    let mut hashes = Vec::with_capacity(entries.len());
    let mut position = table.first_entry();
    let mut values_end = size;
    for entry in entries {
        let value_offset = if entry.value.is_empty() {
            0
        } else {
            values_end = values_end.saturating_sub(entry.value_size());
            if let Some(target) = area.get_mut(values_end..values_end + entry.value.len()) {
                target.copy_from_slice(&entry.value);
            }
            values_end
        };
        let hash = match table {
            Table::Inode => 0,
            Table::Block => entry_hash(
                &entry.name,
                area.get(value_offset..value_offset + entry.value_size()).unwrap_or_default(),
                false,
            ),
        };
        hashes.push(hash);

        write_u8(&mut area, position + E_NAME_LEN, entry.name.len() as u8);
        write_u8(&mut area, position + E_NAME_INDEX, entry.index);
        write_u16le(&mut area, position + E_VALUE_OFFS, value_offset as u16);
        write_u32le(&mut area, position + E_VALUE_SIZE, entry.value.len() as u32);
        write_u32le(&mut area, position + E_HASH, hash);
        if let Some(target) = area.get_mut(position + E_NAME..position + E_NAME + entry.name.len()) {
            target.copy_from_slice(&entry.name);
        }
        position += entry.entry_size();
    }
    (area, hashes)
}

/// Total bytes `entries` take in a table.
fn footprint(entries: &[Xattr]) -> usize {
    entries.iter().map(Xattr::footprint).sum()
}

/// Returns the area after the inode's extra fields where it can keep attributes, or `None` when
/// it has none. The kernel and e2fsprogs ignore this area while `i_extra_isize` is 0.
fn ibody_area(inode: &Inode) -> Option<&[u8]> {
    let area = inode.after_extra_fields();
    (inode.extra_isize() >= 4 && area.len() > IBODY_HEADER_SIZE).then_some(area)
}

/// Bytes the inode has for entries and values, besides its magic and the end marker.
fn ibody_room(inode: &Inode) -> usize {
    ibody_area(inode).map_or(0, |area| area.len().saturating_sub(IBODY_HEADER_SIZE + END_MARKER_SIZE))
}

/// An attribute block as read.
#[derive(Clone, Debug)]
struct XattrBlock {
    number: u64,
    refcount: u32,
    entries: Vec<Xattr>,
}

/// The extended attributes of one inode: where they are now and where they go.
#[derive(Clone, Debug)]
pub(crate) struct InodeXattrs {
    in_inode: Vec<Xattr>,
    in_block: Vec<Xattr>,
    /// The attribute block the inode points to now.
    old_block: Option<XattrBlock>,
}

impl InodeXattrs {
    /// Lists every attribute, those in the inode first.
    fn all(&self) -> impl Iterator<Item = &Xattr> {
        self.in_inode.iter().chain(&self.in_block)
    }

    fn find(&self, index: u8, name: &[u8]) -> Option<&Xattr> {
        self.all().find(|entry| entry.is_named(index, name))
    }

    /// Removes the attribute named `index` and `name`; returns whether it existed.
    fn remove(&mut self, index: u8, name: &[u8]) -> bool {
        let before = self.in_inode.len() + self.in_block.len();
        self.in_inode.retain(|entry| !entry.is_named(index, name));
        self.in_block.retain(|entry| !entry.is_named(index, name));
        before != self.in_inode.len() + self.in_block.len()
    }

    /// Adds `entry`, replacing an attribute of the same name: into the inode when it fits there,
    /// else into the block. The other attributes stay where they are, so that a shared block is
    /// only copied when its own contents change.
    fn set(&mut self, entry: Xattr, ibody_room: usize) {
        self.remove(entry.index, &entry.name);
        let target = if footprint(&self.in_inode) + entry.footprint() <= ibody_room {
            &mut self.in_inode
        } else {
            &mut self.in_block
        };
        target.push(entry);
        target.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }
}

/// The outcome of dropping one reference to an extended attribute block.
pub(crate) enum XattrRelease {
    /// The block has no users left and is freed.
    Free(u64),
    /// Other inodes still use the block: its new contents.
    Rewrite(u64, Vec<u8>),
}

impl<V: Volume> Ext<V> {
    /// Reads the extended attributes of inode `ino` as (name with prefix, value): those kept in
    /// the inode first, then those of its attribute block. Values are returned as stored, so
    /// `system.posix_acl_*` values are in the kernel's on-disk ACL format. Name bytes that are not
    /// UTF-8 become U+FFFD.
    pub fn xattrs(&self, ino: InodeIndex) -> Result<Vec<(String, Vec<u8>)>, ExtError> {
        let inode = self.read_inode(ino)?;
        let xattrs = self.read_xattrs(&inode)?;
        Ok(xattrs.all().map(|entry| (entry.full_name(), entry.value.clone())).collect())
    }

    /// Reads and checks the attributes of `inode`, in the inode and in its block.
    pub(crate) fn read_xattrs(&self, inode: &Inode) -> Result<InodeXattrs, ExtError> {
        let ea_inode = self.sb.has_incompat(INCOMPAT_EA_INODE);
        let in_inode = match ibody_area(inode) {
            Some(area) if read_u32le(area, 0) == XATTR_MAGIC => {
                let entries = area.get(IBODY_HEADER_SIZE..).unwrap_or_default();
                let structure = || format!("extended attributes in inode {}", inode.index);
                parse_entries(entries, Table::Inode, ea_inode, &structure)?
            }
            _ => Vec::new(),
        };

        let block = inode.file_acl(&self.sb);
        let old_block = if block == 0 {
            None
        } else {
            let (contents, refcount) = self.read_xattr_block(inode.index, block)?;
            let structure = || format!("extended attribute block {block}");
            let entries = parse_entries(&contents, Table::Block, ea_inode, &structure)?;
            Some(XattrBlock { number: block, refcount, entries })
        };
        let in_block = old_block.as_ref().map(|block| block.entries.clone()).unwrap_or_default();
        Ok(InodeXattrs { in_inode, in_block, old_block })
    }

    /// Reads attribute block `block` of inode `owner` and checks its header and checksum; returns
    /// its contents and reference count.
    fn read_xattr_block(&self, owner: InodeIndex, block: u64) -> Result<(Vec<u8>, u32), ExtError> {
        if block < u64::from(self.sb.first_data_block) || block >= self.sb.blocks_count {
            return Err(ExtError::corrupt(
                format!("inode {owner}"),
                format!("extended attribute block {block} is outside the filesystem"),
            ));
        }
        let structure = format!("extended attribute block {block}");
        let contents = self.read_block(block)?;
        let magic = read_u32le(&contents, H_MAGIC);
        if magic != XATTR_MAGIC {
            return Err(ExtError::corrupt(
                structure,
                format!("header magic {magic:#010x} is not {XATTR_MAGIC:#010x}"),
            ));
        }
        let blocks = read_u32le(&contents, H_BLOCKS);
        if blocks != 1 {
            return Err(ExtError::corrupt(structure, format!("header counts {blocks} blocks instead of 1")));
        }
        if self.sb.metadata_csum() {
            let stored = read_u32le(&contents, H_CHECKSUM);
            let computed = block_checksum(self.sb.csum_seed, block, &contents);
            if stored != computed {
                return Err(ExtError::corrupt(
                    structure,
                    format!("checksum {stored:#010x} does not match contents ({computed:#010x})"),
                ));
            }
        }
        let refcount = read_u32le(&contents, H_REFCOUNT);
        if refcount == 0 {
            return Err(ExtError::corrupt(
                structure,
                format!("reference count is 0 while inode {owner} uses it"),
            ));
        }
        Ok((contents, refcount))
    }

    /// Plans dropping one reference of inode `owner` to the extended attribute block `block`.
    pub(crate) fn release_xattr_block(
        &self,
        owner: InodeIndex,
        block: u64,
    ) -> Result<XattrRelease, ExtError> {
        let (mut contents, refcount) = self.read_xattr_block(owner, block)?;
        if refcount == 1 {
            return Ok(XattrRelease::Free(block));
        }
        write_u32le(&mut contents, H_REFCOUNT, refcount - 1);
        self.seal_xattr_block(block, &mut contents);
        Ok(XattrRelease::Rewrite(block, contents))
    }

    /// Stores the checksum of attribute block `block` when the filesystem has `metadata_csum`.
    fn seal_xattr_block(&self, block: u64, contents: &mut [u8]) {
        if self.sb.metadata_csum() {
            let checksum = block_checksum(self.sb.csum_seed, block, contents);
            write_u32le(contents, H_CHECKSUM, checksum);
        }
    }
}

impl<V: VolumeMut> Ext<V> {
    /// Sets the extended attribute `name` (with its `user.`, `trusted.` or `security.` prefix)
    /// of the file at `path` to `value`, replacing any value it had. A symbolic link at the end
    /// of `path` is not followed, so its own attributes change. The inode's change time is left
    /// as it was.
    pub fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), ExtError> {
        let (index, short_name) = Xattr::parse_writable_name(name)?;
        let (ino, dirs) = self.xattr_target(path)?;
        let mut inode = self.read_inode(ino)?;
        check_xattrs_writable(&inode)?;
        let mut xattrs = self.read_xattrs(&inode)?;
        if xattrs.find(index, &short_name).is_some_and(|entry| entry.value == value) {
            return Ok(());
        }

        let room = ibody_room(&inode);
        xattrs.set(Xattr { index, name: short_name, value: value.to_vec() }, room);
        self.write_xattrs(path, &mut inode, &xattrs, &dirs)
    }

    /// Removes the extended attribute `name` (with its `user.`, `trusted.` or `security.` prefix)
    /// of the file at `path`, without following a symbolic link at its end. Fails with
    /// [`ExtError::XattrNotFound`] when the file has no such attribute.
    pub fn remove_xattr(&mut self, path: &str, name: &str) -> Result<(), ExtError> {
        let (index, short_name) = Xattr::parse_writable_name(name)?;
        let (ino, dirs) = self.xattr_target(path)?;
        let mut inode = self.read_inode(ino)?;
        check_xattrs_writable(&inode)?;
        let mut xattrs = self.read_xattrs(&inode)?;
        if !xattrs.remove(index, &short_name) {
            return Err(ExtError::XattrNotFound { path: path.to_string(), name: name.to_string() });
        }
        self.write_xattrs(path, &mut inode, &xattrs, &dirs)
    }

    /// Checks that attributes can be written and finds the inode at `path` and the directories
    /// searched on the way.
    fn xattr_target(&self, path: &str) -> Result<(InodeIndex, Vec<InodeIndex>), ExtError> {
        self.check_writable()?;
        if !self.sb.has_compat(COMPAT_EXT_ATTR) {
            return Err(ExtError::unsupported(
                "ext_attr",
                "the filesystem has no ext_attr feature; add it with `tune2fs -O ext_attr`",
            ));
        }
        let mut dirs = Vec::new();
        let ino = self
            .resolve_recording(path, false, &mut dirs)?
            .ok_or_else(|| ExtError::NotFound(path.to_string()))?;
        Ok((ino, dirs))
    }

    /// Plans and writes the attributes `xattrs` of `inode`: the in-inode table, and the block when
    /// its contents changed.
    fn write_xattrs(
        &mut self,
        path: &str,
        inode: &mut Inode,
        xattrs: &InodeXattrs,
        dirs: &[InodeIndex],
    ) -> Result<(), ExtError> {
        let block_room = (self.sb.block_size as usize).saturating_sub(BLOCK_HEADER_SIZE + END_MARKER_SIZE);
        let places = [
            ("the inode", &xattrs.in_inode, ibody_room(inode)),
            ("the attribute block", &xattrs.in_block, block_room),
        ];
        for (place, entries, available) in places {
            let needed = footprint(entries);
            if needed > available {
                return Err(ExtError::XattrNoSpace { path: path.to_string(), place, needed, available });
            }
        }

        let mut plan = AllocPlan::new(self, self.known_owners(dirs, &[inode.index])?);
        let mut writes = Writes::default();
        encode_ibody(inode, &xattrs.in_inode);
        self.plan_xattr_block(&mut plan, inode, xattrs, &mut writes)?;
        writes.inodes.push(inode.clone());
        self.apply(plan, writes)
    }

    /// Plans the attribute block of `inode` for the entries `xattrs.in_block`. The block is kept
    /// when they did not change, rewritten in place when only this inode uses it and copied when
    /// others share it. A new block is allocated when the inode had none, and the old one is
    /// released when no entry is left for it.
    fn plan_xattr_block(
        &self,
        plan: &mut AllocPlan,
        inode: &mut Inode,
        xattrs: &InodeXattrs,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let old = xattrs.old_block.as_ref();
        if old.is_some_and(|old| old.entries == xattrs.in_block) {
            return Ok(());
        }
        if xattrs.in_block.is_empty() {
            if let Some(old) = old {
                self.plan_drop_reference(plan, inode.index, old.number, writes)?;
                inode.set_file_acl(0);
                let blocks = inode.blocks_in_fs_blocks(&self.sb).saturating_sub(1);
                inode.set_blocks(&self.sb, blocks)?;
            }
            return Ok(());
        }

        let number = match old {
            Some(old) if old.refcount == 1 => old.number,
            _ => {
                if let Some(old) = old {
                    self.plan_drop_reference(plan, inode.index, old.number, writes)?;
                }
                let number = self.allocate_xattr_block(plan, inode.index)?;
                inode.set_file_acl(number);
                if old.is_none() {
                    let blocks = inode.blocks_in_fs_blocks(&self.sb).checked_add(1).ok_or_else(|| {
                        ExtError::corrupt(format!("inode {}", inode.index), "block count overflows")
                    })?;
                    inode.set_blocks(&self.sb, blocks)?;
                }
                number
            }
        };
        writes.blocks.push((number, self.encode_xattr_block(number, &xattrs.in_block)));
        Ok(())
    }

    /// Plans dropping the reference of inode `owner` to attribute block `block`: freeing it or
    /// writing it back with a lower count.
    fn plan_drop_reference(
        &self,
        plan: &mut AllocPlan,
        owner: InodeIndex,
        block: u64,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        match self.release_xattr_block(owner, block)? {
            XattrRelease::Free(block) => plan.release_blocks(self, &[(block, 1)], owner),
            XattrRelease::Rewrite(block, contents) => {
                writes.blocks.push((block, contents));
                Ok(())
            }
        }
    }

    /// Allocates a block for the attributes of `owner` near its inode. Without the `64bit`
    /// feature `i_file_acl` is 32 bits wide.
    fn allocate_xattr_block(&self, plan: &mut AllocPlan, owner: InodeIndex) -> Result<u64, ExtError> {
        let limit = if self.sb.has_incompat(features::INCOMPAT_64BIT) {
            self.sb.blocks_count
        } else {
            self.sb.blocks_count.min(1 << 32)
        };
        let group = BlockGroupIndex(owner.0.saturating_sub(1) / self.sb.inodes_per_group);
        let runs = plan.allocate_blocks(self, group, 1, limit)?;
        runs.first().map(|&(start, _)| start).ok_or(ExtError::NoSpace { what: "blocks", needed: 1, free: 0 })
    }

    /// Builds attribute block `block` holding `entries` with one reference.
    fn encode_xattr_block(&self, block: u64, entries: &[Xattr]) -> Vec<u8> {
        let (mut contents, hashes) = encode_entries(entries, Table::Block, self.sb.block_size as usize);
        write_u32le(&mut contents, H_MAGIC, XATTR_MAGIC);
        write_u32le(&mut contents, H_REFCOUNT, 1);
        write_u32le(&mut contents, H_BLOCKS, 1);
        write_u32le(&mut contents, H_HASH, block_hash(&hashes));
        self.seal_xattr_block(block, &mut contents);
        contents
    }
}

/// Writes `entries` into the area after the inode's extra fields, or clears the area when there
/// are none. The caller placed in the inode only what fits.
fn encode_ibody(inode: &mut Inode, entries: &[Xattr]) {
    if ibody_area(inode).is_none() {
        return;
    }
    let area = inode.after_extra_fields_mut();
    if entries.is_empty() {
        area.fill(0);
        return;
    }
    let table_size = area.len() - IBODY_HEADER_SIZE;
    let (table, _) = encode_entries(entries, Table::Inode, table_size);
    write_u32le(area, 0, XATTR_MAGIC);
    if let Some(target) = area.get_mut(IBODY_HEADER_SIZE..) {
        target.copy_from_slice(&table);
    }
}

/// Rejects inodes whose attributes the write operations must not change: an inode holding a
/// large attribute value, and inline data, whose `system.data` attribute belongs to the file's
/// contents.
fn check_xattrs_writable(inode: &Inode) -> Result<(), ExtError> {
    if inode.has_flag(FLAG_EA_INODE) {
        return Err(ExtError::unsupported(
            "ea_inode",
            format!("inode {} holds an attribute value; its own attributes are not written", inode.index),
        ));
    }
    if inode.has_flag(FLAG_INLINE_DATA) {
        return Err(ExtError::unsupported(
            "inline_data",
            format!("inode {} keeps inline data; its extended attributes are not written yet", inode.index),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8, name: &str, value: &[u8]) -> Xattr {
        Xattr { index, name: name.as_bytes().to_vec(), value: value.to_vec() }
    }

    fn block_structure() -> String {
        "test block".to_string()
    }

    /// Builds a 1 KiB block table of three entries with `encode_entries`.
    fn sample_block() -> (Vec<u8>, Vec<Xattr>) {
        let entries = vec![
            entry(INDEX_USER, "a", b"first"),
            entry(INDEX_USER, "bb", b""),
            entry(INDEX_SECURITY, "selinux", b"system_u:object_r:etc_t:s0\0"),
        ];
        let (area, _) = encode_entries(&entries, Table::Block, 1024);
        (area, entries)
    }

    #[test]
    fn entry_hash_matches_e2fsprogs() {
        // debugfs 1.47 `bd -x` printed this hash for `user.big` set to "0123456789" ten times.
        let value = b"0123456789".repeat(10);
        assert_eq!(entry_hash(b"big", &value, false), 3_095_084_349);
    }

    #[test]
    fn signed_hash_differs_only_for_high_bytes() {
        assert_eq!(entry_hash(b"plain", b"v\0\0\0", true), entry_hash(b"plain", b"v\0\0\0", false));
        assert_ne!(entry_hash(b"caf\xe9", b"", true), entry_hash(b"caf\xe9", b"", false));
    }

    #[test]
    fn block_hash_combines_entry_hashes() {
        assert_eq!(block_hash(&[1]), 1);
        assert_eq!(block_hash(&[1, 2]), 0x1_0002);
        assert_eq!(block_hash(&[1, 0, 2]), 0, "an entry without hash leaves the block without one");
    }

    #[test]
    fn encoded_block_parses_back() {
        let (area, entries) = sample_block();
        assert_eq!(parse_entries(&area, Table::Block, false, &block_structure).unwrap(), entries);
        // Values are packed from the end: the first entry's value takes the last 8 bytes.
        assert_eq!(read_u16le(&area, BLOCK_HEADER_SIZE + E_VALUE_OFFS), 1016);
        assert_eq!(&area[1016..1021], b"first");
    }

    #[test]
    fn inode_table_has_zero_hashes() {
        let entries = vec![entry(INDEX_SECURITY, "selinux", b"label")];
        let (area, hashes) = encode_entries(&entries, Table::Inode, 96);
        assert_eq!(hashes, [0]);
        assert_eq!(read_u32le(&area, E_HASH), 0);
        assert_eq!(parse_entries(&area, Table::Inode, false, &block_structure).unwrap(), entries);
    }

    #[test]
    fn value_inside_entry_table_is_corrupt() {
        let (mut area, _) = sample_block();
        write_u16le(&mut area, BLOCK_HEADER_SIZE + E_VALUE_OFFS, BLOCK_HEADER_SIZE as u16);
        let error = parse_entries(&area, Table::Block, false, &block_structure).unwrap_err();
        assert!(error.to_string().contains("lies outside"), "{error}");
    }

    #[test]
    fn wrong_hash_is_corrupt() {
        let (mut area, _) = sample_block();
        write_u32le(&mut area, BLOCK_HEADER_SIZE + E_HASH, 0x1234);
        let error = parse_entries(&area, Table::Block, false, &block_structure).unwrap_err();
        assert!(error.to_string().contains("hash 0x00001234"), "{error}");
    }

    #[test]
    fn value_in_inode_needs_ea_inode() {
        let (mut area, _) = sample_block();
        write_u32le(&mut area, BLOCK_HEADER_SIZE + E_VALUE_INUM, 15);
        let without = parse_entries(&area, Table::Block, false, &block_structure).unwrap_err();
        assert!(matches!(without, ExtError::Corrupt { .. }), "{without}");
        let with = parse_entries(&area, Table::Block, true, &block_structure).unwrap_err();
        assert!(matches!(with, ExtError::Unsupported { ref feature, .. } if feature == "ea_inode"), "{with}");
    }

    #[test]
    fn table_without_end_marker_is_corrupt() {
        let area = vec![0xFFu8; 256];
        assert!(parse_entries(&area, Table::Block, false, &block_structure).is_err());
        assert!(parse_entries(&area, Table::Inode, false, &block_structure).is_err());
    }

    #[test]
    fn mutated_tables_never_panic() {
        let (original, _) = sample_block();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut area = original.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % 160) as usize;
                area[at] = (state >> 32) as u8;
            }
            let _ = parse_entries(&area, Table::Block, false, &block_structure);
            let _ = parse_entries(&area[..200], Table::Inode, false, &block_structure);
        }
    }

    #[test]
    fn names_split_into_index_and_rest() {
        assert_eq!(
            Xattr::parse_writable_name("security.selinux").unwrap(),
            (INDEX_SECURITY, b"selinux".to_vec())
        );
        assert_eq!(Xattr::parse_writable_name("user.a.b").unwrap(), (INDEX_USER, b"a.b".to_vec()));
        assert_eq!(Xattr::parse_writable_name("trusted.x").unwrap(), (INDEX_TRUSTED, b"x".to_vec()));
        for bad in ["selinux", "user.", "system.posix_acl_access", "system.data", "user.a\0b"] {
            assert!(
                matches!(Xattr::parse_writable_name(bad), Err(ExtError::InvalidXattrName(..))),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(entry(2, "", b"").full_name(), "system.posix_acl_access");
        assert_eq!(entry(9, "c", b"").full_name(), "c", "unknown index: the bare name, as debugfs prints it");
    }

    #[test]
    fn set_fills_the_inode_before_the_block() {
        let shared = entry(INDEX_USER, "large", &[b'x'; 300]);
        let mut xattrs = InodeXattrs {
            in_inode: Vec::new(),
            in_block: vec![shared.clone()],
            old_block: Some(XattrBlock { number: 100, refcount: 2, entries: vec![shared.clone()] }),
        };
        let label = entry(INDEX_SECURITY, "selinux", b"system_u:object_r:etc_t:s0\0");
        xattrs.set(label.clone(), 88);
        assert_eq!(xattrs.in_inode, std::slice::from_ref(&label));
        assert_eq!(xattrs.in_block, std::slice::from_ref(&shared), "the shared block keeps its contents");

        let second = entry(INDEX_USER, "second", &[b'y'; 40]);
        xattrs.set(second.clone(), 88);
        assert_eq!(xattrs.in_block, [shared, second], "no room left in the inode");

        assert!(xattrs.remove(INDEX_SECURITY, b"selinux"));
        assert!(!xattrs.remove(INDEX_SECURITY, b"selinux"));
        assert!(xattrs.in_inode.is_empty());
    }
}
