//! Hand-made edge cases (tests/data/edge): what each must produce, rejects included. Nothing is
//! lost: every line is a header, a blank, a row or a reject, and every byte is accounted for.

mod common;

use common::*;
use mailflow_parser::{DecoderBuilder, Note, Table};

fn edge(name: &str) -> Output {
    decode_file(&data_dir().join("edge").join(name), 64 * 1024, 8192)
}

fn accounted(out: &Output, bytes: usize) {
    let s = out.stats;
    assert_eq!(s.bytes, bytes as u64);
    assert_eq!(
        s.lines,
        s.directives + s.blank + s.rows + s.rejects,
        "{s:?}"
    );
}

#[test]
fn header_change_mid_file_follows_the_new_header() {
    let out = edge("header_change.log");
    assert_eq!(out.reject_count(), 0, "{:?}", out.reject_reasons());
    assert_eq!(out.rows(Table::MessageTracking), 2);
    assert_eq!(out.rows(Table::SmtpProtocol), 2);
    let tracking = &out.data[&Table::MessageTracking];
    let batch = arrow_select::concat::concat_batches(&tracking[0].schema(), tracking).unwrap();
    // 2013 row has no log-id; 2016 row has it and its subject with a comma.
    assert_eq!(
        column_strings(&batch, "log_id"),
        ["<null>", "11111111-2222-3333-4444-555555555555"]
    );
    assert_eq!(
        column_strings(&batch, "message_subject"),
        ["Budget", "Re: plan, v2"]
    );
    assert_eq!(
        column_strings(&batch, "recipient_address")[0],
        "[bob@contoso.com, carol@contoso.com]"
    );
    let smtp = &out.data[&Table::SmtpProtocol][0];
    assert_eq!(column_strings(smtp, "direction"), ["receive", "receive"]);
    assert_eq!(column_strings(smtp, "event"), ["connect", "send"]);
}

#[test]
fn line_endings_bom_and_missing_final_newline() {
    for (name, rows) in [
        ("lf_only.log", 1),
        ("bom_crlf.log", 2),
        ("no_final_newline.log", 2),
    ] {
        let out = edge(name);
        assert_eq!(out.reject_count(), 0, "{name}: {:?}", out.reject_reasons());
        assert_eq!(
            out.data
                .values()
                .flatten()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            rows,
            "{name}"
        );
        // No field keeps a stray carriage return.
        for b in out.data.values().flatten() {
            assert!(!render(std::slice::from_ref(b)).contains('\r'), "{name}");
        }
    }
    let out = edge("bom_crlf.log");
    let smtp = &out.data[&Table::SmtpProtocol][0];
    // Offsets count every byte, the BOM and header included: line 6 starts after them.
    let header_len = 3 + std::fs::read_to_string(data_dir().join("edge/bom_crlf.log")).unwrap()
        [3..]
        .split_inclusive('\n')
        .take(5)
        .map(str::len)
        .sum::<usize>();
    assert_eq!(
        column_strings(smtp, "source_offset")[0],
        header_len.to_string()
    );
}

#[test]
fn empty_file_is_nothing() {
    let out = edge("empty.log");
    assert_eq!(out, Output::default());
}

#[test]
fn wrong_field_counts_are_rejected_and_the_run_continues() {
    let out = edge("wrong_field_count.log");
    let reasons = out.reject_codes();
    assert_eq!(reasons, ["field_count", "field_count"]);
    assert_eq!(out.rows(Table::SmtpProtocol), 1);
    let detail = column_strings(&out.rejects[0], "detail");
    assert_eq!(detail[0], "5 fields where the #Fields header declares 9");
}

