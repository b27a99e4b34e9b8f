//! Byte-class bitmasks over 64-byte blocks: the parser's one use of vector compares (SSE2 through
//! `safe_arch` on x86-64, which keeps the crate free of `unsafe`; exact SWAR elsewhere). The
//! tokenizer finds commas and quotes with them, and the custom-data split finds `;` and `=`.

/// For each needle, the bitmask of where it occurs in `block[..64]` (bit i = byte i).
#[inline(always)]
pub(crate) fn masks<const N: usize>(block: &[u8], needles: [u8; N]) -> [u64; N] {
    let mut out = [0u64; N];
    for (k, part) in block[..64].chunks_exact(16).enumerate() {
        let found = masks16(part, needles);
        for (o, f) in out.iter_mut().zip(found) {
            *o |= u64::from(f) << (16 * k);
        }
    }
    out
}

/// [`masks`] of the 64 bytes of `bytes` from `at`, read as zeros past its end (so a needle must
/// not be 0).
#[inline(always)]
pub(crate) fn masks_at<const N: usize>(bytes: &[u8], at: usize, needles: [u8; N]) -> [u64; N] {
    match bytes.get(at..at + 64) {
        Some(block) => masks(block, needles),
        None => {
            let tail = bytes.get(at..).unwrap_or_default();
            let mut padded = [0u8; 64];
            padded[..tail.len()].copy_from_slice(tail);
            masks(&padded, needles)
        }
    }
}

/// SSE2 (always present on x86-64): one compare and one movemask per needle.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks16<const N: usize>(part: &[u8], needles: [u8; N]) -> [u16; N] {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&part[..16]);
    let v = load_unaligned_m128i(&bytes);
    needles.map(|b| move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b as i8))) as u16)
}

/// Portable fallback: SWAR on two words (exact per-byte equality, no false positives).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn masks16<const N: usize>(part: &[u8], needles: [u8; N]) -> [u16; N] {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    fn word(bytes: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn eq(w: u64, b: u8) -> u8 {
        let v = w ^ (0x0101_0101_0101_0101 * u64::from(b));
        let high = !(((v & LO7) + LO7) | v | LO7);
        (high.wrapping_mul(0x0002_0408_1020_4081) >> 56) as u8
    }
    let (lo, hi) = (word(part, 0), word(part, 8));
    needles.map(|b| u16::from(eq(lo, b)) | (u16::from(eq(hi, b)) << 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn masks_mark_exactly_the_needles(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..200) {
            let [semis, eqs] = masks_at(&bytes, at, [b';', b'=']);
            for i in 0..64 {
                let b = bytes.get(at + i).copied().unwrap_or(0);
                prop_assert_eq!(semis >> i & 1 == 1, b == b';');
                prop_assert_eq!(eqs >> i & 1 == 1, b == b'=');
            }
        }
    }
}
