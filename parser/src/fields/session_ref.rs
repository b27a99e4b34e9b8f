//! The SMTP session a message tracking row names: an SMTP `RECEIVE` row's `source-context` is
//! `<session id>;<session start>;<n>` (`08DC1DB12C345BE5;2024-01-25T15:16:09.544Z;0`), and the
//! session id is the receive protocol log's `session-id`: the key that joins a message to the
//! session that carried it.

/// The session id in `source_context`, when it has that shape: 16 hex digits, `;`, an ISO
/// timestamp, `;`. Any other text (store driver context, a remote reply) gives `None`. Runs on
/// every tracking row: the byte at 16 turns nearly every other context away at once.
#[inline]
pub fn session_ref(source_context: &str) -> Option<&str> {
    let b = source_context.as_bytes();
    if b.len() < 18 || b[16] != b';' || !b[..16].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    // The session start: `YYYY-MM-DDT…`, then `;`. Its shape is enough to tell this context
    // from any other; the value itself is not needed.
    let rest = &b[17..];
    let dated = rest.len() > 11
        && rest[..4].iter().all(u8::is_ascii_digit)
        && (rest[4], rest[7], rest[10]) == (b'-', b'-', b'T');
    if !dated || memchr::memchr(b';', &rest[11..]).is_none() {
        return None;
    }
    source_context.get(..16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_context_names_its_session() {
        assert_eq!(
            session_ref("08DC1DB12C345BE5;2024-01-25T15:16:09.544Z;0"),
            Some("08DC1DB12C345BE5")
        );
        for other in [
            "",
            "No suitable shadow servers",
            ";250 2.0.0 OK;ClientSubmitTime:",
            "08DC1DB12C345BE5;not a time;0",
            "08DC1DB12C345BE5;2024/01/25T15:16:09.544Z;0",
            "08DC1DB12C345BE5;2024-01-25T15:16:09.544Z",
            "08DC1DB12C345BEX;2024-01-25T15:16:09.544Z;0",
            "MDB:f4adaa08-ff49-4bca-ba70-68e9b80597b0, Mailbox:84dd42d9",
            "é8DC1DB12C345BE;2024-01-25T15:16:09.544Z;0",
        ] {
            assert_eq!(session_ref(other), None, "{other:?}");
        }
    }
}
