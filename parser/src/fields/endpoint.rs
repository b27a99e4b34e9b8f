//! Network endpoints as Exchange writes them: `ip:port`, IPv6 unbracketed (`fe80::1%3:25`), the
//! port split off at the last colon, sometimes a bare address with no port (agent log
//! `LocalEndpoint`), occasionally `[addr]:port` from other tools.

use std::net::Ipv6Addr;

/// An endpoint split into its address text and port. The address is a slice of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// Address text without brackets; an IPv6 zone (`%3`) is kept.
    pub ip: &'a [u8],
    /// Port, when the value carries one.
    pub port: Option<u16>,
}

/// Splits an endpoint. Never fails: a value that is not `addr:port` is returned whole as the
/// address, because an odd endpoint is still evidence an admin wants to see.
pub fn parse_endpoint(s: &[u8]) -> Endpoint<'_> {
    if let Some(e) = bracketed(s) {
        return e;
    }
    // A port is at most five digits, so its colon is among the last six bytes (plain scans, not
    // memchr: endpoints are a few dozen bytes, shorter than its setup).
    let tail = s.len().saturating_sub(6);
    match s[tail..].iter().rposition(|&b| b == b':') {
        Some(c) => split_at(s, tail + c, has_colon),
        None => Endpoint { ip: s, port: None },
    }
}

/// `[addr]:port` (or `[addr]`), when `s` has that shape.
pub(crate) fn bracketed(s: &[u8]) -> Option<Endpoint<'_>> {
    let [b'[', inner @ ..] = s else {
        return None;
    };
    let close = memchr::memchr(b']', inner)?;
    let port = match &inner[close + 1..] {
        [b':', p @ ..] => parse_port(p),
        _ => None,
    };
    Some(Endpoint {
        ip: &inner[..close],
        port,
    })
}

/// `s` split at its last colon, at `colon`, when a port follows it and an address precedes it;
/// `s` whole otherwise. `host_has_colon` tests the address part for a colon.
#[inline]
pub(crate) fn split_at(
    s: &[u8],
    colon: usize,
    host_has_colon: impl Fn(&[u8]) -> bool,
) -> Endpoint<'_> {
    let whole = Endpoint { ip: s, port: None };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    let Some(port) = parse_port(port) else {
        return whole;
    };
    // With more colons the value is IPv6; `2001:db8::1` alone must not lose its last group to
    // the port, so split only when what is left is itself a complete IPv6 address.
    if host.is_empty() || (host_has_colon(host) && !is_ipv6(host)) {
        return whole;
    }
    Endpoint {
        ip: host,
        port: Some(port),
    }
}

fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    p.iter()
        .try_fold(0u32, |acc, b| Some(acc * 10 + u32::from(b - b'0')))
        .and_then(|v| u16::try_from(v).ok())
}

/// Whether `host` holds a `:`. An IPv4 address (7 to 15 bytes) is tested as two overlapping
/// words at once: the byte loop this replaces was a third of an endpoint's parse.
#[inline]
fn has_colon(host: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const COLONS: u64 = ONES * b':' as u64;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&host[at..at + 8]);
        u64::from_le_bytes(w) ^ COLONS
    };
    // Exact: a word has a zero byte (a colon here) iff this is non-zero.
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & (ONES << 7) != 0;
    match host.len() {
        8..=16 => has_zero(word(0)) || has_zero(word(host.len() - 8)),
        _ => host.contains(&b':'),
    }
}

fn is_ipv6(host: &[u8]) -> bool {
    let addr = match memchr::memchr(b'%', host) {
        Some(i) => &host[..i],
        None => host,
    };
    std::str::from_utf8(addr).is_ok_and(|a| a.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> (&str, Option<u16>) {
        let e = parse_endpoint(s.as_bytes());
        (std::str::from_utf8(e.ip).unwrap(), e.port)
    }

    #[test]
    fn ipv4_with_port() {
        assert_eq!(ep("10.11.12.13:25"), ("10.11.12.13", Some(25)));
    }

    #[test]
    fn ipv6_split_at_last_colon() {
        assert_eq!(ep("2001:db8::25:587"), ("2001:db8::25", Some(587)));
        assert_eq!(ep("fe80::1c3a:2b4d%3:25"), ("fe80::1c3a:2b4d%3", Some(25)));
        assert_eq!(ep("[2001:db8::1]:25"), ("2001:db8::1", Some(25)));
    }

    #[test]
    fn colon_test_is_exact_for_every_byte() {
        // Each byte value at each place of hosts of the word-tested lengths and one either side.
        for len in 7..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut host = vec![b'1'; len];
                    host[at] = b;
                    assert_eq!(has_colon(&host), b == b':', "{host:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        // Mostly address bytes, and any byte too: a wrong mask bit shows only on bytes such as
        // 0xBA (a colon with its high bit set).
        fn colon_test_is_exact(host in proptest::collection::vec(proptest::prop_oneof![
            3 => proptest::sample::select(b"0123456789.:a%".to_vec()),
            1 => proptest::prelude::any::<u8>(),
        ], 0..24)) {
            proptest::prop_assert_eq!(has_colon(&host), host.contains(&b':'));
        }
    }

    #[test]
    fn equals_the_first_version() {
        for s in [
            "10.11.12.13:25",
            "2001:db8::25:587",
            "fe80::1%3:25",
            "[::1]:25",
            "2001:db8::1",
            "::ffff:10.1.2.3:25",
            "10.0.0.1:",
            ":",
            "a:b:c:1",
            "1.2.3.4:123456",
            "10.0.0.1:12345",
            "2001:db8::1:65535",
            "[x]y",
            "",
        ] {
            assert_eq!(
                parse_endpoint(s.as_bytes()),
                crate::fuzzing::endpoint_reference(s.as_bytes()),
                "{s}"
            );
        }
    }

    proptest::proptest! {
        // Endpoint-shaped: an address of any of these bytes, then mostly a port of 0 to 7
        // digits (a random string rarely ends in one).
        #[test]
        fn equals_the_first_version_on_any_endpoint(s in "[0-9a-f:.%\\[\\]]{0,30}(:[0-9]{0,7})?") {
            proptest::prop_assert_eq!(
                parse_endpoint(s.as_bytes()),
                crate::fuzzing::endpoint_reference(s.as_bytes())
            );
        }
    }

    #[test]
    fn bare_addresses_keep_their_last_group() {
        // `2001:db8:` is no address, so `:1` is part of the address, not a port.
        assert_eq!(ep("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(ep("10.10.10.10"), ("10.10.10.10", None));
        assert_eq!(ep(""), ("", None));
        assert_eq!(ep("host:notaport"), ("host:notaport", None));
        assert_eq!(ep("10.0.0.1:99999"), ("10.0.0.1:99999", None));
        assert_eq!(ep(":25"), (":25", None));
    }
}
