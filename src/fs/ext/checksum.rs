//! The checksums of ext4 metadata: CRC32C (Castagnoli) for `metadata_csum` and CRC16 for the
//! older `uninit_bg` (`gdt_csum`) group descriptor checksums.
//!
//! ext4 stores the raw CRC register: a checksum starts from a seed (`!0` or the filesystem's
//! checksum seed), runs over the bytes, and is stored without the final inversion that the
//! standard CRC32C applies. [`crc32c`] computes exactly that, so calls chain by passing one
//! result as the next seed, as e2fsprogs' `ext2fs_crc32c_le` does.

use crc::{Algorithm, Crc, Table};

/// CRC32C with the reflected input and output of the standard, but no final XOR, so the result
/// is the register itself.
const CRC32C_RAW: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x1EDC_6F41,
    init: 0xFFFF_FFFF,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0,
    residue: 0,
};

/// CRC16 (polynomial 0x8005, reflected) with no final XOR, as in e2fsprogs' `ext2fs_crc16`.
const CRC16_RAW: Algorithm<u16> = Algorithm {
    width: 16,
    poly: 0x8005,
    init: 0xFFFF,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0,
    residue: 0,
};

// Slicing-by-16 tables process 16 bytes per step. Directory block and bitmap checksums cover
// whole blocks, where that takes far fewer instructions than a table lookup per byte.
static CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC32C_RAW);
static CRC16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC16_RAW);

/// Continues a CRC32C register `seed` over `bytes`.
pub(crate) fn crc32c(seed: u32, bytes: &[u8]) -> u32 {
    // The crate reflects a custom initial value before use, so pass it pre-reflected.
    let mut digest = CRC32C.digest_with_initial(seed.reverse_bits());
    digest.update(bytes);
    digest.finalize()
}

/// Continues a CRC16 register `seed` over `bytes`.
pub(crate) fn crc16(seed: u16, bytes: &[u8]) -> u16 {
    let mut digest = CRC16.digest_with_initial(seed.reverse_bits());
    digest.update(bytes);
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_standard_check_value() {
        // The standard CRC32C of "123456789" is 0xE3069283; the raw register is its inverse.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_chains_like_one_pass() {
        let whole = crc32c(!0, b"superblock bytes");
        let chained = crc32c(crc32c(!0, b"superblock "), b"bytes");
        assert_eq!(whole, chained);
    }

    #[test]
    fn crc16_matches_arc_check_value() {
        // CRC-16/ARC of "123456789" (init 0) is 0xBB3D; starting from 0 needs no reflection.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
