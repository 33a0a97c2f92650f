//! Write operations: creating directories, writing and replacing regular files, removing files.
//!
//! Each operation plans everything first (path checks, directory room, allocations through an
//! [`AllocPlan`]) and writes only when the plan is complete, so that every error except an I/O
//! error leaves the volume untouched.

use std::borrow::Cow;
use std::fs::File;
use std::rc::Rc;
use std::sync::Arc;

use super::alloc::AllocPlan;
use super::block_group::{BlockGroupIndex, group_of_block};
use super::block_map::{build_block_map, indirect_blocks_needed};
use super::cache::CachedBlock;
use super::dir_block::DirBlock;
use super::dir_entry::{DirEntryName, FT_DIR, FT_REG_FILE};
use super::error::ExtError;
use super::extent::{build_tree, empty_root, tree_blocks_needed};
use super::features;
use super::file_map::{BuiltMap, Run, push_run};
use super::inode::{
    FLAG_CASEFOLD, FLAG_EA_INODE, FLAG_ENCRYPT, FLAG_EXTENTS, FLAG_INDEX, FLAG_INLINE_DATA, FLAG_VERITY,
    I_BLOCK_SIZE, Inode, InodeIndex, S_IFDIR, S_IFLNK, S_IFREG,
};
use super::owners::OwnerMap;
use super::path::split_parent;
use super::xattr::XattrRelease;
use super::{Ext, file_map};
use crate::image::volume::{FileRange, VolumeMut};

/// Attributes of a file or directory being created or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewAttrs {
    /// Permission bits including setuid, setgid and sticky; bits above 0o7777 are ignored.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, used for the access, change, modification and creation times.
    pub time: i64,
}

/// Most links a directory counts before `dir_nlink` lets the count stick at 1.
pub(super) const EXT4_LINK_MAX: u16 = 65000;
/// Most links a directory can have without `dir_nlink`, as ext2 and ext3 allow.
pub(super) const EXT2_LINK_MAX: u16 = 32000;
/// Largest file without the `large_file` feature.
pub(super) const NO_LARGE_FILE_MAX: u64 = (1 << 31) - 1;

/// The contents of a regular file being written.
pub(super) enum FileData<'a> {
    Memory(Cow<'a, [u8]>),
    /// Bytes of a host file, copied when the volume's writes are applied.
    File(FileRange),
}

impl FileData<'_> {
    fn len(&self) -> u64 {
        match self {
            FileData::Memory(data) => data.len() as u64,
            FileData::File(range) => range.len,
        }
    }
}

/// Blocks and inodes to write once the plan is complete.
#[derive(Default)]
pub(super) struct Writes {
    pub blocks: Vec<(u64, Vec<u8>)>,
    pub inodes: Vec<Inode>,
    /// Directory blocks among `blocks` in parsed form, cached once written so that the next
    /// operation does not read and check them again.
    pub dir_blocks: Vec<(u64, InodeIndex, u32, Rc<DirBlock>)>,
    /// Whole blocks copied from host files, by first block.
    pub copies: Vec<(u64, FileRange)>,
}

impl Writes {
    /// Queues the write of directory block `block` of directory `dir` at block `physical`.
    pub fn push_dir_block(&mut self, physical: u64, dir: &Inode, block: DirBlock) {
        self.blocks.push((physical, block.bytes.clone()));
        self.dir_blocks.push((physical, dir.index, dir.generation(), Rc::new(block)));
    }
}

/// The new map of a file's data.
pub(super) struct PlannedData {
    pub built: BuiltMap,
    /// Data blocks and map blocks used.
    pub blocks_used: u64,
}

/// Maximum number of entries of a directory whose inodes' blocks join the known owners of a
/// write. A larger directory is not scanned, to keep a write's reads small, so its entries'
/// blocks go unchecked.
const MAX_CHECKED_ENTRIES: usize = 64;

/// The directory that receives a path's last component, and what that name names now.
pub(super) struct Target {
    pub parent: Inode,
    pub name: DirEntryName,
    pub existing: Option<InodeIndex>,
    /// Every directory searched on the way to the parent, the parent included.
    pub dirs: Vec<InodeIndex>,
    /// The inodes of the parent's entries other than `.` and `..`; none are read from a
    /// hashed-index parent.
    pub siblings: Vec<InodeIndex>,
}

