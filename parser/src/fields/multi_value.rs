//! `;`-separated multi-value fields (`recipient-address`, `recipient-status`, `reference`,
//! agent-log `P2FromAddresses`). Empty items, such as the trailing one after a final `;`, carry
//! nothing and are skipped.

/// Iterates the non-empty `;`-separated items of a field.
pub fn items(field: &[u8]) -> Items<'_> {
    Items {
        field,
        start: 0,
        block: 0,
        pending: semicolons(field, 0),
    }
}

/// The `;` of `field` in the 64 bytes from `at`, plus a mark just past its end (which ends the
/// last item).
#[inline]
fn semicolons(field: &[u8], at: usize) -> u64 {
    let [semis] = crate::scan::masks_at(field, at, [b';']);
    match field.len().saturating_sub(at) {
        n @ 0..64 => semis | (1 << n),
        _ => semis,
    }
}

/// Iterator returned by [`items`]: the `;` of each 64-byte block found at once as a bitmask
/// (a byte-by-byte split cost more than the appends on these short fields).
#[derive(Debug, Clone)]
pub struct Items<'a> {
    field: &'a [u8],
    start: usize,
    block: usize,
    /// `;` bits of the block at `block` not visited yet.
    pending: u64,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            while self.pending == 0 {
                self.block += 64;
                if self.block > self.field.len() {
                    return None;
                }
                self.pending = semicolons(self.field, self.block);
            }
            let end = self.block + self.pending.trailing_zeros() as usize;
            self.pending &= self.pending - 1;
            let item = &self.field[self.start..end];
            self.start = end + 1;
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_skips_empty() {
        let got: Vec<&[u8]> = items(b"a@x;b@x;;c@x;").collect();
        assert_eq!(got, vec![&b"a@x"[..], b"b@x", b"c@x"]);
        assert_eq!(items(b"").count(), 0);
        assert_eq!(items(b";").count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn equals_a_plain_split(field in "[a;@é]{0,150}") {
            let plain: Vec<&[u8]> = field.as_bytes().split(|&b| b == b';').filter(|i| !i.is_empty()).collect();
            proptest::prop_assert_eq!(items(field.as_bytes()).collect::<Vec<_>>(), plain);
        }
    }
}
