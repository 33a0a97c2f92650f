//! Block and inode bitmaps: one bit per block or inode of a group, bit 0 of byte 0 first.

/// True when bit `bit` is set; bits past the end read as set.
pub(crate) fn test_bit(bitmap: &[u8], bit: u32) -> bool {
    bitmap.get((bit / 8) as usize).is_none_or(|byte| byte & (1 << (bit % 8)) != 0)
}

pub(crate) fn set_bit(bitmap: &mut [u8], bit: u32) {
    if let Some(byte) = bitmap.get_mut((bit / 8) as usize) {
        *byte |= 1 << (bit % 8);
    }
}

pub(crate) fn clear_bit(bitmap: &mut [u8], bit: u32) {
    if let Some(byte) = bitmap.get_mut((bit / 8) as usize) {
        *byte &= !(1 << (bit % 8));
    }
}

/// Sets every bit from `from` to the end of the bitmap block, as the kernel pads the bits past
/// the last block or inode of a group.
pub(crate) fn set_padding(bitmap: &mut [u8], from: u32) {
    let end = (bitmap.len() * 8) as u32;
    set_range(bitmap, from, end.saturating_sub(from));
}

/// Sets `len` bits from `from`; bits past the end of `bitmap` are ignored.
pub(crate) fn set_range(bitmap: &mut [u8], from: u32, len: u32) {
    let end = from.saturating_add(len).min((bitmap.len() * 8) as u32);
    let mut bit = from;
    while bit < end && bit % 8 != 0 {
        set_bit(bitmap, bit);
        bit += 1;
    }
    let whole_bytes_end = end - end % 8;
    if bit < whole_bytes_end {
        let bytes = bitmap.get_mut((bit / 8) as usize..(whole_bytes_end / 8) as usize).unwrap_or_default();
        bytes.fill(0xFF);
        bit = whole_bytes_end;
    }
    while bit < end {
        set_bit(bitmap, bit);
        bit += 1;
    }
}

/// Bits in one word of a word-at-a-time scan.
const WORD_BITS: u32 = 64;