impl<V: VolumeMut> Ext<V> {
    /// Rejects, before anything is written, a filesystem this module must not modify: errors
    /// recorded, journal or orphan recovery pending, or a feature writes do not handle.
    pub fn check_writable(&self) -> Result<(), ExtError> {
        self.sb.check_state_writable()?;
        self.sb.features.check_writable()
    }

    /// Creates directory `path` with `attrs`; its parent must exist and the name must not.
    pub fn create_dir(&mut self, path: &str, attrs: &NewAttrs) -> Result<InodeIndex, ExtError> {
        self.check_writable()?;
        let target = self.locate(path)?;
        if target.existing.is_some() {
            return Err(ExtError::AlreadyExists(path.to_string()));
        }
        let mut plan = AllocPlan::new(self, self.known_owners_of(&target)?);
        let Target { mut parent, name, .. } = target;
        let mut writes = Writes::default();

        let ino = plan.allocate_inode(self, self.group_of_inode(parent.index), true)?;
        let mut inode = self.new_inode(ino, S_IFDIR | (attrs.mode & 0o7777), attrs)?;
        inode.set_links_count(2);

        let limit = self.block_limit(&inode);
        let runs = plan.allocate_blocks(self, self.group_of_inode(ino), 1, limit)?;
        let block = runs.first().map(|&(start, _)| start).unwrap_or(0);
        let entries: [(u32, &[u8], u8); 2] = [(ino.0, b".", FT_DIR), (parent.index.0, b"..", FT_DIR)];
        let bytes = DirBlock::build(
            self.sb.block_size as usize,
            self.sb.metadata_csum(),
            self.has_filetype(),
            &entries,
        );
        let mut dir_block = DirBlock::parse(bytes, self.has_filetype(), "new directory block")?;
        dir_block.set_checksum(&self.sb, ino, inode.generation());
        writes.blocks.push((block, dir_block.bytes));

        let run = Run { logical: 0, physical: block, len: 1, uninit: false };
        let planned = self.plan_map(&mut plan, &inode, &[run], 1)?;
        writes.blocks.extend(planned.built.nodes);
        inode.set_block_area(&planned.built.block_area);
        inode.set_size(u64::from(self.sb.block_size));
        inode.set_blocks(&self.sb, planned.blocks_used)?;

        let links = parent.links_count();
        let dir_nlink = self.sb.has_ro_compat(features::RO_COMPAT_DIR_NLINK);
        let max_links = if dir_nlink { EXT4_LINK_MAX } else { EXT2_LINK_MAX };
        if links == 1 && dir_nlink {
            // A count of 1 already means "too many to count".
        } else if links >= max_links - 1 {
            if !dir_nlink {
                return Err(ExtError::TooManyLinks(path.to_string()));
            }
            parent.set_links_count(1);
        } else {
            parent.set_links_count(links + 1);
        }

        self.plan_dir_insert(&mut plan, &mut parent, name.as_bytes(), ino, FT_DIR, &mut writes)?;
        parent.touch(attrs.time)?;
        writes.inodes.push(inode);
        writes.inodes.push(parent);
        self.apply(plan, writes)?;
        Ok(ino)
    }

    /// Writes `data` to the regular file `path`: creates it, or replaces the contents of an
    /// existing regular file while keeping its inode (its old blocks are freed). Mode, owner and
    /// times come from `attrs`; a replaced file keeps its creation time.
    pub fn write_file(&mut self, path: &str, data: &[u8], attrs: &NewAttrs) -> Result<InodeIndex, ExtError> {
        self.write_contents(path, FileData::Memory(Cow::Borrowed(data)), attrs)
    }

    /// Writes `data` to the regular file `path` like [`Ext::write_file`], taking the buffer so
    /// that a large file's data is not copied when the volume keeps writes in memory.
    pub fn write_file_owned(
        &mut self,
        path: &str,
        data: Vec<u8>,
        attrs: &NewAttrs,
    ) -> Result<InodeIndex, ExtError> {
        self.write_contents(path, FileData::Memory(Cow::Owned(data)), attrs)
    }

