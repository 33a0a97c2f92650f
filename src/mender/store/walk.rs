//! Validation walk over a whole LMDB file: both B-trees of the selected meta page, every
//! overflow run and every free-list record, in safe Rust, before LMDB's C code reads the file.
//! The walk also returns the main database's records, so it doubles as a reader.

use std::cmp::Ordering;

use super::layout::StoreLayout;
use super::meta::{DbRecord, INVALID_PGNO, META_PAGE_COUNT, Meta, select_meta};
use super::page::{LeafValue, PageKind, TreePage, overflow_page_count};
use super::{Records, StoreError};

/// `CURSOR_STACK` of LMDB 0.9: a cursor cannot descend deeper than this many levels.
const MAX_TREE_DEPTH: u16 = 32;
/// `MDB_MAXKEYSIZE` of LMDB 0.9 release builds; LMDB rejects longer and empty keys on write.
pub(super) const MAX_KEY_SIZE: usize = 511;

/// `MDB_INTEGERKEY`, which the free database always has.
const MDB_INTEGERKEY: u16 = 0x08;
/// Environment flags LMDB stores in the free database's flags: `MDB_FIXEDMAP`, `MDB_NOSUBDIR`.
const PERSISTENT_ENV_FLAGS: u16 = 0x01 | 0x4000;

/// One of the two databases of every LMDB file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Db {
    /// The free-page database: transaction IDs to lists of the pages they freed.
    Free,
    /// The main database, which contains the records.
    Main,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Free => "free",
            Db::Main => "main",
        }
    }
}

/// Role of a page of the file in the snapshot of the current meta page, as the walk found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageUse {
    /// Neither a meta page nor reached from the current meta page: a free page.
    Unused,
    Meta,
    /// A branch or leaf page of a database.
    Tree {
        db: Db,
        kind: PageKind,
    },
    /// The first page of an overflow run of `pages` pages that contains a value of `data_len` bytes.
    OverflowStart {
        db: Db,
        pages: u64,
        data_len: u32,
    },
    /// A later page of an overflow run.
    OverflowContinued,
}

/// Result of a successful walk.
#[derive(Debug)]
pub(super) struct WalkedStore {
    pub meta: Meta,
    pub records: Records,
    /// Role of each page of the file, by page number.
    pub pages: Vec<PageUse>,
}

/// Validates `bytes` as an LMDB file in `layout` whose main database is a plain B-tree, and
/// returns its records and what each page is.
pub(super) fn walk_store(bytes: &[u8], layout: StoreLayout) -> Result<WalkedStore, StoreError> {
    let meta = select_meta(bytes, layout)?;
    let page_size = meta.page_size as usize;
    let page_count = (bytes.len() / page_size) as u64;

    if meta.last_pgno < META_PAGE_COUNT - 1 {
        return Err(StoreError::corrupt(format!(
            "last page number {} is below the meta pages",
            meta.last_pgno
        )));
    }
    check_main_db_flags(&meta.main_db)?;
    check_free_db_flags(&meta.free_db)?;

    let mut walker = Walker {
        bytes,
        layout,
        page_size,
        page_count,
        last_pgno: meta.last_pgno,
        pages: vec![PageUse::Unused; page_count as usize],
    };
    walker.pages[0] = PageUse::Meta;
    walker.pages[1] = PageUse::Meta;

    let mut records = Records::new();
    walker.walk_tree(Db::Main, &meta.main_db, &mut |key, value| {
        if key.is_empty() || key.len() > MAX_KEY_SIZE {
            return Err(StoreError::corrupt(format!(
                "main database key of {} bytes is outside 1..={MAX_KEY_SIZE}",
                key.len()
            )));
        }
        records.insert(key.to_vec(), value.to_vec());
        Ok(())
    })?;

    let mut free_pages = Vec::new();
    walker.walk_tree(Db::Free, &meta.free_db, &mut |key, value| {
        read_free_list_record(key, value, meta.txnid, layout, &mut free_pages)
    })?;
    walker.check_free_pages(free_pages)?;

    Ok(WalkedStore { meta, records, pages: walker.pages })
}

fn check_main_db_flags(db: &DbRecord) -> Result<(), StoreError> {
    if db.flags != 0 {
        return Err(StoreError::Unsupported {
            feature: format!(
                "main database flags {:#x} (reverse or integer keys, or duplicate data)",
                db.flags
            ),
        });
    }
    Ok(())
}

fn check_free_db_flags(db: &DbRecord) -> Result<(), StoreError> {
    if db.flags & MDB_INTEGERKEY == 0 || db.flags & !(MDB_INTEGERKEY | PERSISTENT_ENV_FLAGS) != 0 {
        return Err(StoreError::corrupt(format!(
            "free database flags are {:#x}, expected integer keys ({MDB_INTEGERKEY:#x}) and at most the environment flags {PERSISTENT_ENV_FLAGS:#x}",
            db.flags
        )));
    }
    Ok(())
}

