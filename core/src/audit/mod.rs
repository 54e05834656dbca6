//! Audit records and the sinks that format them.
//!
//! The gateway describes each event once, as an [`AuditRecord`]. Every
//! configured sink decides whether its mode wants the record, formats it in
//! its own format and plans rotation; the runtime only appends the bytes.

mod csv;
mod debug;
mod json;
mod line;

use crate::config::{AuditFormat, AuditMode, CsvConfig, FileAuditingConfig};
use crate::rotation::RotationPlan;
use jiff::Timestamp;
use std::borrow::Cow;

/// What happened. The names are part of the audit format's public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    /// A request passed the gateway, or was blocked (see `status`).
    Request,
    /// A response to a request passed the gateway (or was made by it).
    Response,
    /// A notification passed the gateway.
    Notification,
    /// A security plugin blocked a message.
    SecurityBlock,
    /// A security plugin removed tools from a `tools/list` result.
    ToolsFiltered,
    /// A peer sent something that is not a valid JSON-RPC message.
    ProtocolError,
    /// The upstream server was started.
    UpstreamStarted,
    /// The upstream server exited or closed its output.
    UpstreamExited,
    /// A request got no answer within the configured timeout.
    Timeout,
}

impl EventType {
    /// The name written to audit files.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Request => "REQUEST",
            EventType::Response => "RESPONSE",
            EventType::Notification => "NOTIFICATION",
            EventType::SecurityBlock => "SECURITY_BLOCK",
            EventType::ToolsFiltered => "TOOLS_FILTERED",
            EventType::ProtocolError => "PROTOCOL_ERROR",
            EventType::UpstreamStarted => "UPSTREAM_STARTED",
            EventType::UpstreamExited => "UPSTREAM_EXITED",
            EventType::Timeout => "TIMEOUT",
        }
    }

    /// Whether this event is a security decision or a protocol violation,
    /// the events `mode: security_only` keeps.
    fn is_security(self) -> bool {
        matches!(
            self,
            EventType::SecurityBlock | EventType::ToolsFiltered | EventType::ProtocolError
        )
    }
}

/// Which peer sent the message a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The MCP client (Claude Desktop, an IDE).
    Client,
    /// The upstream MCP server.
    Server,
    /// The gateway itself (its own replies and lifecycle events).
    Gateway,
}

impl Source {
    /// The name written to audit files.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Server => "server",
            Source::Gateway => "gateway",
        }
    }
}

/// One audited event, independent of any output format.
///
/// Optional fields are left out of formats that can omit them, so `jq`
/// queries such as `select(.tool)` or `select(.duration_ms)` work.
///
/// `'a` is the lifetime of the message the record describes: the recorded
/// params are borrowed from it, since they can be as large as the message
/// (a 10 MiB tool argument is then copied once, into the audit line, not
/// twice). Method, tool, id and reason are borrowed too where they can be
/// (from the message, the pending request or a fixed text), and so are the
/// peer names (from the gateway, as the record is written): a record is made
/// for every message, and allocating a copy of each field was most of the
/// core's per-message allocations.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord<'a> {
    /// When the gateway saw the event (the `now` it was given).
    pub timestamp: Timestamp,
    /// What happened.
    pub event_type: EventType,
    /// Who sent the message.
    pub source: Source,
    /// The name the sender gave in the `initialize` handshake
    /// (`clientInfo.name` or `serverInfo.name`), once known.
    pub source_name: Option<&'a str>,
    /// JSON-RPC method of the message (or of the request a response answers).
    pub method: Option<Cow<'a, str>>,
    /// Tool name, for `tools/call` and its response.
    pub tool: Option<Cow<'a, str>>,
    /// `ALLOWED`/`BLOCKED` for requests, `success`/`error` for responses.
    pub status: Option<&'static str>,
    /// The JSON-RPC id, as text.
    pub request_id: Option<IdText<'a>>,
    /// Milliseconds from forwarding a request to receiving its response.
    pub duration_ms: Option<u64>,
    /// The plugin that decided.
    pub plugin: Option<&'static str>,
    /// Why it decided so, or what went wrong.
    pub reason: Option<Cow<'a, str>>,
    /// Plugin-specific details, written as a JSON object.
    pub plugin_metadata: Option<PluginMetadata<'a>>,
    /// The upstream's configured name.
    pub server_name: Option<&'a str>,
    /// The request's parameters as the client sent them (raw JSON text;
    /// for `tools/call`, the tool's `arguments`).
    pub params: Option<&'a str>,
    /// JSON-RPC error code of an error response.
    pub error_code: Option<i64>,
    /// JSON-RPC error message of an error response.
    pub error_message: Option<String>,
    /// Security checks that ran on a request, as `plugin:DECISION`.
    pub security_checks: Cow<'static, [&'static str]>,
}

