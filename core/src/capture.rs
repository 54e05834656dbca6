//! The capture format: a recording of everything a [`Gateway`] was fed.
//!
//! Because the gateway is a pure function of its inputs and their
//! timestamps, a capture replays to exactly what the live gateway did, on
//! any machine, with either runtime. The format is JSON lines, readable with
//! `jq`; see `docs/capture-format.md`. The first line is a header
//! (`{"gatekit_capture": 1, …}`), every other line one input:
//!
//! ```text
//! {"at": "2024-06-16T10:30:15.123456789Z", "input": "client_bytes", "text": "{\"jsonrpc\":\"2.0\",…}\n"}
//! {"at": "2024-06-16T10:30:15.200000000Z", "input": "upstream_bytes", "base64": "/w=="}
//! ```
//!
//! Bytes are stored as `text` when they are valid UTF-8 and as `base64`
//! otherwise, so arbitrary bytes survive without loss.
//!
//! [`Gateway`]: crate::Gateway

use crate::audit::AuditSinkId;
use crate::gateway::{ExitStatus, Input};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The version written in, and required of, every capture's header.
pub const CAPTURE_VERSION: u32 = 1;

/// The first line of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// Format version ([`CAPTURE_VERSION`]).
    pub gatekit_capture: u32,
    /// Version of the Gatekit that recorded it.
    pub gatekit_version: String,
    /// Which runtime recorded it (`std`, `smol`, …), for information.
    pub runtime: String,
    /// When recording started.
    pub started_at: Timestamp,
}

impl CaptureHeader {
    /// A header for a capture recorded now by this version of Gatekit.
    pub fn new(runtime: &str, started_at: Timestamp) -> Self {
        CaptureHeader {
            gatekit_capture: CAPTURE_VERSION,
            gatekit_version: env!("CARGO_PKG_VERSION").to_owned(),
            runtime: runtime.to_owned(),
            started_at,
        }
    }

    /// The header as one line (with newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a header always serialises");
        line.push(b'\n');
        line
    }

    /// Reads a header line, checking the version.
    pub fn parse(line: &str) -> Result<Self, CaptureError> {
        let header: CaptureHeader = serde_json::from_str(line)
            .map_err(|e| CaptureError::new(1, format!("not a Gatekit capture header: {e}")))?;
        if header.gatekit_capture != CAPTURE_VERSION {
            return Err(CaptureError::new(
                1,
                format!(
                    "capture format version {} is not supported (this Gatekit reads version {CAPTURE_VERSION})",
                    header.gatekit_capture
                ),
            ));
        }
        Ok(header)
    }
}

/// One recorded input with owned data, as read back from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedInput {
    /// [`Input::ClientBytes`].
    ClientBytes(Vec<u8>),
    /// [`Input::ClientEof`].
    ClientEof,
    /// [`Input::UpstreamStarted`].
    UpstreamStarted {
        /// The recorded pid.
        pid: u32,
    },
    /// [`Input::UpstreamFailedToStart`].
    UpstreamFailedToStart {
        /// Why.
        reason: String,
    },
    /// [`Input::UpstreamBytes`].
    UpstreamBytes(Vec<u8>),
    /// [`Input::UpstreamEof`].
    UpstreamEof,
    /// [`Input::UpstreamExited`].
    UpstreamExited(ExitStatus),
    /// [`Input::AuditFileOpened`].
    AuditFileOpened {
        /// Which sink.
        sink: AuditSinkId,
        /// Its size.
        existing_bytes: u64,
    },
    /// [`Input::AuditWriteFailed`].
    AuditWriteFailed {
        /// Which sink.
        sink: AuditSinkId,
        /// Why.
        reason: String,
    },
    /// [`Input::Timeout`].
    Timeout,
}

