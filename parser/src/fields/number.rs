//! Decimal integers (`total-bytes`, `recipient-count`, `sequence-number`, POP/IMAP sizes).

/// Parses an optionally signed decimal integer, rejecting overflow and anything but digits.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"15054"), Some(15054));
        assert_eq!(parse_i64(b"-3"), Some(-3));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"1.5",
            b" 1",
            b"9223372036854775808",
            b"0x10",
        ] {
            assert_eq!(parse_i64(bad), None);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_std(s in "-?[0-9]{0,21}") {
            prop_assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok().filter(|_| !s.starts_with('+')));
        }
    }
}
