//! Windows events, from any of the forms admins have them in, into one row shape: the event XML
//! (`wevtutil qe /f:xml`, `/f:RenderedXml`, and what the `evtx` crate renders from a `.evtx`
//! file), `Get-WinEvent | ConvertTo-Json`, and Event Viewer's "Copy details as text".

use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field};
use quick_xml::events::Event as XmlEvent;

use super::time::parse_time;
use crate::dict::DictBuilder;

/// One event, whatever form it came in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventRecord {
    pub(crate) time: Option<i64>,
    pub(crate) computer: Option<String>,
    pub(crate) log_name: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) event_id: Option<i32>,
    pub(crate) level: Option<String>,
    pub(crate) task_category: Option<String>,
    pub(crate) record_id: Option<i64>,
    pub(crate) data: Vec<String>,
    pub(crate) description: Option<String>,
}

/// `Level` as Windows numbers it (0 is "LogAlways", shown as Information).
fn level_name(n: &str) -> Option<String> {
    Some(
        match n.trim() {
            "1" => "Critical",
            "2" => "Error",
            "3" => "Warning",
            "0" | "4" => "Information",
            "5" => "Verbose",
            other if !other.is_empty() && !other.bytes().all(|b| b.is_ascii_digit()) => other,
            _ => return None,
        }
        .to_string(),
    )
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The event ID: the low 16 bits of a classic event's full ID (`EventID Qualifiers=…` holds the
/// high bits apart, but a JSON `InstanceId` or a text paste may carry them together).
fn event_id(s: &str) -> Option<i32> {
    let n: i64 = s.trim().parse().ok()?;
    i32::try_from(n & 0xFFFF).ok()
}

/// Parses one `<Event>…</Event>` element.
pub(crate) fn parse_xml(xml: &str) -> Result<EventRecord, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut ev = EventRecord::default();
    // The element path below <Event>, as local names.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut in_data = false;
    let mut rendered_level = None;
    loop {
        let e = reader.read_event().map_err(|e| format!("event XML: {e}"))?;
        match e {
            XmlEvent::Start(ref s) | XmlEvent::Empty(ref s) => {
                let empty = matches!(e, XmlEvent::Empty(_));
                let name = s.local_name().as_ref().to_string();
                for a in s.attributes().flatten() {
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match (name.as_str(), a.key.local_name().as_ref()) {
                        ("Provider", "Name") => ev.provider = some(&value),
                        ("TimeCreated", "SystemTime") => ev.time = parse_time(&value),
                        _ => {}
                    }
                }
                if name == "Data" && !empty {
                    in_data = true;
                    text.clear();
                } else if name == "Data" {
                    ev.data.push(String::new());
                }
                if !empty {
                    path.push(name);
                    if !in_data {
                        text.clear();
                    }
                }
            }
            XmlEvent::Text(t) => {
                text.push_str(&t.xml10_content());
            }
            XmlEvent::GeneralRef(r) => {
                let name = r.clone().into_inner();
                match r.resolve_char_ref() {
                    Ok(Some(c)) => text.push(c),
                    _ => text.push_str(match name.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        _ => "",
                    }),
                }
            }
            XmlEvent::CData(c) => text.push_str(&c.into_inner()),
            XmlEvent::End(end) => {
                let name = end.local_name().as_ref().to_string();
                let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
                if in_data && name == "Data" {
                    ev.data.push(text.trim().to_string());
                    in_data = false;
                    text.clear();
                } else if !in_data {
                    match (parent, name.as_str()) {
                        (Some("System"), "EventID") => ev.event_id = event_id(&text),
                        (Some("System"), "Level") => ev.level = level_name(&text),
                        (Some("System"), "EventRecordID") => {
                            ev.record_id = text.trim().parse().ok()
                        }
                        (Some("System"), "Channel") => ev.log_name = some(&text),
                        (Some("System"), "Computer") => ev.computer = some(&text),
                        (Some("RenderingInfo"), "Message") => ev.description = some(&text),
                        (Some("RenderingInfo"), "Level") => rendered_level = some(&text),
                        (Some("RenderingInfo"), "Task") => ev.task_category = some(&text),
                        _ => {}
                    }
                    text.clear();
                }
                path.pop();
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if rendered_level.is_some() {
        ev.level = rendered_level;
    }
    if ev.event_id.is_none() {
        return Err("event XML without an <EventID>".into());
    }
    Ok(ev)
}

/// Parses one event of `Get-WinEvent | ConvertTo-Json` (an `EventLogRecord`'s properties).
pub(crate) fn parse_json(
    v: &serde_json::Map<String, serde_json::Value>,
) -> Result<EventRecord, String> {
    use serde_json::Value;
    let text = |k: &str| match v.get(k) {
        Some(Value::String(s)) => some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let id = v
        .get("Id")
        .or_else(|| v.get("EventID"))
        .or_else(|| v.get("InstanceId"))
        .and_then(|x| match x {
            Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n & 0xFFFF).ok()),
            Value::String(s) => event_id(s),
            _ => None,
        })
        .ok_or("event JSON without an Id")?;
    let data = match v.get("Properties").or_else(|| v.get("ReplacementStrings")) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|p| match p {
                Value::Object(o) => o.get("Value").map(|x| match x {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }),
                Value::String(s) if !s.starts_with("System.Diagnostics.Eventing") => {
                    Some(s.clone())
                }
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(EventRecord {
        time: text("TimeCreated")
            .or_else(|| text("TimeGenerated"))
            .and_then(|t| parse_time(&t)),
        computer: text("MachineName"),
        log_name: text("LogName"),
        provider: text("ProviderName").or_else(|| text("Source")),
        event_id: Some(id),
        level: text("LevelDisplayName")
            .or_else(|| text("EntryType"))
            .or_else(|| text("Level").and_then(|l| level_name(&l))),
        task_category: text("TaskDisplayName").or_else(|| text("Category")),
        record_id: v
            .get("RecordId")
            .or_else(|| v.get("Index"))
            .and_then(Value::as_i64),
        data,
        description: text("Message"),
    })
}

/// Parses one block of Event Viewer's "Copy details as text": `Key: value` lines, a
/// `Description:` that runs over lines, and perhaps `Event Xml:` (whose values win: its time is
/// UTC and it holds the insertion strings).
pub(crate) fn parse_text(block: &str) -> Result<EventRecord, String> {
    let mut ev = EventRecord::default();
    let mut description: Option<String> = None;
    let mut xml: Option<&str> = None;
    let mut in_description = false;
    for line in block.lines() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.trim_start().starts_with("Event Xml:") {
            let start = block
                .find("Event Xml:")
                .map_or(block.len(), |p| p + "Event Xml:".len());
            xml = Some(&block[start..]);
            break;
        }
        if let Some((key, value)) = header_line(trimmed) {
            in_description = false;
            match key {
                "Log Name" => ev.log_name = some(value),
                "Source" => ev.provider = some(value),
                "Date" => ev.time = parse_time(value),
                "Event ID" => ev.event_id = event_id(value),
                "Task Category" => ev.task_category = some(value).filter(|v| v != "None"),
                "Level" => ev.level = some(value),
                "Computer" => ev.computer = some(value),
                "Description" => {
                    in_description = true;
                    description = some(value);
                }
                _ => {}
            }
        } else if in_description {
            let d = description.get_or_insert_with(String::new);
            if !d.is_empty() {
                d.push('\n');
            }
            d.push_str(trimmed);
        }
    }
    ev.description = description
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    if let Some(xml) = xml {
        let xml = xml.trim();
        if let Ok(x) = parse_xml(xml) {
            ev.time = x.time.or(ev.time);
            ev.record_id = x.record_id;
            ev.data = x.data;
            ev.computer = x.computer.or(ev.computer);
            ev.log_name = ev.log_name.or(x.log_name);
            ev.provider = ev.provider.or(x.provider);
            ev.event_id = ev.event_id.or(x.event_id);
        }
    }
    if ev.provider.is_none() || ev.event_id.is_none() {
        return Err("an event block needs at least `Source:` and `Event ID:`".into());
    }
    Ok(ev)
}

/// The keys Event Viewer writes, in its English UI.
const TEXT_KEYS: [&str; 12] = [
    "Log Name",
    "Source",
    "Date",
    "Event ID",
    "Task Category",
    "Level",
    "Keywords",
    "User",
    "Computer",
    "Description",
    "OpCode",
    "Logged",
];

/// `Key:   value` for a key Event Viewer writes.
pub(crate) fn header_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim();
    TEXT_KEYS.contains(&key).then(|| (key, value.trim()))
}

