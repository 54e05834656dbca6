//! The `json` format: one JSON object per line.
//!
//! Separators follow the tutorial's examples (`", "` and `": "`), so lines
//! look exactly like the documentation shows them; field order is fixed.

use super::{AuditRecord, IdText, PluginMetadata};
use crate::jsonrpc::{write_decimal, write_json_string};

/// Appends `record` as one JSON line.
///
/// The timestamp always comes first, so every later field starts with
/// `, `: each key is written with its separators as one literal, and the
/// values the gateway names itself (event type, status, plugin, source)
/// without an escape check. A record is written for every message, so
/// the format's own bookkeeping is on the hot path.
pub(super) fn format(record: &AuditRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\": ");
    write_timestamp(out, record.timestamp);
    out.extend_from_slice(b", \"event_type\": ");
    write_known_string(out, record.event_type.as_str());
    opt_string(out, b", \"method\": ", record.method.as_deref());
    opt_string(out, b", \"tool\": ", record.tool.as_deref());
    if let Some(status) = record.status {
        out.extend_from_slice(b", \"status\": ");
        write_known_string(out, status);
    }
    match &record.request_id {
        // Digits need neither an escape check nor a UTF-8 check.
        Some(IdText::Digits { digits, start }) => {
            out.extend_from_slice(b", \"request_id\": \"");
            out.extend_from_slice(digits.get(usize::from(*start)..).unwrap_or_default());
            out.push(b'"');
        }
        other => opt_string(out, b", \"request_id\": ", other.as_deref()),
    }
    if let Some(ms) = record.duration_ms {
        out.extend_from_slice(b", \"duration_ms\": ");
        write_decimal(out, i128::from(ms));
    }
    if let Some(plugin) = record.plugin {
        out.extend_from_slice(b", \"plugin\": ");
        write_known_string(out, plugin);
    }
    opt_string(out, b", \"reason\": ", record.reason.as_deref());
    if let Some(meta) = &record.plugin_metadata {
        out.extend_from_slice(b", \"plugin_metadata\": ");
        write_metadata(out, meta);
    }
    opt_string(out, b", \"server_name\": ", record.server_name);
    out.extend_from_slice(b", \"source\": ");
    write_known_string(out, record.source.as_str());
    if let Some(code) = record.error_code {
        out.extend_from_slice(b", \"error_code\": ");
        write_decimal(out, i128::from(code));
    }
    opt_string(
        out,
        b", \"error_message\": ",
        record.error_message.as_deref(),
    );
    if let Some(params) = record.params {
        out.extend_from_slice(b", \"params\": ");
        out.extend_from_slice(params.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// `key` (with its separators), then `value` as a JSON string, if there
/// is a value.
fn opt_string(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    if let Some(value) = value {
        out.extend_from_slice(key);
        write_json_string(out, value);
    }
}

/// A string the gateway names itself (`EventType::as_str`, a status, a
/// plugin, `Source::as_str`): plain ASCII, written without an escape check.
fn write_known_string(out: &mut Vec<u8>, value: &'static str) {
    debug_assert!(
        value.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\'),
        "{value:?} needs escaping"
    );
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// ISO 8601 in UTC with milliseconds and a `Z`, e.g. `2024-06-16T10:30:15.123Z`.
pub(crate) fn timestamp(record: &AuditRecord<'_>) -> String {
    format!("{:.3}", record.timestamp)
}

/// [`timestamp`] as a JSON string, written digit by digit (no formatting
/// machinery, no allocation) for the years 0000–9999.
fn write_timestamp(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    if !(0..=9999).contains(&dt.year()) {
        write_json_string(out, &format!("{ts:.3}"));
        return;
    }
    fn two(out: &mut Vec<u8>, v: i8) {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    }
    let year = dt.year() as u16;
    out.push(b'"');
    for d in [year / 1000, year / 100 % 10, year / 10 % 10, year % 10] {
        out.push(b'0' + d as u8);
    }
    out.push(b'-');
    two(out, dt.month());
    out.push(b'-');
    two(out, dt.day());
    out.push(b'T');
    two(out, dt.hour());
    out.push(b':');
    two(out, dt.minute());
    out.push(b':');
    two(out, dt.second());
    let millis = (dt.subsec_nanosecond() / 1_000_000) as u16;
    out.push(b'.');
    for d in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(b'0' + d as u8);
    }
    out.extend_from_slice(b"Z\"");
}

/// Writes plugin metadata as a JSON object, with the same separators as
/// the record itself.
pub(super) fn write_metadata(out: &mut Vec<u8>, meta: &PluginMetadata<'_>) {
    match meta {
        PluginMetadata::Mode(mode) => {
            out.extend_from_slice(b"{\"mode\": ");
            write_json_string(out, mode);
        }
        PluginMetadata::FilteredTools(names) => {
            out.extend_from_slice(b"{\"filtered_count\": ");
            out.extend_from_slice(names.len().to_string().as_bytes());
            out.extend_from_slice(b", \"filtered_tools\": [");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_json_string(out, name);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EventType, Source};

    #[test]
    fn matches_the_tutorial_layout() {
        let mut record = AuditRecord::new(
            "2024-06-16T10:30:45Z".parse().unwrap(),
            EventType::SecurityBlock,
            Source::Client,
        );
        record.method = Some("tools/call".into());
        record.tool = Some("delete_file".into());
        record.status = Some("BLOCKED");
        record.request_id = Some("124".into());
        record.plugin = Some("tool_allowlist");
        record.reason = Some("Tool 'delete_file' is not in allowlist".into());
        record.plugin_metadata = Some(PluginMetadata::Mode("allowlist"));
        let mut out = Vec::new();
        format(&record, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"timestamp\": \"2024-06-16T10:30:45.000Z\", \"event_type\": \"SECURITY_BLOCK\", \"method\": \"tools/call\", \
             \"tool\": \"delete_file\", \"status\": \"BLOCKED\", \"request_id\": \"124\", \"plugin\": \"tool_allowlist\", \
             \"reason\": \"Tool 'delete_file' is not in allowlist\", \"plugin_metadata\": {\"mode\": \"allowlist\"}, \
             \"source\": \"client\"}\n"
        );
    }

    #[test]
    fn filtered_tools_are_written_like_a_json_object() {
        let mut out = Vec::new();
        write_metadata(
            &mut out,
            &PluginMetadata::FilteredTools(vec![
                "plain".into(),
                "quote\"and\\back".into(),
                "tab\tnewline\nü".into(),
            ]),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"filtered_count": 3, "filtered_tools": ["plain", "quote\"and\\back", "tab\tnewline\nü"]}"#
        );
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let record = AuditRecord::new(
            "2024-06-16T10:30:15.1234Z".parse().unwrap(),
            EventType::Request,
            Source::Client,
        );
        assert_eq!(timestamp(&record), "2024-06-16T10:30:15.123Z");
        let mut fast = Vec::new();
        write_timestamp(&mut fast, record.timestamp);
        assert_eq!(fast, b"\"2024-06-16T10:30:15.123Z\"");
    }
}
