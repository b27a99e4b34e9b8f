//! The record decoder over whole inputs: every format, any chunking, UTF-16, rejects, resume.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};

use crate::{DecoderBuilder, Flushed, LogKind, RecordFormat, Table};

/// Decodes `input` fed `chunk` bytes at a time; data batches concatenated, and the rejects.
fn decode(
    name: &str,
    input: &[u8],
    chunk: usize,
) -> (Option<(Table, RecordBatch)>, Vec<RecordBatch>) {
    let format = super::detect(input).expect("a known format");
    let mut d = DecoderBuilder::new(name)
        .with_kind(Some(LogKind::Records(format)))
        .with_file_time(Some(1_796_026_000_000))
        .with_batch_size(3)
        .build();
    let mut data: Vec<(Table, RecordBatch)> = Vec::new();
    let mut rejects = Vec::new();
    let mut take = |f: Flushed| {
        if let Some(d) = f.data {
            data.push((d.table, d.batch));
        }
        rejects.extend(f.rejects);
    };
    for piece in input.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let used = d.decode(rest).unwrap();
            rest = &rest[used..];
            if d.needs_flush() {
                take(d.flush().unwrap());
            }
        }
    }
    d.finish().unwrap();
    take(d.flush().unwrap());
    assert_eq!(
        d.complete_offset(),
        input.len() as u64,
        "everything is framed at the end"
    );
    let table = data.first().map(|(t, _)| *t);
    let batches: Vec<RecordBatch> = data.into_iter().map(|(_, b)| b).collect();
    let joined = table.map(|t| (t, arrow_select_concat(&batches)));
    (joined, rejects)
}

fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    arrow_cast_to_strings(batch.column_by_name(name).unwrap().as_ref())
}

fn arrow_cast_to_strings(a: &dyn Array) -> Vec<Option<String>> {
    match a.data_type() {
        arrow_schema::DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        arrow_schema::DataType::Dictionary(..) => {
            let d = a.as_dictionary::<Int32Type>();
            let v = d.values().as_string::<i32>();
            d.keys()
                .iter()
                .map(|k| k.map(|k| v.value(k as usize).to_string()))
                .collect()
        }
        other => panic!("not text: {other}"),
    }
}

const WEVTUTIL: &str = include_str!("../../../tests/data/windows/wevtutil.xml");
const WINEVENT_JSON: &str = include_str!("../../../tests/data/windows/get-winevent.json");
const VIEWER_TEXT: &str = include_str!("../../../tests/data/windows/event-viewer-copy.txt");
const QUEUE_LIST: &str = include_str!("../../../tests/data/windows/get-queue-fl.txt");
const QUEUE_CSV: &str = include_str!("../../../tests/data/windows/get-queue.csv");
const QUEUE_JSON: &str = include_str!("../../../tests/data/windows/get-queue.json");

#[test]
fn formats_are_told_apart_by_content() {
    use RecordFormat::*;
    for (text, want) in [
        (WEVTUTIL, EventXml),
        (WINEVENT_JSON, EventJson),
        (VIEWER_TEXT, EventText),
        (QUEUE_LIST, QueueList),
        (QUEUE_CSV, QueueCsv),
        (QUEUE_JSON, QueueJson),
    ] {
        assert_eq!(super::detect(text.as_bytes()), Some(want));
        assert_eq!(super::detect(&utf16le(text)), Some(want), "UTF-16");
    }
    for not in [
        "#Software: Microsoft Exchange Server\r\n#Fields: date-time,x\r\n",
        "2024-01-01T00:00:00.000Z,a,b\r\n",
        "hello world\n",
        "{\"a\": 1}",
    ] {
        assert_eq!(super::detect(not.as_bytes()), None, "{not}");
    }
    assert_eq!(super::detect(b"ElfFile\0\0\0\0"), Some(Evtx));
}

