//! LMDB's two meta pages (`MDB_meta` in LMDB 0.9's `mdb.c`): the file's layout, page size and the
//! roots of the free-page and main databases. Offsets are those of the 64-bit little-endian layout,
//! where a page number and a `size_t` are 8 bytes.

use super::StoreError;
use super::page::{
    P_META, PAGE_FLAGS_OFFSET, PAGE_HEADER_SIZE, PAGE_PGNO_OFFSET, read_u16, read_u32, read_u64,
};
use crate::mender::target::{Endian, WordSize};

/// `MDB_MAGIC`, the first field of a meta page's body.
pub(super) const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// `MDB_DATA_VERSION` of LMDB 0.9 release builds.
pub(super) const MDB_DATA_VERSION: u32 = 1;
/// `P_INVALID`: the root page number of an empty database.
pub(super) const INVALID_PGNO: u64 = u64::MAX;
/// Number of meta pages at the start of every LMDB file (`NUM_METAS`).
pub(super) const META_PAGE_COUNT: u64 = 2;

/// Smallest page size accepted. LMDB takes the OS page size, 4096 or more on common Linux
/// platforms, so this lower limit only leaves room for unusual builds.
const MIN_PAGE_SIZE: u32 = 512;
/// `MAX_PAGESIZE` of LMDB 0.9 release builds: larger OS pages are capped to this.
const MAX_PAGE_SIZE: u32 = 0x8000;

const META_MAGIC_OFFSET: usize = PAGE_HEADER_SIZE;
const META_VERSION_OFFSET: usize = PAGE_HEADER_SIZE + 4;
const META_MAP_SIZE_OFFSET: usize = PAGE_HEADER_SIZE + 16;
const META_FREE_DB_OFFSET: usize = PAGE_HEADER_SIZE + 24;
const META_MAIN_DB_OFFSET: usize = META_FREE_DB_OFFSET + DB_RECORD_SIZE;
const META_LAST_PGNO_OFFSET: usize = META_MAIN_DB_OFFSET + DB_RECORD_SIZE;
const META_TXNID_OFFSET: usize = META_LAST_PGNO_OFFSET + 8;
/// End of the meta page's body: the meta page must be at least this long.
const META_END: usize = META_TXNID_OFFSET + 8;

/// Size of an `MDB_db` record, and its field offsets.
const DB_RECORD_SIZE: usize = 48;
const DB_PAD_OFFSET: usize = 0;
const DB_FLAGS_OFFSET: usize = 4;
const DB_DEPTH_OFFSET: usize = 6;
const DB_BRANCH_PAGES_OFFSET: usize = 8;
const DB_LEAF_PAGES_OFFSET: usize = 16;
const DB_OVERFLOW_PAGES_OFFSET: usize = 24;
const DB_ENTRIES_OFFSET: usize = 32;
const DB_ROOT_OFFSET: usize = 40;

/// Offset of the magic number in the 32-bit layout, whose page header is 12 bytes.
const MAGIC_OFFSET_32_BIT: usize = 12;

/// One `MDB_db` record: the statistics and root page of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DbRecord {
    /// `md_pad`: the page size in the free database's record, otherwise unused.
    pub pad: u32,
    /// `md_flags`: database flags; in the free database's record, also the persistent
    /// environment flags.
    pub flags: u16,
    /// Number of levels of the B-tree, 0 when empty.
    pub depth: u16,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
    /// Root page number, or [`INVALID_PGNO`] when empty.
    pub root: u64,
}

/// The fields of one meta page that the page walk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub page_size: u32,
    /// `mm_mapsize`: the memory map size the writer used, which later writers inherit.
    pub map_size: u64,
    pub free_db: DbRecord,
    pub main_db: DbRecord,
    /// `mm_last_pg`: highest page number in use or free. The file may be shorter when the last
    /// pages were freed in the same transaction that allocated them, so they were never written.
    pub last_pgno: u64,
    /// ID of the transaction that wrote this meta page.
    pub txnid: u64,
}

