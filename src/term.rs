//! Text from logs on a terminal: control characters shown, never obeyed.
//!
//! Log content is chosen by others: a remote SMTP client picks its EHLO name, a sender the
//! subject, whoever collected the logs the folder names. Written raw to a terminal, an ESC
//! sequence in any of them can retitle the window, clear the screen or move the cursor to
//! overwrite a line with a fake one, and a bidirectional override can make text read in another
//! order than it is stored. Every text mailflow prints for a person that came from its input
//! passes through [`escape`]; JSON output escapes by itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1) and bidirectional formatting character
/// written as a Rust escape (`\x1b`, `\u{202e}`); `\n` and `\t` too, so one value stays on one
/// line. Text without them is returned as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(escape("EX01 healthy"), "EX01 healthy");
        assert!(matches!(escape("Ünïcode ok"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{1b}]0;pwned\u{7}b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(escape("x\r\nFAKE: healthy"), "x\\x0d\\x0aFAKE: healthy");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(escape("del\u{7f}"), "del\\x7f");
    }
}
