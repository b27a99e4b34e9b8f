//! Small parsers for typed field values. Each takes one field's bytes (already unquoted) and
//! borrows from it; none allocates.

pub mod custom_data;
pub mod datetime;
pub mod endpoint;
pub mod event_symbol;
pub mod multi_value;
pub mod number;
pub mod session_ref;
pub mod smtp_reply;
