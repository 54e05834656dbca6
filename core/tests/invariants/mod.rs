//! Session invariants, checked on every output, shared by the property
//! tests (`tests/properties.rs`), the fuzz target (`fuzz/`) and the replay
//! of the committed fuzz corpus (`tests/fuzz_corpus.rs`).
//!
//! The input is an arbitrary byte string, decoded into a session: client
//! bytes (raw, or built from templates full of known tricks), upstream
//! bytes, a simulated server that answers what reaches it, timeouts and
//! exits. Whatever the bytes, these must hold:
//!
//! 1. the gateway never panics;
//! 2. every client request gets exactly one response (counted per id: as
//!    many responses with id X as the client sent requests with id X), except
//!    that a request the client cancelled may get none;
//! 3. no `tools/call` for a tool outside the allowlist reaches the upstream,
//!    and no `tools/list` result the client sees lists such a tool;
//! 4. every line the gateway writes to either peer, and every audit line, is
//!    valid JSON without duplicate keys;
//! 5. a client request reaches the upstream only after its audit record
//!    (`REQUEST`, `ALLOWED`) was handed out to be written.

#![allow(dead_code)]

use gatekit_core::{Config, ExitStatus, Gateway, Input, Output};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::collections::BTreeMap;

/// The allowlist every session runs under.
pub const ALLOWED: [&str; 2] = ["read_file", "write_file"];

/// Tool names tried by the templates: allowed ones, blocked ones, and
/// spellings that must not be mistaken for either.
const TOOL_NAMES: [&str; 12] = [
    "read_file",
    "write_file",
    "delete_file",
    "Read_file",
    "read_file ",
    "read\\u005ffile",
    "delete\\u005ffile",
    "",
    "r\\u0065ad_file",
    "READ_FILE",
    "read_fil",
    "execute_command",
];

const METHODS: [&str; 6] = [
    "tools/call",
    "tools/list",
    "ping",
    "initialize",
    "resources/read",
    "prompts/get",
];

fn config(max_in_flight: usize) -> Config {
    serde_json::from_value(serde_json::json!({
        "proxy": {"upstream": {"command": "fuzz"}, "limits": {"max_message_bytes": 4096, "max_in_flight_requests": max_in_flight}},
        "plugins": {
            "auditing": [{"policy": "file_auditing", "config": {"output_file": "fuzz.log"}}],
            "security": [{"policy": "tool_allowlist", "config": {"mode": "allowlist", "tools": ALLOWED}}]
        }
    }))
    .expect("valid config")
}

/// Reads bytes one at a time; runs out gracefully.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.at + n).min(self.data.len());
        let out = &self.data[self.at..end];
        self.at = end;
        out
    }
}

struct Session {
    gateway: Gateway,
    now: Timestamp,
    /// Requests forwarded to the upstream and not yet answered by the simulated server.
    forwarded: Vec<Value>,
    /// Client bytes sent, to count requests per id at the end.
    client_bytes: Vec<u8>,
    /// Responses the client received, per id.
    responses: BTreeMap<String, usize>,
    /// The method of the latest request with each id that reached the
    /// upstream (ids may be reused once a request is over).
    forwarded_methods: BTreeMap<String, String>,
    /// Audited, allowed client requests not yet seen on their way to the
    /// upstream: how many per id (in the audit records' form of ids).
    audited_requests: BTreeMap<String, usize>,
    exited: bool,
    upstream_gone: bool,
}