/// Detects the word size and byte order the file was written with, by where and how the magic
/// number of meta page 0 is stored. Returns `Ok` only for the 64-bit little-endian layout.
pub(super) fn check_layout(bytes: &[u8]) -> Result<(), StoreError> {
    let magic_at = |offset: usize| -> Option<[u8; 4]> { bytes.get(offset..offset + 4)?.try_into().ok() };
    let magic_64 = magic_at(META_MAGIC_OFFSET);
    let magic_32 = magic_at(MAGIC_OFFSET_32_BIT);

    let found = if magic_64.map(u32::from_le_bytes) == Some(MDB_MAGIC) {
        return Ok(());
    } else if magic_64.map(u32::from_be_bytes) == Some(MDB_MAGIC) {
        (WordSize::Bits64, Endian::Big)
    } else if magic_32.map(u32::from_le_bytes) == Some(MDB_MAGIC) {
        (WordSize::Bits32, Endian::Little)
    } else if magic_32.map(u32::from_be_bytes) == Some(MDB_MAGIC) {
        (WordSize::Bits32, Endian::Big)
    } else {
        return Err(StoreError::corrupt(format!(
            "no LMDB magic number {MDB_MAGIC:#x} in meta page 0 ({} bytes in file)",
            bytes.len()
        )));
    };

    Err(StoreError::Layout { bits: found.0, endian: found.1 })
}

/// Reads both meta pages and returns the one LMDB uses: the one with the higher transaction ID,
/// meta page 0 on a tie. Like LMDB, rejects the file when either meta page is invalid. Also checks
/// that the file is a whole number of pages, at least the two meta pages.
pub(super) fn select_meta(bytes: &[u8]) -> Result<Meta, StoreError> {
    check_layout(bytes)?;
    let meta0 = read_meta(bytes, 0)?;

    let page_size = meta0.page_size as usize;
    let file_len = bytes.len();
    if !file_len.is_multiple_of(page_size) {
        return Err(StoreError::corrupt(format!(
            "file length {file_len} is not a multiple of the page size {page_size}"
        )));
    }
    if file_len < 2 * page_size {
        return Err(StoreError::corrupt(format!(
            "file length {file_len} is shorter than the two meta pages of {page_size} bytes each"
        )));
    }

    let meta1 = read_meta(&bytes[page_size..], 1)?;
    if meta1.page_size != meta0.page_size {
        return Err(StoreError::corrupt(format!(
            "meta page 1 has page size {}, meta page 0 has {}",
            meta1.page_size, meta0.page_size
        )));
    }

    Ok(if meta0.txnid < meta1.txnid { meta1 } else { meta0 })
}

/// Parses meta page `index` at the start of `page`, checking its header, magic, version and
/// page size.
fn read_meta(page: &[u8], index: u64) -> Result<Meta, StoreError> {
    if page.len() < META_END {
        return Err(StoreError::corrupt(format!(
            "meta page {index} is cut off: {} bytes, at least {META_END} needed",
            page.len()
        )));
    }
    let field_u32 = |offset| read_u32(page, offset).unwrap_or_default();
    let field_u64 = |offset| read_u64(page, offset).unwrap_or_default();

    let pgno = field_u64(PAGE_PGNO_OFFSET);
    let flags = read_u16(page, PAGE_FLAGS_OFFSET).unwrap_or_default();
    if pgno != index || flags != P_META {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has page number {pgno} and flags {flags:#x}, expected {index} and {P_META:#x}"
        )));
    }

    let magic = field_u32(META_MAGIC_OFFSET);
    if magic != MDB_MAGIC {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has magic number {magic:#x}, expected {MDB_MAGIC:#x}"
        )));
    }
    let version = field_u32(META_VERSION_OFFSET);
    if version != MDB_DATA_VERSION {
        return Err(StoreError::Version { found: version });
    }

    let free_db = read_db_record(page, META_FREE_DB_OFFSET);
    let page_size = free_db.pad;
    if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has page size {page_size}, expected a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}"
        )));
    }

    Ok(Meta {
        page_size,
        map_size: field_u64(META_MAP_SIZE_OFFSET),
        free_db,
        main_db: read_db_record(page, META_MAIN_DB_OFFSET),
        last_pgno: field_u64(META_LAST_PGNO_OFFSET),
        txnid: field_u64(META_TXNID_OFFSET),
    })
}

/// Parses the `MDB_db` record at `offset`; the caller has checked that the page is long enough.
fn read_db_record(page: &[u8], offset: usize) -> DbRecord {
    let field_u64 = |field: usize| read_u64(page, offset + field).unwrap_or_default();
    DbRecord {
        pad: read_u32(page, offset + DB_PAD_OFFSET).unwrap_or_default(),
        flags: read_u16(page, offset + DB_FLAGS_OFFSET).unwrap_or_default(),
        depth: read_u16(page, offset + DB_DEPTH_OFFSET).unwrap_or_default(),
        branch_pages: field_u64(DB_BRANCH_PAGES_OFFSET),
        leaf_pages: field_u64(DB_LEAF_PAGES_OFFSET),
        overflow_pages: field_u64(DB_OVERFLOW_PAGES_OFFSET),
        entries: field_u64(DB_ENTRIES_OFFSET),
        root: field_u64(DB_ROOT_OFFSET),
    }
}