/// Orders keys as LMDB's default comparison does for the main database (bytewise, a prefix
/// before its extensions) and for the free database (`MDB_INTEGERKEY`: transaction IDs as
/// words of the layout). Free database keys of another size sort by length first; the leaf
/// check rejects them.
fn compare_keys(db: Db, layout: StoreLayout, left: &[u8], right: &[u8]) -> Ordering {
    let word_len = layout.word_len();
    match db {
        Db::Main => left.cmp(right),
        Db::Free if left.len() == word_len && right.len() == word_len => {
            layout.read_word(left, 0).cmp(&layout.read_word(right, 0))
        }
        Db::Free => left.len().cmp(&right.len()).then_with(|| left.cmp(right)),
    }
}

/// Parses one free-list record: the key is the ID of the transaction that freed the pages, the
/// value an ID list (`MDB_IDL`): a count followed by that many page numbers, all words of the
/// layout.
fn read_free_list_record(
    key: &[u8],
    value: &[u8],
    txnid: u64,
    layout: StoreLayout,
    free_pages: &mut Vec<u64>,
) -> Result<(), StoreError> {
    let word_len = layout.word_len();
    let freeing_txnid = match layout.read_word(key, 0) {
        Some(id) if key.len() == word_len => id,
        _ => {
            return Err(StoreError::corrupt(format!(
                "free list key of {} bytes, expected {word_len}",
                key.len()
            )));
        }
    };
    if freeing_txnid > txnid {
        return Err(StoreError::corrupt(format!(
            "free list record of transaction {freeing_txnid} is newer than the meta page's transaction {txnid}"
        )));
    }

    let count = layout.read_word(value, 0).unwrap_or(u64::MAX);
    let expected_len = count.checked_add(1).and_then(|words| words.checked_mul(word_len as u64));
    if expected_len != Some(value.len() as u64) {
        return Err(StoreError::corrupt(format!(
            "free list record of transaction {freeing_txnid} has {} bytes, which does not match its page count {count}",
            value.len()
        )));
    }

    free_pages.extend(value.chunks_exact(word_len).skip(1).filter_map(|word| layout.read_word(word, 0)));
    Ok(())
}

/// Page counts of one B-tree, to compare with the statistics in its `MDB_db` record.
#[derive(Debug, Default, PartialEq, Eq)]
struct TreeCounts {
    branch_pages: u64,
    leaf_pages: u64,
    overflow_pages: u64,
    entries: u64,
}

struct Walker<'a> {
    bytes: &'a [u8],
    layout: StoreLayout,
    page_size: usize,
    page_count: u64,
    last_pgno: u64,
    /// Role of each page found so far. A page is claimed once, so no page belongs to two places
    /// and the walk cannot loop.
    pages: Vec<PageUse>,
}

/// Key range a subtree must keep to: `low <= key < high`, unbounded where `None`.
#[derive(Clone, Copy)]
struct KeyRange<'a> {
    low: Option<&'a [u8]>,
    high: Option<&'a [u8]>,
}

impl<'a> Walker<'a> {
    /// Walks the tree of `db`, calling `on_record` for each record in key order, and checks its
    /// depth and page statistics.
    fn walk_tree(
        &mut self,
        db_kind: Db,
        db: &DbRecord,
        on_record: &mut dyn FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let name = db_kind.name();
        let mut counts = TreeCounts::default();
        if db.root == INVALID_PGNO {
            if db.depth != 0
                || db.entries != 0
                || db.branch_pages != 0
                || db.leaf_pages != 0
                || db.overflow_pages != 0
            {
                return Err(StoreError::corrupt(format!(
                    "{name} database has no root page but its statistics are not zero"
                )));
            }
            return Ok(());
        }
        if db.depth == 0 || db.depth > MAX_TREE_DEPTH {
            return Err(StoreError::corrupt(format!(
                "{name} database has depth {}, expected 1..={MAX_TREE_DEPTH}",
                db.depth
            )));
        }

        let all_keys = KeyRange { low: None, high: None };
        let walk = TreeWalk { db: db_kind, name, depth: db.depth, layout: self.layout };
        self.visit(&walk, db.root, 0, all_keys, &mut counts, on_record)?;

        let recorded = TreeCounts {
            branch_pages: db.branch_pages,
            leaf_pages: db.leaf_pages,
            overflow_pages: db.overflow_pages,
            entries: db.entries,
        };
        if counts != recorded {
            return Err(StoreError::corrupt(format!(
                "{name} database statistics {recorded:?} do not match its pages {counts:?}"
            )));
        }
        Ok(())
    }

