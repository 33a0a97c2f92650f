//! LMDB's two meta pages (`MDB_meta` in LMDB 0.9's `mdb.c`): the file's layout, page size and the
//! roots of the free-page and main databases. After the page header come the magic number and
//! version (32 bits each), then `mm_address`, `mm_mapsize`, two `MDB_db` records, `mm_last_pg`
//! and `mm_txnid`, all words of the layout (4 or 8 bytes).

use super::StoreError;
use super::layout::StoreLayout;
use super::page::{P_META, PageHeader};
use crate::mender::target::WordSize;

/// `MDB_MAGIC`, the first field of a meta page's body.
pub(super) const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// `MDB_DATA_VERSION` of LMDB 0.9 release builds.
pub(super) const MDB_DATA_VERSION: u32 = 1;
/// `P_INVALID`: the root page number of an empty database, all ones in a word of the layout.
pub(super) const INVALID_PGNO: u64 = u64::MAX;
/// Number of meta pages at the start of every LMDB file (`NUM_METAS`).
pub(super) const META_PAGE_COUNT: u64 = 2;

/// Smallest page size accepted. LMDB takes the OS page size, 4096 or more on common Linux
/// platforms, so this lower limit only leaves room for unusual builds.
const MIN_PAGE_SIZE: u32 = 512;
/// `MAX_PAGESIZE` of LMDB 0.9 release builds: larger OS pages are capped to this.
pub(super) const MAX_PAGE_SIZE: u32 = 0x8000;

/// Largest map size (`mm_mapsize`) accepted in the 32-bit layouts. LMDB maps the whole map size
/// into the address space when it opens the file. A 32-bit Linux process has at most 3 GiB of
/// address space (the default user/kernel split), so a larger map fails with ENOMEM on the device.
const MAX_MAP_SIZE_32: u64 = 3 << 30;
/// Largest map size accepted in the 64-bit layouts: 256 GiB, half the 512 GiB of user address
/// space that arm64 kernels with 39-bit virtual addresses (a common embedded configuration)
/// give a process. NOTE: this is an estimate of what every 64-bit target can map. The Mender
/// client 3.x keeps a few small records, so a store it wrote stays far below the bound.
const MAX_MAP_SIZE_64: u64 = 256 << 30;

/// Offsets of the meta page's fields, which depend on the word size.
#[derive(Debug, Clone, Copy)]
struct MetaOffsets {
    magic: usize,
    version: usize,
    address: usize,
    map_size: usize,
    free_db: usize,
    main_db: usize,
    last_pgno: usize,
    txnid: usize,
    /// End of the meta page's body: the meta page must be at least this long.
    end: usize,
}

impl MetaOffsets {
    fn of(layout: StoreLayout) -> Self {
        let word = layout.word_len();
        let magic = layout.page_header_len();
        let free_db = magic + 8 + 2 * word;
        let main_db = free_db + db_record_len(layout);
        let last_pgno = main_db + db_record_len(layout);
        MetaOffsets {
            magic,
            version: magic + 4,
            address: magic + 8,
            map_size: magic + 8 + word,
            free_db,
            main_db,
            last_pgno,
            txnid: last_pgno + word,
            end: last_pgno + 2 * word,
        }
    }
}

/// Size of an `MDB_db` record: `md_pad` (32 bits), `md_flags` and `md_depth` (16 bits each), then
/// five words.
fn db_record_len(layout: StoreLayout) -> usize {
    8 + 5 * layout.word_len()
}

const DB_PAD_OFFSET: usize = 0;
const DB_FLAGS_OFFSET: usize = 4;
const DB_DEPTH_OFFSET: usize = 6;
/// Offset of the first word, `md_branch_pages`; `md_leaf_pages`, `md_overflow_pages`,
/// `md_entries` and `md_root` follow.
const DB_WORDS_OFFSET: usize = 8;

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