    /// Writes the contents of the host file `source` to the regular file `path` like
    /// [`Ext::write_file`]. Whole blocks of the source are not read now: the volume copies them
    /// when its writes are applied, so `source` must not change until then.
    pub fn write_file_from(
        &mut self,
        path: &str,
        source: Arc<File>,
        attrs: &NewAttrs,
    ) -> Result<InodeIndex, ExtError> {
        let len = source.metadata()?.len();
        self.write_contents(path, FileData::File(FileRange { file: source, offset: 0, len }), attrs)
    }

    fn write_contents(
        &mut self,
        path: &str,
        data: FileData<'_>,
        attrs: &NewAttrs,
    ) -> Result<InodeIndex, ExtError> {
        self.check_writable()?;
        let size = data.len();
        if !self.sb.has_ro_compat(features::RO_COMPAT_LARGE_FILE) && size > NO_LARGE_FILE_MAX {
            return Err(ExtError::FileTooLarge { size, limit: NO_LARGE_FILE_MAX });
        }
        let target = self.locate(path)?;
        if let Some(ino) = target.existing {
            let inode = self.read_inode(ino)?;
            match inode.file_type() {
                S_IFREG => {}
                S_IFDIR => return Err(ExtError::IsADirectory(path.to_string())),
                _ => return Err(ExtError::AlreadyExists(path.to_string())),
            }
            check_file_writable(&inode)?;
            check_linked(&inode)?;
        }
        let mut plan = AllocPlan::new(self, self.known_owners_of(&target)?);
        let mut writes = Writes::default();
        let Target { mut parent, name, existing, .. } = target;

        let mut inode = match existing {
            Some(ino) => {
                let mut inode = self.read_inode(ino)?;
                let old = self.file_map(&inode)?;
                plan.release_blocks(self, &old.all_blocks(), ino)?;
                inode.set_mode(S_IFREG | (attrs.mode & 0o7777));
                inode.set_owner(attrs.uid, attrs.gid);
                inode.set_time(super::inode::Timestamp::Access, attrs.time)?;
                inode.touch(attrs.time)?;
                inode
            }
            None => {
                let ino = plan.allocate_inode(self, self.group_of_inode(parent.index), false)?;
                let mut inode = self.new_inode(ino, S_IFREG | (attrs.mode & 0o7777), attrs)?;
                inode.set_links_count(1);
                self.plan_dir_insert(&mut plan, &mut parent, name.as_bytes(), ino, FT_REG_FILE, &mut writes)?;
                parent.touch(attrs.time)?;
                writes.inodes.push(parent);
                inode
            }
        };

        let planned = self.plan_file_data(&mut plan, &inode, data, &mut writes)?;
        writes.blocks.extend(planned.built.nodes);
        let xattr_blocks = u64::from(inode.file_acl(&self.sb) != 0);
        inode.set_block_area(&planned.built.block_area);
        inode.set_size(size);
        inode.set_blocks(&self.sb, planned.blocks_used + xattr_blocks)?;
        let ino = inode.index;
        writes.inodes.push(inode);
        self.apply(plan, writes)?;
        Ok(ino)
    }

    /// Removes the regular file or symbolic link `path`. The inode and its blocks are freed when
    /// its last link goes; `time` (seconds since the epoch) becomes the change and deletion time.
    pub fn remove_file(&mut self, path: &str, time: i64) -> Result<(), ExtError> {
        self.check_writable()?;
        let target = self.locate(path)?;
        let Some(ino) = target.existing else {
            return Err(ExtError::NotFound(path.to_string()));
        };
        let mut inode = self.read_inode(ino)?;
        match inode.file_type() {
            S_IFREG | S_IFLNK => {}
            S_IFDIR => return Err(ExtError::IsADirectory(path.to_string())),
            _ => return Err(ExtError::NotAFile(path.to_string())),
        }
        check_linked(&inode)?;
        let mut plan = AllocPlan::new(self, self.known_owners_of(&target)?);
        let mut writes = Writes::default();
        let Target { mut parent, name, .. } = target;

        self.plan_dir_remove(&parent, name.as_bytes(), &mut writes)?;
        parent.touch(time)?;

        let links = inode.links_count();
        inode.set_links_count(links - 1);
        inode.set_time(super::inode::Timestamp::Change, time)?;
        if links == 1 {
            self.plan_release_inode(&mut plan, &mut inode, time, &mut writes)?;
        }
        writes.inodes.push(inode);
        writes.inodes.push(parent);
        self.apply(plan, writes)
    }

