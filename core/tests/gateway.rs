//! Behaviour of the whole `Gateway` through its public API, at the speed of
//! light: time is a parameter, so no test sleeps.

use gatekit_core::{Config, ExitStatus, Gateway, Input, Output, UpstreamSignal};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

struct Harness {
    gateway: Gateway,
    now: Timestamp,
    to_client: Vec<Value>,
    to_upstream: Vec<String>,
    audit: Vec<Value>,
    actions: Vec<Output>,
    /// Everything in output order, to check that records precede messages.
    order: Vec<&'static str>,
}

fn tutorial_config() -> Config {
    serde_json::from_value(json!({
        "proxy": {"upstream": {"command": "server"}},
        "plugins": {
            "auditing": [{"policy": "file_auditing", "config": {"output_file": "a.log"}}],
            "security": [{"policy": "tool_allowlist", "config": {
                "mode": "allowlist",
                "tools": ["read_file", "write_file", "list_directory"],
                "block_message": "Tool access denied by security policy"
            }}]
        }
    }))
    .unwrap()
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness {
            gateway: Gateway::new(&config),
            now: "2024-06-16T10:30:15Z".parse().unwrap(),
            to_client: Vec::new(),
            to_upstream: Vec::new(),
            audit: Vec::new(),
            actions: Vec::new(),
            order: Vec::new(),
        }
    }

    fn tutorial() -> Self {
        Self::new(tutorial_config())
    }

    fn advance(&mut self, ms: i64) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_millis(ms))
            .unwrap();
    }

    fn input(&mut self, input: Input<'_>) -> Option<Timestamp> {
        self.gateway.handle_input(input, self.now);
        loop {
            match self.gateway.poll_output() {
                Output::ToClient(bytes) => {
                    self.order.push("client");
                    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        self.to_client
                            .push(serde_json::from_slice(line).expect("client output is JSON"));
                    }
                }
                Output::ToUpstream(bytes) => {
                    self.order.push("upstream");
                    self.to_upstream.push(String::from_utf8(bytes).unwrap());
                }
                Output::Audit(write) => {
                    self.order.push("audit");
                    let text = String::from_utf8(write.bytes).unwrap();
                    for line in text.lines() {
                        self.audit
                            .push(serde_json::from_str(line).expect("audit line is JSON"));
                    }
                }
                Output::Wait(deadline) => return deadline,
                other => self.actions.push(other),
            }
        }
    }

    fn client(&mut self, line: &str) {
        self.input(Input::ClientBytes(format!("{line}\n").as_bytes()));
    }

    fn upstream(&mut self, line: &str) {
        self.input(Input::UpstreamBytes(format!("{line}\n").as_bytes()));
    }

    fn events(&self) -> Vec<String> {
        self.audit
            .iter()
            .map(|r| r["event_type"].as_str().unwrap().to_owned())
            .collect()
    }
}

const CALL_LIST: &str = r#"{"jsonrpc":"2.0","id":123,"method":"tools/call","params":{"name":"list_directory","arguments":{"path":"/tmp/s"}}}"#;

#[test]
fn allowed_call_is_forwarded_byte_for_byte_and_paired_with_its_response() {
    let mut h = Harness::tutorial();
    h.client(CALL_LIST);
    assert_eq!(h.to_upstream, vec![format!("{CALL_LIST}\n")]);
    h.advance(1333);
    let answer =
        r#"{"jsonrpc":"2.0","id":123,"result":{"content":[{"type":"text","text":"[FILE] a"}]}}"#;
    h.upstream(answer);
    assert_eq!(
        h.to_client,
        vec![serde_json::from_str::<Value>(answer).unwrap()]
    );
    assert_eq!(h.events(), ["REQUEST", "RESPONSE"]);
    let request = &h.audit[0];
    assert_eq!(request["method"], "tools/call");
    assert_eq!(request["tool"], "list_directory");
    assert_eq!(request["status"], "ALLOWED");
    assert_eq!(request["request_id"], "123");
    assert_eq!(request["plugin"], "tool_allowlist");
    assert_eq!(request["params"], json!({"path": "/tmp/s"}));
    assert_eq!(request["timestamp"], "2024-06-16T10:30:15.000Z");
    let response = &h.audit[1];
    assert_eq!(response["status"], "success");
    assert_eq!(response["request_id"], "123");
    assert_eq!(response["duration_ms"], 1333);
    assert_eq!(response["tool"], "list_directory");
    assert_eq!(
        h.order,
        ["audit", "upstream", "audit", "client"],
        "records come before the messages they describe"
    );
}

