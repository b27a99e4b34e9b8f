//! Protocol and connectivity log event symbols, named. Direction is relative to the logging
//! server: `>` is what it sent, `<` what it received, in both send and receive logs.

/// The name of an event symbol, or `None` for a symbol Exchange does not document (kept raw).
pub fn event_name(symbol: &[u8]) -> Option<&'static str> {
    Some(match symbol {
        b"+" => "connect",
        b"-" => "disconnect",
        b">" => "send",
        b"<" => "receive",
        b"*" => "information",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(event_name(b"+"), Some("connect"));
        assert_eq!(event_name(b"<"), Some("receive"));
        assert_eq!(event_name(b"?"), None);
        assert_eq!(event_name(b"++"), None);
    }
}
