//! Core-only throughput: a synthetic session replayed through
//! `gatekit_core::Gateway` in this process, with no pipes, threads or
//! files. It is what the gateway's own logic costs per message, the part
//! the runtimes cannot hide.

use crate::scenarios::{echo_request, payload};
use gatekit_core::{AuditSinkId, Config, ExitStatus, Gateway, Input, Output};
use jiff::{SignedDuration, Timestamp};
use std::time::Instant;

/// One input of the session, owned.
pub enum Step {
    Client(Vec<u8>),
    Upstream(Vec<u8>),
    Other(Other),
}

pub enum Other {
    AuditOpened,
    Started,
    ClientEof,
    UpstreamEof,
    Exited,
}

/// `round_trips` echo calls of `text_len` bytes after the MCP handshake,
/// each request and answer one chunk, as a live runtime reads them when
/// the peers take turns.
pub fn session(round_trips: usize, text_len: usize) -> Vec<Step> {
    let text = payload(text_len);
    let mut steps = vec![
        Step::Other(Other::AuditOpened),
        Step::Other(Other::Started),
        Step::Client(crate::targets::INITIALIZE.to_vec()),
        Step::Upstream(
            br#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"bench-echo","version":"0.1.0"}}}
"#
            .to_vec(),
        ),
        Step::Client(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n".to_vec()),
    ];
    for id in 1..=round_trips as u64 {
        steps.push(Step::Client(echo_request(id, &text)));
        steps.push(Step::Upstream(
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"isError\":false}}}}\n"
            )
            .into_bytes(),
        ));
    }
    steps.extend([
        Step::Other(Other::ClientEof),
        Step::Other(Other::UpstreamEof),
        Step::Other(Other::Exited),
    ]);
    steps
}

/// `round_trips` `tools/list` calls after the MCP handshake, each answered
/// with the 500-tool list bench-echo sends (the benchmark's configs allow
/// five of them, so the gateway filters out 495 and audits that).
pub fn tools_list_session(round_trips: usize) -> Vec<Step> {
    let mut steps = session(0, 0);
    let end = steps.split_off(steps.len() - 3);
    let result = crate::tools_list::tools_list_result(crate::targets::TOOLS);
    for id in 1..=round_trips as u64 {
        steps.push(Step::Client(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/list\"}}\n").into_bytes(),
        ));
        let mut answer = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":").into_bytes();
        answer.extend_from_slice(&result);
        answer.extend_from_slice(b"}\n");
        steps.push(Step::Upstream(answer));
    }
    steps.extend(end);
    steps
}

/// The benchmark's gatekit config, as the core sees it.
pub fn config(audit: bool) -> Config {
    let auditing = if audit {
        serde_json::json!([{"policy": "file_auditing", "config": {
            "output_file": "audit.log", "format": "json",
            "max_file_size_mb": 10, "backup_count": 5
        }}])
    } else {
        serde_json::json!([])
    };
    serde_json::from_value(serde_json::json!({
        "proxy": {"upstream": {"command": "bench-echo"}},
        "plugins": {
            "auditing": auditing,
            "security": [{"policy": "tool_allowlist", "config": {
                "mode": "allowlist",
                "tools": crate::targets::ALLOWED_TOOLS,
                "block_message": "Tool access denied by security policy"
            }}]
        }
    }))
    .expect("valid config")
}

/// What one replay did.
pub struct Replay {
    pub seconds: f64,
    /// JSON-RPC messages fed (both directions).
    pub messages: usize,
    /// Bytes fed.
    pub bytes_in: usize,
}

impl Replay {
    /// Microseconds per round trip (two messages).
    pub fn us_per_round_trip(&self) -> f64 {
        self.seconds * 1e6 / (self.messages as f64 / 2.0)
    }
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    pub fn mib_per_s(&self) -> f64 {
        self.bytes_in as f64 / (1024.0 * 1024.0) / self.seconds
    }
}

/// Feeds `steps` to a fresh gateway, carrying out nothing but counting
/// what it asks for.
pub fn replay(config: &Config, steps: &[Step]) -> Replay {
    let mut gateway = Gateway::new(config);
    let mut now: Timestamp = "2025-01-01T00:00:00Z".parse().expect("timestamp");
    let tick = SignedDuration::from_micros(10);
    let (mut messages, mut bytes_in, mut bytes_out) = (0, 0, 0);
    let start = Instant::now();
    for step in steps {
        let input = match step {
            Step::Client(bytes) => {
                messages += 1;
                bytes_in += bytes.len();
                Input::ClientBytes(bytes)
            }
            Step::Upstream(bytes) => {
                messages += 1;
                bytes_in += bytes.len();
                Input::UpstreamBytes(bytes)
            }
            Step::Other(Other::AuditOpened) => Input::AuditFileOpened {
                sink: AuditSinkId(0),
                existing_bytes: 0,
            },
            Step::Other(Other::Started) => Input::UpstreamStarted { pid: 4242 },
            Step::Other(Other::ClientEof) => Input::ClientEof,
            Step::Other(Other::UpstreamEof) => Input::UpstreamEof,
            Step::Other(Other::Exited) => Input::UpstreamExited(ExitStatus::Code(0)),
        };
        now = now.checked_add(tick).expect("in range");
        gateway.handle_input(input, now);
        loop {
            match gateway.poll_output() {
                Output::ToClient(bytes) | Output::ToUpstream(bytes) => bytes_out += bytes.len(),
                Output::Audit(write) => bytes_out += write.bytes.len(),
                Output::Wait(_) | Output::Exit(_) => break,
                _ => {}
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // Bytes the gateway asked to write (peers and audit): counted so the
    // outputs are used.
    std::hint::black_box((&gateway, bytes_out));
    Replay {
        seconds,
        messages,
        bytes_in,
    }
}
