//! Conversion of a whole LMDB file from one layout to another, so that the LMDB library of this
//! host can read a store written on the device, and the device can read a store this host's
//! LMDB wrote. Records are never added, removed or reordered here: every B-tree page is
//! re-encoded in place, keeping its page number.
//!
//! The source is validated by the page walk first, which also records what each page is. Then
//! each page is re-encoded: page headers, node headers and meta pages get the target's word
//! width and byte order, branch nodes and `F_BIGDATA` nodes get page numbers of the target's
//! width, and the free database's keys and values (transaction IDs and page number lists, both
//! words) are re-encoded word by word. The main database's keys and values are opaque bytes and
//! are copied. Nodes keep their order and the gaps between them, counted from the page end, so
//! converting a page there and back gives the same bytes. Free space and pages that the current
//! meta page does not reach (free pages) come out as zeros.
//!
//! A 64-bit page holds less than a 32-bit page of the same size (a 16-byte header instead of
//! 12, 8-byte page numbers in `F_BIGDATA` nodes, wider free-list words), so a full 32-bit page
//! may not fit. Then the whole file is converted with pages of twice the size: LMDB takes the
//! page size from the meta page, and everything at most doubles.

use super::StoreError;
use super::layout::StoreLayout;
use super::meta::{MAX_PAGE_SIZE, read_meta_pages, write_meta};
use super::page::{
    F_BIGDATA, LeafValue, NODE_HEADER_SIZE, PageHeader, PageKind, TreePage, write_node_header,
    write_overflow_header,
};
use super::walk::{Db, PageUse, overflow_pages_needed, walk_store};

/// Converts a store in `layout` to the layout of this host's LMDB library. Returns a copy after
/// validating it when the layouts are the same.
pub fn to_host(bytes: &[u8], layout: StoreLayout) -> Result<Vec<u8>, StoreError> {
    convert_store(bytes, layout, StoreLayout::host())
}

/// Converts a store in this host's layout to `layout`. Returns a copy after validating it when
/// the layouts are the same.
pub fn from_host(bytes: &[u8], layout: StoreLayout) -> Result<Vec<u8>, StoreError> {
    convert_store(bytes, StoreLayout::host(), layout)
}

/// Returns a store in `layout` as a conversion writes it: the same pages, with the free space and
/// the gaps between nodes of every page, and every free page, zeroed. LMDB leaves old bytes
/// there, for example after splitting a page.
pub(super) fn normalize(bytes: &[u8], layout: StoreLayout) -> Result<Vec<u8>, StoreError> {
    convert_with_page_scale(bytes, layout, layout, 1).map_err(|error| match error {
        ConvertError::NoRoom(detail) => StoreError::corrupt(detail),
        ConvertError::Store(error) => error,
    })
}

/// Converts `bytes` from layout `from` to layout `to`, with pages of the same size when every
/// page fits, else with pages of twice the size.
pub(super) fn convert_store(bytes: &[u8], from: StoreLayout, to: StoreLayout) -> Result<Vec<u8>, StoreError> {
    if from == to {
        walk_store(bytes, from)?;
        return Ok(bytes.to_vec());
    }
    match convert_with_page_scale(bytes, from, to, 1) {
        Err(ConvertError::NoRoom(detail)) => {
            log::debug!(
                "mender-store does not fit the {to} layout with the same page size ({detail}); doubling it"
            );
            convert_with_page_scale(bytes, from, to, 2).map_err(|error| match error {
                ConvertError::NoRoom(detail) => StoreError::corrupt(format!(
                    "the store does not fit the {to} layout even with pages of twice the size: {detail}"
                )),
                ConvertError::Store(error) => error,
            })
        }
        Err(ConvertError::Store(error)) => Err(error),
        Ok(converted) => Ok(converted),
    }
}

/// Cause of a failed conversion attempt.
#[derive(Debug)]
enum ConvertError {
    /// A page or overflow run is too small for its contents in the target layout.
    NoRoom(String),
    /// The source is invalid, or a value does not fit in the target's words.
    Store(StoreError),
}

impl From<StoreError> for ConvertError {
    fn from(error: StoreError) -> Self {
        ConvertError::Store(error)
    }
}

