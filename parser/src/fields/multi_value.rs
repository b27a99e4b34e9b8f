//! `;`-separated multi-value fields (`recipient-address`, `recipient-status`, `reference`,
//! agent-log `P2FromAddresses`). Empty items, such as the trailing one after a final `;`, carry
//! nothing and are skipped.
//!
//! `recipient-status` lines up with `recipient-address` one status per recipient, but a status
//! may hold `;` itself (`550 4.4.7 QUEUE.Expired;message expired`, `550 5.1.1
//! RESOLVER.ADR.RecipNotFound; not found`, the `[{LRT=…};{LED=…};{FQDN=…};{IP=…}]` block):
//! [`statuses`] splits only where a new status starts.

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

/// Iterates the statuses of a `recipient-status` field: a `;` ends a status only outside `[…]`
/// and where the text after it starts a new one (a reply code, an `[{` block), or where the status
/// so far is no SMTP status at all (`To;Cc`: store-driver recipient types).
pub fn statuses(field: &[u8]) -> Statuses<'_> {
    Statuses {
        field,
        items: items(field),
        next: None,
    }
}

/// Iterator returned by [`statuses`].
#[derive(Debug, Clone)]
pub struct Statuses<'a> {
    field: &'a [u8],
    items: Items<'a>,
    /// An item read ahead that starts the next status.
    next: Option<&'a [u8]>,
}

/// Whether `text` starts like an SMTP status: three digits, then a space, `-` or the end; or an
/// `[{` block.
fn starts_status(text: &[u8]) -> bool {
    let text = text.trim_ascii_start();
    match text {
        [a, b, c, rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            matches!(rest.first(), None | Some(b' ' | b'-'))
        }
        [b'[', b'{', ..] => true,
        _ => false,
    }
}

/// `[` minus `]` in `text`: positive while inside a bracketed block.
#[inline]
fn depth(text: &[u8]) -> i64 {
    // Nearly every status has no bracket at all.
    if memchr::memchr2(b'[', b']', text).is_none() {
        return 0;
    }
    text.iter().fold(0, |d, &b| match b {
        b'[' => d + 1,
        b']' => d - 1,
        _ => d,
    })
}

impl<'a> Iterator for Statuses<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let first = self.next.take().or_else(|| self.items.next())?;
        let start = offset(self.field, first);
        let mut end = start + first.len();
        let mut open = depth(first);
        let status = starts_status(first);
        for item in self.items.by_ref() {
            if open <= 0 && (!status || starts_status(item)) {
                self.next = Some(item);
                break;
            }
            open += depth(item);
            end = offset(self.field, item) + item.len();
        }
        Some(&self.field[start..end])
    }
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize)
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

    fn split(field: &str) -> Vec<&str> {
        statuses(field.as_bytes())
            .map(|s| std::str::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn a_status_keeps_its_own_semicolons() {
        assert_eq!(
            split("550 4.4.7 QUEUE.Expired;message expired"),
            ["550 4.4.7 QUEUE.Expired;message expired"]
        );
        assert_eq!(
            split("250 2.1.5 Recipient OK;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found;"),
            [
                "250 2.1.5 Recipient OK",
                "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"
            ]
        );
        assert_eq!(
            split("[{LRT=};{LED=451 4.4.0 DNS query failed};{FQDN=};{IP=}];250 2.1.5 OK"),
            [
                "[{LRT=};{LED=451 4.4.0 DNS query failed};{FQDN=};{IP=}]",
                "250 2.1.5 OK"
            ]
        );
        assert_eq!(split("To;Cc;Bcc"), ["To", "Cc", "Bcc"]);
        assert_eq!(split("250 2.1.5Recipient OK"), ["250 2.1.5Recipient OK"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split(";;"), Vec::<&str>::new());
        assert_eq!(
            split("452 4.3.1;;x;451 4.7.0"),
            ["452 4.3.1;;x", "451 4.7.0"]
        );
    }

    proptest::proptest! {
        #[test]
        fn statuses_cover_the_items_in_order(field in "[0-9a ;\\[\\]{}]{0,120}") {
            // Joined back with `;`, the statuses are the non-empty items, in order: nothing is
            // lost or duplicated, only grouped.
            let plain: Vec<&[u8]> = items(field.as_bytes()).collect();
            let grouped: Vec<&[u8]> = statuses(field.as_bytes())
                .flat_map(items)
                .collect();
            proptest::prop_assert_eq!(grouped, plain);
        }

        #[test]
        fn equals_a_plain_split(field in "[a;@é]{0,150}") {
            let plain: Vec<&[u8]> = field.as_bytes().split(|&b| b == b';').filter(|i| !i.is_empty()).collect();
            proptest::prop_assert_eq!(items(field.as_bytes()).collect::<Vec<_>>(), plain);
        }
    }
}