/// Column builders of `transport_events`.
#[derive(Debug)]
pub(crate) struct EventBuilders {
    timestamp: TimestampMillisecondBuilder,
    server: DictBuilder,
    offset: Int64Builder,
    computer: StringBuilder,
    log_name: DictBuilder,
    provider: DictBuilder,
    event_id: Int32Builder,
    level: DictBuilder,
    task_category: DictBuilder,
    record_id: Int64Builder,
    data: ListBuilder<StringBuilder>,
    description: StringBuilder,
    format: DictBuilder,
    pub(crate) rows: usize,
}

impl EventBuilders {
    pub(crate) fn new() -> Self {
        EventBuilders {
            timestamp: TimestampMillisecondBuilder::new(),
            server: DictBuilder::with_capacity(0),
            offset: Int64Builder::new(),
            computer: StringBuilder::new(),
            log_name: DictBuilder::with_capacity(0),
            provider: DictBuilder::with_capacity(0),
            event_id: Int32Builder::new(),
            level: DictBuilder::with_capacity(0),
            task_category: DictBuilder::with_capacity(0),
            record_id: Int64Builder::new(),
            data: ListBuilder::new(StringBuilder::new()),
            description: StringBuilder::new(),
            format: DictBuilder::with_capacity(0),
            rows: 0,
        }
    }