    /// Resolves the parent of `path` (following symbolic links) and looks up its last name.
    pub(super) fn locate(&self, path: &str) -> Result<Target, ExtError> {
        let (parent_path, last) = split_parent(path)?;
        let name = DirEntryName::new(last, path)?;
        let mut dirs = Vec::new();
        let Some(parent_ino) = self.resolve_recording(&parent_path, true, &mut dirs)? else {
            return Err(ExtError::NotFound(path.to_string()));
        };
        let parent = self.read_inode(parent_ino)?;
        if !parent.is_dir() {
            return Err(ExtError::NotADirectory(path.to_string()));
        }
        check_dir_writable(&parent)?;
        if !dirs.contains(&parent_ino) {
            dirs.push(parent_ino);
        }

        // A hashed-index directory is looked up through its index, and its entries are not read
        // for the known owners: it has too many for that to stay cheap.
        let indexed = parent.has_flag(FLAG_INDEX) && self.sb.has_compat(features::COMPAT_DIR_INDEX);
        let (existing, siblings) = if indexed {
            (self.find_entry(&parent, name.as_bytes())?, Vec::new())
        } else {
            self.scan_linear_dir(&parent, name.as_bytes())?
        };
        if let Some(ino) = existing
            && ino.0 < self.sb.first_ino
        {
            return Err(ExtError::corrupt(
                format!("directory inode {parent_ino}"),
                format!("the entry for {path} points to reserved inode {ino}"),
            ));
        }
        Ok(Target { parent, name, existing, dirs, siblings })
    }

    /// Reads every entry of the linear directory `dir`: returns the inode that `name` names,
    /// if any, and the inodes of all entries other than `.` and `..`.
    fn scan_linear_dir(
        &self,
        dir: &Inode,
        name: &[u8],
    ) -> Result<(Option<InodeIndex>, Vec<InodeIndex>), ExtError> {
        if dir.has_flag(FLAG_INLINE_DATA) {
            let entries = self.raw_entries(dir)?;
            let existing = entries.iter().find(|(entry_name, _, _)| entry_name == name).map(|entry| entry.1);
            let siblings = entries
                .into_iter()
                .filter(|(entry_name, _, _)| entry_name != b"." && entry_name != b"..")
                .map(|(_, inode, _)| inode)
                .collect();
            return Ok((existing, siblings));
        }

        let mut existing = None;
        let mut siblings = Vec::new();
        for located in self.dir_blocks(dir)? {
            let block = &located.block;
            for entry in block.entries.iter().filter(|entry| entry.inode != 0) {
                let inode = self.checked_entry_inode(dir, entry.inode)?;
                let entry_name = block.name(entry);
                if existing.is_none() && entry_name == name {
                    existing = Some(inode);
                }
                if entry_name != b"." && entry_name != b".." {
                    siblings.push(inode);
                }
            }
        }
        Ok((existing, siblings))
    }

    /// Builds the known owners of blocks for a write through `target`: the filesystem's own
    /// metadata, the directories on the path, the existing file and, unless the parent has more
    /// than [`MAX_CHECKED_ENTRIES`] entries, every other entry of the parent.
    pub(super) fn known_owners_of(&self, target: &Target) -> Result<OwnerMap, ExtError> {
        let mut inodes = Vec::new();
        if target.siblings.len() <= MAX_CHECKED_ENTRIES {
            inodes.extend(target.siblings.iter().copied());
        }
        inodes.extend(target.existing);
        self.known_owners(&target.dirs, &inodes)
    }

    pub(super) fn group_of_inode(&self, ino: InodeIndex) -> BlockGroupIndex {
        BlockGroupIndex((ino.0.saturating_sub(1)) / self.sb.inodes_per_group)
    }

