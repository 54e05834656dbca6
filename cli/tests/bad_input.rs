//! What a client can send that is not a valid MCP message: each gets the
//! right JSON-RPC error and an audit record, nothing of it reaches the
//! server, and the session goes on.

mod support;

use serde_json::{json, Value};
use support::*;

/// A gateway in front of `test-upstream --record FILE` (allowing echo and
/// read_file), already initialized; returns it with the record file's path.
fn start(dir: &TempDir, max_message_bytes: Option<usize>) -> (Session, std::path::PathBuf) {
    let record = dir.join("received.jsonl");
    let upstream = test_upstream(&["--record", &record.to_string_lossy()]);
    let mut config = GatewayConfig::new(upstream).allow(&["echo", "read_file"]);
    if let Some(bytes) = max_message_bytes {
        config = config.max_message_bytes(bytes);
    }
    let mut gateway = Session::gateway(&config.write(dir.path()));
    let init = gateway.initialize(json!(0));
    assert_eq!(
        init["result"]["serverInfo"]["name"], "test-upstream",
        "{init}"
    );
    (gateway, record)
}

/// The lines the server received, after the gateway has exited.
fn received(record: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(record)
        .expect("the server recorded what it received")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Sends `line` and returns the gateway's immediate answer (an error).
fn answer_to(gateway: &mut Session, line: &[u8]) -> Value {
    gateway.send_raw(line);
    gateway.recv().expect("an answer").value
}

#[test]
fn malformed_lines_get_json_rpc_errors_and_the_session_goes_on() {
    let dir = TempDir::new("malformed");
    let (mut gateway, record) = start(&dir, None);

    let parse = answer_to(&mut gateway, b"{not json\n");
    expect_error(&parse, -32700);
    assert_eq!(parse["id"], Value::Null, "{parse}");

    let batch = answer_to(
        &mut gateway,
        br#"[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{}}}]
"#,
    );
    expect_error(&batch, -32600);
    assert_eq!(batch["id"], Value::Null, "{batch}");

    let no_method = answer_to(&mut gateway, b"{\"jsonrpc\":\"2.0\",\"id\":5}\n");
    expect_error(&no_method, -32600);
    assert_eq!(no_method["id"], 5, "{no_method}");

    let not_utf8 = answer_to(
        &mut gateway,
        b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"\xff\xfe\"}\n",
    );
    expect_error(&not_utf8, -32700);
    assert_eq!(not_utf8["id"], Value::Null, "{not_utf8}");

    // The session goes on: blank lines are ignored, a CRLF line works, and
    // so does a line that arrives in pieces.
    gateway.send_raw(b"\n\r\n");
    gateway.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\r\n");
    assert_eq!(gateway.response(&json!(7))["result"], json!({}));
    gateway.send_raw(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","#);
    std::thread::sleep(std::time::Duration::from_millis(50));
    gateway.send_raw(
        br#""params":{"name":"echo","arguments":{"a":1}}}
"#,
    );
    assert_eq!(result_text(&gateway.response(&json!(9))), r#"{"a":1}"#);

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.unread.is_empty(),
        "one answer per line: {:?}",
        finished.unread
    );

    let audit = read_audit(&dir.join("logs/audit.log"));
    check_common_fields(&audit);
    let errors = records(&audit, "PROTOCOL_ERROR");
    assert_eq!(
        errors.len(),
        4,
        "one PROTOCOL_ERROR per bad line:\n{}",
        show(&audit)
    );
    for error in &errors {
        assert_eq!(error["source"], "client", "{error}");
        assert_eq!(error["status"], "error", "{error}");
        assert!(
            error["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{error}"
        );
    }
    assert_eq!(errors[2]["request_id"], "5");

    let lines = received(&record);
    assert!(
        lines.iter().all(|l| !l.starts_with('[')),
        "a batch reached the server: {lines:?}"
    );
    let forwarded: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .collect();
    let ids: Vec<&Value> = forwarded.iter().map(|m| &m["id"]).collect();
    assert_eq!(
        ids,
        [&json!(0), &json!(7), &json!(9)],
        "only the valid requests reached the server: {lines:?}"
    );
}

#[test]
fn duplicate_keys_never_reach_the_server() {
    let dir = TempDir::new("duplicates");
    let (mut gateway, record) = start(&dir, None);
    let attempts: [(i64, &str); 4] = [
        // The gateway would check one name, the server might run the other.
        (
            1,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file"}}"#,
        ),
        (
            2,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","name":"echo"}}"#,
        ),
        // Deeper down, and at the top level.
        (
            3,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a","path":"/etc/shadow"}}}"#,
        ),
        (
            4,
            r#"{"jsonrpc":"2.0","id":4,"method":"ping","method":"tools/call","params":{"name":"delete_file"}}"#,
        ),
    ];
    for (id, line) in attempts {
        let answer = answer_to(&mut gateway, format!("{line}\n").as_bytes());
        expect_error(&answer, -32600);
        assert!(answer["id"] == id || answer["id"].is_null(), "{answer}");
    }
    assert_eq!(
        result_text(&gateway.call_tool(json!(5), "echo", json!({}))),
        "{}"
    );

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let lines = received(&record);
    let forwarded: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .collect();
    let ids: Vec<&Value> = forwarded.iter().map(|m| &m["id"]).collect();
    assert_eq!(
        ids,
        [&json!(0), &json!(5)],
        "no message with a duplicate key reached the server: {lines:?}"
    );

    let audit = read_audit(&dir.join("logs/audit.log"));
    assert_eq!(
        records(&audit, "PROTOCOL_ERROR").len(),
        4,
        "{}",
        show(&audit)
    );
}

#[test]
fn over_long_lines_are_answered_with_their_id_and_never_forwarded() {
    let dir = TempDir::new("overlong");
    let (mut gateway, record) = start(&dir, Some(2000));
    let big = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                     "params": {"name": "echo", "arguments": {"blob": "x".repeat(10_000)}}});
    gateway.send(&big);
    let answer = gateway.response(&json!(77));
    expect_error(&answer, -32004);
    assert_eq!(
        result_text(&gateway.call_tool(json!(78), "echo", json!({"small": true}))),
        r#"{"small":true}"#
    );

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let lines = received(&record);
    assert!(
        lines.iter().all(|l| !l.contains("xxxx")),
        "the over-long line reached the server"
    );
    assert_eq!(lines.len(), 2, "initialize and the small echo: {lines:?}");
    let audit = read_audit(&dir.join("logs/audit.log"));
    let errors = records(&audit, "PROTOCOL_ERROR");
    assert_eq!(errors.len(), 1, "{}", show(&audit));
    assert_eq!(errors[0]["request_id"], "77");
}

#[test]
fn invalid_ids_and_versions_are_invalid_requests() {
    let dir = TempDir::new("ids");
    let (mut gateway, record) = start(&dir, None);
    for line in [
        r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#,
        r#"{"id":4,"method":"ping"}"#,
        r#""just a string""#,
    ] {
        let answer = answer_to(&mut gateway, format!("{line}\n").as_bytes());
        let code = answer.pointer("/error/code").and_then(Value::as_i64);
        assert_eq!(code, Some(-32600), "{line} → {answer}");
    }
    gateway.request(json!(9), "ping", json!({}));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        received(&record).len(),
        2,
        "initialize and the last ping only"
    );
}