    pub(crate) fn append(
        &mut self,
        ev: &EventRecord,
        time: i64,
        server: &str,
        offset: u64,
        format: &str,
    ) {
        self.timestamp.append_value(time);
        self.server.append(server);
        self.offset
            .append_value(i64::try_from(offset).unwrap_or(i64::MAX));
        self.computer.append_option(ev.computer.as_deref());
        self.log_name.append_option(ev.log_name.as_deref());
        self.provider.append_option(ev.provider.as_deref());
        self.event_id.append_option(ev.event_id);
        self.level.append_option(ev.level.as_deref());
        self.task_category
            .append_option(ev.task_category.as_deref());
        self.record_id.append_option(ev.record_id);
        for d in &ev.data {
            self.data.values().append_value(d);
        }
        self.data.append(true);
        self.description.append_option(ev.description.as_deref());
        self.format.append(format);
        self.rows += 1;
    }

    pub(crate) fn finish(&mut self, source_file: &str) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            Arc::new(self.server.finish()?),
            crate::batch::const_dict(Some(source_file), rows)?,
            Arc::new(self.offset.finish()),
            Arc::new(self.computer.finish()),
            Arc::new(self.log_name.finish()?),
            Arc::new(self.provider.finish()?),
            Arc::new(self.event_id.finish()),
            Arc::new(self.level.finish()?),
            Arc::new(self.task_category.finish()?),
            Arc::new(self.record_id.finish()),
            Arc::new(self.data.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.format.finish()?),
        ];
        RecordBatch::try_new(
            crate::schema::schema(crate::Table::TransportEvents),
            columns,
        )
    }
}

