//! Record-level diagnosis: the catalog compiled once into an Aho-Corasick automaton over every
//! literal signature plus tables on reply and enhanced codes, then applied row by row with no
//! regex and no allocation for healthy rows.
//!
//! A row is looked at field value by field value (a "unit": `data`, `context`, one
//! `recipient_status` item, …). In each unit the reply that matters is the innermost one:
//! Exchange wraps the peer's answer (`451 4.4.0 Primary target IP address responded with:
//! "421 4.4.1 Connection timed out."`, `451 4.4.395 Target host responded with error. -> 550 …`,
//! `[{LED=…}]`, `Tarpit for '…' due to '550 5.7.54 …'`), and the inner reply is the diagnosis.
//! Of all blocks that match, the most specific wins; ties go to catalog order.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use mailflow_parser::fields::smtp_reply::{find_smtp_reply, parse_smtp_reply};
use memchr::memmem;

use crate::catalog::{
    Catalog, DIAGNOSED, EnhancedRange, Rule, Severity, TextField, default_fields, slot,
};
use crate::esc::Registry;
use mailflow_parser::Table;

/// What a row was diagnosed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnosis {
    /// A catalog rule, by index.
    Rule(u16),
    /// The generic code for an enhanced status code no rule names.
    Esc(u16, u16, u16),
}

/// A diagnosed row: what, and which unit showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// The field that showed it (none for a diagnosis of the row as a whole).
    pub field: Option<TextField>,
    /// For list fields, the item.
    pub item: u32,
}

#[derive(Debug, Clone)]
struct Block {
    rule: u16,
    texts: Vec<usize>,
    enhanced: Option<EnhancedRange>,
    reply: Option<u16>,
    min_reply: Option<u16>,
    event_id: Option<String>,
    provider: Option<String>,
    direction: Option<String>,
    score: u32,
    /// Matches lines that show no failure, against their outer reply.
    healthy: bool,
}

/// Row-level facts a block may require.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowFacts<'a> {
    /// Message tracking `event_id`, or a Windows event's ID in decimal.
    pub event_id: Option<&'a str>,
    /// A Windows event's provider.
    pub provider: Option<&'a str>,
    /// SMTP protocol `direction`.
    pub direction: Option<&'a str>,
    /// An SMTP protocol `*` (information) line whose `data` is Exchange's remark (its `context`
    /// is empty), not a command, a reply or an attribute value.
    pub information: bool,
}

/// The innermost reply of a unit: code and parsed enhanced code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// `(class, subject, detail)`.
    pub enhanced: Option<(u16, u16, u16)>,
}

/// Wrappers Exchange puts around the reply that matters.
const WRAPPERS: [&str; 6] = [
    "responded with: \"",
    "responded with:\"",
    " -> ",
    "[Message=",
    "LED=",
    "due to '",
];

/// The catalog, compiled for matching.
#[derive(Debug, Clone)]
pub struct Matcher {
    catalog: Catalog,
    registry: Registry,
    automaton: AhoCorasick,
    /// The same patterns, for a fast yes/no.
    quick: AhoCorasick,
    /// Blocks that apply to (table, field), most specific first.
    by_unit: Vec<Vec<Vec<usize>>>,
    /// Blocks that need no unit (event_id only), per table.
    row_blocks: Vec<Vec<usize>>,
    blocks: Vec<Block>,
    wrappers: Vec<memmem::FinderRev<'static>>,
    /// The texts of `healthy` blocks, searched in lines that show no failure. Exact (case
    /// sensitive) substring finders: they run on every healthy line of their field.
    healthy: Vec<memmem::Finder<'static>>,
    /// Whether a `healthy` block applies to (table, field).
    healthy_units: Vec<Vec<bool>>,
    /// The reply codes of the lines `healthy` blocks look at; `None` for any line.
    healthy_replies: Option<Vec<u16>>,
}