/// Runs the session that `data` describes and checks every invariant.
/// Panics (with a description) when one does not hold.
pub fn check_session(data: &[u8]) {
    let mut cursor = Cursor { data, at: 0 };
    let max_in_flight = 1 + usize::from(cursor.byte().unwrap_or(0) % 8);
    let mut s = Session {
        gateway: Gateway::new(&config(max_in_flight)),
        now: "2025-01-01T00:00:00Z".parse().expect("valid"),
        forwarded: Vec::new(),
        client_bytes: Vec::new(),
        responses: BTreeMap::new(),
        forwarded_methods: BTreeMap::new(),
        audited_requests: BTreeMap::new(),
        exited: false,
        upstream_gone: false,
    };
    while let Some(op) = cursor.byte() {
        if s.exited {
            break;
        }
        match op % 9 {
            0 => {
                let n = usize::from(cursor.byte().unwrap_or(0));
                let raw = cursor.bytes(n).to_vec();
                s.client(&raw);
            }
            1 | 2 => {
                let line = template(&mut cursor);
                // Deliver in pieces of a size the data chooses.
                let piece = 1 + usize::from(cursor.byte().unwrap_or(255));
                for chunk in line.chunks(piece) {
                    s.client(chunk);
                }
            }
            3 => {
                let n = usize::from(cursor.byte().unwrap_or(0));
                let raw = cursor.bytes(n).to_vec();
                s.upstream(&raw);
            }
            4 => s.answer_forwarded(&mut cursor),
            5 => {
                // A server-initiated request, and maybe the client's answer.
                let id = cursor.byte().unwrap_or(0);
                s.upstream(
                    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"roots/list\"}}\n")
                        .as_bytes(),
                );
                if cursor.byte().unwrap_or(0) % 2 == 0 {
                    s.client(
                        format!(
                            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"roots\":[]}}}}\n"
                        )
                        .as_bytes(),
                    );
                }
            }
            6 => {
                s.now = s
                    .now
                    .checked_add(SignedDuration::from_millis(700))
                    .expect("in range");
                s.feed(Input::Timeout);
            }
            7 => {
                if cursor.byte().unwrap_or(0) % 4 == 0 {
                    s.upstream_gone = true;
                    s.feed(Input::UpstreamEof);
                    s.feed(Input::UpstreamExited(ExitStatus::Code(1)));
                }
            }
            _ => {
                // A response from the upstream to an id of the data's choosing.
                let id = cursor.byte().unwrap_or(0);
                s.upstream(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"tools\":[{{\"name\":\"delete_file\"}},{{\"name\":\"read_file\"}}]}}}}\n").as_bytes());
            }
        }
    }
    // Wind the session down: the server answers what it got, then both ends close.
    if !s.exited {
        s.answer_all();
        s.feed(Input::ClientEof);
        if !s.upstream_gone {
            s.feed(Input::UpstreamEof);
            s.feed(Input::UpstreamExited(ExitStatus::Code(0)));
        }
        for _ in 0..4 {
            s.now = s
                .now
                .checked_add(SignedDuration::from_secs(3))
                .expect("in range");
            s.feed(Input::Timeout);
        }
    }
    s.check_one_response_per_request();
}

/// A client line built from known-tricky parts.
fn template(cursor: &mut Cursor<'_>) -> Vec<u8> {
    let shape = cursor.byte().unwrap_or(0);
    let method = METHODS[usize::from(cursor.byte().unwrap_or(0)) % METHODS.len()];
    let id = cursor.byte().unwrap_or(0);
    let tool = TOOL_NAMES[usize::from(cursor.byte().unwrap_or(0)) % TOOL_NAMES.len()];
    let other = TOOL_NAMES[usize::from(cursor.byte().unwrap_or(0)) % TOOL_NAMES.len()];
    let id_json = if shape & 1 == 0 {
        id.to_string()
    } else {
        format!("\"r{id}\"")
    };
    let params = match shape / 2 % 6 {
        0 => format!("{{\"name\":\"{tool}\",\"arguments\":{{\"path\":\"/tmp/x\"}}}}"),
        1 => format!("{{\"name\":\"{tool}\",\"name\":\"{other}\"}}"),
        2 => format!("{{\"arguments\":{{\"name\":\"{tool}\"}}}}"),
        3 => format!("[\"{tool}\"]"),
        4 => format!("{{\"name\":[\"{tool}\"]}}"),
        _ => format!("{{\"name\":\"{tool}\",\"arguments\":{{\"a\":1,\"a\":2}}}}"),
    };
    let line = match shape / 12 % 5 {
        0 => format!("{{\"jsonrpc\":\"2.0\",\"id\":{id_json},\"method\":\"{method}\",\"params\":{params}}}"),
        1 => format!("[{{\"jsonrpc\":\"2.0\",\"id\":{id_json},\"method\":\"{method}\",\"params\":{params}}}]"),
        2 => format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":{params}}}"),
        3 => format!("{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{{\"requestId\":{id_json}}}}}"),
        _ => format!("{{\"id\":{id_json},\"method\":\"{method}\",\"params\":{params}}}"),
    };
    let mut bytes = line.into_bytes();
    bytes.push(if shape & 0x80 != 0 { b'\r' } else { b'\n' });
    if shape & 0x80 != 0 {
        bytes.push(b'\n');
    }
    bytes
}