/// The fields of one meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub page_size: u32,
    /// `mm_address`: the fixed map address, zero unless the writer used `MDB_FIXEDMAP`.
    pub address: u64,
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
/// number of meta page 0 is stored: after a 16-byte page header in the 64-bit layouts and a
/// 12-byte one in the 32-bit layouts.
pub(super) fn detect_layout(bytes: &[u8]) -> Result<StoreLayout, StoreError> {
    let candidates = [StoreLayout::LE64, StoreLayout::BE64, StoreLayout::LE32, StoreLayout::BE32];
    candidates
        .into_iter()
        .find(|layout| layout.read_u32(bytes, MetaOffsets::of(*layout).magic) == Some(MDB_MAGIC))
        .ok_or_else(|| {
            StoreError::corrupt(format!(
                "no LMDB magic number {MDB_MAGIC:#x} in meta page 0 ({} bytes in file)",
                bytes.len()
            ))
        })
}

/// Checks that the file is in `layout`, naming the layout it is in when it is not.
pub(super) fn check_layout(bytes: &[u8], layout: StoreLayout) -> Result<(), StoreError> {
    let found = detect_layout(bytes)?;
    if found != layout {
        return Err(StoreError::Layout { found, expected: layout });
    }
    Ok(())
}

/// Both meta pages of a file, checked as LMDB checks them when it opens the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct MetaPages {
    pub metas: [Meta; 2],
}

impl MetaPages {
    /// Index of the meta page LMDB uses: the one with the higher transaction ID, meta page 0 on
    /// a tie.
    pub(super) fn current_index(&self) -> usize {
        if self.metas[0].txnid < self.metas[1].txnid { 1 } else { 0 }
    }

    pub(super) fn current(&self) -> Meta {
        self.metas[self.current_index()]
    }
}

/// Reads both meta pages of a file in `layout`. Like LMDB, rejects the file when either meta
/// page is invalid. Also checks that the file is a whole number of pages, at least the two meta
/// pages.
pub(super) fn read_meta_pages(bytes: &[u8], layout: StoreLayout) -> Result<MetaPages, StoreError> {
    check_layout(bytes, layout)?;
    let meta0 = read_meta(bytes, 0, layout)?;

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

    let meta1 = read_meta(&bytes[page_size..], 1, layout)?;
    if meta1.page_size != meta0.page_size {
        return Err(StoreError::corrupt(format!(
            "meta page 1 has page size {}, meta page 0 has {}",
            meta1.page_size, meta0.page_size
        )));
    }
    Ok(MetaPages { metas: [meta0, meta1] })
}

/// Reads both meta pages and returns the one LMDB uses.
pub(super) fn select_meta(bytes: &[u8], layout: StoreLayout) -> Result<Meta, StoreError> {
    Ok(read_meta_pages(bytes, layout)?.current())
}

/// Parses meta page `index` at the start of `page`, checking its header, magic, version and
/// page size.
fn read_meta(page: &[u8], index: u64, layout: StoreLayout) -> Result<Meta, StoreError> {
    let offsets = MetaOffsets::of(layout);
    if page.len() < offsets.end {
        return Err(StoreError::corrupt(format!(
            "meta page {index} is cut off: {} bytes, at least {} needed",
            page.len(),
            offsets.end
        )));
    }
    let field_u32 = |offset| layout.read_u32(page, offset).unwrap_or_default();
    let field_word = |offset| layout.read_word(page, offset).unwrap_or_default();

    let header = PageHeader::read(page, layout);
    if header.pgno != index || header.flags != P_META {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has page number {} and flags {:#x}, expected {index} and {P_META:#x}",
            header.pgno, header.flags
        )));
    }

    let magic = field_u32(offsets.magic);
    if magic != MDB_MAGIC {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has magic number {magic:#x}, expected {MDB_MAGIC:#x}"
        )));
    }
    let version = field_u32(offsets.version);
    if version != MDB_DATA_VERSION {
        return Err(StoreError::Version { found: version });
    }

    let free_db = read_db_record(page, offsets.free_db, layout);
    let page_size = free_db.pad;
    if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has page size {page_size}, expected a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}"
        )));
    }

    let map_size = field_word(offsets.map_size);
    let max_map_size = match layout.bits {
        WordSize::Bits32 => MAX_MAP_SIZE_32,
        WordSize::Bits64 => MAX_MAP_SIZE_64,
    };
    if map_size > max_map_size {
        return Err(StoreError::corrupt(format!(
            "meta page {index} has map size (mm_mapsize) {map_size}, more than the {max_map_size} bytes \
             a {}-bit LMDB can map",
            layout.bits.bits()
        )));
    }

    Ok(Meta {
        page_size,
        address: field_word(offsets.address),
        map_size,
        free_db,
        main_db: read_db_record(page, offsets.main_db, layout),
        last_pgno: field_word(offsets.last_pgno),
        txnid: field_word(offsets.txnid),
    })
}

