//! Harnesses shared by the fuzz targets (`fuzz/`) and the corpus replay test, so both check the
//! same invariants: no panic, and every input byte ends up in a row, a reject, a header or a
//! blank line, whatever the chunking.

use crate::fields::{
    custom_data, datetime, endpoint, multi_value, number, session_ref, smtp_reply,
};
use crate::tokenize::Tokenizer;
use crate::{DecoderBuilder, LogReader};

/// Decodes `data` in chunks whose sizes come from the first bytes, with a tiny batch size and
/// line cap so the flush and overlong paths run, and checks the accounting.
pub fn decode(data: &[u8]) {
    let (chunk, data) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c % 61) + 1, rest),
        None => (1, data),
    };
    let decoder = DecoderBuilder::new("fuzz/EX01/SmtpReceive/RECV2024010100-1.LOG")
        .with_batch_size(3)
        .with_max_line_bytes(300)
        .build();
    let (mut rows, mut rejects) = (0u64, 0u64);
    let mut reader = LogReader::new(decoder, std::io::BufReader::with_capacity(chunk, data));
    for f in reader.by_ref() {
        let f = f.expect("decoding never fails on any input");
        rows += f.data.map_or(0, |b| b.batch.num_rows() as u64);
        rejects += f.rejects.map_or(0, |b| b.num_rows() as u64);
    }
    let decoder = reader.decoder();
    let s = decoder.stats();
    assert_eq!(s.bytes, data.len() as u64, "every byte consumed");
    assert_eq!(
        s.lines,
        s.directives + s.blank + s.rows + s.rejects,
        "every line accounted: {s:?}"
    );
    assert_eq!(
        (rows, rejects),
        (s.rows, s.rejects),
        "batches hold what the counters say"
    );
}

/// Every field parser on arbitrary bytes; the tokenizer's paths must agree.
pub fn fields(data: &[u8]) {
    let _ = datetime::parse_datetime_ms(data);
    assert_eq!(
        endpoint::parse_endpoint(data),
        endpoint_reference(data),
        "endpoint split"
    );
    let _ = number::parse_i64(data);
    let _ = smtp_reply::find_smtp_reply(data);
    let entries: Vec<_> = custom_data::entries(data).collect();
    assert_eq!(entries, custom_data_reference(data), "custom-data split");
    let plain: Vec<&[u8]> = data
        .split(|&b| b == b';')
        .filter(|i| !i.is_empty())
        .collect();
    assert_eq!(
        multi_value::items(data).collect::<Vec<_>>(),
        plain,
        "list split"
    );
    // Statuses group the list's items without losing or repeating one.
    let grouped: Vec<&[u8]> = multi_value::statuses(data)
        .flat_map(multi_value::items)
        .collect();
    assert_eq!(grouped, plain, "status split");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(id) = session_ref::session_ref(text) {
            assert!(id.len() == 16 && text.starts_with(id), "session ref");
        }
        // A canonical server name is a name that reads back as itself.
        if let Some(name) = crate::canonical_server(text) {
            assert_eq!(
                crate::canonical_server(&name).as_deref(),
                Some(name.as_str())
            );
            assert!(name.len() <= crate::MAX_SERVER_NAME && !name.is_empty());
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }
    let mut a = Tokenizer::default();
    let mut b = Tokenizer::default();
    let fast = a
        .tokenize(data)
        .map(|f| f.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
    let slow = b
        .tokenize_quoted(data)
        .map(|f| f.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
    assert_eq!(fast, slow, "tokenizer paths disagree");
    let tape = crate::tokenize::tape_fields(data);
    assert_eq!(tape, slow, "tape path disagrees with the quoted path");
}

/// The endpoint split as first written: the last colon searched for in the whole value, not
/// its last six bytes, and the address part tested for a colon byte by byte. The bracketed form
/// and the split at the colon are shared with [`endpoint::parse_endpoint`], which this holds to.
pub fn endpoint_reference(s: &[u8]) -> endpoint::Endpoint<'_> {
    endpoint::bracketed(s).unwrap_or_else(|| match s.iter().rposition(|&b| b == b':') {
        Some(colon) => endpoint::split_at(s, colon, |host| host.contains(&b':')),
        None => endpoint::Endpoint { ip: s, port: None },
    })
}

/// The custom-data split as first written (search each entry's end with `memchr`, then its
/// `=`): the oracle the one-pass [`custom_data::entries`] is held to, by tests and fuzzing.
pub fn custom_data_reference(field: &[u8]) -> Vec<custom_data::Entry<'_>> {
    use custom_data::parse_type_tag;
    let tagged = parse_type_tag(field).is_some();
    let mut rest = field;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let end = memchr::memchr_iter(b';', rest)
            .find(|&semi| {
                !tagged || parse_type_tag(&rest[semi + 1..]).is_some() || semi + 1 == rest.len()
            })
            .unwrap_or(rest.len());
        let raw = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        let body = if tagged {
            parse_type_tag(raw).map_or(raw, |(body, _)| body)
        } else {
            raw
        };
        // The key keeps its tag: it starts where the entry does.
        let tag = raw.len() - body.len();
        if !body.is_empty() {
            out.push(match memchr::memchr(b'=', body) {
                Some(eq) => (&raw[..tag + eq], Some(&body[eq + 1..])),
                None => (raw, None),
            });
        }
    }
    out
}