    /// Creates an inode of type and permissions `mode` with the owner and times of `attrs`,
    /// mapped by extents when the filesystem has them.
    pub(super) fn new_inode(&self, ino: InodeIndex, mode: u16, attrs: &NewAttrs) -> Result<Inode, ExtError> {
        let mut inode = Inode::new_zeroed(&self.sb, ino);
        inode.set_mode(mode);
        inode.set_owner(attrs.uid, attrs.gid);
        inode.set_all_times(attrs.time)?;
        if self.sb.has_incompat(features::INCOMPAT_EXTENTS) {
            inode.set_flags(FLAG_EXTENTS);
            inode.set_block_area(&empty_root());
        }
        Ok(inode)
    }

    /// First block a file of `inode`'s format cannot use: block maps hold 32-bit block numbers.
    pub(super) fn block_limit(&self, inode: &Inode) -> u64 {
        if inode.has_flag(FLAG_EXTENTS) { self.sb.blocks_count } else { self.sb.blocks_count.min(1 << 32) }
    }

    /// Allocates blocks for `data` near the inode, queues the data writes and builds the map.
    pub(super) fn plan_file_data(
        &self,
        plan: &mut AllocPlan,
        inode: &Inode,
        data: FileData<'_>,
        writes: &mut Writes,
    ) -> Result<PlannedData, ExtError> {
        let block_size = u64::from(self.sb.block_size);
        let count = data.len().div_ceil(block_size);
        let allocated =
            plan.allocate_blocks(self, self.group_of_inode(inode.index), count, self.block_limit(inode))?;

        let mut runs = Vec::new();
        let mut logical = 0u64;
        for &(start, len) in &allocated {
            push_run(&mut runs, Run { logical, physical: start, len, uninit: false });
            logical += len;
        }
        match data {
            FileData::Memory(data) => {
                let lens: Vec<u64> = allocated.iter().map(|&(_, len)| len).collect();
                let pieces = cut_into_runs(data, &lens, block_size);
                for (&(start, _), contents) in allocated.iter().zip(pieces) {
                    writes.blocks.push((start, contents));
                }
            }
            FileData::File(source) => queue_file_runs(&source, &allocated, block_size, writes)?,
        }
        self.plan_map(plan, inode, &runs, count)
    }

    /// Builds the map of `runs` (`data_blocks` blocks in all) in `inode`'s format, allocating the
    /// extent tree or indirect blocks it needs.
    pub(super) fn plan_map(
        &self,
        plan: &mut AllocPlan,
        inode: &Inode,
        runs: &[Run],
        data_blocks: u64,
    ) -> Result<PlannedData, ExtError> {
        let goal = match runs.last() {
            Some(run) => group_of_block(&self.sb, run.physical + run.len - 1).0,
            None => self.group_of_inode(inode.index),
        };
        let limit = self.block_limit(inode);
        if inode.has_flag(FLAG_EXTENTS) {
            let needed = tree_blocks_needed(runs, self.sb.block_size)?;
            let tree_blocks = expand(plan.allocate_blocks(self, goal, needed, limit)?);
            let built = build_tree(&self.sb, inode.index, inode.generation(), runs, &tree_blocks)?;
            return Ok(PlannedData { built, blocks_used: data_blocks + needed });
        }
        let data: Vec<(u64, u64)> = runs
            .iter()
            .flat_map(|run| (0..run.len).map(move |index| (run.logical + index, run.physical + index)))
            .collect();
        let needed = indirect_blocks_needed(&data, self.sb.block_size)?;
        let indirect = expand(plan.allocate_blocks(self, goal, needed, limit)?);
        let built = build_block_map(self.sb.block_size, &data, &indirect)?;
        Ok(PlannedData { built, blocks_used: data_blocks + needed })
    }
}

