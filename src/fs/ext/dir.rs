//! Reading directories: their blocks, their entries, and name lookup.

use std::rc::Rc;

use super::bytes::read_u32le;
use super::cache::CachedBlock;
use super::dir_block::DirBlock;
use super::dir_entry::{FT_DIR, FT_REG_FILE, FT_SYMLINK, FT_UNKNOWN, parse_entry};
use super::error::ExtError;
use super::features;
use super::file_map::FileMap;
use super::htree::htree_continues;
use super::inode::{FLAG_INDEX, FLAG_INLINE_DATA, I_BLOCK_SIZE, Inode, InodeIndex};
use super::{DirEntry, Ext, FileKind};
use crate::image::volume::Volume;

/// Size of the parent inode number that starts an inline directory.
const INLINE_PARENT_SIZE: usize = 4;

/// Maps a directory entry's file type code to a kind, unless the code is unknown.
fn kind_from_file_type(file_type: u8) -> Option<FileKind> {
    match file_type {
        FT_REG_FILE => Some(FileKind::Regular),
        FT_DIR => Some(FileKind::Directory),
        FT_SYMLINK => Some(FileKind::Symlink),
        3 => Some(FileKind::Other(0o020000)),
        4 => Some(FileKind::Other(0o060000)),
        5 => Some(FileKind::Other(0o010000)),
        6 => Some(FileKind::Other(0o140000)),
        _ => None,
    }
}

/// One directory block located in the filesystem.
pub(crate) struct LocatedDirBlock {
    pub logical: u64,
    pub physical: u64,
    /// The parsed block, shared with the cache: a caller that changes it clones it first.
    pub block: Rc<DirBlock>,
}

impl<V: Volume> Ext<V> {
    /// True when directory entries carry a file type.
    pub(crate) fn has_filetype(&self) -> bool {
        self.sb.has_incompat(features::INCOMPAT_FILETYPE)
    }

    /// Lists directory `ino`, `.` and `..` included.
    pub fn read_dir(&self, ino: InodeIndex) -> Result<Vec<DirEntry>, ExtError> {
        let dir = self.read_inode(ino)?;
        if !dir.is_dir() {
            return Err(ExtError::NotADirectory(format!("inode {ino}")));
        }
        let mut entries = Vec::new();
        for (name, inode, file_type) in self.raw_entries(&dir)? {
            let kind = match kind_from_file_type(file_type) {
                Some(kind) if file_type != FT_UNKNOWN => kind,
                _ => FileKind::from_mode(self.read_inode(inode)?.mode()),
            };
            entries.push(DirEntry { name, inode, kind });
        }
        Ok(entries)
    }

    /// Lists the used entries of directory `dir` as (name, inode, file type code).
    pub(crate) fn raw_entries(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, InodeIndex, u8)>, ExtError> {
        if dir.has_flag(FLAG_INLINE_DATA) {
            return self.inline_entries(dir);
        }
        let mut entries = Vec::new();
        for located in self.dir_blocks(dir)? {
            let block = &located.block;
            for entry in block.entries.iter().filter(|entry| entry.inode != 0) {
                let inode = self.checked_entry_inode(dir, entry.inode)?;
                entries.push((block.name(entry).to_vec(), inode, entry.file_type));
            }
        }
        Ok(entries)
    }

    /// Entries of an inline directory kept in `i_block`: the parent's inode number, then
    /// entries that tile the remaining 56 bytes.
    fn inline_entries(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, InodeIndex, u8)>, ExtError> {
        if dir.size() > I_BLOCK_SIZE as u64 {
            return Err(ExtError::unsupported(
                "inline_data",
                format!(
                    "directory inode {} continues in an extended attribute, which is not read yet",
                    dir.index
                ),
            ));
        }
        let area = dir.block_area();
        let parent = self.checked_entry_inode(dir, read_u32le(area, 0))?;
        let mut entries = vec![(b".".to_vec(), dir.index, FT_DIR), (b"..".to_vec(), parent, FT_DIR)];
        let body = area.get(INLINE_PARENT_SIZE..).unwrap_or_default();
        let structure = format!("inode {} inline directory", dir.index);
        let mut offset = 0;
        while offset < body.len() {
            let entry = parse_entry(body, offset, self.has_filetype(), &structure)?;
            offset += entry.rec_len;
            if entry.inode != 0 {
                let inode = self.checked_entry_inode(dir, entry.inode)?;
                entries.push((entry.name(body).to_vec(), inode, entry.file_type));
            }
        }
        Ok(entries)
    }

    pub(crate) fn checked_entry_inode(&self, dir: &Inode, inode: u32) -> Result<InodeIndex, ExtError> {
        if inode == 0 || inode > self.sb.inodes_count {
            return Err(ExtError::corrupt(
                format!("directory inode {}", dir.index),
                format!("entry points to inode {inode}, outside 1..={}", self.sb.inodes_count),
            ));
        }
        Ok(InodeIndex(inode))
    }