/// Reads the 64 bits from byte `byte_index`, bit 0 of the first byte lowest. Returns `None`
/// when the bitmap ends before the word does.
fn word_at(bitmap: &[u8], byte_index: usize) -> Option<u64> {
    let bytes = bitmap.get(byte_index..byte_index.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Number of set bits among the first `limit`; bits past the end of `bitmap` count as set.
pub(crate) fn count_set(bitmap: &[u8], limit: u32) -> u32 {
    let whole_bytes = (limit / 8) as usize;
    let present = bitmap.get(..whole_bytes.min(bitmap.len())).unwrap_or_default();
    let (words, rest) = present.split_at(present.len() - present.len() % 8);
    let in_words: u32 =
        words.chunks_exact(8).map(|word| word_at(word, 0).map_or(WORD_BITS, u64::count_ones)).sum();
    let in_rest: u32 = rest.iter().map(|byte| byte.count_ones()).sum();
    let missing_bytes = whole_bytes.saturating_sub(bitmap.len()) as u32;
    let tail = (limit / 8 * 8..limit).filter(|&bit| test_bit(bitmap, bit)).count() as u32;
    in_words + in_rest + missing_bytes * 8 + tail
}

/// Finds the first bit in `from..limit` that is set (`set` true) or clear, scanning a 64-bit
/// word at a time. Bits past the end of `bitmap` read as set.
fn find_bit(bitmap: &[u8], from: u32, limit: u32, set: bool) -> Option<u32> {
    let mut bit = from;
    while bit < limit {
        let word_start = bit - bit % WORD_BITS;
        let word_end = word_start.saturating_add(WORD_BITS).min(limit);
        let Some(word) = word_at(bitmap, (word_start / 8) as usize) else {
            // The bitmap ends inside this word: look at its bits one by one.
            if let Some(found) = (bit..word_end).find(|&candidate| test_bit(bitmap, candidate) == set) {
                return Some(found);
            }
            bit = word_end;
            continue;
        };
        let matching = if set { word } else { !word };
        let from_here = matching >> (bit % WORD_BITS);
        if from_here != 0 {
            let found = bit + from_here.trailing_zeros();
            return (found < limit).then_some(found);
        }
        bit = word_end;
    }
    None
}

/// First clear bit in `from..limit`.
pub(crate) fn first_clear(bitmap: &[u8], from: u32, limit: u32) -> Option<u32> {
    find_bit(bitmap, from, limit, false)
}

/// Runs of clear bits among the first `limit`, as (first bit, length).
pub(crate) fn clear_runs(bitmap: &[u8], limit: u32) -> Vec<(u32, u32)> {
    clear_runs_lazily(bitmap, limit).collect()
}

/// Runs of clear bits among the first `limit` like [`clear_runs`], found one at a time, so a
/// search that stops early scans only the bitmap up to its match.
pub(crate) fn clear_runs_lazily(bitmap: &[u8], limit: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut bit = 0;
    std::iter::from_fn(move || {
        let start = find_bit(bitmap, bit, limit, false)?;
        let end = find_bit(bitmap, start, limit, true).unwrap_or(limit);
        bit = end;
        Some((start, end - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_runs_find_gaps() {
        let bitmap = [0b1111_0011u8, 0b0000_0001];
        assert_eq!(clear_runs(&bitmap, 16), [(2, 2), (9, 7)]);
        assert_eq!(clear_runs(&bitmap, 12), [(2, 2), (9, 3)]);
    }

    #[test]
    fn word_scans_match_bit_by_bit() {
        // Mixed bytes, then whole words of 0x00 and 0xFF with mixed bytes between them, and a
        // length that ends inside a word.
        let mixed: Vec<u8> =
            (0u32..64).map(|i| [0x00, 0xFF, 0x0F, 0xF0, 0x81][(i * 7 % 5) as usize]).collect();
        let words: Vec<u8> =
            (0u32..61).map(|i| [0x00, 0xFF, 0x00, 0x7F, 0xFF][(i / 9 % 5) as usize]).collect();
        for (bitmap, limit) in [0, 1, 7, 8, 9, 100, 511, 512, 600]
            .into_iter()
            .flat_map(|limit| [(&mixed, limit), (&words, limit)])
        {
            let mut expected = Vec::new();
            let mut start = None;
            for bit in 0..limit {
                match (test_bit(bitmap, bit), start) {
                    (false, None) => start = Some(bit),
                    (true, Some(first)) => {
                        expected.push((first, bit - first));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(first) = start {
                expected.push((first, limit - first));
            }
            let set = (0..limit).filter(|&bit| test_bit(bitmap, bit)).count() as u32;
            for from in [0, 1, 5, 63, 64, 65, 200] {
                let expected_clear = (from..limit).find(|&bit| !test_bit(bitmap, bit));
                assert_eq!(first_clear(bitmap, from, limit), expected_clear, "limit {limit} from {from}");
            }

            assert_eq!(clear_runs(bitmap, limit), expected, "limit {limit}");
            assert_eq!(count_set(bitmap, limit), set, "limit {limit}");
        }
        assert_eq!(count_set(&[0x01], 20), 1 + 12, "bits past the end count as set");
    }

    #[test]
    fn scans_past_the_end_read_set_bits() {
        let bitmap = [0xFFu8; 12];
        assert_eq!(first_clear(&bitmap, 0, 200), None);
        assert_eq!(clear_runs(&[0u8; 12], 100), [(0, 96)]);
        assert_eq!(count_set(&[0u8; 12], 100), 4);
    }

    #[test]
    fn set_range_sets_only_the_range() {
        let mut bitmap = [0u8; 4];
        set_range(&mut bitmap, 3, 18);
        assert_eq!(bitmap, [0xF8, 0xFF, 0x1F, 0]);
        set_range(&mut bitmap, 30, 100);
        assert_eq!(bitmap[3], 0xC0);
    }

    #[test]
    fn padding_sets_the_tail() {
        let mut bitmap = [0u8; 2];
        set_padding(&mut bitmap, 12);
        assert_eq!(bitmap, [0, 0xF0]);
        assert_eq!(count_set(&bitmap, 16), 4);
        assert_eq!(first_clear(&bitmap, 0, 16), Some(0));
    }
}