impl<V: VolumeMut> Ext<V> {
    /// Plans adding the entry `name` for `child` to directory `parent`: into the first block
    /// with room, or a new block appended to a linear directory, which stays linear. A
    /// hashed-index directory gets the entry in the leaf its hash selects, split when full.
    pub(super) fn plan_dir_insert(
        &self,
        plan: &mut AllocPlan,
        parent: &mut Inode,
        name: &[u8],
        child: InodeIndex,
        file_type: u8,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let filetype = self.has_filetype();
        let csum = self.sb.metadata_csum();
        let indexed = parent.has_flag(FLAG_INDEX) && self.sb.has_compat(features::COMPAT_DIR_INDEX);

        if indexed {
            return self.plan_htree_insert(plan, parent, name, child, file_type, writes);
        }

        for located in self.dir_blocks(parent)? {
            if csum && !located.block.has_tail {
                continue;
            }
            let Some(room) = located.block.find_room(name.len()).map(|entry| entry.offset) else { continue };
            let mut block = Rc::unwrap_or_clone(located.block);
            block.insert(room, child.0, name, file_type, filetype);
            block.set_checksum(&self.sb, parent.index, parent.generation());
            writes.push_dir_block(located.physical, parent, block);
            return Ok(());
        }

        // No room anywhere: append a block holding only the new entry.
        let block_size = u64::from(self.sb.block_size);
        let limit = self.block_limit(parent);
        let allocated = plan.allocate_blocks(self, self.group_of_inode(parent.index), 1, limit)?;
        let physical = allocated.first().map(|&(start, _)| start).unwrap_or(0);
        let entries: [(u32, &[u8], u8); 1] = [(child.0, name, file_type)];
        let bytes = DirBlock::build(block_size as usize, csum, filetype, &entries);
        let mut block = DirBlock::parse(bytes, filetype, "new directory block")?;
        block.set_checksum(&self.sb, parent.index, parent.generation());
        writes.blocks.push((physical, block.bytes));

        let (old_map, logical) = self.dir_map(parent)?;
        if old_map.runs.last().is_some_and(|run| run.logical + run.len > logical) {
            return Err(ExtError::corrupt(
                format!("directory inode {}", parent.index),
                format!("blocks are mapped past its size of {} bytes, where a new block goes", parent.size()),
            ));
        }
        let mut runs = old_map.runs.clone();
        push_run(&mut runs, Run { logical, physical, len: 1, uninit: false });
        plan.release_blocks(self, &expand_ranges(&old_map.metadata_blocks), parent.index)?;
        let planned = self.plan_map(plan, parent, &runs, old_map.data_blocks() + 1)?;
        writes.blocks.extend(planned.built.nodes);
        let xattr_blocks = u64::from(parent.file_acl(&self.sb) != 0);
        parent.set_block_area(&planned.built.block_area);
        parent.set_size(parent.size() + block_size);
        parent.set_blocks(&self.sb, planned.blocks_used + xattr_blocks)
    }

    /// Plans removing the entry `name` from directory `parent`.
    pub(super) fn plan_dir_remove(
        &self,
        parent: &Inode,
        name: &[u8],
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        for located in self.dir_blocks(parent)? {
            if located.block.find(name).is_none() {
                continue;
            }
            let mut block = Rc::unwrap_or_clone(located.block);
            if self.sb.metadata_csum() && !block.has_tail {
                return Err(ExtError::corrupt(
                    format!("directory inode {} block {}", parent.index, located.logical),
                    "block has no checksum tail",
                ));
            }
            block.remove(name);
            block.set_checksum(&self.sb, parent.index, parent.generation());
            writes.push_dir_block(located.physical, parent, block);
            return Ok(());
        }
        Err(ExtError::corrupt(
            format!("directory inode {}", parent.index),
            "entry vanished while removing it",
        ))
    }