impl Session {
    fn client(&mut self, bytes: &[u8]) {
        self.client_bytes.extend_from_slice(bytes);
        self.feed(Input::ClientBytes(bytes));
    }

    fn upstream(&mut self, bytes: &[u8]) {
        self.feed(Input::UpstreamBytes(bytes));
    }

    fn feed(&mut self, input: Input<'_>) {
        if self.exited {
            return;
        }
        self.gateway.handle_input(input, self.now);
        loop {
            match self.gateway.poll_output() {
                Output::ToClient(bytes) => {
                    for line in lines(&bytes) {
                        let message = strict_json(line, "a line to the client");
                        if message.get("method").is_none() {
                            let id = id_key(&message["id"]);
                            if self.forwarded_methods.get(&id).map(String::as_str)
                                == Some("tools/list")
                            {
                                check_listed_tools(&message);
                            }
                            *self.responses.entry(id).or_default() += 1;
                        }
                    }
                }
                Output::ToUpstream(bytes) => {
                    for line in lines(&bytes) {
                        let message = strict_json(line, "a line to the upstream");
                        if message["method"] == "tools/call" {
                            let name = message["params"]["name"].as_str();
                            assert!(
                                name.is_some_and(|n| ALLOWED.contains(&n)),
                                "a tools/call for {name:?} reached the upstream: {}",
                                String::from_utf8_lossy(line)
                            );
                        }
                        if message.get("method").is_some() && message.get("id").is_some() {
                            self.check_audited_before_forwarded(&message["id"], line);
                            self.forwarded_methods.insert(
                                id_key(&message["id"]),
                                message["method"].as_str().unwrap_or_default().to_owned(),
                            );
                            self.forwarded.push(message);
                        }
                    }
                }
                Output::Audit(write) => {
                    for line in lines(&write.bytes) {
                        let record = strict_json(line, "an audit line");
                        if record["event_type"] == "REQUEST"
                            && record["source"] == "client"
                            && record["status"] == "ALLOWED"
                        {
                            if let Some(id) = record["request_id"].as_str() {
                                *self.audited_requests.entry(id.to_owned()).or_default() += 1;
                            }
                        }
                    }
                }
                Output::Exit(_) => self.exited = true,
                Output::Wait(_) => return,
                Output::CloseUpstreamInput | Output::SignalUpstream(_) => {}
            }
        }
    }

    /// Invariant 5, for a request on its way to the upstream. Only client
    /// requests are forwarded there with an id and a method.
    fn check_audited_before_forwarded(&mut self, id: &Value, line: &[u8]) {
        let key = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.audited_requests.get_mut(&key) {
            Some(count) if *count > 0 => *count -= 1,
            _ => panic!(
                "a request reached the upstream before its audit record: {}",
                String::from_utf8_lossy(line)
            ),
        }
    }

    /// The simulated server answers the oldest forwarded requests.
    fn answer_forwarded(&mut self, cursor: &mut Cursor<'_>) {
        let n = usize::from(cursor.byte().unwrap_or(1) % 4);
        for _ in 0..n.min(self.forwarded.len()) {
            let request = self.forwarded.remove(0);
            self.answer(&request);
        }
    }

