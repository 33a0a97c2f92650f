//! LMDB pages and the nodes on them (`MDB_page` and `MDB_node` in LMDB 0.9's `mdb.c`), in the
//! 64-bit little-endian layout. Every accessor checks its bounds against the page, so a page
//! from a hostile file yields an error instead of a wrong slice.

use super::StoreError;

/// Size of the page header (`PAGEHDRSZ`): page number, pad, flags, then lower and upper bounds
/// of the free space (or the overflow page count).
pub(super) const PAGE_HEADER_SIZE: usize = 16;
pub(super) const PAGE_PGNO_OFFSET: usize = 0;
pub(super) const PAGE_FLAGS_OFFSET: usize = 10;
const PAGE_LOWER_OFFSET: usize = 12;
const PAGE_UPPER_OFFSET: usize = 14;
const PAGE_OVERFLOW_COUNT_OFFSET: usize = 12;

/// Page flags (`P_*`).
pub(super) const P_BRANCH: u16 = 0x01;
pub(super) const P_LEAF: u16 = 0x02;
pub(super) const P_OVERFLOW: u16 = 0x04;
pub(super) const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;

/// Size of a node header (`NODESIZE`): two halves of the data size or child page number, flags
/// (the top of the child page number on branch pages), key size.
const NODE_HEADER_SIZE: usize = 8;
const NODE_LO_OFFSET: usize = 0;
const NODE_HI_OFFSET: usize = 2;
const NODE_FLAGS_OFFSET: usize = 4;
const NODE_KEY_SIZE_OFFSET: usize = 6;

/// Leaf node flags (`F_*`).
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// Size of the page number that replaces the data of an `F_BIGDATA` node.
const OVERFLOW_PGNO_SIZE: usize = 8;

pub(super) fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(offset..offset.checked_add(2)?)?.try_into().ok()?))
}

pub(super) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?))
}