    fn visit(
        &mut self,
        walk: &TreeWalk<'_>,
        pgno: u64,
        level: u16,
        range: KeyRange<'a>,
        counts: &mut TreeCounts,
        on_record: &mut dyn FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let is_leaf_level = level + 1 == walk.depth;
        let kind = if is_leaf_level { PageKind::Leaf } else { PageKind::Branch };
        let bytes = self.claim_pages(walk.name, pgno, 1, PageUse::Tree { db: walk.db, kind })?;
        let page = TreePage::parse(bytes, pgno, kind, self.layout)?;

        match kind {
            PageKind::Branch => {
                counts.branch_pages += 1;
                self.visit_children(walk, &page, level, range, counts, on_record)
            }
            PageKind::Leaf => {
                counts.leaf_pages += 1;
                self.visit_records(walk, &page, range, counts, on_record)
            }
        }
    }

    /// Checks the separator keys of a branch page and walks each child within its key range.
    fn visit_children(
        &mut self,
        walk: &TreeWalk<'_>,
        page: &TreePage<'a>,
        level: u16,
        range: KeyRange<'a>,
        counts: &mut TreeCounts,
        on_record: &mut dyn FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let nodes =
            (0..page.node_count()).map(|index| page.branch_node(index)).collect::<Result<Vec<_>, _>>()?;

        // LMDB never compares the first node's key, because its child contains every key below the
        // second node's key.
        let separators: Vec<Option<&'a [u8]>> =
            nodes.iter().enumerate().map(|(index, node)| (index > 0).then_some(node.key)).collect();
        for separator in separators.iter().flatten() {
            walk.check_in_range(separator, range, "separator key")?;
        }
        for pair in separators.windows(2) {
            if let [Some(left), Some(right)] = pair
                && walk.compare(left, right) != Ordering::Less
            {
                return Err(StoreError::corrupt(format!(
                    "{} database branch keys are out of order",
                    walk.name
                )));
            }
        }

        for (index, node) in nodes.iter().enumerate() {
            let low = separators.get(index).copied().flatten().or(range.low);
            let high = separators.get(index + 1).copied().flatten().or(range.high);
            self.visit(walk, node.child, level + 1, KeyRange { low, high }, counts, on_record)?;
        }
        Ok(())
    }

    /// Checks the keys of a leaf page, reads each value (following overflow runs) and passes the
    /// records on.
    fn visit_records(
        &mut self,
        walk: &TreeWalk<'_>,
        page: &TreePage<'a>,
        range: KeyRange<'a>,
        counts: &mut TreeCounts,
        on_record: &mut dyn FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut previous_key: Option<&[u8]> = None;
        for index in 0..page.node_count() {
            let node = page.leaf_node(index)?;
            walk.check_in_range(node.key, range, "key")?;
            if let Some(previous) = previous_key
                && walk.compare(previous, node.key) != Ordering::Less
            {
                return Err(StoreError::corrupt(format!(
                    "{} database leaf keys are out of order",
                    walk.name
                )));
            }
            previous_key = Some(node.key);

            let value = match node.value {
                LeafValue::Inline(data) => data,
                LeafValue::Overflow { pgno, size } => {
                    let (data, pages) = self.read_overflow(walk, pgno, size)?;
                    counts.overflow_pages += pages;
                    data
                }
            };
            counts.entries += 1;
            on_record(node.key, value)?;
        }
        Ok(())
    }

    /// Claims the run of overflow pages at `pgno` and returns its `size` bytes of data and its
    /// page count.
    fn read_overflow(
        &mut self,
        walk: &TreeWalk<'_>,
        pgno: u64,
        size: u32,
    ) -> Result<(&'a [u8], u64), StoreError> {
        let name = walk.name;
        let first_page = self.page_bytes(name, pgno, 1)?;
        let run_pages = u64::from(overflow_page_count(first_page, pgno, self.layout)?);

        // LMDB's OVPAGES: the fewest pages that hold the header and the data. A longer run is
        // valid because LMDB may reuse a run in place for a smaller value.
        let header_len = self.layout.page_header_len();
        let needed_pages = overflow_pages_needed(header_len, u64::from(size), self.page_size);
        if run_pages < needed_pages {
            return Err(StoreError::corrupt(format!(
                "overflow run at page {pgno} has {run_pages} pages, but its value of {size} bytes needs {needed_pages}"
            )));
        }

        let first_use = PageUse::OverflowStart { db: walk.db, pages: run_pages, data_len: size };
        let run = self.claim_pages(name, pgno, run_pages, first_use)?;
        let data = run.get(header_len..header_len + size as usize).ok_or_else(|| {
            StoreError::corrupt(format!("overflow value at page {pgno} is past the end of its run"))
        })?;
        Ok((data, run_pages))
    }

