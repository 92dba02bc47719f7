//! CRC-32C (Castagnoli, the `crc` crate's CRC_32_ISCSI), the checksum of LevelDB tables and
//! TensorFlow tensor bundles, with LevelDB's masking (a stored checksum is rotated and offset so
//! that the CRC of data holding CRCs stays well distributed).
use crc::{Crc, Table, CRC_32_ISCSI};

/// Slicing-by-16 tables: a 714 MB bundle is checked in about a second.
static CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);
/// LevelDB's `kMaskDelta`.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The CRC-32C of the concatenation of `parts` (a block and its type byte, without copying).
pub fn of_parts(parts: &[&[u8]]) -> u32 {
    let mut d = CASTAGNOLI.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

/// The CRC-32C of `data`.
pub fn value(data: &[u8]) -> u32 {
    CASTAGNOLI.checksum(data)
}

/// LevelDB's `crc32c::Mask`: how tables and bundles store a checksum (the tests write them).
#[cfg(test)]
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The standard check value, and LevelDB's crc32c_test vectors.
        assert_eq!(value(b"123456789"), 0xe306_9283);
        assert_eq!(value(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(value(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(value(&ascending), 0x46dd_794e);
    }

    #[test]
    fn parts_equal_whole_and_mask_round_trips() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 7, 8, 9, 500, 1000] {
            assert_eq!(of_parts(&[&data[..cut], &data[cut..]]), value(&data));
        }
        let c = value(b"foo");
        assert_ne!(mask(c), c);
        assert_eq!(unmask(mask(c)), c);
    }
}