/// Parses the `MDB_db` record at `offset`. The caller has checked that the page is long enough.
/// Returns a root of all ones in the layout's word as [`INVALID_PGNO`].
fn read_db_record(page: &[u8], offset: usize, layout: StoreLayout) -> DbRecord {
    let word = |index: usize| {
        layout.read_word(page, offset + DB_WORDS_OFFSET + index * layout.word_len()).unwrap_or_default()
    };
    let root = word(4);
    DbRecord {
        pad: layout.read_u32(page, offset + DB_PAD_OFFSET).unwrap_or_default(),
        flags: layout.read_u16(page, offset + DB_FLAGS_OFFSET).unwrap_or_default(),
        depth: layout.read_u16(page, offset + DB_DEPTH_OFFSET).unwrap_or_default(),
        branch_pages: word(0),
        leaf_pages: word(1),
        overflow_pages: word(2),
        entries: word(3),
        root: if root == layout.word_max() { INVALID_PGNO } else { root },
    }
}

/// Writes `meta` as meta page `index` at the start of `page`, which the caller has zeroed, with
/// the layout's header, offsets and word widths. Fails when a value does not fit in a word of
/// `layout`.
pub(super) fn write_meta(
    page: &mut [u8],
    index: u64,
    meta: &Meta,
    layout: StoreLayout,
) -> Result<(), StoreError> {
    let offsets = MetaOffsets::of(layout);
    let too_wide = |field: &str, value: u64| {
        StoreError::corrupt(format!(
            "{field} {value} of meta page {index} does not fit in the {} bits of the {layout} layout",
            layout.bits.bits()
        ))
    };
    let write_word = |page: &mut [u8], field: &str, offset: usize, value: u64| {
        layout.write_word(page, offset, value).ok_or_else(|| too_wide(field, value))
    };

    let header = PageHeader { pgno: index, pad: 0, flags: P_META, lower: 0, upper: 0 };
    header.write(page, layout).ok_or_else(|| too_wide("page number", index))?;
    layout.write_u32(page, offsets.magic, MDB_MAGIC);
    layout.write_u32(page, offsets.version, MDB_DATA_VERSION);
    write_word(page, "map address", offsets.address, meta.address)?;
    write_word(page, "map size", offsets.map_size, meta.map_size)?;

    let mut free_db = meta.free_db;
    free_db.pad = meta.page_size;
    for (name, offset, db) in [("free", offsets.free_db, &free_db), ("main", offsets.main_db, &meta.main_db)]
    {
        layout.write_u32(page, offset + DB_PAD_OFFSET, db.pad);
        layout.write_u16(page, offset + DB_FLAGS_OFFSET, db.flags);
        layout.write_u16(page, offset + DB_DEPTH_OFFSET, db.depth);
        let root = if db.root == INVALID_PGNO { layout.word_max() } else { db.root };
        let words = [db.branch_pages, db.leaf_pages, db.overflow_pages, db.entries, root];
        for (word_index, value) in words.into_iter().enumerate() {
            let word_offset = offset + DB_WORDS_OFFSET + word_index * layout.word_len();
            write_word(page, &format!("{name} database field"), word_offset, value)?;
        }
    }

    write_word(page, "last page number", offsets.last_pgno, meta.last_pgno)?;
    write_word(page, "transaction ID", offsets.txnid, meta.txnid)?;
    Ok(())
}