pub(super) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?))
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
    /// Parses page `pgno` as a page of `kind`: checks the page number and flags in its header,
    /// the free-space bounds, and that every node header and key lies inside the page, aligned
    /// to two bytes and not overlapping another node.
    pub(super) fn parse(bytes: &'a [u8], pgno: u64, kind: PageKind) -> Result<Self, StoreError> {
        let page_size = bytes.len();
        let header_pgno = read_u64(bytes, PAGE_PGNO_OFFSET);
        if header_pgno != Some(pgno) {
            return Err(StoreError::corrupt(format!(
                "page {pgno} has page number {} in its header",
                header_pgno.unwrap_or_default()
            )));
        }

        let flags = read_u16(bytes, PAGE_FLAGS_OFFSET).unwrap_or_default();
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

        let lower = usize::from(read_u16(bytes, PAGE_LOWER_OFFSET).unwrap_or_default());
        let upper = usize::from(read_u16(bytes, PAGE_UPPER_OFFSET).unwrap_or_default());
        if lower < PAGE_HEADER_SIZE
            || !(lower - PAGE_HEADER_SIZE).is_multiple_of(2)
            || lower > upper
            || upper > page_size
        {
            return Err(StoreError::corrupt(format!(
                "page {pgno} has free space bounds {lower}..{upper}, outside the page of {page_size} bytes"
            )));
        }

        let node_count = (lower - PAGE_HEADER_SIZE) / 2;
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
            let pointer_offset = PAGE_HEADER_SIZE + 2 * index;
            let offset = usize::from(read_u16(bytes, pointer_offset).unwrap_or_default());
            if offset < upper || !offset.is_multiple_of(2) || offset + NODE_HEADER_SIZE > page_size {
                return Err(StoreError::corrupt(format!(
                    "node {index} of page {pgno} is at offset {offset}, outside the node area {upper}..{page_size}"
                )));
            }
            node_offsets.push(offset);
        }

        let page = TreePage { pgno, bytes, node_offsets };
        page.check_node_extents(kind, upper)?;
        Ok(page)
    }

    pub(super) fn node_count(&self) -> usize {
        self.node_offsets.len()
    }

    /// Reads node `index` of a branch page.
    pub(super) fn branch_node(&self, index: usize) -> Result<BranchNode<'a>, StoreError> {
        let offset = self.node_offset(index)?;
        let field =
            |field_offset| read_u16(self.bytes, offset + field_offset).map(u64::from).unwrap_or_default();
        let child = field(NODE_LO_OFFSET) | field(NODE_HI_OFFSET) << 16 | field(NODE_FLAGS_OFFSET) << 32;
        let key = self.key(index, offset)?;
        Ok(BranchNode { key, child })
    }

    /// Reads node `index` of a leaf page. Rejects nodes that hold a sub-database or duplicate
    /// data, which the Mender client never writes.
    pub(super) fn leaf_node(&self, index: usize) -> Result<LeafNode<'a>, StoreError> {
        let pgno = self.pgno;
        let offset = self.node_offset(index)?;
        let field = |field_offset| read_u16(self.bytes, offset + field_offset).unwrap_or_default();
        let flags = field(NODE_FLAGS_OFFSET);
        let data_size = u32::from(field(NODE_LO_OFFSET)) | u32::from(field(NODE_HI_OFFSET)) << 16;

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
            let overflow_pgno = read_u64(self.bytes, data_offset).ok_or_else(|| {
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

    fn node_offset(&self, index: usize) -> Result<usize, StoreError> {
        self.node_offsets
            .get(index)
            .copied()
            .ok_or_else(|| StoreError::corrupt(format!("page {} has no node {index}", self.pgno)))
    }

    fn key(&self, index: usize, offset: usize) -> Result<&'a [u8], StoreError> {
        let key_size = usize::from(read_u16(self.bytes, offset + NODE_KEY_SIZE_OFFSET).unwrap_or_default());
        let key_start = offset + NODE_HEADER_SIZE;
        self.bytes.get(key_start..key_start + key_size).ok_or_else(|| {
            StoreError::corrupt(format!(
                "key of node {index} of page {} ({key_size} bytes at offset {key_start}) is past the page end",
                self.pgno
            ))
        })
    }

    /// Checks that the nodes, with their keys and inline values, lie between `upper` and the page
    /// end without overlapping.
    fn check_node_extents(&self, kind: PageKind, upper: usize) -> Result<(), StoreError> {
        let mut extents = Vec::with_capacity(self.node_offsets.len());
        for (index, &offset) in self.node_offsets.iter().enumerate() {
            let key_len = self.key(index, offset)?.len();
            let data_len = match kind {
                PageKind::Branch => 0,
                PageKind::Leaf => match self.leaf_node(index)?.value {
                    LeafValue::Inline(data) => data.len(),
                    LeafValue::Overflow { .. } => OVERFLOW_PGNO_SIZE,
                },
            };
            extents.push((offset, offset + NODE_HEADER_SIZE + key_len + data_len, index));
        }

        extents.sort_unstable();
        let mut previous_end = upper;
        for (start, end, index) in extents {
            if start < previous_end {
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
pub(super) fn overflow_page_count(bytes: &[u8], pgno: u64) -> Result<u32, StoreError> {
    let header_pgno = read_u64(bytes, PAGE_PGNO_OFFSET).unwrap_or_default();
    let flags = read_u16(bytes, PAGE_FLAGS_OFFSET).unwrap_or_default();
    if header_pgno != pgno || flags != P_OVERFLOW {
        return Err(StoreError::corrupt(format!(
            "overflow page {pgno} has page number {header_pgno} and flags {flags:#x} in its header, expected {pgno} and {P_OVERFLOW:#x}"
        )));
    }
    Ok(read_u32(bytes, PAGE_OVERFLOW_COUNT_OFFSET).unwrap_or_default())
}
