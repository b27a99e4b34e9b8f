//! Why a line was rejected, and the few errors that stop a decoder.
//!
//! A row-level problem never aborts a file: the line goes to the `rejects` table with its file,
//! byte offset, raw bytes and one of these reasons, and decoding continues. Only an internal
//! invariant failing while assembling a batch (an Arrow error) or the reader failing is fatal.

use arrow_schema::ArrowError;

/// Why a line went to `rejects`. `code()` is a stable machine name; `Display` is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The row's field count differs from the header's.
    #[error("{found} fields where the #Fields header declares {expected}")]
    FieldCount {
        /// Fields the header declares.
        expected: usize,
        /// Fields the row has.
        found: usize,
    },
    /// A typed column holds text that is not of its type.
    #[error("{column}: {value:?} is not {expected}")]
    BadValue {
        /// Header name of the column, as the log writes it.
        column: String,
        /// What the column must hold.
        expected: &'static str,
        /// The offending text (lossily decoded).
        value: String,
    },
    /// The line exceeds the decoder's line-length cap.
    #[error("line longer than {limit} bytes (only the first bytes are kept)")]
    LineTooLong {
        /// The cap.
        limit: usize,
    },
    /// A quoted field never closes.
    #[error("quoted field opened at column byte {at} never closes")]
    UnterminatedQuote {
        /// Offset in the line of the opening quote.
        at: usize,
    },
    /// No header and no known layout fits the row.
    #[error("no #Fields header, and a row of {fields} fields matches no Exchange log layout")]
    UnknownLayout {
        /// The row's field count.
        fields: usize,
    },
    /// `#Log-type` names a log mailflow does not read.
    #[error("log type {0:?} is not one mailflow reads")]
    UnsupportedLogType(String),
    /// An event or queue record that does not parse, or lacks what a row needs.
    #[error("{0}")]
    BadRecord(String),
}

impl RejectReason {
    /// Stable short name, for grouping rejects in queries and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::FieldCount { .. } => "field_count",
            RejectReason::BadValue { .. } => "bad_value",
            RejectReason::LineTooLong { .. } => "line_too_long",
            RejectReason::UnterminatedQuote { .. } => "unterminated_quote",
            RejectReason::UnknownLayout { .. } => "unknown_layout",
            RejectReason::UnsupportedLogType(_) => "unsupported_log_type",
            RejectReason::BadRecord(_) => "bad_record",
        }
    }
}

/// An error that stops a decoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Assembling a record batch failed: a bug in mailflow, never a property of the input.
    #[error("building a record batch failed: {0}")]
    Arrow(#[from] ArrowError),
    /// Reading the input failed.
    #[error("reading input failed: {0}")]
    Io(#[from] std::io::Error),
    /// [`crate::Decoder::resume_at`] was called where it cannot resume.
    #[error("cannot resume at byte {offset}: {reason}")]
    Resume {
        /// The offset asked for.
        offset: u64,
        /// Why not.
        reason: String,
    },
}
