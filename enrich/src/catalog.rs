//! The diagnosis catalog: mailflow's stable diagnosis codes, what shows them in a log line, and
//! what they mean (cause, evidence to check, remediation, references).
//!
//! The built-in catalog is `enrich/catalog.toml`, compiled in. A user file in the same format
//! adds rules, or replaces built-in ones by code; any mistake in it is reported with the rule's
//! code (or its position) and the key at fault.

use std::collections::BTreeMap;
use std::path::Path;

use mailflow_parser::Table;
use serde::Deserialize;

const BUILTIN: &str = include_str!("../catalog.toml");

/// Tables a rule can match: the parser's tables that get diagnosis columns.
pub const DIAGNOSED: [Table; 5] = [
    Table::MessageTracking,
    Table::SmtpProtocol,
    Table::Connectivity,
    Table::TransportEvents,
    Table::QueueSnapshots,
];

/// A text field the catalog searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    /// `message_tracking.recipient_status`.
    RecipientStatus,
    /// `message_tracking.source_context`.
    SourceContext,
    /// `smtp_protocol.data`.
    Data,
    /// `smtp_protocol.context`.
    Context,
    /// `connectivity.description`, `transport_events.description`.
    Description,
    /// `transport_events.insertion_strings`.
    InsertionStrings,
    /// `queue_snapshots.last_error`.
    LastError,
}

impl TextField {
    /// Every searched field, in a stable order.
    pub const ALL: [TextField; 7] = [
        TextField::RecipientStatus,
        TextField::SourceContext,
        TextField::Data,
        TextField::Context,
        TextField::Description,
        TextField::InsertionStrings,
        TextField::LastError,
    ];

    /// The column's name.
    pub fn name(self) -> &'static str {
        match self {
            TextField::RecipientStatus => "recipient_status",
            TextField::SourceContext => "source_context",
            TextField::Data => "data",
            TextField::Context => "context",
            TextField::Description => "description",
            TextField::InsertionStrings => "insertion_strings",
            TextField::LastError => "last_error",
        }
    }

    /// Looks a field up by [`TextField::name`].
    pub fn from_name(name: &str) -> Option<TextField> {
        TextField::ALL.into_iter().find(|f| f.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The position of a diagnosed table in [`DIAGNOSED`] (none for the other tables).
pub(crate) fn slot(table: Table) -> Option<usize> {
    DIAGNOSED.iter().position(|t| *t == table)
}

/// Text fields searched per table when a match block names none.
pub fn default_fields(table: Table) -> &'static [TextField] {
    match table {
        Table::MessageTracking => &[TextField::RecipientStatus, TextField::SourceContext],
        Table::SmtpProtocol => &[TextField::Data, TextField::Context],
        Table::Connectivity => &[TextField::Description],
        Table::TransportEvents => &[TextField::Description, TextField::InsertionStrings],
        Table::QueueSnapshots => &[TextField::LastError],
        _ => &[],
    }
}

/// How far a problem reaches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Early warning.
    Info,
    /// One message or recipient.
    Minor,
    /// A route, connector or class of mail.
    Major,
    /// Mail flow for many users stopped.
    Critical,
}