/// The directive parser and sniffing on arbitrary bytes.
pub fn directive(data: &[u8]) {
    let mut line = b"#".to_vec();
    line.extend_from_slice(data);
    assert!(
        crate::directive::parse_directive(&line).is_ok(),
        "a # line always parses"
    );
    let _ = crate::sniff("fuzz.log", data);
    // The server a file's first bytes name, if any, is canonical.
    for path in ["fuzz/MSGTRK2024010100-1.LOG", "fuzz/RECV2024010100-1.LOG"] {
        if let Some(name) = crate::server_from_head(path, data) {
            assert_eq!(
                crate::canonical_server(&name).as_deref(),
                Some(name.as_str())
            );
        }
    }
}

/// Arbitrary bytes as each event and queue format: every byte is taken, at the end every
/// record is framed (`complete_offset` is the input's length), every row and reject points
/// inside the input, and the rows do not depend on how the input was cut.
pub fn records(data: &[u8]) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let formats = [
        crate::RecordFormat::EventXml,
        crate::RecordFormat::EventJson,
        crate::RecordFormat::EventText,
        crate::RecordFormat::QueueList,
        crate::RecordFormat::QueueCsv,
        crate::RecordFormat::QueueJson,
        crate::RecordFormat::Evtx,
    ];
    for format in formats {
        let mut counts = Vec::new();
        for chunk in [usize::MAX, 1, 7] {
            let mut d = DecoderBuilder::new("fuzz/events.txt")
                .with_kind(Some(crate::LogKind::Records(format)))
                .with_file_time(Some(0))
                .with_batch_size(2)
                .build();
            let (mut rows, mut rejects) = (0, 0);
            let mut check = |f: crate::Flushed| {
                for b in f.data.iter().map(|d| &d.batch).chain(f.rejects.as_ref()) {
                    let offsets = b
                        .column_by_name("source_offset")
                        .expect("lineage")
                        .as_primitive::<Int64Type>();
                    for o in offsets.iter().flatten() {
                        assert!((0..data.len().max(1) as i64).contains(&o), "offset {o}");
                    }
                }
                rows += f.data.map_or(0, |d| d.batch.num_rows());
                rejects += f.rejects.map_or(0, |r| r.num_rows());
            };
            for piece in data.chunks(chunk.min(data.len()).max(1)) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let used = d.decode(rest).expect("decode");
                    rest = &rest[used..];
                    if d.needs_flush() {
                        check(d.flush().expect("flush"));
                    }
                }
            }
            d.finish().expect("finish");
            check(d.flush().expect("flush"));
            assert_eq!(d.complete_offset(), data.len() as u64, "{format:?}");
            counts.push((rows, rejects));
        }
        assert!(
            counts.windows(2).all(|w| w[0].0 == w[1].0),
            "{format:?}: rows depend on chunking: {counts:?}"
        );
    }
}
