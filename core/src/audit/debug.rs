//! The `debug` format: every detail of an event as `KEY=value` pairs,
//! with millisecond timestamps, e.g.
//! `[2024-06-16 10:30:15.123] REQUEST_ID=123 SOURCE=claude-ai EVENT=REQUEST TOOL=list_directory PARAMS={"path": "/x"} SECURITY_CHECKS=["tool_allowlist:ALLOWED"]`.
//!
//! `SOURCE` is the name the sender gave in the `initialize` handshake
//! (`clientInfo.name` / `serverInfo.name`), or `client` / `server` before
//! that. Values that could contain spaces are written as JSON strings.

use super::{AuditRecord, EventType};
use crate::jsonrpc::write_json_string;

/// Appends `record` as one line.
pub(super) fn format(record: &AuditRecord<'_>, out: &mut Vec<u8>) {
    out.push(b'[');
    out.extend_from_slice(
        record
            .timestamp
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
            .as_bytes(),
    );
    out.push(b']');
    if let Some(id) = &record.request_id {
        pair(out, "REQUEST_ID", id);
    }
    let source = record.source_name.unwrap_or(record.source.as_str());
    pair(out, "SOURCE", source);
    pair(out, "EVENT", record.event_type.as_str());
    if let Some(method) = &record.method {
        pair(out, "METHOD", method);
    }
    if let Some(tool) = &record.tool {
        pair(out, "TOOL", tool);
    }
    if let Some(status) = record.status {
        pair(out, "STATUS", status);
    }
    if let Some(ms) = record.duration_ms {
        out.extend_from_slice(format!(" DURATION={}.{:03}s", ms / 1000, ms % 1000).as_bytes());
    }
    if let Some(code) = record.error_code {
        out.extend_from_slice(format!(" ERROR_CODE={code}").as_bytes());
    }
    if let Some(message) = &record.error_message {
        pair(out, "ERROR", message);
    }
    if let Some(plugin) = &record.plugin {
        pair(out, "PLUGIN", plugin);
    }
    if let Some(reason) = &record.reason {
        pair(out, "REASON", reason);
    }
    if let Some(meta) = &record.plugin_metadata {
        out.extend_from_slice(b" METADATA=");
        super::json::write_metadata(out, meta);
    }
    if let Some(server) = &record.server_name {
        pair(out, "SERVER", server);
    }
    if let Some(params) = record.params {
        out.extend_from_slice(b" PARAMS=");
        out.extend_from_slice(params.as_bytes());
    }
    if !record.security_checks.is_empty()
        || record.event_type == EventType::Request && record.plugin.is_some()
    {
        out.extend_from_slice(b" SECURITY_CHECKS=[");
        for (i, check) in record.security_checks.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            write_json_string(out, check);
        }
        out.push(b']');
    }
    out.push(b'\n');
}

/// Writes ` KEY=value`, quoting the value as a JSON string unless it is a
/// plain token (so it can never break the line or fake another pair).
fn pair(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    let plain = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':' | b'@')
        });
    if plain {
        out.extend_from_slice(value.as_bytes());
    } else {
        write_json_string(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Source;

    #[test]
    fn request_and_response_lines() {
        let mut request = AuditRecord::new(
            "2024-06-16T10:30:15.123Z".parse().unwrap(),
            EventType::Request,
            Source::Client,
        );
        request.request_id = Some("123".into());
        request.source_name = Some("claude_desktop");
        request.method = Some("tools/call".into());
        request.tool = Some("list_directory".into());
        request.status = Some("ALLOWED");
        request.plugin = Some("tool_allowlist");
        request.params = Some(r#"{"path": "/Users/username/claude-sandbox"}"#);
        request.security_checks = vec!["tool_allowlist:ALLOWED"].into();
        let mut out = Vec::new();
        format(&request, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2024-06-16 10:30:15.123] REQUEST_ID=123 SOURCE=claude_desktop EVENT=REQUEST METHOD=tools/call TOOL=list_directory \
             STATUS=ALLOWED PLUGIN=tool_allowlist PARAMS={\"path\": \"/Users/username/claude-sandbox\"} SECURITY_CHECKS=[\"tool_allowlist:ALLOWED\"]\n"
        );

        let mut response = AuditRecord::new(
            "2024-06-16T10:30:16.456Z".parse().unwrap(),
            EventType::Response,
            Source::Server,
        );
        response.request_id = Some("123".into());
        response.tool = Some("list_directory".into());
        response.status = Some("success");
        response.duration_ms = Some(1333);
        let mut out = Vec::new();
        format(&response, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2024-06-16 10:30:16.456] REQUEST_ID=123 SOURCE=server EVENT=RESPONSE TOOL=list_directory STATUS=success DURATION=1.333s\n"
        );
    }

    #[test]
    fn values_with_spaces_or_newlines_are_quoted() {
        let mut record = AuditRecord::new(
            "2024-06-16T10:30:15Z".parse().unwrap(),
            EventType::ProtocolError,
            Source::Client,
        );
        record.reason = Some("bad thing\nEVENT=FAKE".into());
        let mut out = Vec::new();
        format(&record, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#"REASON="bad thing\nEVENT=FAKE""#), "{text}");
    }
}