    /// Returns the bytes of `count` pages from `pgno` after checking that they lie in the file and
    /// up to the meta page's last page number.
    fn page_bytes(&self, name: &str, pgno: u64, count: u64) -> Result<&'a [u8], StoreError> {
        let end = pgno.checked_add(count).filter(|&end| {
            let last_page = end.checked_sub(1);
            pgno >= META_PAGE_COUNT
                && count > 0
                && end <= self.page_count
                && last_page <= Some(self.last_pgno)
        });
        let Some(end) = end else {
            return Err(StoreError::corrupt(format!(
                "{name} database refers to pages {pgno}+{count}, outside pages {META_PAGE_COUNT}..{} of the file (last page number {})",
                self.page_count, self.last_pgno
            )));
        };
        let start = pgno as usize * self.page_size;
        let end = end as usize * self.page_size;
        self.bytes
            .get(start..end)
            .ok_or_else(|| StoreError::corrupt(format!("pages {pgno}..{end} are past the file end")))
    }

    /// Like [`Self::page_bytes`], and marks the first page as `first_use` and the others as
    /// continued overflow pages, rejecting a page reached twice.
    fn claim_pages(
        &mut self,
        name: &str,
        pgno: u64,
        count: u64,
        first_use: PageUse,
    ) -> Result<&'a [u8], StoreError> {
        let bytes = self.page_bytes(name, pgno, count)?;
        for page in pgno..pgno + count {
            let slot = &mut self.pages[page as usize];
            if *slot != PageUse::Unused {
                return Err(StoreError::corrupt(format!(
                    "page {page} is reached twice (in the {name} database)"
                )));
            }
            *slot = if page == pgno { first_use } else { PageUse::OverflowContinued };
        }
        Ok(bytes)
    }

    /// Checks the free list. Each listed page must be past the meta pages, at most the last page
    /// number, listed once and not in use. Every page past the file end must be listed, because
    /// a page LMDB never wrote cannot be in use.
    fn check_free_pages(&self, mut free_pages: Vec<u64>) -> Result<(), StoreError> {
        free_pages.sort_unstable();
        for pair in free_pages.windows(2) {
            if let [left, right] = pair
                && left == right
            {
                return Err(StoreError::corrupt(format!("page {left} is listed twice in the free list")));
            }
        }

        for &pgno in &free_pages {
            if pgno < META_PAGE_COUNT || pgno > self.last_pgno {
                return Err(StoreError::corrupt(format!(
                    "free list contains page {pgno}, outside pages {META_PAGE_COUNT}..={}",
                    self.last_pgno
                )));
            }
            if self.pages.get(pgno as usize).is_some_and(|page_use| *page_use != PageUse::Unused) {
                return Err(StoreError::corrupt(format!("page {pgno} is both in use and in the free list")));
            }
        }

        let unwritten_pages = self.last_pgno.saturating_add(1).saturating_sub(self.page_count);
        let listed_unwritten = free_pages.iter().filter(|&&pgno| pgno >= self.page_count).count() as u64;
        if listed_unwritten != unwritten_pages {
            return Err(StoreError::corrupt(format!(
                "last page number {} is past the file's {} pages, but only {listed_unwritten} of the {unwritten_pages} missing pages are free",
                self.last_pgno, self.page_count
            )));
        }
        Ok(())
    }
}

/// Settings that stay fixed while walking one tree.
struct TreeWalk<'n> {
    db: Db,
    name: &'n str,
    depth: u16,
    layout: StoreLayout,
}

impl TreeWalk<'_> {
    fn compare(&self, left: &[u8], right: &[u8]) -> Ordering {
        compare_keys(self.db, self.layout, left, right)
    }

    fn check_in_range(&self, key: &[u8], range: KeyRange<'_>, key_kind: &str) -> Result<(), StoreError> {
        let below_low = range.low.is_some_and(|low| self.compare(key, low) == Ordering::Less);
        let not_below_high = range.high.is_some_and(|high| self.compare(key, high) != Ordering::Less);
        if below_low || not_below_high {
            return Err(StoreError::corrupt(format!(
                "{} database {key_kind} is outside the key range its parent branch gives",
                self.name
            )));
        }
        Ok(())
    }
}

/// LMDB's `OVPAGES`: the fewest pages of `page_size` bytes that hold a page header of
/// `header_len` bytes and `data_len` bytes of data.
pub(super) fn overflow_pages_needed(header_len: usize, data_len: u64, page_size: usize) -> u64 {
    (header_len as u64 - 1 + data_len) / page_size as u64 + 1
}
