//! LMDB pages and the nodes on them (`MDB_page` and `MDB_node` in LMDB 0.9's `mdb.c`), in any
//! of the four layouts. Every accessor checks its bounds against the page, so a page from a
//! hostile file yields an error instead of a wrong slice.
//!
//! The page header is the page number (one word), then `mp_pad`, `mp_flags`, and the lower and
//! upper bounds of the free space (or, on an overflow page, the 32-bit page count), 16 bits
//! each. Its size is 12 bytes in the 32-bit layouts and 16 in the 64-bit ones.

use super::StoreError;
use super::layout::StoreLayout;

pub(super) const PAGE_PGNO_OFFSET: usize = 0;

/// Offsets of the fields after the page number, relative to the end of the page number.
const PAGE_PAD_AFTER_PGNO: usize = 0;
const PAGE_FLAGS_AFTER_PGNO: usize = 2;
const PAGE_LOWER_AFTER_PGNO: usize = 4;
const PAGE_UPPER_AFTER_PGNO: usize = 6;
const PAGE_OVERFLOW_COUNT_AFTER_PGNO: usize = 4;

/// Page flags (`P_*`).
pub(super) const P_BRANCH: u16 = 0x01;
pub(super) const P_LEAF: u16 = 0x02;
pub(super) const P_OVERFLOW: u16 = 0x04;
pub(super) const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;

/// Size of a node header (`NODESIZE`) in every layout. It contains `mn_lo` and `mn_hi` (the data
/// size on leaf nodes, the low 32 bits of the child page number on branch nodes), `mn_flags`
/// (bits 32 to 47 of the child page number on 64-bit branch nodes) and `mn_ksize`.
pub(super) const NODE_HEADER_SIZE: usize = 8;
/// `mn_lo` and `mn_hi` read together as one 32-bit field: little-endian LMDB stores `mn_lo`
/// first and big-endian LMDB `mn_hi` first, so in both it is `mn_hi << 16 | mn_lo` in the
/// layout's byte order.
const NODE_SIZE_OR_PGNO_OFFSET: usize = 0;
const NODE_FLAGS_OFFSET: usize = 4;
const NODE_KEY_SIZE_OFFSET: usize = 6;

/// Leaf node flags (`F_*`).
pub(super) const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// Fields of a page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageHeader {
    pub pgno: u64,
    /// `mp_pad`, zero except on the `LEAF2` pages that are rejected here.
    pub pad: u16,
    pub flags: u16,
    /// `mp_lower`, or the low half of the page count on an overflow page.
    pub lower: u16,
    /// `mp_upper`, or the high half of the page count on an overflow page.
    pub upper: u16,
}

impl PageHeader {
    /// Reads the header at the start of `page`; missing bytes read as zero.
    pub(super) fn read(page: &[u8], layout: StoreLayout) -> Self {
        let after_pgno = layout.word_len();
        let field = |offset| layout.read_u16(page, after_pgno + offset).unwrap_or_default();
        PageHeader {
            pgno: layout.read_word(page, PAGE_PGNO_OFFSET).unwrap_or_default(),
            pad: field(PAGE_PAD_AFTER_PGNO),
            flags: field(PAGE_FLAGS_AFTER_PGNO),
            lower: field(PAGE_LOWER_AFTER_PGNO),
            upper: field(PAGE_UPPER_AFTER_PGNO),
        }
    }

    /// Writes the header at the start of `page`, or returns `None` when the page number does not
    /// fit in a word of `layout`.
    pub(super) fn write(&self, page: &mut [u8], layout: StoreLayout) -> Option<()> {
        let after_pgno = layout.word_len();
        layout.write_word(page, PAGE_PGNO_OFFSET, self.pgno)?;
        layout.write_u16(page, after_pgno + PAGE_PAD_AFTER_PGNO, self.pad);
        layout.write_u16(page, after_pgno + PAGE_FLAGS_AFTER_PGNO, self.flags);
        layout.write_u16(page, after_pgno + PAGE_LOWER_AFTER_PGNO, self.lower);
        layout.write_u16(page, after_pgno + PAGE_UPPER_AFTER_PGNO, self.upper);
        Some(())
    }

    /// Page count of an overflow page (`mp_pages`), which shares its bytes with `mp_lower` and
    /// `mp_upper`.
    fn overflow_page_count(page: &[u8], layout: StoreLayout) -> u32 {
        layout.read_u32(page, layout.word_len() + PAGE_OVERFLOW_COUNT_AFTER_PGNO).unwrap_or_default()
    }
}

/// Writes the header of the first page of an overflow run of `page_count` pages, or returns
/// `None` when the page number does not fit in a word of `layout`.
pub(super) fn write_overflow_header(
    page: &mut [u8],
    layout: StoreLayout,
    pgno: u64,
    pad: u16,
    page_count: u32,
) -> Option<()> {
    let after_pgno = layout.word_len();
    layout.write_word(page, PAGE_PGNO_OFFSET, pgno)?;
    layout.write_u16(page, after_pgno + PAGE_PAD_AFTER_PGNO, pad);
    layout.write_u16(page, after_pgno + PAGE_FLAGS_AFTER_PGNO, P_OVERFLOW);
    layout.write_u32(page, after_pgno + PAGE_OVERFLOW_COUNT_AFTER_PGNO, page_count);
    Some(())
}

