//! The IANA SMTP enhanced status code registry (`enrich/enhanced-status-codes.tsv`, from the
//! IANA registry and RFC 3463/5248), for the generic `ESC.<class>.<subject>.<detail>` diagnosis
//! of a code no rule names.

use std::collections::HashMap;

const REGISTRY: &str = include_str!("../enhanced-status-codes.tsv");

/// Titles by code, with the registry's `X.` (any class) and `.XXX` (any detail) rows.
#[derive(Debug, Clone)]
pub struct Registry {
    titles: HashMap<String, String>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The compiled-in registry.
    pub fn new() -> Self {
        let titles = REGISTRY
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let code = cols.next()?;
                let title = cols.nth(2)?;
                Some((code.to_string(), title.to_string()))
            })
            .collect();
        Registry { titles }
    }

    /// The most specific title for a code: the exact code, the code for any class, the subject,
    /// then the class.
    pub fn title(&self, class: u16, subject: u16, detail: u16) -> &str {
        let candidates = [
            format!("{class}.{subject}.{detail}"),
            format!("X.{subject}.{detail}"),
            format!("X.{subject}.XXX"),
            format!("{class}.XXX.YYY"),
        ];
        candidates
            .iter()
            .find_map(|c| self.titles.get(c))
            .map_or("Unregistered status code", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_fall_back_from_code_to_subject_to_class() {
        let r = Registry::new();
        assert_eq!(r.title(5, 1, 1), "Bad destination mailbox address");
        assert_eq!(r.title(4, 4, 1), "No answer from host");
        assert_eq!(r.title(5, 7, 999), "Security or Policy Status");
        assert_eq!(r.title(4, 9, 9), "Persistent Transient Failure");
    }
}