fn utf16le(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// Each input, whole and a byte at a time, UTF-8 and UTF-16: the same rows.
fn same_rows_every_way(name: &str, text: &str) -> (Table, RecordBatch) {
    let (whole, rejects) = decode(name, text.as_bytes(), usize::MAX);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    let (table, whole) = whole.expect("rows");
    for (input, chunk) in [
        (text.as_bytes().to_vec(), 1),
        (text.as_bytes().to_vec(), 7),
        (utf16le(text), 1),
        (utf16le(text), 4096),
    ] {
        let (again, rejects) = decode(name, &input, chunk);
        let (_, again) =
            again.unwrap_or_else(|| panic!("{name} chunk {chunk}: no rows; {rejects:?}"));
        for col in [
            "event_id",
            "provider",
            "identity",
            "status",
            "last_error",
            "description",
            "insertion_strings",
            "timestamp",
            "server",
        ] {
            if let (Some(a), Some(b)) = (whole.column_by_name(col), again.column_by_name(col)) {
                assert_eq!(a.to_data(), b.to_data(), "{name} chunk {chunk}: {col}");
            }
        }
        let offsets = again
            .column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        let first = offsets.value(0) as usize;
        if input[0] == 0xFF {
            // UTF-16: the offset of a record is twice its character position, plus the BOM.
            assert!(first >= 2 && first.is_multiple_of(2), "{name}: {first}");
        } else {
            assert_eq!(
                offsets,
                whole
                    .column_by_name("source_offset")
                    .unwrap()
                    .as_primitive::<Int64Type>()
            );
        }
    }
    (table, whole)
}

#[test]
fn wevtutil_xml() {
    let (table, b) = same_rows_every_way("ex01-events.xml", WEVTUTIL);
    assert_eq!(table, Table::TransportEvents);
    let ids = b
        .column_by_name("event_id")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(ids.values().to_vec(), [12014, 12018, 1035, 2004]);
    // The event between them of another provider is passed over, and counted.
    let mut d = DecoderBuilder::new("x.xml")
        .with_kind(Some(LogKind::Records(RecordFormat::EventXml)))
        .build();
    d.decode(WEVTUTIL.as_bytes()).unwrap();
    d.finish().unwrap();
    assert_eq!(d.stats().passed_over, 1);
    // `*` keeps it.
    let mut all = DecoderBuilder::new("x.xml")
        .with_kind(Some(LogKind::Records(RecordFormat::EventXml)))
        .with_event_providers(crate::Providers::new(["*"]))
        .build();
    all.decode(WEVTUTIL.as_bytes()).unwrap();
    all.finish().unwrap();
    assert_eq!(all.flush().unwrap().data.unwrap().batch.num_rows(), 5);
    assert_eq!(strings(&b, "server")[0].as_deref(), Some("EX01"));
    let offsets = b
        .column_by_name("source_offset")
        .unwrap()
        .as_primitive::<Int64Type>();
    for (i, o) in offsets.values().iter().enumerate() {
        assert!(
            WEVTUTIL[*o as usize..].starts_with("<Event"),
            "row {i} at {o}"
        );
    }
}

#[test]
fn get_winevent_json() {
    let (_, b) = same_rows_every_way("events.json", WINEVENT_JSON);
    let ids = b
        .column_by_name("event_id")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(ids.values().to_vec(), [1035, 15006]);
    assert_eq!(
        strings(&b, "server"),
        [Some("EX02".into()), Some("EX02".into())]
    );
    let data = b
        .column_by_name("insertion_strings")
        .unwrap()
        .as_list::<i32>();
    assert_eq!(
        data.value(0).as_string::<i32>().value(0),
        "UnexpectedExchangeAuthBlob"
    );
}

#[test]
fn event_viewer_text_blocks_even_partial_ones() {
    let (_, b) = same_rows_every_way("pasted.txt", VIEWER_TEXT);
    let ids = b
        .column_by_name("event_id")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(ids.values().to_vec(), [12014, 1035, 15004]);
    let d = strings(&b, "description");
    assert!(d[0].as_deref().unwrap().contains("STARTTLS"), "{d:?}");
    // The last block has only Source and Event ID: the file's time stands in.
    let ts = b
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<arrow_array::types::TimestampMillisecondType>();
    assert_eq!(ts.value(2), 1_796_026_000_000);
}

#[test]
fn queue_snapshots_in_every_format_agree() {
    let mut seen = Vec::new();
    for (name, text) in [
        ("q.txt", QUEUE_LIST),
        ("q.csv", QUEUE_CSV),
        ("q.json", QUEUE_JSON),
    ] {
        let (table, b) = same_rows_every_way(name, text);
        assert_eq!(table, Table::QueueSnapshots);
        let rows: Vec<_> = (0..b.num_rows())
            .map(|r| {
                (
                    strings(&b, "identity")[r].clone(),
                    strings(&b, "status")[r].clone(),
                    strings(&b, "last_error_reply")[r].clone(),
                    strings(&b, "last_error_ip")[r].clone(),
                    strings(&b, "server")[r].clone(),
                )
            })
            .collect();
        seen.push(rows);
    }
    assert_eq!(seen[0], seen[1], "list and CSV: {seen:#?}");
    assert_eq!(seen[0], seen[2], "list and JSON");
    let retry = seen[0]
        .iter()
        .find(|r| r.1.as_deref() == Some("Retry"))
        .unwrap();
    // Fields no column holds are kept, by name.
    let (_, b) = decode("q.txt", QUEUE_LIST.as_bytes(), usize::MAX)
        .0
        .unwrap();
    let extra = b.column_by_name("extra").unwrap().as_map();
    let first = extra.value(1);
    let keys: Vec<&str> = first
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert!(
        keys.contains(&"RetryCount") && keys.contains(&"RunspaceId"),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"TlsDomain"),
        "empty values are not kept: {keys:?}"
    );
    assert_eq!(
        retry.2.as_deref(),
        Some("454 4.7.0 Temporary authentication failure.")
    );
    assert_eq!(retry.3.as_deref(), Some("10.0.0.12"));
    assert_eq!(retry.4.as_deref(), Some("EX01"));
}