impl Matcher {
    /// Compiles a catalog. Fails only if its literals are too many or too long for an
    /// automaton (a user catalog could ask for that).
    pub fn new(catalog: Catalog) -> Result<Self, crate::catalog::CatalogError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut blocks = Vec::new();
        let mut by_unit = vec![vec![Vec::new(); TextField::ALL.len()]; DIAGNOSED.len()];
        let mut row_blocks = vec![Vec::new(); DIAGNOSED.len()];
        for (r, rule) in catalog.rules().iter().enumerate() {
            if rule.deprecated_by.is_some() {
                continue;
            }
            for m in &rule.matches {
                let texts = m
                    .text
                    .iter()
                    .map(|t| {
                        let lower = t.to_ascii_lowercase();
                        match patterns.iter().position(|p| *p == lower) {
                            Some(i) => i,
                            None => {
                                patterns.push(lower);
                                patterns.len() - 1
                            }
                        }
                    })
                    .collect::<Vec<_>>();
                let enhanced = m.enhanced.as_deref().and_then(EnhancedRange::parse);
                let score = if m.fallback {
                    2
                } else {
                    10 * texts.len() as u32
                        + enhanced.map_or(0, |e| if e.is_exact() { 8 } else { 6 })
                        + if m.reply.is_some() { 4 } else { 0 }
                        + if m.min_reply.is_some() { 3 } else { 0 }
                        + if m.event_id.is_some() { 10 } else { 0 }
                        + if m.provider.is_some() { 2 } else { 0 }
                };
                let block = Block {
                    rule: u16::try_from(r).unwrap_or(u16::MAX),
                    texts,
                    enhanced,
                    reply: m.reply,
                    min_reply: m.min_reply,
                    event_id: m.event_id.clone(),
                    provider: m.provider.clone(),
                    direction: m.direction.clone(),
                    score,
                    healthy: m.healthy,
                };
                let unitless = block.texts.is_empty()
                    && block.enhanced.is_none()
                    && block.reply.is_none()
                    && block.min_reply.is_none();
                let index = blocks.len();
                blocks.push(block);
                for (t, table) in DIAGNOSED.iter().enumerate() {
                    if !m.tables.is_empty() && !m.tables.iter().any(|x| x == table.name()) {
                        continue;
                    }
                    if unitless {
                        row_blocks[t].push(index);
                        continue;
                    }
                    for field in default_fields(*table) {
                        if !m.fields.is_empty() && !m.fields.iter().any(|x| x == field.name()) {
                            continue;
                        }
                        by_unit[t][field.index()].push(index);
                    }
                }
            }
        }
        for lists in &mut by_unit {
            for list in lists {
                list.sort_by_key(|&b| std::cmp::Reverse(blocks[b].score));
            }
        }
        // Every pattern must be found wherever it occurs, overlapping others: Standard semantics.
        // A DFA: about a hundred short patterns make a small one, and it scans a healthy
        // remark in a few nanoseconds per byte.
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(compile_error)?;
        let healthy_texts: Vec<&str> = catalog
            .rules()
            .iter()
            .filter(|r| r.deprecated_by.is_none())
            .flat_map(|r| &r.matches)
            .filter(|m| m.healthy)
            .flat_map(|m| m.text.iter().map(String::as_str))
            .collect();
        let healthy_units: Vec<Vec<bool>> = by_unit
            .iter()
            .map(|fields| {
                fields
                    .iter()
                    .map(|list| list.iter().any(|&b| blocks[b].healthy))
                    .collect()
            })
            .collect();
        // The reply codes healthy lines are searched in (none given: every line).
        let healthy_replies: Option<Vec<u16>> = blocks
            .iter()
            .filter(|b| b.healthy)
            .map(|b| b.reply)
            .collect();
        let healthy: Vec<memmem::Finder<'static>> = healthy_texts
            .iter()
            .map(|t| memmem::Finder::new(t.as_bytes()).into_owned())
            .collect();
        let quick = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .prefilter(true)
            .build(&patterns)
            .map_err(compile_error)?;
        Ok(Matcher {
            catalog,
            registry: Registry::new(),
            automaton,
            quick,
            by_unit,
            row_blocks,
            blocks,
            wrappers: WRAPPERS
                .iter()
                .map(|w| memmem::FinderRev::new(w.as_bytes()).into_owned())
                .collect(),
            healthy,
            healthy_units,
            healthy_replies,
        })
    }

    /// The catalog it was built from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The rule behind a diagnosis (none for generic `ESC.*` codes).
    pub fn rule(&self, d: Diagnosis) -> Option<&Rule> {
        match d {
            Diagnosis::Rule(i) => self.catalog.rules().get(usize::from(i)),
            Diagnosis::Esc(..) => None,
        }
    }

    /// The public code.
    pub fn code(&self, d: Diagnosis) -> String {
        match d {
            Diagnosis::Rule(i) => self.catalog.rules()[usize::from(i)].code.clone(),
            Diagnosis::Esc(c, s, x) => format!("ESC.{c}.{s}.{x}"),
        }
    }

    /// The public code, written into `out` (no allocation for a catalog rule's code).
    pub fn write_code(&self, d: Diagnosis, out: &mut String) {
        use std::fmt::Write as _;
        match d {
            Diagnosis::Rule(i) => out.push_str(&self.catalog.rules()[usize::from(i)].code),
            Diagnosis::Esc(c, s, x) => {
                let _ = write!(out, "ESC.{c}.{s}.{x}");
            }
        }
    }

    /// One line for people.
    pub fn title(&self, d: Diagnosis) -> &str {
        match d {
            Diagnosis::Rule(i) => &self.catalog.rules()[usize::from(i)].title,
            Diagnosis::Esc(c, s, x) => self.registry.title(c, s, x),
        }
    }

    /// Category (`ESC` for generic codes).
    pub fn category(&self, d: Diagnosis) -> &str {
        match d {
            Diagnosis::Rule(i) => self.catalog.rules()[usize::from(i)].category(),
            Diagnosis::Esc(..) => "ESC",
        }
    }

    /// Severity; a generic code is minor (one message or recipient, as far as we know).
    pub fn severity(&self, d: Diagnosis) -> Severity {
        match d {
            Diagnosis::Rule(i) => self.catalog.rules()[usize::from(i)].severity,
            Diagnosis::Esc(..) => Severity::Minor,
        }
    }

    /// Whether `healthy` texts are searched in (table, field), in a line with this outer reply.
    pub fn searches_healthy(&self, table: Table, field: TextField, reply: Option<u16>) -> bool {
        slot(table).is_some_and(|t| self.healthy_units[t][field.index()])
            && self
                .healthy_replies
                .as_ref()
                .is_none_or(|codes| reply.is_some_and(|r| codes.contains(&r)))
    }

    /// Whether a line that shows no failure holds a `healthy` text (e.g. a masked EHLO list).
    pub fn in_healthy_line(&self, text: &str) -> bool {
        self.healthy
            .iter()
            .any(|f| f.find(text.as_bytes()).is_some())
    }

    /// Whether a text names any failure the catalog knows (a fast check, no detail).
    pub fn names_failure(&self, text: &str) -> bool {
        self.quick.is_match(text)
    }

    /// The reply a unit carries, looking through Exchange's wrappers to the innermost one.
    pub fn inner_reply(&self, text: &str) -> Option<Reply> {
        let bytes = text.as_bytes();
        let inner = self
            .wrappers
            .iter()
            .zip(WRAPPERS)
            .filter_map(|(f, w)| f.rfind(bytes).map(|i| i + w.len()))
            .max()
            .and_then(|start| {
                let rest = &bytes[start..];
                let skip = rest
                    .iter()
                    .position(|b| !matches!(b, b' ' | b'"' | b'\'' | b'{'))
                    .unwrap_or(rest.len());
                parse_smtp_reply(&rest[skip..]).ok().map(|(_, r)| r)
            });
        let reply = inner.or_else(|| find_smtp_reply(bytes))?;
        Some(Reply {
            code: reply.code,
            enhanced: reply.enhanced.and_then(parse_enhanced),
        })
    }

    /// The best diagnosis of one unit, with its score.
    pub fn unit(
        &self,
        table: Table,
        field: TextField,
        text: &str,
        row: &RowFacts<'_>,
        scratch: &mut Vec<bool>,
    ) -> Option<(u32, Diagnosis)> {
        if text.is_empty() {
            return None;
        }
        let t = slot(table)?;
        // Most rows are healthy: decide from the outer reply (a short parse at the start of the
        // field) whether anything more is worth doing before any search.
        let outer = find_smtp_reply(text.as_bytes());
        let outer_failed = outer.is_some_and(|r| r.code >= 400);
        let failure_event = is_failure_event(row);
        // Exchange's own remarks (`*` lines, context, connectivity descriptions, events, a
        // queue's last error) carry failures without a reply code.
        let remark = matches!(
            field,
            TextField::Context
                | TextField::Description
                | TextField::InsertionStrings
                | TextField::LastError
        ) || (field == TextField::Data && row.information);
        let search = outer_failed
            || remark
            || (failure_event && field != TextField::Data)
            || (field == TextField::RecipientStatus && text.starts_with('['))
            || (self.searches_healthy(table, field, outer.map(|r| r.code))
                && self.in_healthy_line(text));
        if !search {
            return None;
        }
        scratch.clear();
        scratch.resize(self.automaton.patterns_len(), false);
        let mut any_text = false;
        // Overlapping search finds every pattern but cannot skip ahead; a prefiltered
        // existence check first settles the usual case, a remark that names no failure.
        if self.quick.is_match(text) {
            for m in self.automaton.find_overlapping_iter(text) {
                scratch[m.pattern().as_usize()] = true;
                any_text = true;
            }
        }
        // A remark that names no known failure and shows none is just a remark (most `*`
        // lines); keep [`Matcher::remark_shows_failure`] in step, which callers skip them by.
        if !any_text && !outer_failed && !failure_event && !text.starts_with('[') {
            return None;
        }
        let reply = if outer_failed || remark || failure_event || text.starts_with('[') {
            self.inner_reply(text)
        } else {
            outer.map(|r| Reply {
                code: r.code,
                enhanced: r.enhanced.and_then(parse_enhanced),
            })
        }
        .filter(|r| r.code >= 400);
        let outer = outer.map(|r| Reply {
            code: r.code,
            enhanced: r.enhanced.and_then(parse_enhanced),
        });
        for &b in &self.by_unit[t][field.index()] {
            let block = &self.blocks[b];
            if !block.texts.is_empty() && (!any_text || !block.texts.iter().all(|&t| scratch[t])) {
                continue;
            }
            // A healthy block's reply condition is on the line's own (2xx, 3xx) reply.
            let reply = if block.healthy { outer } else { reply };
            if (block.enhanced.is_some() || block.reply.is_some() || block.min_reply.is_some())
                && reply.is_none()
            {
                continue;
            }
            if let (Some(want), Some(r)) = (block.enhanced, reply)
                && !r.enhanced.is_some_and(|e| want.contains(e))
            {
                continue;
            }
            if let (Some(want), Some(r)) = (block.reply, reply)
                && r.code != want
            {
                continue;
            }
            if let (Some(min), Some(r)) = (block.min_reply, reply)
                && r.code < min
            {
                continue;
            }
            if !row_ok(block, row) {
                continue;
            }
            // Sorted by score: the first match is the best.
            return Some((block.score, Diagnosis::Rule(block.rule)));
        }
        let (c, s, d) = reply?.enhanced?;
        (c >= 4).then_some((1, Diagnosis::Esc(c, s, d)))
    }

    /// Whether a remark shows a failure without naming one: a failed reply, a list
    /// (`[{LED=…}]`), or a failure event's row. [`Matcher::unit`] turns away a remark that
    /// shows none and names none the catalog knows ([`Matcher::names_failure`]), so a caller
    /// can skip such a remark without the search (`classify` decides the naming once per
    /// distinct text).
    pub fn remark_shows_failure(&self, text: &str, row: &RowFacts<'_>) -> bool {
        is_failure_event(row)
            || text.starts_with('[')
            || find_smtp_reply(text.as_bytes()).is_some_and(|r| r.code >= 400)
    }

    /// Whether any rule diagnoses a row of `table` from row facts alone (see
    /// [`Matcher::row_only`]).
    pub fn has_row_rules(&self, table: Table) -> bool {
        slot(table).is_some_and(|t| !self.row_blocks[t].is_empty())
    }

    /// Diagnoses that need no field value (e.g. a `POISONMESSAGE` event).
    pub fn row_only(&self, table: Table, row: &RowFacts<'_>) -> Option<(u32, Diagnosis)> {
        self.row_blocks[slot(table)?]
            .iter()
            .map(|&b| &self.blocks[b])
            .filter(|b| row_ok(b, row))
            .map(|b| (b.score, Diagnosis::Rule(b.rule)))
            .max_by_key(|(s, _)| *s)
    }
}