#[test]
fn garbage_is_rejected_with_reasons_and_invalid_utf8_is_kept_lossy() {
    let bytes = std::fs::read(data_dir().join("edge/garbage.log")).unwrap();
    let out = edge("garbage.log");
    let reasons = out.reject_codes();
    assert_eq!(
        reasons,
        [
            "field_count",
            "bad_value",
            "bad_value",
            "unterminated_quote"
        ]
    );
    assert_eq!(out.rows(Table::MessageTracking), 2);
    assert_eq!(out.stats.lossy_rows, 1);
    let subjects = column_strings(&out.data[&Table::MessageTracking][0], "message_subject");
    assert_eq!(subjects, ["R\u{FFFD}union", "Re: plan, v2"]);
    // The raw bytes of a reject are the line exactly as it was (without its line break).
    assert_eq!(out.reject_raw(0), b"\x00\x01\x02\xff\xfe garbage \x80\x81");
    let offsets = out.reject_reasons().into_iter().map(|r| r.1 as usize);
    for off in offsets {
        assert!(
            bytes[..off].ends_with(b"\n"),
            "reject offset {off} is not a line start"
        );
    }
    let details = column_strings(&out.rejects[0], "detail");
    assert_eq!(
        details[1],
        "date-time: \"2024-02-30T11:05:00.000Z\" is not an ISO 8601 UTC timestamp"
    );
    assert_eq!(details[2], "total-bytes: \"7k\" is not an integer");
    accounted(&out, bytes.len());
}

#[test]
fn overlong_lines_are_rejected_and_skipped_with_bounded_memory() {
    let path = data_dir().join("edge/overlong.log");
    let bytes = std::fs::read(&path).unwrap();
    for chunk in [1, 7, 100, 64 * 1024] {
        let decoder = builder(&path).with_max_line_bytes(512).build();
        let out = decode_with(decoder, &bytes, chunk);
        assert_eq!(out.reject_codes(), ["line_too_long"]);
        assert_eq!(out.rows(Table::MessageTracking), 2, "chunk {chunk}");
        let raw = out.reject_raw(0);
        assert!(
            raw.starts_with(b"2024-03-01T11:05:00.000Z,") && raw.len() > 512,
            "chunk {chunk}"
        );
        accounted(&out, bytes.len());
    }
}

#[test]
fn unknown_columns_and_event_ids_are_kept() {
    let out = edge("unknown_columns.log");
    assert_eq!(out.reject_count(), 0);
    let b = &out.data[&Table::MessageTracking][0];
    assert_eq!(column_strings(b, "extra"), ["{x-future-column: hello}"]);
    assert_eq!(column_strings(b, "event_id"), ["TELEPORT"]);
    assert_eq!(column_strings(b, "source"), ["QUANTUM"]);
}

#[test]
fn unsupported_log_type_rows_are_rejected_with_a_note() {
    let out = edge("HttpProxy_2024030110-1.LOG");
    assert_eq!(out.reject_codes(), ["unsupported_log_type"]);
    assert!(matches!(out.notes[0], Note::UnsupportedLogType { .. }));
}

#[test]
fn half_written_last_line_is_held_back_until_complete() {
    let row = "2024-03-01T10:00:01.000Z,EX01\\Default Frontend EX01,08DC39A1B2C3D4E5,0,10.0.0.1:25,203.0.113.7:51000,+,,\r\n";
    let mut decoder = DecoderBuilder::new("RECV2024030110-1.LOG").build();
    let (head, tail) = row.split_at(40);
    decoder.decode(row.as_bytes()).unwrap();
    decoder.decode(head.as_bytes()).unwrap();
    assert_eq!(
        decoder.pending_rows(),
        1,
        "the partial line must not be emitted"
    );
    assert_eq!(decoder.complete_offset(), row.len() as u64);
    decoder.decode(tail.as_bytes()).unwrap();
    assert_eq!(decoder.pending_rows(), 2);
    assert_eq!(decoder.complete_offset(), 2 * row.len() as u64);
    let batch = decoder.flush().unwrap().data.unwrap().batch;
    assert_eq!(
        column_strings(&batch, "source_offset"),
        ["0", &row.len().to_string()]
    );
}

#[test]
fn headerless_rows_of_no_known_shape_are_rejected() {
    let decoder = DecoderBuilder::new("mystery.log").build();
    let out = decode_with(
        decoder,
        b"2024-03-01T10:00:01.000Z,a,b,c\nhello world\n",
        1024,
    );
    let reasons = out.reject_codes();
    assert_eq!(reasons, ["unknown_layout", "unknown_layout"]);
}