impl Severity {
    /// The severity a [`Severity::name`] stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Info, Self::Minor, Self::Major, Self::Critical]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The name used in output and in the `diagnosis_severity` column.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// What the protocol says the sender will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retry {
    /// 4xx: retried.
    Transient,
    /// 5xx: not retried.
    Permanent,
    /// Seen both ways.
    Either,
    /// Not a reply.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// Whether retrying can clear it (independent of [`Retry`]: many 4xx never clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfHeals {
    /// Clears by itself.
    Yes,
    /// Needs someone to act.
    No,
    /// Depends.
    Maybe,
    /// Not applicable.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// One way a rule shows in a row; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Tables the block applies to (default: every diagnosed table).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Fields searched (default: per table, see [`default_fields`]).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Literal texts that must all appear in one field value (ASCII case-insensitive).
    #[serde(default)]
    pub text: Vec<String>,
    /// Enhanced status code, exact (`5.7.1`) or a range of the last part (`5.7.606-649`).
    pub enhanced: Option<String>,
    /// Three-digit reply code.
    pub reply: Option<u16>,
    /// Message tracking `event_id` (`FAIL`), or a Windows event's ID (`12014`).
    pub event_id: Option<String>,
    /// A Windows event's provider, case-insensitive; a trailing `*` matches any ending
    /// (`MSExchange*`).
    pub provider: Option<String>,
    /// SMTP protocol `direction` (`send` or `receive`).
    pub direction: Option<String>,
    /// The reply code must be at least this.
    pub min_reply: Option<u16>,
    /// Loses to every other matching block.
    #[serde(default)]
    pub fallback: bool,
    /// The texts show in lines that otherwise look healthy (a 250 reply, a command), which
    /// are then searched for them too, case-sensitively (it runs on every such line). Needs
    /// `text`; `reply` is then the line's own reply.
    #[serde(default)]
    pub healthy: bool,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable public name, `CATEGORY.CONDITION`.
    pub code: String,
    /// One line for people.
    pub title: String,
    /// Blast radius.
    pub severity: Severity,
    /// Protocol retry semantics.
    pub retry: Retry,
    /// Whether it clears by itself.
    pub self_heals: SelfHeals,
    /// One of the project's founding cases.
    #[serde(default)]
    pub seed: bool,
    /// Matching text observed in the field but not confirmed against a primary source.
    #[serde(default)]
    pub verify: bool,
    /// The signature as the research describes it (for people; matching uses `match`).
    #[serde(default)]
    pub signature: String,
    /// Probable cause.
    pub cause: String,
    /// What to check to confirm it.
    pub evidence: String,
    /// What to do, in order.
    pub remediation: Vec<String>,
    /// Reference tags (see [`Catalog::reference`]).
    #[serde(default)]
    pub references: Vec<String>,
    /// Code of the rule that replaces a retired one.
    pub deprecated_by: Option<String>,
    /// Codes that, found on the same server, probably explain this one (e.g. a certificate
    /// failure behind connection timeouts).
    #[serde(default)]
    pub probable_causes: Vec<String>,
    /// This is the end of retrying: any transient finding on the same server probably caused it.
    #[serde(default)]
    pub after_retries: bool,
    /// How it shows in a row: any one block matching is enough.
    #[serde(rename = "match", default)]
    pub matches: Vec<MatchSpec>,
}

impl Rule {
    /// The part of the code before the first dot.
    pub fn category(&self) -> &str {
        self.code.split('.').next().unwrap_or(&self.code)
    }
}

/// An enhanced status code condition: `class.subject.detail`, detail possibly a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedRange {
    /// 2, 4 or 5.
    pub class: u16,
    /// Subject.
    pub subject: u16,
    /// Lowest detail.
    pub from: u16,
    /// Highest detail.
    pub to: u16,
}

impl EnhancedRange {
    /// Parses `5.7.1` or `5.7.606-649`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().splitn(3, '.');
        let class = parts.next()?.parse().ok()?;
        let subject = parts.next()?.parse().ok()?;
        let detail = parts.next()?;
        let (from, to) = match detail.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let d = detail.parse().ok()?;
                (d, d)
            }
        };
        (matches!(class, 2 | 4 | 5) && from <= to).then_some(EnhancedRange {
            class,
            subject,
            from,
            to,
        })
    }

    /// Whether a parsed code falls in the range.
    pub fn contains(&self, code: (u16, u16, u16)) -> bool {
        code.0 == self.class && code.1 == self.subject && (self.from..=self.to).contains(&code.2)
    }

    /// A single code rather than a range.
    pub fn is_exact(&self) -> bool {
        self.from == self.to
    }
}

/// An error in a catalog file, naming the rule and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be read.
    #[error("{origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A rule's value is not acceptable.
    #[error("{origin}: rule {rule}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// The rule's code, or `#n` when the code itself is bad.
        rule: String,
        /// The key at fault.
        key: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    references: BTreeMap<String, String>,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Catalog {
    rules: Vec<Rule>,
    references: BTreeMap<String, String>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        // The built-in file is checked by a test; failing here would be a build defect.
        match Self::parse(BUILTIN, "built-in catalog") {
            Ok(c) => c,
            Err(e) => panic!("the built-in catalog is invalid: {e}"),
        }
    }

    /// The built-in catalog with a user file's rules added or replacing built-in ones.
    pub fn with_user_file(path: &Path) -> Result<Self, CatalogError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            origin: origin.clone(),
            source,
        })?;
        let mut catalog = Self::builtin();
        catalog.extend(Self::parse(&text, &origin)?);
        Ok(catalog)
    }

    /// Parses and checks a catalog file.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut seen = BTreeMap::new();
        for (i, rule) in file.rule.iter().enumerate() {
            validate(rule, i, origin)?;
            if let Some(first) = seen.insert(rule.code.clone(), i) {
                return Err(invalid(
                    origin,
                    &rule.code,
                    "code",
                    format!("defined twice (rules #{} and #{})", first + 1, i + 1),
                ));
            }
        }
        Ok(Catalog {
            rules: file.rule,
            references: file.references,
        })
    }

    /// Adds `other`'s rules; a rule with an existing code replaces it in place.
    pub fn extend(&mut self, other: Catalog) {
        for rule in other.rules {
            match self.rules.iter_mut().find(|r| r.code == rule.code) {
                Some(existing) => *existing = rule,
                None => self.rules.push(rule),
            }
        }
        self.references.extend(other.references);
    }

    /// The rules, in catalog order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by code.
    pub fn rule(&self, code: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.code == code)
    }

    /// The full citation of a reference tag.
    pub fn reference(&self, tag: &str) -> Option<&str> {
        self.references.get(tag).map(String::as_str)
    }
}