/// Converts every page, writing pages `scale` times the source's page size.
fn convert_with_page_scale(
    bytes: &[u8],
    from: StoreLayout,
    to: StoreLayout,
    scale: usize,
) -> Result<Vec<u8>, ConvertError> {
    let walked = walk_store(bytes, from)?;
    let meta_pages = read_meta_pages(bytes, from)?;
    let page_size = walked.meta.page_size as usize;
    let out_page_size = page_size * scale;
    if out_page_size > MAX_PAGE_SIZE as usize {
        return Err(ConvertError::NoRoom(format!(
            "pages of {out_page_size} bytes are larger than LMDB's maximum of {MAX_PAGE_SIZE}"
        )));
    }

    let mut out = vec![0u8; walked.pages.len() * out_page_size];
    for (index, meta) in meta_pages.metas.iter().enumerate() {
        let mut meta = *meta;
        meta.page_size = out_page_size as u32;
        meta.map_size = meta.map_size.checked_mul(scale as u64).ok_or_else(|| {
            StoreError::corrupt(format!("map size {} of meta page {index} is too large", meta.map_size))
        })?;
        write_meta(&mut out[index * out_page_size..], index as u64, &meta, to)?;
    }

    let codec = Codec { from, to };
    for (pgno, page_use) in walked.pages.iter().enumerate() {
        let source = &bytes[pgno * page_size..];
        let target = &mut out[pgno * out_page_size..];
        match *page_use {
            PageUse::Unused | PageUse::Meta | PageUse::OverflowContinued => {}
            PageUse::Tree { db, kind } => codec.convert_tree_page(
                &source[..page_size],
                &mut target[..out_page_size],
                pgno as u64,
                db,
                kind,
            )?,
            PageUse::OverflowStart { db, pages, data_len } => {
                let run_len = pages as usize * out_page_size;
                codec.convert_overflow_run(
                    source,
                    &mut target[..run_len],
                    pgno as u64,
                    db,
                    data_len,
                    out_page_size,
                )?
            }
        }
    }
    Ok(out)
}

/// The source and target layouts of one conversion.
#[derive(Debug, Clone, Copy)]
struct Codec {
    from: StoreLayout,
    to: StoreLayout,
}