    /// Plans freeing an inode whose last link is gone: its blocks, its extended attribute block
    /// reference and the inode itself, which keeps `time` as its deletion time.
    pub(super) fn plan_release_inode(
        &self,
        plan: &mut AllocPlan,
        inode: &mut Inode,
        time: i64,
        writes: &mut Writes,
    ) -> Result<(), ExtError> {
        let map = self.file_map(inode)?;
        plan.release_blocks(self, &map.all_blocks(), inode.index)?;
        let xattr_block = inode.file_acl(&self.sb);
        if xattr_block != 0 {
            match self.release_xattr_block(inode.index, xattr_block)? {
                XattrRelease::Free(block) => plan.release_blocks(self, &[(block, 1)], inode.index)?,
                XattrRelease::Rewrite(block, contents) => writes.blocks.push((block, contents)),
            }
            inode.set_file_acl(0);
        }
        plan.release_inode(self, inode.index, inode.is_dir())?;

        // e2fsck reads a deletion time below the inode count as a link of the orphan list, so
        // deletion times of the first minutes after 1970 are raised to that count.
        let earliest = i64::from(self.sb.inodes_count.max(1));
        inode.set_dtime(time.clamp(earliest, i64::from(u32::MAX)) as u32);
        inode.set_size(0);
        inode.set_blocks(&self.sb, 0)?;
        if inode.has_flag(FLAG_EXTENTS) {
            inode.set_block_area(&empty_root());
        } else if !inode.has_flag(FLAG_INLINE_DATA) && !file_map::is_fast_symlink(self, inode) {
            inode.set_block_area(&[0; I_BLOCK_SIZE]);
        }
        Ok(())
    }

    /// Writes a complete plan: allocation state first, then blocks and inodes.
    pub(super) fn apply(&mut self, plan: AllocPlan, writes: Writes) -> Result<(), ExtError> {
        plan.commit(self)?;
        let block_size = u64::from(self.sb.block_size);
        // A parsed directory block is cached only if it is what ends up in its block.
        let final_dir_blocks: Vec<_> = writes
            .dir_blocks
            .into_iter()
            .filter(|(physical, _, _, block)| {
                let last = writes.blocks.iter().rev().find(|(written, _)| written == physical);
                last.is_some_and(|(_, contents)| *contents == block.bytes)
            })
            .collect();

        // The writes keep their order, so a block written twice ends with its last contents.
        for (block, contents) in writes.blocks {
            self.write_volume_owned(block * block_size, contents)?;
        }
        for (block, range) in writes.copies {
            self.write_volume_file_range(block * block_size, range)?;
        }
        for mut inode in writes.inodes {
            let offset = self.inode_offset(inode.index)?;
            let bytes = inode.encode(&self.sb).to_vec();
            self.write_volume(offset, &bytes)?;
        }
        let cache = self.cache.get_mut();
        for (physical, dir, generation, block) in final_dir_blocks {
            cache.insert(physical, CachedBlock::Dir { dir, generation, block });
        }
        Ok(())
    }
}

/// Rejects changes to the data of a file kept in a form writes do not handle.
pub(super) fn check_file_writable(inode: &Inode) -> Result<(), ExtError> {
    let rejected = [
        (FLAG_INLINE_DATA, "inline_data", "files with inline data cannot be rewritten yet"),
        (FLAG_ENCRYPT, "encrypt", "encrypted files cannot be written"),
        (FLAG_VERITY, "verity", "fs-verity files are read-only"),
        (FLAG_EA_INODE, "ea_inode", "extended attribute inodes cannot be written"),
    ];
    for (flag, feature, hint) in rejected {
        if inode.has_flag(flag) {
            return Err(ExtError::unsupported(feature, format!("inode {}: {hint}", inode.index)));
        }
    }
    Ok(())
}

/// Rejects an inode that a directory entry names but whose link count is 0, which only a
/// deleted inode has.
pub(super) fn check_linked(inode: &Inode) -> Result<(), ExtError> {
    if inode.links_count() == 0 {
        return Err(ExtError::corrupt(
            format!("inode {}", inode.index),
            "a directory entry names it but its link count is 0",
        ));
    }
    Ok(())
}

/// Rejects changes to a directory kept in a form writes do not handle.
pub(super) fn check_dir_writable(dir: &Inode) -> Result<(), ExtError> {
    let rejected = [
        (FLAG_INLINE_DATA, "inline_data", "directories with inline data cannot be modified yet"),
        (FLAG_ENCRYPT, "encrypt", "encrypted directories cannot be modified"),
        (FLAG_CASEFOLD, "casefold", "case-insensitive directories cannot be modified"),
    ];
    for (flag, feature, hint) in rejected {
        if dir.has_flag(flag) {
            return Err(ExtError::unsupported(feature, format!("directory inode {}: {hint}", dir.index)));
        }
    }
    Ok(())
}