#[test]
fn a_bad_record_is_rejected_and_the_rest_read() {
    let text = WEVTUTIL.replacen("<EventID", "<NotAnId", 1);
    let (rows, rejects) = decode("bad.xml", text.as_bytes(), 100);
    let (_, b) = rows.unwrap();
    assert_eq!(b.num_rows(), 3);
    assert_eq!(rejects.len(), 1);
    let reason = strings(&rejects[0], "reason");
    assert_eq!(reason[0].as_deref(), Some("bad_record"));
    let offset = rejects[0]
        .column_by_name("source_offset")
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0);
    assert!(text[offset as usize..].starts_with("<Event"));
}

#[test]
fn skip_before_drops_what_an_earlier_run_read() {
    let format = super::detect(QUEUE_LIST.as_bytes()).unwrap();
    let all = decode("q.txt", QUEUE_LIST.as_bytes(), 64).0.unwrap().1;
    let offsets = all
        .column_by_name("source_offset")
        .unwrap()
        .as_primitive::<Int64Type>();
    let cut = offsets.value(1);
    let mut d = DecoderBuilder::new("q.txt")
        .with_kind(Some(LogKind::Records(format)))
        .with_file_time(Some(1))
        .build();
    d.skip_before(cut as u64);
    d.decode(QUEUE_LIST.as_bytes()).unwrap();
    d.finish().unwrap();
    let b = d.flush().unwrap().data.unwrap().batch;
    assert_eq!(b.num_rows(), all.num_rows() - 1);
    assert_eq!(
        b.column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        cut
    );
}

#[test]
fn garbage_never_panics_and_loses_no_byte() {
    for format in [
        RecordFormat::EventXml,
        RecordFormat::EventJson,
        RecordFormat::EventText,
        RecordFormat::QueueList,
        RecordFormat::QueueCsv,
        RecordFormat::Evtx,
    ] {
        for input in [
            &b"\xFF\xFE\x00"[..],
            b"{{{{\"\\",
            b"<Event><Event></Event",
            b"Source: x\nEvent ID: 99999999999\n",
            b"ElfFile\0short",
        ] {
            let mut d = DecoderBuilder::new("x")
                .with_kind(Some(LogKind::Records(format)))
                .build();
            let used = d.decode(input).unwrap();
            assert_eq!(used, input.len());
            d.finish().unwrap();
            d.flush().unwrap();
        }
    }
}

