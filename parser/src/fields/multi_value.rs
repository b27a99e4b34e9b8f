//! `;`-separated multi-value fields (`recipient-address`, `recipient-status`, `reference`,
//! agent-log `P2FromAddresses`). Empty items, such as the trailing one after a final `;`, carry
//! nothing and are skipped.

/// Iterates the non-empty `;`-separated items of a field.
pub fn items(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    field.split(|&b| b == b';').filter(|item| !item.is_empty())
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
}