    /// Reads the map of directory `dir` and checks it against the directory's size: a whole
    /// number of blocks, at least one, every one of them mapped and initialized. Blocks mapped
    /// past the size are allowed, as e2fsck allows preallocated directory blocks. Returns the
    /// map and the number of blocks the size covers.
    pub(crate) fn dir_map(&self, dir: &Inode) -> Result<(FileMap, u64), ExtError> {
        let corrupt = |detail: String| ExtError::corrupt(format!("directory inode {}", dir.index), detail);
        let block_size = u64::from(self.sb.block_size);
        let size = dir.size();
        if !size.is_multiple_of(block_size) {
            return Err(corrupt(format!("size {size} is not a multiple of the block size")));
        }
        let count = size / block_size;
        if count == 0 {
            return Err(corrupt("size is 0, but a directory has at least one block".to_string()));
        }
        if count > self.sb.blocks_count {
            return Err(corrupt(format!("size {size} is larger than the filesystem")));
        }

        let map = self.file_map(dir)?;
        let mut next = 0u64;
        for run in map.runs.iter().take_while(|run| run.logical < count) {
            if run.logical > next {
                break;
            }
            if run.uninit {
                return Err(corrupt(format!(
                    "logical blocks {}-{} are an uninitialized extent",
                    run.logical,
                    run.logical + run.len - 1
                )));
            }
            next = run.logical + run.len;
        }
        if next < count {
            return Err(corrupt(format!("logical block {next} is a hole inside its size of {size} bytes")));
        }
        Ok((map, count))
    }

    /// Reads every block of directory `dir` that its size covers, parsed and checked, in
    /// logical order.
    pub(crate) fn dir_blocks(&self, dir: &Inode) -> Result<Vec<LocatedDirBlock>, ExtError> {
        let (map, count) = self.dir_map(dir)?;
        let mut blocks = Vec::new();
        for run in &map.runs {
            let end = (run.logical + run.len).min(count);
            for logical in run.logical..end {
                let physical = run.physical + (logical - run.logical);
                blocks.push(LocatedDirBlock {
                    logical,
                    physical,
                    block: self.read_dir_block(dir, logical, physical)?,
                });
            }
        }
        Ok(blocks)
    }

    /// Reads and checks one block of directory `dir`.
    pub(crate) fn read_dir_block(
        &self,
        dir: &Inode,
        logical: u64,
        physical: u64,
    ) -> Result<Rc<DirBlock>, ExtError> {
        if let Some(block) = self.cache.borrow().dir_block(physical, dir.index, dir.generation()) {
            return Ok(Rc::clone(block));
        }
        let structure = format!("directory inode {} block {logical}", dir.index);
        let block = DirBlock::parse(self.read_block(physical)?, self.has_filetype(), &structure)?;
        block.verify_checksum(&self.sb, dir.index, dir.generation(), &structure)?;
        let block = Rc::new(block);
        let checked =
            CachedBlock::Dir { dir: dir.index, generation: dir.generation(), block: Rc::clone(&block) };
        self.cache.borrow_mut().insert(physical, checked);
        Ok(block)
    }

    /// Reads logical block `logical` of directory `dir` without parsing it.
    pub(crate) fn read_dir_logical_block(&self, dir: &Inode, logical: u64) -> Result<Vec<u8>, ExtError> {
        self.read_block(self.dir_physical_block(dir, logical)?)
    }

    /// Finds where logical block `logical` of directory `dir` is stored.
    pub(crate) fn dir_physical_block(&self, dir: &Inode, logical: u64) -> Result<u64, ExtError> {
        let (map, count) = self.dir_map(dir)?;
        if logical >= count {
            return Err(ExtError::corrupt(
                format!("directory inode {}", dir.index),
                format!("index points to block {logical} past the end of the directory"),
            ));
        }
        let Some(run) = map.find(logical) else {
            return Err(ExtError::corrupt(
                format!("directory inode {}", dir.index),
                format!("block {logical} is a hole"),
            ));
        };
        Ok(run.physical + (logical - run.logical))
    }

    /// Finds `name` in directory `dir`: through the hashed index when the directory has one,
    /// in block 0 for `.` and `..`, else by scanning every block.
    pub(crate) fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeIndex>, ExtError> {
        let indexed = dir.has_flag(FLAG_INDEX) && self.sb.has_compat(features::COMPAT_DIR_INDEX);
        if !dir.has_flag(FLAG_INLINE_DATA) {
            if name == b"." || name == b".." {
                let physical = self.dir_physical_block(dir, 0)?;
                let block = self.read_dir_block(dir, 0, physical)?;
                let found = block.find(name);
                return found.map(|entry| self.checked_entry_inode(dir, entry.inode)).transpose();
            }
            if indexed {
                // An index this module cannot follow (an unknown hash version) still lists its
                // names in the leaves, so the scan below finds them.
                match self.htree_find(dir, name) {
                    Ok(Some(found)) => return Ok(found),
                    Ok(None) | Err(ExtError::Unsupported { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        let found = self.raw_entries(dir)?.into_iter().find(|(entry_name, _, _)| entry_name == name);
        Ok(found.map(|(_, inode, _)| inode))
    }

    /// Looks `name` up through the hashed index of `dir`: `Some(result)` when the leaf its
    /// hash selects settles it, `None` when the name may continue in the next leaf because
    /// its hash collides across a split, which a full scan then settles.
    fn htree_find(&self, dir: &Inode, name: &[u8]) -> Result<Option<Option<InodeIndex>>, ExtError> {
        let path = self.htree_path(dir, name)?;
        let physical = self.dir_physical_block(dir, path.leaf)?;
        let block = self.read_dir_block(dir, path.leaf, physical)?;
        if let Some(entry) = block.find(name) {
            return Ok(Some(Some(self.checked_entry_inode(dir, entry.inode)?)));
        }
        if htree_continues(&path) { Ok(None) } else { Ok(Some(None)) }
    }
}