/// Queues the copy of `source` into the (start, length) runs `allocated`: the source's whole
/// blocks as copies from the file, and its last partial block, read now and padded with zeros,
/// as a block write.
fn queue_file_runs(
    source: &FileRange,
    allocated: &[(u64, u64)],
    block_size: u64,
    writes: &mut Writes,
) -> Result<(), ExtError> {
    let mut done = 0u64;
    for &(start, len) in allocated {
        let run_bytes = len * block_size;
        let from_source = source.len.saturating_sub(done).min(run_bytes);
        let whole = from_source - from_source % block_size;
        if whole > 0 {
            let range =
                FileRange { file: Arc::clone(&source.file), offset: source.offset + done, len: whole };
            writes.copies.push((start, range));
        }
        if whole < run_bytes {
            let mut tail = vec![0u8; (run_bytes - whole) as usize];
            let partial = tail.get_mut(..(from_source - whole) as usize).unwrap_or_default();
            source.read_at(done + whole, partial)?;
            writes.blocks.push((start + whole / block_size, tail));
        }
        done += run_bytes;
    }
    Ok(())
}

/// Cuts file data into one buffer per run of `lens` blocks, each padded with zeros to whole
/// blocks. Borrowed data is copied once. An owned buffer is cut from its end, so that its first
/// run stays in place and data that fits one run is never copied.
fn cut_into_runs(data: Cow<'_, [u8]>, lens: &[u64], block_size: u64) -> Vec<Vec<u8>> {
    let mut bounds = Vec::with_capacity(lens.len());
    let mut from = 0usize;
    for &len in lens {
        let to = from + (len * block_size) as usize;
        bounds.push((from, to));
        from = to;
    }

    match data {
        Cow::Borrowed(data) => bounds
            .into_iter()
            .map(|(from, to)| {
                let mut contents = Vec::with_capacity(to - from);
                contents.extend_from_slice(data.get(from..to.min(data.len())).unwrap_or_default());
                contents.resize(to - from, 0);
                contents
            })
            .collect(),
        Cow::Owned(mut data) => {
            let mut pieces = Vec::with_capacity(bounds.len());
            for &(from, to) in bounds.iter().skip(1).rev() {
                let mut tail = if from < data.len() { data.split_off(from) } else { Vec::new() };
                tail.resize(to - from, 0);
                pieces.push(tail);
            }
            if let Some(&(_, to)) = bounds.first() {
                data.resize(to, 0);
                pieces.push(data);
            }
            pieces.reverse();
            pieces
        }
    }
}

/// Lists the blocks of (start, length) runs one by one.
pub(super) fn expand(runs: Vec<(u64, u64)>) -> Vec<u64> {
    runs.into_iter().flat_map(|(start, len)| start..start + len).collect()
}

/// Turns single blocks into (start, 1) ranges.
pub(super) fn expand_ranges(blocks: &[u64]) -> Vec<(u64, u64)> {
    blocks.iter().map(|&block| (block, 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_borrowed_data_cut_alike() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let lens = [1, 1, 2];

        let borrowed = cut_into_runs(Cow::Borrowed(&data), &lens, 4096);
        let owned = cut_into_runs(Cow::Owned(data.clone()), &lens, 4096);

        assert_eq!(borrowed, owned);
        let sizes: Vec<usize> = owned.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4096, 4096, 8192]);
        assert_eq!(owned.concat()[..10_000], data[..]);
        assert!(owned[2][10_000 - 8192..].iter().all(|&byte| byte == 0), "padding is zeros");
    }

    #[test]
    fn owned_data_in_one_run_is_not_copied() {
        let mut data = Vec::with_capacity(4 * 4096);
        data.extend_from_slice(&[7u8; 3 * 4096 + 5]);
        let address = data.as_ptr();

        let pieces = cut_into_runs(Cow::Owned(data), &[4], 4096);

        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].as_ptr(), address);
        assert_eq!(pieces[0].len(), 4 * 4096);
        assert_eq!(pieces[0][3 * 4096 + 4], 7);
        assert_eq!(pieces[0][3 * 4096 + 5], 0);
    }
}