/// A real `.evtx` (MSExchange CmdletLogs events collected by Windows Event Forwarding, from the
/// evtx crate's samples): every record the evtx crate's own file parser finds is a row, with
/// its record id, whatever the chunking.
#[test]
fn evtx_file_gives_the_records_the_evtx_parser_finds() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/windows/MSExchange_Management_wec.evtx"
    ))
    .unwrap();
    // The crate's XML of each record, in file order.
    let want: Vec<String> = evtx::EvtxParser::from_buffer(bytes.clone())
        .unwrap()
        .records()
        .map(|r| r.unwrap().data)
        .collect();
    assert!(!want.is_empty());
    for chunk in [usize::MAX, 4096, 1000, 1] {
        let (rows, rejects) = decode("MSExchange_Management_wec.evtx", &bytes, chunk);
        assert!(rejects.is_empty(), "{rejects:?}");
        let (table, b) = rows.unwrap();
        assert_eq!(table, Table::TransportEvents);
        assert_eq!(b.num_rows(), want.len(), "chunk {chunk}");
        let providers = strings(&b, "provider");
        assert!(
            providers
                .iter()
                .all(|p| p.as_deref() == Some("MSExchange CmdletLogs")),
            "{providers:?}"
        );
        let formats = strings(&b, "input_format");
        assert!(formats.iter().all(|f| f.as_deref() == Some("evtx")));
        // Each row's event id and record id (the event's own, which forwarding keeps) are the
        // ones in the crate's XML of that record.
        let ids = b
            .column_by_name("record_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let events = b
            .column_by_name("event_id")
            .unwrap()
            .as_primitive::<Int32Type>();
        for (r, xml) in want.iter().enumerate() {
            assert!(
                xml.contains(&format!(">{}</EventID>", events.value(r))),
                "{xml}"
            );
            assert!(
                xml.contains(&format!("<EventRecordID>{}</EventRecordID>", ids.value(r))),
                "{xml}"
            );
        }
    }
}

/// The fuzz entry point's invariants on the test inputs and on their broken pieces.
#[test]
fn fuzz_invariants_hold_on_the_test_inputs() {
    for text in [
        WEVTUTIL,
        WINEVENT_JSON,
        VIEWER_TEXT,
        QUEUE_LIST,
        QUEUE_CSV,
        QUEUE_JSON,
    ] {
        crate::fuzzing::records(text.as_bytes());
        crate::fuzzing::records(&utf16le(text));
        crate::fuzzing::records(&text.as_bytes()[..text.len() / 2]);
        crate::fuzzing::records(&text.as_bytes()[text.len() / 3..]);
    }
    crate::fuzzing::records(b"");
    crate::fuzzing::records(b"\xFF\xFE<\x00E\x00");
    // An odd last byte, and a high surrogate without its pair, at the end of UTF-16.
    let mut odd = utf16le(QUEUE_LIST);
    odd.push(b'x');
    crate::fuzzing::records(&odd);
    let mut lone = utf16le(VIEWER_TEXT);
    lone.extend_from_slice(&0xD83Du16.to_le_bytes());
    crate::fuzzing::records(&lone);
}

/// A `.evtx` cut short (a copy interrupted) gives the events before the cut and a reject that
/// says the chunk is truncated; garbage in place of a chunk is a reject, never a panic.
#[test]
fn truncated_or_corrupt_evtx_gives_what_it_can_and_a_reason() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/windows/MSExchange_Management_wec.evtx"
    ))
    .unwrap();
    let whole = decode("w.evtx", &bytes, usize::MAX).0.unwrap().1.num_rows();
    let cut = &bytes[..bytes.len() - 20_000];
    let (rows, rejects) = decode("cut.evtx", cut, 4096);
    let got = rows.map_or(0, |(_, b)| b.num_rows());
    assert!(got > 0 && got <= whole, "{got} of {whole}");
    let reasons: Vec<String> = rejects
        .iter()
        .flat_map(|r| strings(r, "detail"))
        .flatten()
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("truncated .evtx chunk")),
        "{reasons:?}"
    );
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[4096 + 600..4096 + 3000] {
        *b = 0xA5;
    }
    let (_, rejects) = decode("corrupt.evtx", &corrupt, usize::MAX);
    assert!(!rejects.is_empty(), "a corrupt chunk is reported");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The fuzz invariants on the test inputs with bytes overwritten at random, and in UTF-16.
    #[test]
    fn fuzz_invariants_hold_on_mutated_inputs(
        which in 0usize..6,
        edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..24),
        utf16 in proptest::bool::ANY,
    ) {
        let text = [WEVTUTIL, WINEVENT_JSON, VIEWER_TEXT, QUEUE_LIST, QUEUE_CSV, QUEUE_JSON][which];
        let mut bytes = if utf16 { utf16le(text) } else { text.as_bytes().to_vec() };
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        crate::fuzzing::records(&bytes);
    }
}

/// A provider pattern's prefix that ends inside a character of the provider is no match, not
/// a panic (found by the mutated inputs above).
#[test]
fn provider_prefixes_respect_characters() {
    assert!(!crate::Providers::default().keeps(Some("MSExchang\u{b565}Transport")));
    assert!(crate::Providers::default().keeps(Some("msexchangetransport")));
    assert!(!crate::provider_matches("MSExchange*", "MSExch"));
}
