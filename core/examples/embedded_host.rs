//! A host that embeds the Gatekit core without either runtime.
//!
//! Imagine a program that already owns both connections — an IDE plugin
//! that talks to the model client over one channel and to an MCP server
//! in-process over another. It wants Gatekit's policy and audit trail but
//! not its process management. Here both "connections" are in-memory byte
//! queues and the server is a function, so the whole session runs in one
//! thread with a fake clock:
//!
//! ```text
//! cargo run -p gatekit-core --example embedded_host
//! ```

use gatekit_core::{Config, Gateway, Input, Output};
use jiff::{SignedDuration, Timestamp};
use std::collections::VecDeque;

/// What the host saw, for printing (and for the test that runs this example).
#[derive(Debug, Default)]
pub struct Session {
    /// Lines the client received.
    pub to_client: Vec<String>,
    /// Lines the server received.
    pub to_server: Vec<String>,
    /// Audit lines, as the gateway formatted them.
    pub audit: Vec<String>,
}

/// The in-process MCP server: answers each request line with a result.
fn server(line: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(line).ok()?;
    let id = request.get("id")?.clone();
    let result = match request["method"].as_str()? {
        "tools/list" => {
            serde_json::json!({"tools": [{"name": "read_file"}, {"name": "delete_file"}]})
        }
        "tools/call" => serde_json::json!({"content": [{"type": "text", "text": "file contents"}]}),
        _ => serde_json::json!({}),
    };
    Some(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string() + "\n")
}

/// Runs a short session: list tools, call an allowed tool, call a blocked one.
pub fn run_session() -> Session {
    // A config as a host might build it in code (any serde format works).
    let config: Config = serde_json::from_value(serde_json::json!({
        "proxy": {"upstream": {"command": "in-process"}},
        "plugins": {
            "auditing": [{"policy": "file_auditing", "config": {"output_file": "unused", "format": "line"}}],
            "security": [{"policy": "tool_allowlist", "config": {"mode": "allowlist", "tools": ["read_file"]}}]
        }
    }))
    .expect("valid config");
    let mut gateway = Gateway::new(&config);
    let mut now: Timestamp = "2025-01-01T00:00:00Z".parse().expect("valid time");

    let mut from_client: VecDeque<&[u8]> = VecDeque::from([
        &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#[..],
        b"\n",
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}}
{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"a"}}}
"#,
    ]);
    let mut from_server: VecDeque<String> = VecDeque::new();
    let mut session = Session::default();

    loop {
        // 1. Feed one input: server output first, then client input, then EOF.
        let input_bytes;
        let input = if let Some(line) = from_server.pop_front() {
            input_bytes = line;
            Input::UpstreamBytes(input_bytes.as_bytes())
        } else if let Some(chunk) = from_client.pop_front() {
            Input::ClientBytes(chunk)
        } else {
            break;
        };
        gateway.handle_input(input, now);
        // 2. Poll until drained, carrying out each output in order.
        loop {
            match gateway.poll_output() {
                Output::ToClient(bytes) => session
                    .to_client
                    .push(String::from_utf8_lossy(&bytes).trim_end().to_owned()),
                Output::ToUpstream(bytes) => {
                    let line = String::from_utf8_lossy(&bytes).into_owned();
                    session.to_server.push(line.trim_end().to_owned());
                    from_server.extend(server(&line));
                }
                Output::Audit(write) => session
                    .audit
                    .push(String::from_utf8_lossy(&write.bytes).trim_end().to_owned()),
                // 3. Nothing more for now: a real host would wait for I/O or
                //    the deadline here.
                Output::Wait(_) => break,
                // Process management is the host's business; this host has none.
                Output::CloseUpstreamInput | Output::SignalUpstream(_) | Output::Exit(_) => {}
            }
        }
        now = now
            .checked_add(SignedDuration::from_millis(10))
            .expect("in range");
    }
    session
}

#[allow(dead_code)] // `main` is unused when a test includes this file as a module.
fn main() {
    let session = run_session();
    println!("The server received:");
    for line in &session.to_server {
        println!("  {line}");
    }
    println!("The client received:");
    for line in &session.to_client {
        println!("  {line}");
    }
    println!("Audit trail:");
    for line in &session.audit {
        println!("  {line}");
    }
}
