//! `#Fields` header → column slots. Built once per header (not per row), so mapping by name
//! instead of by position costs nothing on the hot path, and a header that changes mid-file only
//! means building a new map.

use crate::directive::normalize_name;
use crate::kind::Table;
use crate::schema::{self, TIMESTAMP_SOURCES};

/// Where each output column of a table reads from, for one header.
#[derive(Debug, Clone)]
pub(crate) struct FieldMap {
    /// Number of fields a row must have.
    pub(crate) width: usize,
    /// Header index of the event time.
    pub(crate) timestamp: Option<usize>,
    /// Header names as the log writes them, for reject messages.
    pub(crate) names: Vec<String>,
    /// Per output column (schema order, excluding lineage and extra): header indexes in priority
    /// order. Empty when the header lacks the column (then the column is null).
    pub(crate) sources: Vec<Vec<usize>>,
    /// Header columns no output column reads: index and name as written, kept in `extra`.
    pub(crate) extra: Vec<(usize, String)>,
    /// The integer columns that have a source: (column index, header index, 32-bit?), so the
    /// per-row validation pass touches only them.
    pub(crate) ints: Vec<(usize, usize, bool)>,
}

impl FieldMap {
    pub(crate) fn new<'a>(table: Table, names: impl IntoIterator<Item = &'a [u8]>) -> FieldMap {
        let names: Vec<(String, String)> = names
            .into_iter()
            .map(|n| (normalize_name(n), String::from_utf8_lossy(n).into_owned()))
            .collect();
        let defs = schema::columns(table);
        let mut used = vec![false; names.len()];
        let first = |wanted: &str, used: &mut Vec<bool>| {
            let i = names.iter().position(|(n, _)| n == wanted)?;
            used[i] = true;
            Some(i)
        };
        let timestamp = TIMESTAMP_SOURCES.iter().find_map(|s| first(s, &mut used));
        let sources = defs
            .iter()
            .map(|d| {
                d.sources
                    .iter()
                    .filter_map(|s| first(s, &mut used))
                    .collect()
            })
            .collect();
        let extra = names
            .iter()
            .enumerate()
            .filter(|(i, (norm, _))| !used[*i] && !norm.is_empty())
            .map(|(i, (_, raw))| (i, raw.clone()))
            .collect();

        let names: Vec<String> = names.into_iter().map(|(_, raw)| raw).collect();
        let ints = defs
            .iter()
            .zip(&sources)
            .enumerate()
            .filter_map(
                |(c, (d, srcs)): (usize, (&schema::ColumnDef, &Vec<usize>))| {
                    let wide = match d.kind {
                        schema::ColKind::Int64 => false,
                        schema::ColKind::Int32 => true,
                        _ => return None,
                    };
                    srcs.first().map(|&i| (c, i, wide))
                },
            )
            .collect();
        FieldMap {
            ints,
            width: names.len(),
            timestamp,
            names,
            sources,
            extra,
        }
    }
}

impl FieldMap {
    /// The header's name for field `i` (for messages); `date-time` when the header lacks one.
    pub(crate) fn name(&self, i: Option<usize>) -> String {
        i.and_then(|i| self.names.get(i))
            .cloned()
            .unwrap_or_else(|| "date-time".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_name_not_position() {
        let names: Vec<&[u8]> = vec![
            b"event",
            b"date-time",
            b"session-id",
            b"X-New-Column",
            b"data",
        ];
        let map = FieldMap::new(Table::SmtpProtocol, names);
        assert_eq!(map.width, 5);
        assert_eq!(map.timestamp, Some(1));
        let defs = schema::columns(Table::SmtpProtocol);
        let slot = |name: &str| &map.sources[defs.iter().position(|d| d.name == name).unwrap()];
        assert_eq!(slot("event"), &vec![0]);
        assert_eq!(slot("session_id"), &vec![2]);
        assert_eq!(slot("connector_id"), &Vec::<usize>::new());
        // `data` feeds both the data column and the reply split.
        assert_eq!(slot("data"), &vec![4]);
        assert_eq!(slot("reply"), &vec![4]);
        assert_eq!(map.extra, vec![(3, "X-New-Column".to_string())]);
    }
}