impl RecordedInput {
    /// Borrows it as the [`Input`] the gateway takes.
    pub fn as_input(&self) -> Input<'_> {
        match self {
            RecordedInput::ClientBytes(bytes) => Input::ClientBytes(bytes),
            RecordedInput::ClientEof => Input::ClientEof,
            RecordedInput::UpstreamStarted { pid } => Input::UpstreamStarted { pid: *pid },
            RecordedInput::UpstreamFailedToStart { reason } => {
                Input::UpstreamFailedToStart { reason }
            }
            RecordedInput::UpstreamBytes(bytes) => Input::UpstreamBytes(bytes),
            RecordedInput::UpstreamEof => Input::UpstreamEof,
            RecordedInput::UpstreamExited(status) => Input::UpstreamExited(*status),
            RecordedInput::AuditFileOpened {
                sink,
                existing_bytes,
            } => Input::AuditFileOpened {
                sink: *sink,
                existing_bytes: *existing_bytes,
            },
            RecordedInput::AuditWriteFailed { sink, reason } => Input::AuditWriteFailed {
                sink: *sink,
                reason,
            },
            RecordedInput::Timeout => Input::Timeout,
        }
    }

    /// Copies a borrowed input.
    pub fn from_input(input: &Input<'_>) -> Self {
        match *input {
            Input::ClientBytes(bytes) => RecordedInput::ClientBytes(bytes.to_vec()),
            Input::ClientEof => RecordedInput::ClientEof,
            Input::UpstreamStarted { pid } => RecordedInput::UpstreamStarted { pid },
            Input::UpstreamFailedToStart { reason } => RecordedInput::UpstreamFailedToStart {
                reason: reason.to_owned(),
            },
            Input::UpstreamBytes(bytes) => RecordedInput::UpstreamBytes(bytes.to_vec()),
            Input::UpstreamEof => RecordedInput::UpstreamEof,
            Input::UpstreamExited(status) => RecordedInput::UpstreamExited(status),
            Input::AuditFileOpened {
                sink,
                existing_bytes,
            } => RecordedInput::AuditFileOpened {
                sink,
                existing_bytes,
            },
            Input::AuditWriteFailed { sink, reason } => RecordedInput::AuditWriteFailed {
                sink,
                reason: reason.to_owned(),
            },
            Input::Timeout => RecordedInput::Timeout,
        }
    }
}

/// A line of the capture, as written and read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    at: Timestamp,
    input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sink: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    existing_bytes: Option<u64>,
}

impl Line {
    fn new(at: Timestamp, input: &str) -> Self {
        Line {
            at,
            input: input.to_owned(),
            text: None,
            base64: None,
            pid: None,
            reason: None,
            code: None,
            signal: None,
            sink: None,
            existing_bytes: None,
        }
    }

    fn with_bytes(mut self, bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text = Some(text.to_owned()),
            Err(_) => self.base64 = Some(base64_encode(bytes)),
        }
        self
    }
}

/// Encodes one input, fed at `at`, as a capture line (with newline).
pub fn encode(at: Timestamp, input: &Input<'_>) -> Vec<u8> {
    let line = match *input {
        Input::ClientBytes(bytes) => Line::new(at, "client_bytes").with_bytes(bytes),
        Input::ClientEof => Line::new(at, "client_eof"),
        Input::UpstreamStarted { pid } => Line {
            pid: Some(pid),
            ..Line::new(at, "upstream_started")
        },
        Input::UpstreamFailedToStart { reason } => Line {
            reason: Some(reason.to_owned()),
            ..Line::new(at, "upstream_failed_to_start")
        },
        Input::UpstreamBytes(bytes) => Line::new(at, "upstream_bytes").with_bytes(bytes),
        Input::UpstreamEof => Line::new(at, "upstream_eof"),
        Input::UpstreamExited(ExitStatus::Code(code)) => Line {
            code: Some(code),
            ..Line::new(at, "upstream_exited")
        },
        Input::UpstreamExited(ExitStatus::Signal(signal)) => Line {
            signal: Some(signal),
            ..Line::new(at, "upstream_exited")
        },
        Input::AuditFileOpened {
            sink,
            existing_bytes,
        } => Line {
            sink: Some(sink.0),
            existing_bytes: Some(existing_bytes),
            ..Line::new(at, "audit_file_opened")
        },
        Input::AuditWriteFailed { sink, reason } => Line {
            sink: Some(sink.0),
            reason: Some(reason.to_owned()),
            ..Line::new(at, "audit_write_failed")
        },
        Input::Timeout => Line::new(at, "timeout"),
    };
    let mut out = serde_json::to_vec(&line).expect("a capture line always serialises");
    out.push(b'\n');
    out
}