/// Writes a node header: `size_or_pgno_low` is the data size of a leaf node or the low 32 bits
/// of a branch node's child page number.
pub(super) fn write_node_header(
    node: &mut [u8],
    layout: StoreLayout,
    size_or_pgno_low: u32,
    flags: u16,
    key_len: u16,
) {
    layout.write_u32(node, NODE_SIZE_OR_PGNO_OFFSET, size_or_pgno_low);
    layout.write_u16(node, NODE_FLAGS_OFFSET, flags);
    layout.write_u16(node, NODE_KEY_SIZE_OFFSET, key_len);
}

/// Kind of a B-tree page, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageKind {
    Branch,
    Leaf,
}

/// One branch or leaf page, with its node offsets checked to lie in the page.
pub(super) struct TreePage<'a> {
    pgno: u64,
    bytes: &'a [u8],
    layout: StoreLayout,
    header: PageHeader,
    node_offsets: Vec<usize>,
}

/// A node of a branch page: the separator key and the child page number.
pub(super) struct BranchNode<'a> {
    pub key: &'a [u8],
    pub child: u64,
}

/// Location of a leaf node's value.
pub(super) enum LeafValue<'a> {
    /// On the leaf page itself.
    Inline(&'a [u8]),
    /// On a run of overflow pages starting at `pgno`.
    Overflow { pgno: u64, size: u32 },
}

/// A node of a leaf page.
pub(super) struct LeafNode<'a> {
    pub key: &'a [u8],
    pub value: LeafValue<'a>,
}

impl<'a> TreePage<'a> {
    /// Parses page `pgno` as a page of `kind` in `layout`. Checks the page number and flags in
    /// its header and the free-space bounds. Also checks that every node header and key lies
    /// inside the page, aligned to two bytes and not overlapping another node.
    pub(super) fn parse(
        bytes: &'a [u8],
        pgno: u64,
        kind: PageKind,
        layout: StoreLayout,
    ) -> Result<Self, StoreError> {
        let page_size = bytes.len();
        let header_len = layout.page_header_len();
        let header = PageHeader::read(bytes, layout);
        if header.pgno != pgno {
            return Err(StoreError::corrupt(format!(
                "page {pgno} has page number {} in its header",
                header.pgno
            )));
        }

        let flags = header.flags;
        let expected_flags = match kind {
            PageKind::Branch => P_BRANCH,
            PageKind::Leaf => P_LEAF,
        };
        if flags & P_LEAF2 != 0 {
            return Err(StoreError::Unsupported {
                feature: format!("fixed-size duplicate data (LEAF2 page {pgno})"),
            });
        }
        if flags != expected_flags {
            return Err(StoreError::corrupt(format!(
                "page {pgno} has flags {flags:#x}, expected a {kind:?} page ({expected_flags:#x})"
            )));
        }

        let lower = usize::from(header.lower);
        let upper = usize::from(header.upper);
        if lower < header_len || !(lower - header_len).is_multiple_of(2) || lower > upper || upper > page_size
        {
            return Err(StoreError::corrupt(format!(
                "page {pgno} has free space bounds {lower}..{upper}, outside the page of {page_size} bytes"
            )));
        }

        let node_count = (lower - header_len) / 2;
        let minimum_nodes = match kind {
            PageKind::Branch => 2,
            PageKind::Leaf => 1,
        };
        if node_count < minimum_nodes {
            return Err(StoreError::corrupt(format!(
                "{kind:?} page {pgno} has {node_count} nodes, at least {minimum_nodes} expected"
            )));
        }

        let mut node_offsets = Vec::with_capacity(node_count);
        for index in 0..node_count {
            let pointer_offset = header_len + 2 * index;
            let offset = usize::from(layout.read_u16(bytes, pointer_offset).unwrap_or_default());
            if offset < upper || !offset.is_multiple_of(2) || offset + NODE_HEADER_SIZE > page_size {
                return Err(StoreError::corrupt(format!(
                    "node {index} of page {pgno} is at offset {offset}, outside the node area {upper}..{page_size}"
                )));
            }
            node_offsets.push(offset);
        }

        let page = TreePage { pgno, bytes, layout, header, node_offsets };
        page.check_node_extents(kind, upper)?;
        Ok(page)
    }

    pub(super) fn header(&self) -> PageHeader {
        self.header
    }

    pub(super) fn node_count(&self) -> usize {
        self.node_offsets.len()
    }

    /// Returns the offset of node `index` from the start of the page.
    pub(super) fn node_offset(&self, index: usize) -> Result<usize, StoreError> {
        self.node_offsets
            .get(index)
            .copied()
            .ok_or_else(|| StoreError::corrupt(format!("page {} has no node {index}", self.pgno)))
    }