fn invalid(origin: &str, rule: &str, key: &str, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        origin: origin.to_string(),
        rule: rule.to_string(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn validate(rule: &Rule, index: usize, origin: &str) -> Result<(), CatalogError> {
    let valid_code = rule.code.split('.').count() >= 2
        && rule
            .code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !valid_code {
        return Err(invalid(
            origin,
            &format!("#{}", index + 1),
            "code",
            format!("{:?} is not CATEGORY.CONDITION in upper case", rule.code),
        ));
    }
    let code = rule.code.as_str();
    if code.starts_with("ESC.") {
        return Err(invalid(
            origin,
            code,
            "code",
            "ESC.* codes are generated from the enhanced status code registry",
        ));
    }
    for (key, value) in [("title", &rule.title), ("cause", &rule.cause)] {
        if value.trim().is_empty() {
            return Err(invalid(origin, code, key, "must not be empty"));
        }
    }
    if rule.remediation.is_empty() {
        return Err(invalid(
            origin,
            code,
            "remediation",
            "give at least one step",
        ));
    }
    for c in &rule.probable_causes {
        if c.split('.').count() < 2 || c == code {
            return Err(invalid(
                origin,
                code,
                "probable_causes",
                format!("{c:?} is not another rule's code"),
            ));
        }
    }
    if rule.matches.is_empty() && rule.deprecated_by.is_none() {
        return Err(invalid(
            origin,
            code,
            "match",
            "a rule needs at least one [[rule.match]] block",
        ));
    }
    for (k, m) in rule.matches.iter().enumerate() {
        let at = |key: &str| format!("match[{k}].{key}");
        for t in &m.tables {
            if Table::from_name(t).and_then(slot).is_none() {
                let names: Vec<&str> = DIAGNOSED.iter().map(|t| t.name()).collect();
                return Err(invalid(
                    origin,
                    code,
                    &at("tables"),
                    format!("unknown table {t:?}; tables are {}", names.join(", ")),
                ));
            }
        }
        let tables: Vec<Table> = if m.tables.is_empty() {
            DIAGNOSED.to_vec()
        } else {
            m.tables
                .iter()
                .filter_map(|t| Table::from_name(t))
                .collect()
        };
        for f in &m.fields {
            if !tables
                .iter()
                .any(|t| default_fields(*t).iter().any(|d| d.name() == f))
            {
                return Err(invalid(
                    origin,
                    code,
                    &at("fields"),
                    format!("no table of {tables:?} has a searchable field {f:?}"),
                ));
            }
        }
        if m.healthy && m.text.is_empty() {
            return Err(invalid(
                origin,
                code,
                &at("healthy"),
                "needs text: without it every healthy line would match",
            ));
        }
        if m.text.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                origin,
                code,
                &at("text"),
                "empty text would match everything",
            ));
        }
        if let Some(e) = &m.enhanced
            && EnhancedRange::parse(e).is_none()
        {
            return Err(invalid(
                origin,
                code,
                &at("enhanced"),
                format!("{e:?} is not an enhanced status code like 5.7.1 or 5.7.606-649"),
            ));
        }
        for (key, r) in [("reply", m.reply), ("min_reply", m.min_reply)] {
            if let Some(r) = r
                && !(200..600).contains(&r)
            {
                return Err(invalid(
                    origin,
                    code,
                    &at(key),
                    format!("{r} is not an SMTP reply code"),
                ));
            }
        }
        if let Some(d) = &m.direction
            && d != "send"
            && d != "receive"
        {
            return Err(invalid(
                origin,
                code,
                &at("direction"),
                format!("{d:?} is neither send nor receive"),
            ));
        }
        let anything = !m.text.is_empty()
            || m.enhanced.is_some()
            || m.reply.is_some()
            || m.event_id.is_some()
            || m.min_reply.is_some();
        if !anything {
            return Err(invalid(
                origin,
                code,
                &at("text"),
                "a block needs text, enhanced, reply, min_reply or event_id",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid_and_names_the_seeds() {
        let c = Catalog::builtin();
        assert!(c.rules().len() >= 70, "{}", c.rules().len());
        for code in [
            "TLS.CERT_NO_PRIVATE_KEY",
            "TLS.CERT_NOT_BOUND_SMTP",
            "AUTH.KERBEROS_CLOCK_SKEW_OR_AD",
            "EVENT.SMTP_SEND_NEGATIVE_ACK",
        ] {
            let r = c.rule(code).unwrap();
            assert!(r.seed, "{code} is a seed case");
            assert!(!r.remediation.is_empty());
        }
        assert_eq!(c.rule("TLS.CERT_NO_PRIVATE_KEY").unwrap().category(), "TLS");
        assert!(c.reference("KB4495258").unwrap().contains("NoCredentials"));
        for r in c.rules() {
            for tag in &r.references {
                assert!(
                    c.reference(tag).is_some() || tag == "seed" || tag.starts_with("RFC"),
                    "{}: {tag}",
                    r.code
                );
            }
        }
    }

    const USER: &str = r#"
[[rule]]
code = "LOCAL.APPLIANCE_GREYLIST"
title = "Our mail gateway greylists"
severity = "minor"
retry = "transient"
self_heals = "yes"
cause = "The appliance in front of Exchange greylists unknown senders."
evidence = "Appliance log."
remediation = ["Nothing; it retries."]
[[rule.match]]
text = ["greylisted by gw01"]
"#;

    #[test]
    fn user_rules_add_and_override() {
        let mut c = Catalog::builtin();
        let n = c.rules().len();
        c.extend(Catalog::parse(USER, "user.toml").unwrap());
        assert_eq!(c.rules().len(), n + 1);
        let over = USER
            .replace("LOCAL.APPLIANCE_GREYLIST", "MBX.FULL")
            .replace("Our mail gateway greylists", "Mailbox full (site wording)");
        c.extend(Catalog::parse(&over, "user.toml").unwrap());
        assert_eq!(c.rules().len(), n + 1);
        assert_eq!(
            c.rule("MBX.FULL").unwrap().title,
            "Mailbox full (site wording)"
        );
    }

    #[test]
    fn errors_name_the_rule_and_the_key() {
        let cases = [
            (
                USER.replace("severity = \"minor\"", "severity = \"severe\""),
                "severity",
            ),
            (
                USER.replace("text = [", "enhanced = \"5.7\"\ntext = ["),
                "match[0].enhanced",
            ),
            (
                USER.replace("text = [", "tables = [\"smtp\"]\ntext = ["),
                "match[0].tables",
            ),
            (USER.replace("text = [", "colour = 1\ntext = ["), "colour"),
            (
                USER.replace(
                    "remediation = [\"Nothing; it retries.\"]",
                    "remediation = []",
                ),
                "remediation",
            ),
            (
                USER.replace("LOCAL.APPLIANCE_GREYLIST", "local greylist"),
                "code",
            ),
            (format!("{USER}\n{USER}"), "defined twice"),
        ];
        for (text, key) in cases {
            let err = Catalog::parse(&text, "user.toml").unwrap_err().to_string();
            assert!(err.contains("user.toml"), "{err}");
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = Catalog::parse(
            &USER.replace(
                "remediation = [\"Nothing; it retries.\"]",
                "remediation = []",
            ),
            "user.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("LOCAL.APPLIANCE_GREYLIST"), "{err}");
    }

    #[test]
    fn enhanced_ranges() {
        let r = EnhancedRange::parse("5.7.606-649").unwrap();
        assert!(r.contains((5, 7, 606)) && r.contains((5, 7, 649)) && !r.contains((5, 7, 6)));
        assert!(!r.is_exact());
        assert!(EnhancedRange::parse("5.7.1").unwrap().is_exact());
        assert!(EnhancedRange::parse("5.7").is_none());
        assert!(EnhancedRange::parse("6.1.1").is_none());
        assert!(EnhancedRange::parse("5.7.9-1").is_none());
    }
}
