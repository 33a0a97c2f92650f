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
    for bit in from..end {
        set_bit(bitmap, bit);
    }
}

/// Number of set bits among the first `limit`; bits past the end of `bitmap` count as set.
pub(crate) fn count_set(bitmap: &[u8], limit: u32) -> u32 {
    let whole_bytes = (limit / 8) as usize;
    let counted = bitmap.iter().take(whole_bytes).map(|byte| byte.count_ones()).sum::<u32>();
    let missing_bytes = whole_bytes.saturating_sub(bitmap.len()) as u32;
    let tail = (limit / 8 * 8..limit).filter(|&bit| test_bit(bitmap, bit)).count() as u32;
    counted + missing_bytes * 8 + tail
}

/// First clear bit in `from..limit`.
pub(crate) fn first_clear(bitmap: &[u8], from: u32, limit: u32) -> Option<u32> {
    (from..limit).find(|&bit| !test_bit(bitmap, bit))
}

/// Runs of clear bits among the first `limit`, as (first bit, length).
pub(crate) fn clear_runs(bitmap: &[u8], limit: u32) -> Vec<(u32, u32)> {
    let mut runs = Vec::new();
    let mut start: Option<u32> = None;
    let mut bit = 0;
    while bit < limit {
        // A whole byte that cannot end or start a run is skipped at once.
        let byte = bitmap.get((bit / 8) as usize).copied().unwrap_or(0xFF);
        let skippable = bit % 8 == 0 && bit + 8 <= limit && byte == if start.is_some() { 0x00 } else { 0xFF };
        if skippable {
            bit += 8;
            continue;
        }
        match (test_bit(bitmap, bit), start) {
            (false, None) => start = Some(bit),
            (true, Some(first)) => {
                runs.push((first, bit - first));
                start = None;
            }
            _ => {}
        }
        bit += 1;
    }
    if let Some(first) = start {
        runs.push((first, limit - first));
    }
    runs
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
    fn byte_skipping_matches_bit_by_bit() {
        let bitmap: Vec<u8> =
            (0u32..64).map(|i| [0x00, 0xFF, 0x0F, 0xF0, 0x81][(i * 7 % 5) as usize]).collect();
        for limit in [0, 1, 7, 8, 9, 100, 511, 512] {
            let mut expected = Vec::new();
            let mut start = None;
            for bit in 0..limit {
                match (test_bit(&bitmap, bit), start) {
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
            let set = (0..limit).filter(|&bit| test_bit(&bitmap, bit)).count() as u32;

            assert_eq!(clear_runs(&bitmap, limit), expected, "limit {limit}");
            assert_eq!(count_set(&bitmap, limit), set, "limit {limit}");
        }
        assert_eq!(count_set(&[0x01], 20), 1 + 12, "bits past the end count as set");
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