    /// Reads node `index` of a branch page.
    pub(super) fn branch_node(&self, index: usize) -> Result<BranchNode<'a>, StoreError> {
        let offset = self.node_offset(index)?;
        let low = self.layout.read_u32(self.bytes, offset + NODE_SIZE_OR_PGNO_OFFSET).unwrap_or_default();
        let high = match self.layout.word_len() {
            8 => self.layout.read_u16(self.bytes, offset + NODE_FLAGS_OFFSET).unwrap_or_default(),
            _ => 0,
        };
        let child = u64::from(low) | u64::from(high) << 32;
        let key = self.key(index, offset)?;
        Ok(BranchNode { key, child })
    }

    /// Reads node `index` of a leaf page. Rejects nodes that hold a sub-database or duplicate
    /// data, which the Mender client never writes.
    pub(super) fn leaf_node(&self, index: usize) -> Result<LeafNode<'a>, StoreError> {
        let pgno = self.pgno;
        let offset = self.node_offset(index)?;
        let flags = self.layout.read_u16(self.bytes, offset + NODE_FLAGS_OFFSET).unwrap_or_default();
        let data_size =
            self.layout.read_u32(self.bytes, offset + NODE_SIZE_OR_PGNO_OFFSET).unwrap_or_default();

        if flags & (F_SUBDATA | F_DUPDATA) != 0 {
            return Err(StoreError::Unsupported {
                feature: format!(
                    "a named sub-database or duplicate data (node {index} of page {pgno}, flags {flags:#x})"
                ),
            });
        }
        if flags & !F_BIGDATA != 0 {
            return Err(StoreError::corrupt(format!(
                "node {index} of page {pgno} has unknown flags {flags:#x}"
            )));
        }

        let key = self.key(index, offset)?;
        let data_offset = offset + NODE_HEADER_SIZE + key.len();
        let value = if flags & F_BIGDATA != 0 {
            let overflow_pgno = self.layout.read_word(self.bytes, data_offset).ok_or_else(|| {
                StoreError::corrupt(format!(
                    "overflow page number of node {index} of page {pgno} is past the page end"
                ))
            })?;
            LeafValue::Overflow { pgno: overflow_pgno, size: data_size }
        } else {
            let data_end = data_offset.checked_add(data_size as usize);
            let data = data_end.and_then(|end| self.bytes.get(data_offset..end)).ok_or_else(|| {
                StoreError::corrupt(format!(
                    "value of node {index} of page {pgno} ({data_size} bytes at offset {data_offset}) is past the page end"
                ))
            })?;
            LeafValue::Inline(data)
        };

        Ok(LeafNode { key, value })
    }

    fn key(&self, index: usize, offset: usize) -> Result<&'a [u8], StoreError> {
        let key_size =
            usize::from(self.layout.read_u16(self.bytes, offset + NODE_KEY_SIZE_OFFSET).unwrap_or_default());
        let key_start = offset + NODE_HEADER_SIZE;
        self.bytes.get(key_start..key_start + key_size).ok_or_else(|| {
            StoreError::corrupt(format!(
                "key of node {index} of page {} ({key_size} bytes at offset {key_start}) is past the page end",
                self.pgno
            ))
        })
    }

    /// Returns the number of bytes node `index` takes on the page, padding included, as LMDB's
    /// `mdb_node_add` reserves it: header, key, then the value or an overflow page number.
    pub(super) fn node_len(&self, kind: PageKind, index: usize) -> Result<usize, StoreError> {
        let offset = self.node_offset(index)?;
        let key_len = self.key(index, offset)?.len();
        let data_len = match kind {
            PageKind::Branch => 0,
            PageKind::Leaf => match self.leaf_node(index)?.value {
                LeafValue::Inline(data) => data.len(),
                LeafValue::Overflow { .. } => self.layout.word_len(),
            },
        };
        Ok((NODE_HEADER_SIZE + key_len + data_len).next_multiple_of(2))
    }

    /// Checks that the nodes, with their keys and inline values, lie between `upper` and the page
    /// end without overlapping.
    fn check_node_extents(&self, kind: PageKind, upper: usize) -> Result<(), StoreError> {
        let mut extents = Vec::with_capacity(self.node_offsets.len());
        for (index, &offset) in self.node_offsets.iter().enumerate() {
            extents.push((offset, offset + self.node_len(kind, index)?, index));
        }

        extents.sort_unstable();
        let mut previous_end = upper;
        for (start, end, index) in extents {
            if start < previous_end || end > self.bytes.len() {
                return Err(StoreError::corrupt(format!(
                    "node {index} of page {} at offset {start} overlaps another node or the free space",
                    self.pgno
                )));
            }
            previous_end = end;
        }
        Ok(())
    }
}

/// Reads the header of overflow page `pgno` and returns the number of pages in its run.
pub(super) fn overflow_page_count(bytes: &[u8], pgno: u64, layout: StoreLayout) -> Result<u32, StoreError> {
    let header = PageHeader::read(bytes, layout);
    if header.pgno != pgno || header.flags != P_OVERFLOW {
        return Err(StoreError::corrupt(format!(
            "overflow page {pgno} has page number {} and flags {:#x} in its header, expected {pgno} and {P_OVERFLOW:#x}",
            header.pgno, header.flags
        )));
    }
    Ok(PageHeader::overflow_page_count(bytes, layout))
}