/// Decodes one capture line (not the header). `line_number` is used in errors.
pub fn decode(line: &str, line_number: usize) -> Result<(Timestamp, RecordedInput), CaptureError> {
    let err = |message: String| CaptureError::new(line_number, message);
    let line: Line =
        serde_json::from_str(line).map_err(|e| err(format!("not a capture line: {e}")))?;
    let bytes = |line: &Line| -> Result<Vec<u8>, CaptureError> {
        match (&line.text, &line.base64) {
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(b64)) => {
                base64_decode(b64).ok_or_else(|| err("`base64` is not valid base64".into()))
            }
            _ => Err(err(format!(
                "`{}` needs exactly one of `text` or `base64`",
                line.input
            ))),
        }
    };
    let sink = |line: &Line| {
        line.sink
            .map(AuditSinkId)
            .ok_or_else(|| err(format!("`{}` needs `sink`", line.input)))
    };
    let reason = |line: &Line| {
        line.reason
            .clone()
            .ok_or_else(|| err(format!("`{}` needs `reason`", line.input)))
    };
    let input = match line.input.as_str() {
        "client_bytes" => RecordedInput::ClientBytes(bytes(&line)?),
        "client_eof" => RecordedInput::ClientEof,
        "upstream_started" => RecordedInput::UpstreamStarted {
            pid: line
                .pid
                .ok_or_else(|| err("`upstream_started` needs `pid`".into()))?,
        },
        "upstream_failed_to_start" => RecordedInput::UpstreamFailedToStart {
            reason: reason(&line)?,
        },
        "upstream_bytes" => RecordedInput::UpstreamBytes(bytes(&line)?),
        "upstream_eof" => RecordedInput::UpstreamEof,
        "upstream_exited" => RecordedInput::UpstreamExited(match (line.code, line.signal) {
            (Some(code), None) => ExitStatus::Code(code),
            (None, Some(signal)) => ExitStatus::Signal(signal),
            _ => {
                return Err(err(
                    "`upstream_exited` needs exactly one of `code` or `signal`".into(),
                ))
            }
        }),
        "audit_file_opened" => RecordedInput::AuditFileOpened {
            sink: sink(&line)?,
            existing_bytes: line
                .existing_bytes
                .ok_or_else(|| err("`audit_file_opened` needs `existing_bytes`".into()))?,
        },
        "audit_write_failed" => RecordedInput::AuditWriteFailed {
            sink: sink(&line)?,
            reason: reason(&line)?,
        },
        "timeout" => RecordedInput::Timeout,
        other => return Err(err(format!("unknown input `{other}`"))),
    };
    Ok((line.at, input))
}

/// A capture that cannot be read, with the line where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureError {
    /// 1-based line number in the capture file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl CaptureError {
    fn new(line: usize, message: String) -> Self {
        CaptureError { line, message }
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for CaptureError {}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = (n << 6) | u32::from(v);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                base64_decode(&base64_encode(&bytes)).as_deref(),
                Some(bytes.as_slice())
            );
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("TQ=="), Some(b"M".to_vec()));
        assert_eq!(base64_decode("T=Q="), None);
        assert_eq!(base64_decode("abc"), None);
    }

    #[test]
    fn every_input_round_trips() {
        let at: Timestamp = "2024-06-16T10:30:15.123456789Z".parse().unwrap();
        let inputs = [
            RecordedInput::ClientBytes(b"{\"a\":1}\n".to_vec()),
            RecordedInput::ClientBytes(vec![0xff, 0x00, b'\n']),
            RecordedInput::ClientEof,
            RecordedInput::UpstreamStarted { pid: 42 },
            RecordedInput::UpstreamFailedToStart {
                reason: "command not found: npx".into(),
            },
            RecordedInput::UpstreamBytes(b"partial".to_vec()),
            RecordedInput::UpstreamEof,
            RecordedInput::UpstreamExited(ExitStatus::Code(3)),
            RecordedInput::UpstreamExited(ExitStatus::Signal(9)),
            RecordedInput::AuditFileOpened {
                sink: AuditSinkId(1),
                existing_bytes: 99,
            },
            RecordedInput::AuditWriteFailed {
                sink: AuditSinkId(0),
                reason: "disk full".into(),
            },
            RecordedInput::Timeout,
        ];
        for (n, input) in inputs.iter().enumerate() {
            let line = encode(at, &input.as_input());
            let text = std::str::from_utf8(&line).unwrap();
            assert!(
                text.ends_with('\n') && text.matches('\n').count() == 1,
                "{text}"
            );
            assert_eq!(
                decode(text.trim_end(), n + 2),
                Ok((at, input.clone())),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = decode(r#"{"at":"2024-06-16T10:30:15Z","input":"client_bytes"}"#, 7).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(
            e.to_string().contains("exactly one of `text` or `base64`"),
            "{e}"
        );
        let e = CaptureHeader::parse(r#"{"gatekit_capture":2,"gatekit_version":"9","runtime":"std","started_at":"2024-06-16T10:30:15Z"}"#).unwrap_err();
        assert!(e.message.contains("version 2 is not supported"), "{e}");
    }
}
