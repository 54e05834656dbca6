//! The `csv` format: a header row at the top of every file, then one row
//! per event with the columns
//! `timestamp,event_type,method,tool,status,request_id,plugin,reason,duration_ms,server_name`.
//!
//! Quoting follows Python's `csv` module names (`minimal`, `all`,
//! `nonnumeric`, `none`). Two things are never left to chance: a field can
//! never break its row (delimiters, quotes and newlines are quoted, or with
//! `none` escaped with a backslash), and a field that a spreadsheet would run
//! as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is
//! prefixed with `'` — audit rows hold text chosen by AI agents and servers.

use super::AuditRecord;
use crate::config::{CsvConfig, CsvQuoteStyle};

/// The columns, in order.
pub(crate) const COLUMNS: [&str; 10] = [
    "timestamp",
    "event_type",
    "method",
    "tool",
    "status",
    "request_id",
    "plugin",
    "reason",
    "duration_ms",
    "server_name",
];

/// Appends the header row.
pub(super) fn header(config: &CsvConfig, out: &mut Vec<u8>) {
    for (i, column) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(config.delimiter.0);
        }
        field(config, column, false, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `record` as one row.
pub(super) fn format(record: &AuditRecord<'_>, config: &CsvConfig, out: &mut Vec<u8>) {
    let timestamp = super::json::timestamp(record);
    let duration = record.duration_ms.map(|ms| ms.to_string());
    let values: [(Option<&str>, bool); 10] = [
        (Some(&timestamp), false),
        (Some(record.event_type.as_str()), false),
        (record.method.as_deref(), false),
        (record.tool.as_deref(), false),
        (record.status, false),
        (record.request_id.as_deref(), false),
        (record.plugin, false),
        (record.reason.as_deref(), false),
        (duration.as_deref(), true),
        (record.server_name, false),
    ];
    for (i, (value, numeric)) in values.iter().enumerate() {
        if i > 0 {
            out.push(config.delimiter.0);
        }
        match value {
            Some(text) if *numeric => field(config, text, true, out),
            Some(text) => field(config, &neutralise(text), false, out),
            None => empty(config, out),
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn empty(config: &CsvConfig, out: &mut Vec<u8>) {
    if config.quote_style == CsvQuoteStyle::All {
        out.extend_from_slice(b"\"\"");
    }
}

fn field(config: &CsvConfig, text: &str, numeric: bool, out: &mut Vec<u8>) {
    let delimiter = config.delimiter.0;
    let special = |b: u8| b == delimiter || matches!(b, b'"' | b'\n' | b'\r');
    let quote = match config.quote_style {
        CsvQuoteStyle::All => true,
        CsvQuoteStyle::Nonnumeric => !numeric,
        CsvQuoteStyle::Minimal => {
            text.bytes().any(special) || text.starts_with(' ') || text.ends_with(' ')
        }
        CsvQuoteStyle::None => {
            for c in text.chars() {
                match c {
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    '\r' => out.extend_from_slice(b"\\r"),
                    c if c.is_ascii() && special(c as u8) => {
                        out.push(b'\\');
                        out.push(c as u8);
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            return;
        }
    };
    if quote {
        out.push(b'"');
        for b in text.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Prefixes text a spreadsheet would evaluate as a formula.
fn neutralise(text: &str) -> std::borrow::Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EventType, Source};
    use crate::config::CsvDelimiter;

    fn config(style: CsvQuoteStyle, delimiter: u8) -> CsvConfig {
        CsvConfig {
            delimiter: CsvDelimiter(delimiter),
            quote_style: style,
        }
    }

    fn row(record: &AuditRecord<'_>, config: &CsvConfig) -> String {
        let mut out = Vec::new();
        format(record, config, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn request() -> AuditRecord<'static> {
        let mut r = AuditRecord::new(
            "2024-06-16T10:30:15Z".parse().unwrap(),
            EventType::Request,
            Source::Client,
        );
        r.method = Some("tools/call".into());
        r.tool = Some("list_directory".into());
        r.status = Some("ALLOWED");
        r.request_id = Some("123".into());
        r.plugin = Some("tool_allowlist");
        r.reason = Some("Request approved".into());
        r
    }

    #[test]
    fn tutorial_row_and_header() {
        let cfg = CsvConfig::default();
        let mut head = Vec::new();
        header(&cfg, &mut head);
        assert_eq!(head, b"timestamp,event_type,method,tool,status,request_id,plugin,reason,duration_ms,server_name\r\n");
        assert_eq!(
            row(&request(), &cfg),
            "2024-06-16T10:30:15.000Z,REQUEST,tools/call,list_directory,ALLOWED,123,tool_allowlist,Request approved,,\r\n"
        );
    }

    #[test]
    fn hostile_values_stay_in_their_field() {
        let mut r = request();
        r.tool = Some("=HYPERLINK(\"http://x\")".into());
        r.reason = Some("a,b\n\"c\"".into());
        let text = row(&r, &CsvConfig::default());
        assert!(text.contains(r#""'=HYPERLINK(""http://x"")""#), "{text}");
        assert!(text.contains("\"a,b\n\"\"c\"\"\""), "{text}");
        let none = row(&r, &config(CsvQuoteStyle::None, b';'));
        assert_eq!(none.matches('\n').count(), 1, "{none}");
        assert!(none.contains(r#"a,b\n\"c\""#), "{none}");
    }

    #[test]
    fn quote_styles() {
        let mut r = request();
        r.duration_ms = Some(5);
        let all = row(&r, &config(CsvQuoteStyle::All, b','));
        assert!(
            all.starts_with("\"2024-06-16T10:30:15.000Z\",\"REQUEST\""),
            "{all}"
        );
        assert!(all.contains(",\"5\",\"\"\r\n"), "{all}");
        let nonnumeric = row(&r, &config(CsvQuoteStyle::Nonnumeric, b'\t'));
        assert!(nonnumeric.contains("\t5\t\r\n"), "{nonnumeric}");
        assert!(nonnumeric.contains("\"Request approved\""), "{nonnumeric}");
    }
}
