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
    if let [b'[', inner @ ..] = s
        && let Some(close) = memchr::memchr(b']', inner)
    {
        let port = match &inner[close + 1..] {
            [b':', p @ ..] => parse_port(p),
            _ => None,
        };
        return Endpoint {
            ip: &inner[..close],
            port,
        };
    }
    // Plain scans, not memchr: endpoints are a few dozen bytes, shorter than its setup.
    let Some(colon) = s.iter().rposition(|&b| b == b':') else {
        return Endpoint { ip: s, port: None };
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    let Some(port) = parse_port(port) else {
        return Endpoint { ip: s, port: None };
    };
    // With more colons the value is IPv6; `2001:db8::1` alone must not lose its last group to
    // the port, so split only when what is left is itself a complete IPv6 address.
    if host.contains(&b':') && !is_ipv6(host) {
        return Endpoint { ip: s, port: None };
    }
    if host.is_empty() {
        return Endpoint { ip: s, port: None };
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