/// A request id as an audit record shows it: a string id as text (borrowed
/// where it can be), a numeric id as its decimal digits held in place. A
/// record is made for every request and every response, and ids are
/// nearly always numbers: this spares each record an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdText<'a> {
    /// A string id, unescaped.
    Text(Cow<'a, str>),
    /// A numeric id.
    Digits {
        /// ASCII digits (and sign) in `digits[start..]`.
        digits: [u8; 40],
        /// Where they start.
        start: u8,
    },
}

impl IdText<'_> {
    /// The same text, owning what it borrowed.
    pub fn into_owned(self) -> IdText<'static> {
        match self {
            IdText::Text(text) => IdText::Text(Cow::Owned(text.into_owned())),
            IdText::Digits { digits, start } => IdText::Digits { digits, start },
        }
    }
}

impl std::ops::Deref for IdText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            IdText::Text(text) => text,
            // Only ever built from ASCII digits; should it not be, nothing
            // is shown rather than a panic in the audit path.
            IdText::Digits { digits, start } => {
                std::str::from_utf8(digits.get(usize::from(*start)..).unwrap_or_default())
                    .unwrap_or_default()
            }
        }
    }
}

impl<'a> From<&'a str> for IdText<'a> {
    fn from(text: &'a str) -> Self {
        IdText::Text(Cow::Borrowed(text))
    }
}

/// What a security plugin adds to its record, as typed data rather than a
/// JSON tree: a `tools/list` answer can remove hundreds of tools, and their
/// names are then written straight from the answer's text instead of being
/// copied into a `serde_json::Value` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginMetadata<'a> {
    /// A blocked call, with the mode of the policy that blocked it
    /// (`allowlist` or `blocklist`): written `{"mode": "allowlist"}`.
    Mode(&'static str),
    /// The tools removed from a `tools/list` answer, in list order (borrowed
    /// from the answer unless their names had escapes): written
    /// `{"filtered_count": 2, "filtered_tools": ["a", "b"]}`.
    FilteredTools(Vec<Cow<'a, str>>),
}

impl AuditRecord<'_> {
    /// A record with only the required fields set.
    pub fn new(timestamp: Timestamp, event_type: EventType, source: Source) -> Self {
        AuditRecord {
            timestamp,
            event_type,
            source,
            source_name: None,
            method: None,
            tool: None,
            status: None,
            request_id: None,
            duration_ms: None,
            plugin: None,
            reason: None,
            plugin_metadata: None,
            server_name: None,
            params: None,
            error_code: None,
            error_message: None,
            security_checks: Cow::Borrowed(&[]),
        }
    }
}

/// Identifies one configured audit sink (its index among enabled sinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditSinkId(pub usize);

/// Bytes for the runtime to append to one sink's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditWrite {
    /// Which sink (see [`crate::audit_sinks`]).
    pub sink: AuditSinkId,
    /// Rotate the file before appending (`audit.log` → `audit.log.1` …).
    pub rotate_first: bool,
    /// Whole lines, each ending in `\n`; never split across files.
    pub bytes: Vec<u8>,
}

/// A configured `file_auditing` sink as the core sees it: format, mode and
/// the rotation decision. The path is the runtime's business.
#[derive(Debug, Clone)]
pub(crate) struct AuditSink {
    format: AuditFormat,
    mode: AuditMode,
    csv: CsvConfig,
    rotation: RotationPlan,
    critical: bool,
    /// The configured file, for messages.
    output_file: String,
    /// Why the last write failed, until the file is reopened.
    failure: Option<String>,
}

impl AuditSink {
    pub(crate) fn new(config: &FileAuditingConfig) -> Self {
        AuditSink {
            format: config.format,
            mode: config.mode,
            csv: config.csv_config.clone(),
            critical: config.critical,
            output_file: config.output_file.clone(),
            failure: None,
            rotation: RotationPlan::new(config.max_file_size_mb.bytes()),
        }
    }

