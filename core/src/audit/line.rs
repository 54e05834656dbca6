//! The `line` format (also accepted as `simple`): one readable line per
//! event, `2024-06-16 10:30:15 UTC - REQUEST: tools/call - list_directory - ALLOWED`.
//!
//! Each line starts exactly as the tutorial shows; details the tutorial's
//! examples leave out (request id, duration, error) follow at the end so
//! `grep "REQUEST: tools/call - write_file"` style searches keep working.

use super::{AuditRecord, EventType};
use std::borrow::Cow;

/// Appends `record` as one line.
pub(super) fn format(record: &AuditRecord<'_>, out: &mut Vec<u8>) {
    let mut parts: Vec<Cow<'_, str>> = Vec::with_capacity(6);
    match record.event_type {
        EventType::Request => {
            parts.extend(record.method.clone());
            parts.extend(record.tool.clone());
            parts.extend(record.status.map(Cow::Borrowed));
        }
        EventType::Response => {
            parts.extend(record.status.map(Cow::Borrowed));
            parts.extend(record.method.clone());
            parts.extend(record.tool.clone());
            if let Some(ms) = record.duration_ms {
                parts.push(Cow::Owned(format!("{ms} ms")));
            }
            if let Some(message) = &record.error_message {
                match record.error_code {
                    Some(code) => parts.push(Cow::Owned(format!("error {code}: {message}"))),
                    None => parts.push(Cow::Owned(format!("error: {message}"))),
                }
            }
        }
        EventType::SecurityBlock | EventType::ToolsFiltered => {
            let subject = match record.event_type {
                EventType::SecurityBlock => record.tool.clone().or_else(|| record.method.clone()),
                _ => record.method.clone(),
            };
            parts.extend(subject);
            let plugin = record.plugin.unwrap_or("gateway");
            parts.push(Cow::Owned(format!(
                "[{plugin}] {}",
                record.reason.as_deref().unwrap_or("")
            )));
        }
        EventType::Notification => {
            parts.extend(record.method.clone());
            parts.push(Cow::Owned(format!("from {}", record.source.as_str())));
        }
        EventType::ProtocolError => {
            parts.push(Cow::Owned(format!("from {}", record.source.as_str())));
            parts.extend(record.reason.clone());
        }
        EventType::Timeout => {
            parts.extend(record.method.clone());
            parts.extend(record.tool.clone());
            parts.extend(record.reason.clone());
        }
        EventType::UpstreamStarted | EventType::UpstreamExited => {
            parts.extend(record.reason.clone());
        }
    }
    out.extend_from_slice(
        record
            .timestamp
            .strftime("%Y-%m-%d %H:%M:%S UTC - ")
            .to_string()
            .as_bytes(),
    );
    out.extend_from_slice(record.event_type.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(single_line(&parts.join(" - ")).as_bytes());
    if let Some(id) = &record.request_id {
        out.extend_from_slice(b" (id ");
        out.extend_from_slice(single_line(id).as_bytes());
        out.push(b')');
    }
    out.push(b'\n');
}

/// Peer-controlled text must not start a new line (a forged record).
pub(super) fn single_line(text: &str) -> String {
    if text.contains(['\n', '\r']) {
        text.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Source;

    fn line(record: &AuditRecord<'_>) -> String {
        let mut out = Vec::new();
        format(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn at(event: EventType) -> AuditRecord<'static> {
        AuditRecord::new(
            "2024-06-16T10:30:15.5Z".parse().unwrap(),
            event,
            Source::Client,
        )
    }

    #[test]
    fn tutorial_shapes() {
        let mut request = at(EventType::Request);
        request.method = Some("tools/call".into());
        request.tool = Some("list_directory".into());
        request.status = Some("ALLOWED");
        assert_eq!(
            line(&request),
            "2024-06-16 10:30:15 UTC - REQUEST: tools/call - list_directory - ALLOWED\n"
        );

        let mut response = at(EventType::Response);
        response.status = Some("success");
        assert_eq!(
            line(&response),
            "2024-06-16 10:30:15 UTC - RESPONSE: success\n"
        );

        let mut block = at(EventType::SecurityBlock);
        block.tool = Some("delete_file".into());
        block.plugin = Some("tool_allowlist");
        block.reason = Some("Tool 'delete_file' is not in allowlist".into());
        block.request_id = Some("124".into());
        assert_eq!(
            line(&block),
            "2024-06-16 10:30:15 UTC - SECURITY_BLOCK: delete_file - [tool_allowlist] Tool 'delete_file' is not in allowlist (id 124)\n"
        );
    }

    #[test]
    fn peer_text_cannot_forge_a_line() {
        let mut request = at(EventType::Request);
        request.method = Some("tools/call".into());
        request.tool = Some("x\n2024-06-16 10:30:15 UTC - REQUEST: fake".into());
        let text = line(&request);
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