#[test]
fn server_comes_from_override_then_rows_then_path_then_host() {
    let row = "2024-03-01T10:05:00.000Z,,,,EX07,,,SMTP,RECEIVE,1,<a@b>,,x@y,,1,1,,,s,a@b,a@b,,Incoming,,,,,Email,g,15.02.1258.012\n";
    let empty_host = row.replace(",EX07,", ",,");
    let run = |b: DecoderBuilder, line: &str| {
        let out = decode_with(b.with_head(line.as_bytes()).build(), line.as_bytes(), 1024);
        column_strings(&out.data[&Table::MessageTracking][0], "server")
    };
    let path = "collected/EX09/MessageTracking/MSGTRK2024030110-1.LOG";
    assert_eq!(
        run(
            DecoderBuilder::new(path).with_server(Some("FORCED".into())),
            row
        ),
        ["FORCED"]
    );
    assert_eq!(run(DecoderBuilder::new(path), row), ["EX07"]);
    assert_eq!(run(DecoderBuilder::new(path), &empty_host), ["EX09"]);
    // The host name is the last resort, and goes by the same one name per server.
    assert_eq!(
        run(
            DecoderBuilder::new("MSGTRK2024030110-1.LOG").with_default_server("host1.corp"),
            &empty_host
        ),
        ["HOST1"]
    );
}

#[test]
fn send_rows_are_filed_under_the_local_server_not_the_destination() {
    // Outbound SEND rows name the destination in server-hostname and the local server in
    // client-hostname (the real sample's shape); the whole file is one server, whatever the
    // rows' remote hosts, and the host names the log gave stay in their own columns.
    let rows = "2025-01-14T09:29:05.327Z,216.160.83.56,HELLOWORLD,175.16.199.1,mx1.remote.example,;250 2.6.0 OK;ClientSubmitTime:,Outbound,SMTP,SEND,1,<a@b>,,x@remote.example,250 2.1.5 OK,10,1,,,s,a@b,a@b,,Originating,,,,,Email,g,15.02.1258.012\n\
2025-01-14T09:29:06.327Z,216.160.83.56,HELLOWORLD,175.16.199.2,mx2.other.example,;250 2.6.0 OK;ClientSubmitTime:,Outbound,SMTP,SEND,2,<c@b>,,y@other.example,250 2.1.5 OK,10,1,,,s,a@b,a@b,,Originating,,,,,Email,g,15.02.1258.012\n\
2025-01-14T09:29:07.000Z,,,,,,,STOREDRIVER,DELIVER,3,<d@b>,,z@contoso.com,,10,1,,,s,a@b,a@b,,Incoming,,,,,Email,g,15.02.1258.012\n";
    let path = "EX01/MessageTracking/MSGTRK2025011409-1.LOG";
    let decoder = DecoderBuilder::new(path)
        .with_head(rows.as_bytes())
        .with_default_server("ingest-host")
        .build();
    let out = decode_with(decoder, rows.as_bytes(), 1024);
    let batch = &out.data[&Table::MessageTracking][0];
    assert_eq!(
        column_strings(batch, "server"),
        ["HELLOWORLD", "HELLOWORLD", "HELLOWORLD"]
    );
    assert_eq!(
        column_strings(batch, "server_hostname"),
        ["mx1.remote.example", "mx2.other.example", "<null>"]
    );
}

#[test]
fn repeated_custom_data_keys_keep_every_value() {
    let row = "2024-03-01T10:05:00.000Z,,,,EX07,CatContentConversion,,AGENT,AGENTINFO,1,<a@b>,,x@y,,1,1,,,s,a@b,a@b,,Incoming,,,,S:AMA=SUM|v=0;S:AMA=EV|engine=M;S:CompCost=|ETR=0;S:AMA=third,Email,g,15.02.1258.012\n";
    let out = decode_with(
        DecoderBuilder::new("MSGTRK2024030110-1.LOG").build(),
        row.as_bytes(),
        1024,
    );
    assert_eq!(
        column_strings(&out.data[&Table::MessageTracking][0], "custom_data"),
        ["{S:AMA: [SUM|v=0, EV|engine=M, third], S:CompCost: [|ETR=0]}"]
    );
}