fn compile_error(e: aho_corasick::BuildError) -> crate::catalog::CatalogError {
    crate::catalog::CatalogError::Invalid {
        origin: "catalog".into(),
        rule: "(all)".into(),
        key: "text".into(),
        reason: format!("the literal texts do not compile into one automaton: {e}"),
    }
}

/// Message tracking events that report a failure whatever their text.
fn is_failure_event(row: &RowFacts<'_>) -> bool {
    matches!(
        row.event_id,
        Some("FAIL" | "DEFER" | "DROP" | "POISONMESSAGE")
    )
}

fn row_ok(block: &Block, row: &RowFacts<'_>) -> bool {
    if let Some(e) = &block.event_id
        && !row.event_id.is_some_and(|x| x.eq_ignore_ascii_case(e))
    {
        return false;
    }
    if let Some(d) = &block.direction
        && row.direction != Some(d.as_str())
    {
        return false;
    }
    if let Some(p) = &block.provider
        && !row
            .provider
            .is_some_and(|x| mailflow_parser::provider_matches(p, x))
    {
        return false;
    }
    true
}

fn parse_enhanced(code: &[u8]) -> Option<(u16, u16, u16)> {
    let s = std::str::from_utf8(code).ok()?;
    let mut parts = s.split('.');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Matcher {
        Matcher::new(Catalog::builtin()).unwrap()
    }

    #[test]
    fn a_remark_skipped_before_the_search_is_one_the_search_turns_away() {
        let m = matcher();
        let mut scratch = Vec::new();
        let information = RowFacts {
            information: true,
            ..RowFacts::default()
        };
        let failed = RowFacts {
            event_id: Some("FAIL"),
            ..information
        };
        let remarks = [
            "",
            "Set Session Permissions",
            "receiving message",
            "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender",
            "TLS negotiation failed with error NoCredentials",
            "TLS negotiation failed with error UnknownCredentials",
            "451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\"",
            "550 5.7.1 Unable to relay",
            "[{LED=550 5.1.1 RESOLVER.ADR.RecipNotFound; not found};{MSG=}]",
            "250 2.0.0 OK",
            "Proxy session established",
        ];
        let mut skipped = 0;
        for row in [information, failed] {
            for text in remarks {
                let skip = !m.remark_shows_failure(text, &row) && !m.names_failure(text);
                let found = m.unit(
                    Table::SmtpProtocol,
                    TextField::Data,
                    text,
                    &row,
                    &mut scratch,
                );
                assert!(
                    !skip || found.is_none(),
                    "{text:?} skipped, diagnosed {found:?}"
                );
                skipped += usize::from(skip);
            }
        }
        // The check can fail: most of the plain remarks are skipped, and none that fails is.
        assert!(skipped >= 4, "{skipped}");
        assert!(m.remark_shows_failure("550 5.7.1 Unable to relay", &information));
        assert!(m.names_failure("TLS negotiation failed with error NoCredentials"));
    }

    fn diagnose(
        m: &Matcher,
        table: &str,
        field: &str,
        text: &str,
        row: RowFacts<'_>,
    ) -> Option<String> {
        let mut scratch = Vec::new();
        let t = Table::from_name(table).unwrap();
        let f = TextField::from_name(field).unwrap();
        m.unit(t, f, text, &row, &mut scratch)
            .map(|(_, d)| m.code(d))
    }

    #[test]
    fn inner_replies_are_unwrapped() {
        let m = matcher();
        let r = m
            .inner_reply("451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\" Attempted failover to alternate host, but that did not succeed.")
            .unwrap();
        assert_eq!((r.code, r.enhanced), (421, Some((4, 4, 1))));
        let r = m.inner_reply("451 4.4.395 Target host responded with error. -> 550 5.7.64 TenantAttribution; Relay Access Denied").unwrap();
        assert_eq!((r.code, r.enhanced), (550, Some((5, 7, 64))));
        let r = m.inner_reply("Tarpit for '0.00:00:05' due to '550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain'").unwrap();
        assert_eq!(r.enhanced, Some((5, 7, 54)));
        let r = m
            .inner_reply("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found")
            .unwrap();
        assert_eq!((r.code, r.enhanced), (550, Some((5, 1, 1))));
        assert!(m.inner_reply("EHLO mail.contoso.com").is_none());
    }

    #[test]
    fn specific_beats_generic() {
        let m = matcher();
        let none = RowFacts::default();
        let fail = RowFacts {
            event_id: Some("FAIL"),
            ..RowFacts::default()
        };
        assert_eq!(
            diagnose(
                &m,
                "message_tracking",
                "recipient_status",
                "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
                fail
            )
            .as_deref(),
            Some("ADDR.RECIPIENT_NOT_FOUND_ONPREM")
        );
        assert_eq!(
            diagnose(
                &m,
                "message_tracking",
                "recipient_status",
                "550 5.1.1 User unknown",
                fail
            )
            .as_deref(),
            Some("ADDR.REMOTE_USER_UNKNOWN")
        );
        assert_eq!(
            diagnose(
                &m,
                "message_tracking",
                "recipient_status",
                "550 5.7.626 Access denied, banned sending IP [192.0.2.1]",
                fail
            )
            .as_deref(),
            Some("REPUTATION.EOP_BANNED_IP")
        );
        // 5.7.6 is not in 5.7.606-649: the generic code, with the registry's title.
        let esc = diagnose(
            &m,
            "message_tracking",
            "recipient_status",
            "550 5.7.6 nope",
            fail,
        );
        assert_eq!(esc.as_deref(), Some("ESC.5.7.6"));
        assert_eq!(
            m.title(Diagnosis::Esc(5, 7, 6)),
            "Cryptographic algorithm not supported"
        );
        // Healthy replies are never diagnosed.
        for ok in [
            "250 2.6.0 <a@b> Queued mail for delivery",
            "220 mail.contoso.com Microsoft ESMTP MAIL Service ready",
            "354 Start mail input; end with <CRLF>.<CRLF>",
        ] {
            assert_eq!(
                diagnose(&m, "smtp_protocol", "data", ok, none),
                None,
                "{ok}"
            );
        }
        // Tarpitting loses to the reply it delays.
        assert_eq!(
            diagnose(&m, "smtp_protocol", "context", "Tarpit for '0.00:00:05' due to '550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain'", none).as_deref(),
            Some("POLICY.RELAY_DENIED_ONPREM")
        );
        // The failover wrapper yields to the inner reply's rule.
        assert_eq!(
            diagnose(&m, "message_tracking", "recipient_status", "451 4.4.0 Primary target IP address responded with: \"454 4.7.0 Temporary authentication failure.\" Attempted failover to alternate host, but that did not succeed.", RowFacts { event_id: Some("DEFER"), ..RowFacts::default() }).as_deref(),
            Some("AUTH.KERBEROS_CLOCK_SKEW_OR_AD")
        );
    }
}