    pub(crate) fn wants(&self, record: &AuditRecord<'_>) -> bool {
        match self.mode {
            AuditMode::All => true,
            AuditMode::SecurityOnly => {
                record.event_type.is_security() || record.status == Some("BLOCKED")
            }
            AuditMode::OperationsOnly => !record.event_type.is_security(),
        }
    }

    /// The runtime opened the file, which already holds `existing_bytes`.
    /// Returns true if the sink had failed before (it has now recovered).
    pub(crate) fn opened(&mut self, existing_bytes: u64) -> bool {
        self.rotation.opened(existing_bytes);
        self.failure.take().is_some()
    }

    /// Marks the sink broken; returns true if it was healthy until now.
    pub(crate) fn failed(&mut self, reason: &str) -> bool {
        self.failure.replace(reason.to_owned()).is_none()
    }

    /// The configured file, for messages.
    pub(crate) fn output_file(&self) -> &str {
        &self.output_file
    }

    /// Whether the gateway must refuse to pass messages without this sink.
    pub(crate) fn is_critical(&self) -> bool {
        self.critical
    }

    /// The failure of a critical sink, if it is broken.
    pub(crate) fn critical_failure(&self) -> Option<&str> {
        self.failure.as_deref().filter(|_| self.critical)
    }

    /// The room `record`'s line needs, about: sized for the recorded params
    /// in the formats that write them, so a large argument is not copied
    /// again and again while the line grows (nor 10 MiB reserved for a line
    /// that leaves them out); 512 holds the usual record whole.
    pub(crate) fn line_size_hint(&self, record: &AuditRecord<'_>) -> usize {
        let params = match self.format {
            AuditFormat::Json | AuditFormat::Debug => record.params.map_or(0, str::len),
            AuditFormat::Line | AuditFormat::Csv => 0,
        };
        512 + params
    }

    /// Appends `record`'s line (which [`wants`](Self::wants) must have
    /// accepted) to `out`, after whatever `out` holds, and plans its
    /// rotation. Returns whether the file must be rotated before the line
    /// is written. Formatting in place lets the gateway put a record
    /// straight into the write it joins, instead of into a buffer of its
    /// own that is then copied there.
    pub(crate) fn append(&mut self, record: &AuditRecord<'_>, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        match self.format {
            AuditFormat::Json => json::format(record, out),
            AuditFormat::Line => line::format(record, out),
            AuditFormat::Debug => debug::format(record, out),
            AuditFormat::Csv => csv::format(record, &self.csv, out),
        }
        let line_len = out.len() - start;
        let rotate_first = self.rotation.needs_rotation(line_len as u64);
        if self.format == AuditFormat::Csv && (rotate_first || self.rotation.is_fresh()) {
            // Every CSV file starts with its header, also after rotation.
            let mut header = Vec::with_capacity(128);
            csv::header(&self.csv, &mut header);
            out.splice(start..start, header);
        }
        self.rotation
            .record_write(rotate_first, (out.len() - start) as u64);
        rotate_first
    }

    /// Formats `record` if this sink's mode wants it, as a write of its own.
    #[cfg(test)]
    pub(crate) fn write(
        &mut self,
        id: AuditSinkId,
        record: &AuditRecord<'_>,
    ) -> Option<AuditWrite> {
        if !self.wants(record) {
            return None;
        }
        let mut bytes = Vec::with_capacity(self.line_size_hint(record));
        let rotate_first = self.append(record, &mut bytes);
        Some(AuditWrite {
            sink: id,
            rotate_first,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_sized_for_params_only_where_they_are_written() {
        let params = format!("{{\"text\":\"{}\"}}", "p".repeat(100_000));
        let mut record = AuditRecord::new(
            "2025-01-01T00:00:00Z".parse().expect("timestamp"),
            EventType::Request,
            Source::Client,
        );
        record.method = Some("tools/call".into());
        record.params = Some(&params);
        for (format, holds_params) in [
            ("json", true),
            ("debug", true),
            ("line", false),
            ("csv", false),
        ] {
            let config: FileAuditingConfig =
                serde_json::from_value(serde_json::json!({ "format": format }))
                    .expect("valid config");
            let mut sink = AuditSink::new(&config);
            let write = sink.write(AuditSinkId(0), &record).expect("mode all");
            let bytes = write.bytes;
            assert_eq!(bytes.len() > params.len(), holds_params, "{format}");
            // Room for the line, without a second copy of params' size.
            assert!(bytes.capacity() < bytes.len() + 4096, "{format}");
        }
    }
}
