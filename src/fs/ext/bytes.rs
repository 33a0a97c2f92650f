//! Little-endian field access at fixed offsets of on-disk structures.
//!
//! Callers pass offsets that are constants of the structure and buffers whose size the structure
//! fixes, so an offset past the end is a bug in this module, not in the disk. Reads past the end
//! still return zero rather than panic, and writes past the end are dropped.

/// Reads the `u8` at `offset`.
pub(crate) fn read_u8(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

/// Reads the little-endian `u16` at `offset`.
pub(crate) fn read_u16le(bytes: &[u8], offset: usize) -> u16 {
    let mut field = [0u8; 2];
    copy_field(bytes, offset, &mut field);
    u16::from_le_bytes(field)
}

/// Reads the little-endian `u32` at `offset`.
pub(crate) fn read_u32le(bytes: &[u8], offset: usize) -> u32 {
    let mut field = [0u8; 4];
    copy_field(bytes, offset, &mut field);
    u32::from_le_bytes(field)
}

/// Combines the low and high halves of a field split in two, as ext4 does for 64-bit values.
pub(crate) fn join_u64(lo: u32, hi: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes `value` at `offset`.
pub(crate) fn write_u8(bytes: &mut [u8], offset: usize, value: u8) {
    store_field(bytes, offset, &[value]);
}

/// Writes `value` little-endian at `offset`.
pub(crate) fn write_u16le(bytes: &mut [u8], offset: usize, value: u16) {
    store_field(bytes, offset, &value.to_le_bytes());
}

/// Writes `value` little-endian at `offset`.
pub(crate) fn write_u32le(bytes: &mut [u8], offset: usize, value: u32) {
    store_field(bytes, offset, &value.to_le_bytes());
}

/// Writes `value` little-endian at `offset`.
pub(crate) fn write_u64le(bytes: &mut [u8], offset: usize, value: u64) {
    store_field(bytes, offset, &value.to_le_bytes());
}

fn copy_field(bytes: &[u8], offset: usize, field: &mut [u8]) {
    let end = offset.saturating_add(field.len());
    if let Some(source) = bytes.get(offset..end) {
        field.copy_from_slice(source);
    }
}

fn store_field(bytes: &mut [u8], offset: usize, field: &[u8]) {
    let end = offset.saturating_add(field.len());
    if let Some(target) = bytes.get_mut(offset..end) {
        target.copy_from_slice(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let mut bytes = [0u8; 16];
        write_u16le(&mut bytes, 0, 0xEF53);
        write_u32le(&mut bytes, 2, 0x1234_5678);
        write_u64le(&mut bytes, 6, 0x0102_0304_0506_0708);

        assert_eq!(bytes[0..2], [0x53, 0xEF]);
        assert_eq!(read_u16le(&bytes, 0), 0xEF53);
        assert_eq!(read_u32le(&bytes, 2), 0x1234_5678);
        assert_eq!(bytes[6..14], [8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn reads_past_the_end_are_zero() {
        let bytes = [0xFFu8; 4];
        assert_eq!(read_u32le(&bytes, 2), 0);
        assert_eq!(read_u8(&bytes, 9), 0);
    }
}