#[test]
fn blocked_call_never_reaches_the_upstream_and_is_answered_with_the_block_message() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":124,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"x"}}}"#);
    assert!(h.to_upstream.is_empty());
    assert_eq!(
        h.to_client,
        vec![
            json!({"jsonrpc":"2.0","id":124,"error":{"code":-32001,"message":"Tool access denied by security policy"}})
        ]
    );
    assert_eq!(h.events(), ["REQUEST", "SECURITY_BLOCK", "RESPONSE"]);
    let block = &h.audit[1];
    assert_eq!(block["tool"], "delete_file");
    assert_eq!(block["reason"], "Tool 'delete_file' is not in allowlist");
    assert_eq!(block["plugin"], "tool_allowlist");
    assert_eq!(block["plugin_metadata"], json!({"mode": "allowlist"}));
    assert_eq!(block["status"], "BLOCKED");
    assert_eq!(h.audit[0]["status"], "BLOCKED");
    assert_eq!(h.audit[2]["status"], "error");
    assert!(
        h.audit[2].get("duration_ms").is_none(),
        "a blocked call was never forwarded, so it has no duration"
    );
    assert_eq!(h.gateway.stats().blocked_requests, 1);
}

#[test]
fn bypass_attempts_are_blocked() {
    let attempts = [
        // JSON escape spelling a blocked name.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u005ffile"}}"#,
        // Case trick.
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"Read_file"}}"#,
        // Missing or non-string name: the policy cannot decide.
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":["read_file"]}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":["read_file"]}"#,
    ];
    for attempt in attempts {
        let mut h = Harness::tutorial();
        h.client(attempt);
        assert!(h.to_upstream.is_empty(), "{attempt} was forwarded");
        assert_eq!(h.to_client.len(), 1, "{attempt}");
        assert_eq!(h.to_client[0]["error"]["code"], -32001, "{attempt}");
    }
    let rejected = [
        // Duplicate keys: the server might read the other one.
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","name":"delete_file"}}"#,
            -32600,
        ),
        // A batch hiding a call.
        (
            r#"[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"delete_file"}}]"#,
            -32600,
        ),
    ];
    for (attempt, code) in rejected {
        let mut h = Harness::tutorial();
        h.client(attempt);
        assert!(h.to_upstream.is_empty(), "{attempt} was forwarded");
        assert_eq!(h.to_client[0]["error"]["code"], code, "{attempt}");
        assert_eq!(h.events(), ["PROTOCOL_ERROR"]);
    }
    // A notification carrying tools/call is dropped (it cannot be answered).
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file"}}"#);
    assert!(h.to_upstream.is_empty());
    assert!(h.to_client.is_empty());
    assert_eq!(h.events(), ["SECURITY_BLOCK"]);
}

#[test]
fn tools_list_is_filtered_on_every_page_and_audited() {
    let mut h = Harness::tutorial();
    for (id, cursor) in [(1, None), (2, Some("p2"))] {
        let params = cursor.map_or(json!({}), |c| json!({"cursor": c}));
        h.client(
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/list","params":params}).to_string(),
        );
    }
    h.upstream(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"},{"name":"move_file"}],"nextCursor":"p2"}}"#);
    h.upstream(r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"execute_command"},{"name":"write_file"}]}}"#);
    assert_eq!(
        h.to_client[0],
        json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"}],"nextCursor":"p2"}})
    );
    assert_eq!(
        h.to_client[1],
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"write_file"}]}})
    );
    let filtered: Vec<&Value> = h
        .audit
        .iter()
        .filter(|r| r["event_type"] == "TOOLS_FILTERED")
        .collect();
    assert_eq!(filtered.len(), 2);
    assert_eq!(filtered[0]["reason"], "Filtered 2 tools from response");
    assert_eq!(
        filtered[0]["plugin_metadata"],
        json!({"filtered_count": 2, "filtered_tools": ["delete_file", "move_file"]})
    );
    assert_eq!(filtered[1]["request_id"], "2");
}