/// The columns of `transport_events` after the lineage columns.
pub(crate) fn fields() -> Vec<Field> {
    let dict = crate::schema::dict_type;
    vec![
        Field::new("computer", DataType::Utf8, true),
        Field::new("log_name", dict(), true),
        Field::new("provider", dict(), true),
        Field::new("event_id", DataType::Int32, true),
        Field::new("level", dict(), true),
        Field::new("task_category", dict(), true),
        Field::new("record_id", DataType::Int64, true),
        Field::new("insertion_strings", crate::schema::list_type(), true),
        Field::new("description", DataType::Utf8, true),
        Field::new("input_format", dict(), true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='MSExchangeTransport'/><EventID Qualifiers='49156'>12014</EventID><Level>2</Level><Task>12</Task><Keywords>0x80000000000000</Keywords><TimeCreated SystemTime='2026-11-30T08:12:01.2500000Z'/><EventRecordID>48121</EventRecordID><Channel>Application</Channel><Computer>EX01.contoso.com</Computer><Security/></System><EventData><Data>mail.contoso.com</Data><Data>Default Frontend EX01</Data><Data></Data></EventData><RenderingInfo Culture='en-US'><Message>Microsoft Exchange could not find a certificate that contains the domain name mail.contoso.com &amp; more.</Message><Level>Error</Level><Task>TransportService</Task></RenderingInfo></Event>"#;

    #[test]
    fn xml_gives_every_field() {
        let ev = parse_xml(XML).unwrap();
        assert_eq!(ev.provider.as_deref(), Some("MSExchangeTransport"));
        assert_eq!(ev.event_id, Some(12014));
        assert_eq!(ev.level.as_deref(), Some("Error"));
        assert_eq!(ev.task_category.as_deref(), Some("TransportService"));
        assert_eq!(ev.record_id, Some(48121));
        assert_eq!(ev.log_name.as_deref(), Some("Application"));
        assert_eq!(ev.computer.as_deref(), Some("EX01.contoso.com"));
        assert_eq!(ev.data, ["mail.contoso.com", "Default Frontend EX01", ""]);
        assert_eq!(ev.time, Some(1_796_026_321_250));
        assert!(
            ev.description
                .unwrap()
                .ends_with("mail.contoso.com & more.")
        );
    }

    #[test]
    fn text_block_with_only_source_and_id_is_enough() {
        let ev = parse_text("Source:        MSExchangeTransport\nEvent ID:      1035\n").unwrap();
        assert_eq!(
            (ev.provider.as_deref(), ev.event_id),
            (Some("MSExchangeTransport"), Some(1035))
        );
        assert!(parse_text("Log Name: Application\nDate: 11/30/2026 8:12:01 AM\n").is_err());
    }

    #[test]
    fn text_block_takes_time_and_strings_from_its_xml() {
        let block = format!(
            "Log Name:      Application\nSource:        MSExchangeTransport\nDate:          11/30/2026 9:12:01 AM\nEvent ID:      12014\nTask Category: TransportService\nLevel:         Error\nKeywords:      Classic\nUser:          N/A\nComputer:      EX01.contoso.com\nDescription:\nMicrosoft Exchange could not find a certificate.\n\nSecond paragraph.\nEvent Xml:\n{XML}\n"
        );
        let ev = parse_text(&block).unwrap();
        assert_eq!(ev.time, Some(1_796_026_321_250), "the XML's UTC time wins");
        assert_eq!(ev.data.len(), 3);
        assert_eq!(
            ev.description.as_deref(),
            Some("Microsoft Exchange could not find a certificate.\n\nSecond paragraph.")
        );
        assert_eq!(ev.record_id, Some(48121));
    }

    #[test]
    fn json_of_get_winevent() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"Id":1035,"Version":0,"Qualifiers":32772,"Level":3,"Task":1,"RecordId":90211,
                "ProviderName":"MSExchangeFrontEndTransport","LogName":"Application",
                "MachineName":"EX02.contoso.com","TimeCreated":"\/Date(1796026321250)\/",
                "LevelDisplayName":"Warning","TaskDisplayName":"SmtpReceive",
                "Properties":[{"Value":"UnexpectedExchangeAuthBlob"},{"Value":"Default Frontend EX02"},{"Value":"ExchangeAuth"},{"Value":"10.0.0.11"}],
                "Message":"Inbound authentication failed with error UnexpectedExchangeAuthBlob for Receive connector Default Frontend EX02."}"#,
        )
        .unwrap();
        let ev = parse_json(v.as_object().unwrap()).unwrap();
        assert_eq!(ev.event_id, Some(1035));
        assert_eq!(ev.level.as_deref(), Some("Warning"));
        assert_eq!(ev.data[0], "UnexpectedExchangeAuthBlob");
        assert_eq!(ev.data[3], "10.0.0.11");
        assert_eq!(ev.time, Some(1_796_026_321_250));
        assert_eq!(ev.record_id, Some(90211));
    }

    #[test]
    fn builders_match_the_schema() {
        let mut b = EventBuilders::new();
        b.append(&parse_xml(XML).unwrap(), 1, "EX01", 0, "xml");
        let batch = b.finish("f.xml").unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(fields().len() + 4, batch.num_columns());
    }
}