impl Codec {
    /// Re-encodes branch or leaf page `pgno` into `target`, which is zeroed. Nodes are laid out
    /// from the page end in the source's order of offsets, with the same gaps between them.
    fn convert_tree_page(
        &self,
        source: &[u8],
        target: &mut [u8],
        pgno: u64,
        db: Db,
        kind: PageKind,
    ) -> Result<(), ConvertError> {
        let page = TreePage::parse(source, pgno, kind, self.from)?;
        let header = page.header();
        let node_count = page.node_count();

        let mut by_offset = (0..node_count)
            .map(|index| Ok((page.node_offset(index)?, index)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        by_offset.sort_unstable_by(|left, right| right.cmp(left));

        let mut source_limit = source.len();
        let mut target_limit = target.len();
        let mut target_offsets = vec![0usize; node_count];
        for (source_offset, index) in by_offset {
            let source_end = source_offset + page.node_len(kind, index)?;
            let gap = source_limit.checked_sub(source_end).ok_or_else(|| {
                StoreError::corrupt(format!("node {index} of page {pgno} overlaps the node above it"))
            })?;
            let node = self.encode_node(&page, pgno, db, kind, index)?;
            let target_offset = target_limit.checked_sub(gap + node.len().next_multiple_of(2));
            let Some(target_offset) = target_offset.filter(|offset| *offset >= self.to.page_header_len())
            else {
                return Err(ConvertError::NoRoom(format!("the nodes of page {pgno} do not fit")));
            };
            target[target_offset..target_offset + node.len()].copy_from_slice(&node);
            target_offsets[index] = target_offset;
            source_limit = source_offset;
            target_limit = target_offset;
        }

        let upper_gap = source_limit.checked_sub(usize::from(header.upper)).unwrap_or_default();
        let lower = self.to.page_header_len() + 2 * node_count;
        let upper = target_limit.checked_sub(upper_gap).filter(|upper| *upper >= lower);
        let Some(upper) = upper else {
            return Err(ConvertError::NoRoom(format!("the node pointers of page {pgno} do not fit")));
        };

        let out_header = PageHeader {
            pgno,
            pad: header.pad,
            flags: header.flags,
            lower: to_u16(lower, pgno)?,
            upper: to_u16(upper, pgno)?,
        };
        out_header.write(target, self.to).ok_or_else(|| self.too_wide("page number", pgno))?;
        for (index, offset) in target_offsets.into_iter().enumerate() {
            self.to.write_u16(target, self.to.page_header_len() + 2 * index, to_u16(offset, pgno)?);
        }
        Ok(())
    }

    /// Encodes node `index` of `page` in the target layout, without padding.
    fn encode_node(
        &self,
        page: &TreePage<'_>,
        pgno: u64,
        db: Db,
        kind: PageKind,
        index: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let (key, size_or_pgno, flags, data) = match kind {
            PageKind::Branch => {
                let node = page.branch_node(index)?;
                let key = self.convert_key(node.key, db, pgno, index, true)?;
                let (low, high) = match self.to.word_len() {
                    8 => (node.child as u32, (node.child >> 32) as u16),
                    _ => (
                        u32::try_from(node.child)
                            .map_err(|_| self.too_wide("child page number", node.child))?,
                        0,
                    ),
                };
                (key, low, high, Vec::new())
            }
            PageKind::Leaf => {
                let node = page.leaf_node(index)?;
                let key = self.convert_key(node.key, db, pgno, index, false)?;
                match node.value {
                    LeafValue::Inline(value) => {
                        let value = self.convert_value(value, db)?;
                        let size = u32::try_from(value.len())
                            .map_err(|_| self.too_wide("value size", value.len() as u64))?;
                        (key, size, 0, value)
                    }
                    LeafValue::Overflow { pgno: run, size } => {
                        let size = self.converted_len(size, db)?;
                        let run_word = self
                            .to
                            .encode_word(run)
                            .ok_or_else(|| self.too_wide("overflow page number", run))?;
                        (key, size, F_BIGDATA, run_word)
                    }
                }
            }
        };

        let mut node = vec![0u8; NODE_HEADER_SIZE + key.len() + data.len()];
        let key_len = u16::try_from(key.len())
            .map_err(|_| StoreError::corrupt(format!("key of node {index} of page {pgno} is too long")))?;
        write_node_header(&mut node, self.to, size_or_pgno, flags, key_len);
        node[NODE_HEADER_SIZE..NODE_HEADER_SIZE + key.len()].copy_from_slice(&key);
        node[NODE_HEADER_SIZE + key.len()..].copy_from_slice(&data);
        Ok(node)
    }

    /// Re-encodes a key: main database keys are bytes, free database keys are transaction IDs.
    /// The first key of a branch page is never compared, and LMDB may leave it empty.
    fn convert_key(
        &self,
        key: &[u8],
        db: Db,
        pgno: u64,
        index: usize,
        branch: bool,
    ) -> Result<Vec<u8>, StoreError> {
        match db {
            Db::Main => Ok(key.to_vec()),
            Db::Free if key.is_empty() && branch && index == 0 => Ok(Vec::new()),
            Db::Free if key.len() == self.from.word_len() => self.convert_words(key),
            Db::Free => Err(StoreError::corrupt(format!(
                "free database key of node {index} of page {pgno} has {} bytes, expected {}",
                key.len(),
                self.from.word_len()
            ))),
        }
    }

    /// Re-encodes a value: main database values are bytes, free database values are lists of
    /// page numbers.
    fn convert_value(&self, value: &[u8], db: Db) -> Result<Vec<u8>, StoreError> {
        match db {
            Db::Main => Ok(value.to_vec()),
            Db::Free => self.convert_words(value),
        }
    }

    /// Returns the length of a value of `len` bytes in the target layout.
    fn converted_len(&self, len: u32, db: Db) -> Result<u32, StoreError> {
        match db {
            Db::Main => Ok(len),
            Db::Free => {
                let words = len as usize / self.from.word_len();
                u32::try_from(words * self.to.word_len())
                    .map_err(|_| self.too_wide("free list size", u64::from(len)))
            }
        }
    }

    /// Re-encodes a sequence of words of the source layout in the target layout.
    fn convert_words(&self, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        let from_len = self.from.word_len();
        if !bytes.len().is_multiple_of(from_len) {
            return Err(StoreError::corrupt(format!(
                "free database entry of {} bytes is not a whole number of {from_len}-byte words",
                bytes.len()
            )));
        }
        let mut converted = Vec::with_capacity(bytes.len() / from_len * self.to.word_len());
        for chunk in bytes.chunks_exact(from_len) {
            let word = self.from.read_word(chunk, 0).unwrap_or_default();
            let encoded =
                self.to.encode_word(word).ok_or_else(|| self.too_wide("free database word", word))?;
            converted.extend_from_slice(&encoded);
        }
        Ok(converted)
    }

    /// Re-encodes the overflow run that starts at `source` into `target` (the run's pages in the
    /// target page size, zeroed), keeping its page count.
    fn convert_overflow_run(
        &self,
        source: &[u8],
        target: &mut [u8],
        pgno: u64,
        db: Db,
        data_len: u32,
        target_page_size: usize,
    ) -> Result<(), ConvertError> {
        let source_header = PageHeader::read(source, self.from);
        let page_count = u32::try_from(target.len() / target_page_size)
            .map_err(|_| StoreError::corrupt(format!("overflow run at page {pgno} is too long")))?;
        let data_start = self.from.page_header_len();
        let data = source.get(data_start..data_start + data_len as usize).ok_or_else(|| {
            StoreError::corrupt(format!("overflow value at page {pgno} is past the file end"))
        })?;
        let data = self.convert_value(data, db)?;

        let needed = overflow_pages_needed(self.to.page_header_len(), data.len() as u64, target_page_size);
        if needed > u64::from(page_count) {
            return Err(ConvertError::NoRoom(format!(
                "the value on overflow pages {pgno}+{page_count} needs {needed} pages"
            )));
        }
        write_overflow_header(target, self.to, pgno, source_header.pad, page_count)
            .ok_or_else(|| self.too_wide("page number", pgno))?;
        let target_start = self.to.page_header_len();
        target[target_start..target_start + data.len()].copy_from_slice(&data);
        Ok(())
    }

    fn too_wide(&self, field: &str, value: u64) -> StoreError {
        StoreError::corrupt(format!(
            "{field} {value} does not fit in the {} bits of the {} layout",
            self.to.bits.bits(),
            self.to
        ))
    }
}

fn to_u16(offset: usize, pgno: u64) -> Result<u16, StoreError> {
    u16::try_from(offset)
        .map_err(|_| StoreError::corrupt(format!("offset {offset} in page {pgno} does not fit in 16 bits")))
}