    fn answer_all(&mut self) {
        for request in std::mem::take(&mut self.forwarded) {
            self.answer(&request);
        }
    }

    fn answer(&mut self, request: &Value) {
        if self.upstream_gone {
            return;
        }
        let result = if request["method"] == "tools/list" {
            serde_json::json!({"tools": [{"name": "read_file"}, {"name": "delete_file"}, {"name": "Read_file"}]})
        } else {
            serde_json::json!({})
        };
        let response = serde_json::json!({"jsonrpc": "2.0", "id": request["id"], "result": result});
        self.upstream(format!("{response}\n").as_bytes());
    }

    /// Invariant 2, counted per id over the whole session.
    fn check_one_response_per_request(&self) {
        let mut requests: BTreeMap<String, usize> = BTreeMap::new();
        let mut cancelled: BTreeMap<String, usize> = BTreeMap::new();
        for line in self.client_bytes.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if message.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
                if let Some(id) = message.get("params").and_then(|p| p.get("requestId")) {
                    *cancelled.entry(id_key(id)).or_default() += 1;
                }
            }
            let is_request = message.get("method").is_some_and(Value::is_string)
                && message
                    .get("id")
                    .is_some_and(|id| id.is_string() || id.is_i64() || id.is_u64());
            if is_request && line.len() <= 4096 {
                *requests.entry(id_key(&message["id"])).or_default() += 1;
            }
        }
        for (id, sent) in &requests {
            let got = self.responses.get(id).copied().unwrap_or(0);
            // A request the client cancelled may go unanswered (MCP: the
            // server should not answer it; the client ignores a late answer).
            let may_go_unanswered = cancelled.get(id).copied().unwrap_or(0).min(*sent);
            assert!(
                got <= *sent && got + may_go_unanswered >= *sent,
                "request id {id} was sent {sent} times ({may_go_unanswered} cancelled) but answered {got} times"
            );
        }
        for id in self.responses.keys() {
            if id != "null" {
                assert!(
                    requests.contains_key(id),
                    "the client got a response to id {id}, which it never asked"
                );
            }
        }
    }
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    assert!(
        bytes.ends_with(b"\n"),
        "output must be whole lines: {}",
        String::from_utf8_lossy(bytes)
    );
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// Parses a line as JSON and rejects duplicate keys (a second, independent
/// check: the round trip through `Value` would silently merge them).
fn strict_json(line: &[u8], what: &str) -> Value {
    let value: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
        )
    });
    let text = std::str::from_utf8(line).expect("JSON is UTF-8");
    assert_eq!(
        count_keys(text),
        count_value_keys(&value),
        "{what} has duplicate keys: {text}"
    );
    value
}

/// Number of object keys in the text (strings followed by a colon).
fn count_keys(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut count = 0;
    let mut i = 0;
    let mut in_string = false;
    let mut string_start_ok = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => {
                    in_string = false;
                    let mut j = i + 1;
                    while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if string_start_ok && bytes.get(j) == Some(&b':') {
                        count += 1;
                    }
                }
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            string_start_ok = true;
        }
        i += 1;
    }
    count
}

fn count_value_keys(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len() + map.values().map(count_value_keys).sum::<usize>(),
        Value::Array(items) => items.iter().map(count_value_keys).sum(),
        _ => 0,
    }
}

/// Invariant 3 for what the client sees: a `tools/list` result lists only
/// callable tools (listed ⇔ callable).
fn check_listed_tools(message: &Value) {
    if let Some(tools) = message.pointer("/result/tools").and_then(Value::as_array) {
        for tool in tools {
            let name = tool["name"].as_str();
            assert!(
                name.is_some_and(|n| ALLOWED.contains(&n)),
                "the client was shown tool {name:?}, which it may not call"
            );
        }
    }
}

/// Ids compared as the gateway compares them: numbers and strings apart.
fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => format!("s:{s}"),
        Value::Number(n) => format!("n:{n}"),
        Value::Null => "null".to_owned(),
        other => format!("?:{other}"),
    }
}