#[test]
fn initialize_result_passes_unchanged() {
    let answer = r#"{"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"secure-filesystem-server","version":"0.2.0"},"instructions":"Use me"},"jsonrpc":"2.0","id":0}"#;
    // Compare the exact bytes, not just the JSON value.
    let mut again = Harness::tutorial();
    again.client(r#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#);
    again.gateway.handle_input(
        Input::UpstreamBytes(format!("{answer}\n").as_bytes()),
        again.now,
    );
    let mut raw = Vec::new();
    loop {
        match again.gateway.poll_output() {
            Output::ToClient(bytes) => raw.extend(bytes),
            Output::Wait(_) => break,
            _ => {}
        }
    }
    assert_eq!(raw, format!("{answer}\n").into_bytes());
}

#[test]
fn server_requests_reach_the_client_and_answers_reach_the_server_with_colliding_ids() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}"#);
    // The server asks the client something, reusing id 1 in its own id space.
    h.upstream(r#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#);
    assert_eq!(h.to_client[0]["method"], "roots/list");
    h.advance(5);
    h.client(r#"{"jsonrpc":"2.0","id":1,"result":{"roots":[{"uri":"file:///tmp"}]}}"#);
    assert_eq!(h.to_upstream.len(), 2);
    assert!(h.to_upstream[1].contains("roots"));
    h.upstream(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
    assert_eq!(h.to_client.len(), 2);
    let responses: Vec<&Value> = h
        .audit
        .iter()
        .filter(|r| r["event_type"] == "RESPONSE")
        .collect();
    assert_eq!(responses[0]["method"], "roots/list");
    assert_eq!(responses[0]["source"], "client");
    assert_eq!(responses[0]["duration_ms"], 5);
    assert_eq!(responses[1]["method"], "tools/call");
    assert_eq!(responses[1]["tool"], "read_file");
}

#[test]
fn unknown_and_duplicate_ids_are_rejected() {
    let mut h = Harness::tutorial();
    h.upstream(r#"{"jsonrpc":"2.0","id":99,"result":{}}"#);
    assert!(
        h.to_client.is_empty(),
        "a response to nothing is not passed on"
    );
    h.client(r#"{"jsonrpc":"2.0","id":42,"result":{}}"#);
    assert!(h.to_upstream.is_empty());
    h.client(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
    h.client(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
    assert_eq!(
        h.to_upstream.len(),
        1,
        "the second request with an in-flight id is not forwarded"
    );
    assert_eq!(h.to_client[0]["error"]["code"], -32600);
    assert_eq!(
        h.events(),
        [
            "PROTOCOL_ERROR",
            "PROTOCOL_ERROR",
            "REQUEST",
            "PROTOCOL_ERROR"
        ]
    );
}

#[test]
fn bad_client_input_gets_the_right_error_and_the_session_goes_on() {
    let mut h = Harness::tutorial();
    h.client("{not json");
    h.client(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    h.client(r#"{"jsonrpc":"2.0","id":5}"#);
    h.input(Input::ClientBytes(
        b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"\xff\"}\n",
    ));
    h.client(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
    let codes: Vec<(Value, Value)> = h
        .to_client
        .iter()
        .map(|m| (m["id"].clone(), m["error"]["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (Value::Null, json!(-32700)),
            (Value::Null, json!(-32600)),
            (json!(5), json!(-32600)),
            (Value::Null, json!(-32700))
        ]
    );
    assert_eq!(
        h.to_upstream,
        vec!["{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n".to_owned()]
    );
    assert_eq!(
        h.events().iter().filter(|e| *e == "PROTOCOL_ERROR").count(),
        4
    );
}

#[test]
fn upstream_garbage_is_logged_not_answered() {
    let mut h = Harness::tutorial();
    h.upstream("Secure MCP Filesystem Server running on stdio");
    h.upstream("{\"broken\":");
    assert!(h.to_client.is_empty());
    assert!(
        h.to_upstream.is_empty(),
        "no error storm towards the upstream"
    );
    assert_eq!(h.gateway.stats().upstream_invalid_lines, 2);
    assert_eq!(h.events(), ["PROTOCOL_ERROR", "PROTOCOL_ERROR"]);
}

#[test]
fn overlong_request_is_answered_with_its_id() {
    let mut config = tutorial_config();
    config.proxy.limits.max_message_bytes = 100;
    let mut h = Harness::new(config);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{{"name":"write_file","arguments":{{"content":"{}"}}}}}}"#,
        "x".repeat(500)
    );
    h.client(&big);
    h.client(r#"{"jsonrpc":"2.0","id":78,"method":"ping"}"#);
    assert_eq!(h.to_client[0]["id"], 77);
    assert_eq!(h.to_client[0]["error"]["code"], -32004);
    assert_eq!(h.to_upstream.len(), 1, "the next request still works");
}

#[test]
fn in_flight_bound_is_enforced() {
    let mut config = tutorial_config();
    config.proxy.limits.max_in_flight_requests = 2;
    let mut h = Harness::new(config);
    for id in 1..=3 {
        h.client(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
    }
    assert_eq!(h.to_upstream.len(), 2);
    assert_eq!(h.to_client[0]["id"], 3);
    assert_eq!(h.to_client[0]["error"]["code"], -32004);
    h.upstream(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    h.client(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
    assert_eq!(
        h.to_upstream.len(),
        3,
        "room again once a response came back"
    );
}

#[test]
fn client_eof_closes_stdin_then_terms_then_kills() {
    let mut h = Harness::tutorial();
    let deadline = h.input(Input::ClientEof).expect("a grace deadline");
    assert_eq!(h.actions, vec![Output::CloseUpstreamInput]);
    h.now = deadline;
    let deadline = h.input(Input::Timeout).expect("another deadline");
    assert_eq!(
        h.actions[1],
        Output::SignalUpstream(UpstreamSignal::Terminate)
    );
    h.now = deadline;
    h.input(Input::Timeout);
    assert_eq!(h.actions[2], Output::SignalUpstream(UpstreamSignal::Kill));
    h.input(Input::UpstreamEof);
    h.input(Input::UpstreamExited(ExitStatus::Signal(9)));
    assert_eq!(h.actions[3], Output::Exit(0));
}

#[test]
fn polite_upstream_exit_after_client_eof_exits_zero_without_signals() {
    let mut h = Harness::tutorial();
    h.input(Input::ClientEof);
    h.input(Input::UpstreamEof);
    h.input(Input::UpstreamExited(ExitStatus::Code(0)));
    assert_eq!(h.actions, vec![Output::CloseUpstreamInput, Output::Exit(0)]);
    assert_eq!(h.events(), ["UPSTREAM_EXITED"]);
}

#[test]
fn upstream_dying_mid_call_answers_pending_requests_and_exits_non_zero() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file"}}"#);
    h.input(Input::UpstreamExited(ExitStatus::Code(3)));
    assert!(h.to_client.is_empty(), "waits briefly for the last output");
    h.input(Input::UpstreamEof);
    assert_eq!(h.to_client.len(), 1);
    assert_eq!(h.to_client[0]["id"], 9);
    assert_eq!(h.to_client[0]["error"]["code"], -32002);
    assert!(h.to_client[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exit code 3"));
    assert_eq!(h.actions, vec![Output::Exit(1)]);
    let exited = h
        .audit
        .iter()
        .find(|r| r["event_type"] == "UPSTREAM_EXITED")
        .unwrap();
    assert_eq!(exited["status"], "error");
}

#[test]
fn exit_without_eof_is_finished_after_a_short_drain() {
    let mut h = Harness::tutorial();
    let deadline = h.input(Input::UpstreamExited(ExitStatus::Code(0))).unwrap();
    assert!(h.actions.is_empty());
    h.now = deadline;
    h.input(Input::Timeout);
    assert_eq!(h.actions, vec![Output::Exit(1)]);
}

#[test]
fn upstream_that_fails_to_start_answers_the_first_request_with_the_reason() {
    let mut h = Harness::tutorial();
    h.input(Input::UpstreamFailedToStart {
        reason: "command not found: npx",
    });
    h.client(r#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#);
    assert_eq!(h.to_client[0]["id"], 0);
    assert!(h.to_client[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("command not found: npx"));
    assert_eq!(h.actions, vec![Output::Exit(1)]);
}

#[test]
fn notifications_pass_both_ways_and_are_audited() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    h.upstream(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
    assert_eq!(h.to_upstream.len(), 1);
    assert_eq!(h.to_client.len(), 1);
    let sources: Vec<&str> = h
        .audit
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(h.events(), ["NOTIFICATION", "NOTIFICATION"]);
    assert_eq!(sources, ["client", "server"]);
}

#[test]
fn chunking_does_not_change_anything() {
    let session: Vec<(bool, &str)> = vec![
        (true, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        (
            false,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"},{"name":"rm"}]}}"#,
        ),
        (true, CALL_LIST),
        (true, "garbage"),
        (false, r#"{"jsonrpc":"2.0","id":123,"result":{}}"#),
    ];
    let run = |chunk: usize| {
        let mut h = Harness::tutorial();
        for (from_client, line) in &session {
            let bytes = format!("{line}\n");
            for piece in bytes.as_bytes().chunks(chunk) {
                if *from_client {
                    h.input(Input::ClientBytes(piece));
                } else {
                    h.input(Input::UpstreamBytes(piece));
                }
            }
        }
        (h.to_client, h.to_upstream, h.audit)
    };
    let whole = run(usize::MAX);
    for chunk in [1, 2, 3, 7, 64] {
        assert!(run(chunk) == whole, "chunk size {chunk}");
    }
}

#[test]
fn several_sinks_each_with_its_own_format_mode_and_rotation() {
    let config: Config = serde_json::from_value(json!({
        "proxy": {"upstream": {"command": "server"}},
        "plugins": {
            "auditing": [
                {"policy": "file_auditing", "config": {"output_file": "all.log"}},
                {"policy": "file_auditing", "config": {"output_file": "a.csv", "format": "csv", "max_file_size_mb": 0.0003}},
                {"policy": "file_auditing", "config": {"output_file": "sec.log", "format": "line", "mode": "security_only"}},
                {"policy": "file_auditing", "enabled": false, "config": {"output_file": "off.log"}}
            ],
            "security": [{"policy": "tool_allowlist", "config": {"mode": "blocklist", "tools": ["rm"]}}]
        }
    }))
    .unwrap();
    let mut gateway = Gateway::new(&config);
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    for sink in 0..3 {
        gateway.handle_input(
            Input::AuditFileOpened {
                sink: gatekit_core::AuditSinkId(sink),
                existing_bytes: 0,
            },
            now,
        );
    }
    let mut files: Vec<Vec<Vec<u8>>> = vec![vec![Vec::new()]; 3];
    let mut feed = |gateway: &mut Gateway, input: Input<'_>| {
        gateway.handle_input(input, now);
        loop {
            match gateway.poll_output() {
                Output::Audit(write) => {
                    let segments = &mut files[write.sink.0];
                    if write.rotate_first {
                        segments.push(Vec::new());
                    }
                    segments.last_mut().unwrap().extend(write.bytes);
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
    };
    for id in 0..10 {
        let tool = if id % 3 == 0 { "rm" } else { "echo" };
        let line = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\"}}}}\n");
        feed(&mut gateway, Input::ClientBytes(line.as_bytes()));
    }
    assert_eq!(files[0].len(), 1, "json sink did not rotate");
    assert_eq!(
        String::from_utf8_lossy(&files[0][0]).lines().count(),
        4 * 3 + 6
    );
    assert!(files[1].len() > 2, "csv sink rotated");
    for segment in &files[1] {
        let text = String::from_utf8_lossy(segment);
        assert!(text.starts_with("timestamp,event_type,method,tool,status,request_id,plugin,reason,duration_ms,server_name\r\n"), "{text}");
        assert!(
            segment.len() <= 315 || text.lines().count() == 2,
            "a segment passed the limit: {}",
            segment.len()
        );
    }
    let security = String::from_utf8_lossy(&files[2][0]).into_owned();
    assert!(security.lines().all(|l| l.contains("BLOCK")), "{security}");
    assert_eq!(
        security
            .lines()
            .filter(|l| l.contains("SECURITY_BLOCK"))
            .count(),
        4
    );
}

/// Drives a gateway whose audit file fails while `broken` is set, as a
/// runtime would: the failure is reported before the next output is polled.
fn drive_with_failing_audit(
    gateway: &mut Gateway,
    input: Input<'_>,
    now: Timestamp,
    broken: bool,
) -> Vec<Output> {
    gateway.handle_input(input, now);
    let mut carried_out = Vec::new();
    loop {
        match gateway.poll_output() {
            Output::Wait(_) => return carried_out,
            Output::Audit(write) if broken => {
                gateway.handle_input(
                    Input::AuditWriteFailed {
                        sink: write.sink,
                        reason: "disk full",
                    },
                    now,
                );
            }
            other => carried_out.push(other),
        }
    }
}

fn config_with_critical(critical: bool) -> Config {
    let mut config = tutorial_config();
    let gatekit_core::config::AuditingPlugin::FileAuditing(file) =
        &mut config.plugins.auditing[0].plugin;
    file.critical = critical;
    config
}

#[test]
fn critical_audit_failure_withholds_messages_until_the_log_recovers() {
    let mut gateway = Gateway::new(&config_with_critical(true));
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    let call = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\"}}\n";
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(call), now, true);
    assert_eq!(out.len(), 1, "{out:?}");
    let Output::ToClient(reply) = &out[0] else {
        panic!("{out:?}")
    };
    let reply: Value = serde_json::from_slice(reply).unwrap();
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["error"]["code"], -32006);
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("disk full"));
    assert_eq!(gateway.in_flight(), 0);

    // Still broken: the next record fails too, and that request is refused.
    let call2 = call
        .to_vec()
        .iter()
        .map(|b| if *b == b'1' { b'2' } else { *b })
        .collect::<Vec<u8>>();
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(&call2), now, true);
    assert!(
        out.iter().all(|o| !matches!(o, Output::ToUpstream(_))),
        "{out:?}"
    );

    // The runtime reopened the file: traffic flows again.
    gateway.handle_input(
        Input::AuditFileOpened {
            sink: gatekit_core::AuditSinkId(0),
            existing_bytes: 0,
        },
        now,
    );
    let call3 = call
        .to_vec()
        .iter()
        .map(|b| if *b == b'1' { b'3' } else { *b })
        .collect::<Vec<u8>>();
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(&call3), now, false);
    assert!(
        out.iter().any(|o| matches!(o, Output::ToUpstream(_))),
        "{out:?}"
    );
}

#[test]
fn every_message_of_a_chunk_is_refused_when_their_shared_audit_write_fails() {
    let mut gateway = Gateway::new(&config_with_critical(true));
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    // Three allowed calls in one chunk: one audit write and one forward
    // carrying all three, had the write worked.
    let chunk: Vec<u8> = (1..=3)
        .flat_map(|id| {
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"read_file\"}}}}\n")
                .into_bytes()
        })
        .collect();
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(&chunk), now, true);
    let ids: Vec<Value> = out
        .iter()
        .map(|o| match o {
            Output::ToClient(reply) => {
                let reply: Value = serde_json::from_slice(reply).unwrap();
                assert_eq!(reply["error"]["code"], -32006, "{reply}");
                reply["id"].clone()
            }
            other => panic!("only refusals may go out: {other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(gateway.in_flight(), 0);

    // Working again: the three go out as one write, in order.
    gateway.handle_input(
        Input::AuditFileOpened {
            sink: gatekit_core::AuditSinkId(0),
            existing_bytes: 0,
        },
        now,
    );
    let again: Vec<u8> = String::from_utf8(chunk)
        .unwrap()
        .replace("\"id\":", "\"id\":1")
        .into_bytes();
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(&again), now, false);
    assert!(
        matches!(out.as_slice(), [Output::Audit(_), Output::ToUpstream(bytes)] if *bytes == again),
        "{out:?}"
    );
}

/// (length, capacity) of every forward to the upstream now queued.
fn upstream_buffers(gateway: &mut Gateway) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    loop {
        match gateway.poll_output() {
            Output::ToUpstream(bytes) => out.push((bytes.len(), bytes.capacity())),
            Output::Wait(_) => return out,
            _ => {}
        }
    }
}

/// The runtimes bound their queues by the length of what is queued, so a
/// forward must not hold much more memory than it carries, whatever the
/// rest of its chunk is.
#[test]
fn a_forward_holds_at_most_twice_what_it_carries() {
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    // One message, then 64 KiB of blank lines (skipped by the framer).
    let mut gateway = Gateway::new(&tutorial_config());
    let mut chunk = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}\n".to_vec();
    chunk.resize(64 * 1024, b'\n');
    gateway.handle_input(Input::ClientBytes(&chunk), now);
    let buffers = upstream_buffers(&mut gateway);
    assert_eq!(buffers.len(), 1, "{buffers:?}");
    assert!(buffers[0].1 <= 2 * buffers[0].0, "{buffers:?}");

    // Allowed calls between refused ones: no two forwards join, and none
    // may be sized for the rest of the chunk.
    let mut gateway = Gateway::new(&tutorial_config());
    let mut chunk = Vec::new();
    for id in 0..400 {
        let tool = if id % 2 == 0 { "read_file" } else { "rm" };
        chunk.extend(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\"}}}}\n").bytes());
    }
    gateway.handle_input(Input::ClientBytes(&chunk), now);
    let buffers = upstream_buffers(&mut gateway);
    assert_eq!(buffers.len(), 200);
    let len: usize = buffers.iter().map(|b| b.0).sum();
    let capacity: usize = buffers.iter().map(|b| b.1).sum();
    assert!(capacity <= 2 * len, "{len} bytes held in {capacity}");
}

#[test]
fn non_critical_audit_failure_keeps_proxying() {
    let mut gateway = Gateway::new(&config_with_critical(false));
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    let call = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\"}}\n";
    let out = drive_with_failing_audit(&mut gateway, Input::ClientBytes(call), now, true);
    assert!(matches!(out.as_slice(), [Output::ToUpstream(_)]), "{out:?}");
}

#[test]
fn server_response_whose_record_is_lost_is_withheld_from_the_client() {
    let mut gateway = Gateway::new(&config_with_critical(true));
    let now: Timestamp = "2024-06-16T10:30:15Z".parse().unwrap();
    drive_with_failing_audit(
        &mut gateway,
        Input::ClientBytes(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n"),
        now,
        false,
    );
    let out = drive_with_failing_audit(
        &mut gateway,
        Input::UpstreamBytes(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"secret\":1}}\n"),
        now,
        true,
    );
    let [Output::ToClient(reply)] = out.as_slice() else {
        panic!("{out:?}")
    };
    let reply = String::from_utf8_lossy(reply);
    assert!(
        reply.contains("-32006") && !reply.contains("secret"),
        "{reply}"
    );
}

#[test]
fn request_timeout_answers_the_client_cancels_at_the_server_and_drops_the_late_answer() {
    let mut config = tutorial_config();
    config.proxy.limits.request_timeout_ms = Some(1000);
    let mut h = Harness::new(config);
    let deadline = h.input(Input::ClientBytes(b"{\"jsonrpc\":\"2.0\",\"id\":\"slow\",\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\"}}\n"));
    assert_eq!(
        deadline,
        Some(h.now.checked_add(SignedDuration::from_secs(1)).unwrap())
    );
    h.advance(999);
    h.input(Input::Timeout);
    assert!(h.to_client.is_empty(), "an early timer does nothing");
    h.advance(1);
    assert_eq!(h.input(Input::Timeout), None, "no deadline left");
    assert_eq!(h.to_client[0]["id"], "slow");
    assert_eq!(h.to_client[0]["error"]["code"], -32007);
    assert_eq!(
        serde_json::from_str::<Value>(&h.to_upstream[1]).unwrap(),
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow","reason":"no answer from the upstream server within 1000 ms (proxy.limits.request_timeout_ms)"}})
    );
    let timeout = h
        .audit
        .iter()
        .find(|r| r["event_type"] == "TIMEOUT")
        .unwrap();
    assert_eq!(timeout["tool"], "read_file");
    assert_eq!(timeout["duration_ms"], 1000);
    h.upstream(r#"{"jsonrpc":"2.0","id":"slow","result":{}}"#);
    assert_eq!(h.to_client.len(), 1, "the late answer is not passed on");
    let late = h.audit.last().unwrap();
    assert_eq!(late["event_type"], "RESPONSE");
    assert_eq!(late["status"], "dropped");
}

#[test]
fn answered_requests_leave_no_timer_behind() {
    let mut config = tutorial_config();
    config.proxy.limits.request_timeout_ms = Some(1000);
    let mut h = Harness::new(config);
    h.client(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert_eq!(
        h.input(Input::UpstreamBytes(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n"
        )),
        None
    );
}

#[test]
fn cancelled_requests_pass_through_and_make_room_when_the_table_is_full() {
    let mut config = tutorial_config();
    config.proxy.limits.max_in_flight_requests = 1;
    let mut h = Harness::new(config);
    h.client(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"user"}}"#;
    h.client(cancel);
    assert_eq!(
        h.to_upstream[1],
        format!("{cancel}\n"),
        "the cancellation passes unchanged"
    );
    assert_eq!(h.audit.last().unwrap()["request_id"], "1");
    // The table is full, but the only entry was cancelled: room is made.
    h.client(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    assert_eq!(h.to_upstream.len(), 3);
    assert!(h.to_client.is_empty());
}

#[test]
fn output_closed_before_exit_still_reports_how_the_upstream_ended() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file"}}"#);
    let deadline = h
        .input(Input::UpstreamEof)
        .expect("waits briefly for the exit");
    assert!(h.to_client.is_empty());
    h.input(Input::UpstreamExited(ExitStatus::Code(3)));
    assert!(h.to_client[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exit code 3"));
    assert_eq!(h.actions, vec![Output::Exit(1)]);

    // An upstream that closes its output but keeps running is stopped.
    let mut h = Harness::tutorial();
    let deadline2 = h.input(Input::UpstreamEof).unwrap();
    assert_eq!(deadline2, deadline);
    h.now = deadline2;
    h.input(Input::Timeout);
    assert_eq!(h.actions, vec![Output::CloseUpstreamInput]);
}

#[test]
fn answers_still_reach_a_client_that_closed_its_input() {
    // `printf '…request…' | gatekit --config c.yaml` closes stdin at once but
    // still reads stdout: every request it sent must get its answer.
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    h.client(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    h.input(Input::ClientEof);
    h.upstream(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"}]}}"#);
    h.input(Input::UpstreamEof);
    h.input(Input::UpstreamExited(ExitStatus::Code(0)));
    assert_eq!(h.to_client.len(), 2, "{:?}", h.to_client);
    assert_eq!(h.to_client[0]["id"], 1);
    assert_eq!(h.to_client[1]["id"], 2);
    assert_eq!(
        h.to_client[1]["error"]["code"], -32002,
        "the unanswered one gets an error, not silence"
    );
}

#[test]
fn a_gateway_that_cannot_start_answers_every_request_that_came_in_one_chunk() {
    let mut h = Harness::tutorial();
    h.input(Input::UpstreamFailedToStart {
        reason: "command not found: npx",
    });
    h.input(Input::ClientBytes(
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n",
    ));
    let ids: Vec<&Value> = h.to_client.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)]);
    assert_eq!(h.actions, vec![Output::Exit(1)]);
}

#[test]
fn an_invalid_client_answer_to_a_server_request_is_not_answered_in_the_clients_id_space() {
    let mut h = Harness::tutorial();
    h.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file"}}"#);
    h.upstream(r#"{"jsonrpc":"2.0","id":3,"method":"roots/list"}"#);
    // The client's answer to the server's request 3 has a duplicate key.
    h.client(r#"{"jsonrpc":"2.0","id":3,"result":{"roots":[],"roots":[]}}"#);
    assert_eq!(
        h.to_client.len(),
        1,
        "only the server's request reached the client: {:?}",
        h.to_client
    );
    // The server hears that its request failed; the client's own request 3 is untouched.
    let to_server: Value = serde_json::from_str(h.to_upstream.last().unwrap()).unwrap();
    assert_eq!(to_server["id"], 3);
    assert_eq!(to_server["error"]["code"], -32600);
    h.upstream(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#);
    assert_eq!(h.to_client.len(), 2);
    assert!(h.to_client[1].get("result").is_some());
    // And an invalid server *request* does not fail the client's request with its id.
    h.client(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
    h.upstream(r#"{"jsonrpc":"2.0","id":4,"method":"roots/list","params":"x"}"#);
    h.upstream(r#"{"jsonrpc":"2.0","id":4,"result":{}}"#);
    assert_eq!(h.to_client.last().unwrap()["result"], json!({}));
}

#[test]
fn ids_of_requests_that_ended_unanswered_are_not_reused() {
    let mut config = tutorial_config();
    config.proxy.limits.request_timeout_ms = Some(100);
    let mut h = Harness::new(config);
    h.client(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    h.advance(100);
    h.input(Input::Timeout);
    assert_eq!(h.to_client[0]["error"]["code"], -32007);
    // Reusing id 5 while the old answer may still come is refused …
    h.client(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
    assert_eq!(h.to_client[1]["error"]["code"], -32600);
    // … so the late tools/list answer cannot pass for the ping's, unfiltered.
    h.upstream(r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"delete_file"}]}}"#);
    assert_eq!(h.to_client.len(), 2);
}

#[test]
fn a_server_flooding_bad_requests_is_not_answered() {
    let mut h = Harness::tutorial();
    for _ in 0..3 {
        h.upstream(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    }
    // The first is forwarded to the client; the duplicates are audited only.
    assert_eq!(h.to_client.len(), 1);
    assert!(
        h.to_upstream.is_empty(),
        "no replies pile up for a server that may not read"
    );
    assert_eq!(h.gateway.stats().upstream_invalid_lines, 2);
}
