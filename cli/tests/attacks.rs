//! Every attack class in PROTOCOL.md ("Attacks that real MCP proxies fell
//! for"), each through the whole binary against a server that records every
//! line it receives. Each test ends with an allowed sentinel call, so the
//! record is known to hold everything sent before it, and then proves the
//! blocked call never reached the server.

mod support;

use serde_json::{json, Value};
use support::*;

/// The tools the policy allows (test-upstream also offers delete_file & co).
const ALLOWED: [&str; 3] = ["echo", "slow", "garbage"];

struct Attack {
    _dir: TempDir,
    record: std::path::PathBuf,
    gateway: Session,
}

impl Attack {
    fn start(label: &str, configure: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Attack {
        let dir = TempDir::new(label);
        let record = dir.join("received.jsonl");
        let record_arg = record.to_string_lossy().into_owned();
        let config = configure(
            GatewayConfig::new(test_upstream(&["--record", &record_arg])).allow(&ALLOWED),
        );
        let mut gateway = Session::gateway(&config.write(dir.path()));
        gateway.initialize(json!("init"));
        Attack {
            _dir: dir,
            record,
            gateway,
        }
    }

    /// Sends an allowed call and waits for it, so everything before it has
    /// reached the server; returns every line the server received.
    fn received(mut self) -> Vec<String> {
        let sentinel = self
            .gateway
            .call_tool(json!("sentinel"), "echo", json!({"done": true}));
        result_text(&sentinel);
        let finished = self.gateway.finish();
        assert!(finished.status.success(), "{}", finished.stderr);
        let text =
            std::fs::read_to_string(&self.record).expect("the server recorded what it received");
        text.lines().map(str::to_owned).collect()
    }
}

fn assert_never_received(received: &[String], needle: &str) {
    let hits: Vec<&String> = received.iter().filter(|l| l.contains(needle)).collect();
    assert!(
        hits.is_empty(),
        "the server received {needle:?}:\n{hits:#?}"
    );
}

#[test]
fn attack_1_batch_hiding_a_call() {
    let mut attack = Attack::start("batch", |c| c);
    attack.gateway.send_line(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{}}}]"#);
    let reply = attack.gateway.response(&Value::Null);
    expect_error(&reply, -32600);
    assert_never_received(&attack.received(), "delete_file");
}

#[test]
fn attack_2_duplicate_keys() {
    let mut attack = Attack::start("dupkeys", |c| c);
    // The gateway would check one "name", the server might run the other.
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"name":"delete_file"}}"#);
    expect_error(&attack.gateway.response(&json!(1)), -32600);
    // The same trick one level down, and with an escaped duplicate key.
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"path":"a","path":"/etc/passwd"}}}"#);
    expect_error(&attack.gateway.response(&json!(2)), -32600);
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","n\u0061me":"delete_file"}}"#);
    expect_error(&attack.gateway.response(&json!(3)), -32600);
    let received = attack.received();
    assert_never_received(&received, "delete_file");
    assert_never_received(&received, "passwd");
}

#[test]
fn attack_2b_keys_that_differ_only_in_case() {
    // Go's encoding/json (and other case-insensitive decoders) match
    // `Name`, `Method` and `paramſ` to `name`, `method` and `params`, and the
    // last one wins: the server would run what the gateway never checked.
    let mut attack = Attack::start("casekeys", |c| c);
    let tricks = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping","Method":"tools/call","params":{"name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"},"paramſ":{"name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","\u212Aind":1,"kind":2,"NAME":"delete_file"}}"#,
    ];
    for (i, line) in tricks.iter().enumerate() {
        attack.gateway.send_line(line);
        expect_error(&attack.gateway.response(&json!(i + 1)), -32600);
    }
    assert_never_received(&attack.received(), "delete_file");
}

#[test]
fn attack_3_listed_if_and_only_if_callable() {
    let mut attack = Attack::start("listed", |c| c);
    let list = attack.gateway.request(json!(1), "tools/list", json!({}));
    let listed: Vec<String> = list["result"]["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .map(|t| t["name"].as_str().expect("named").to_owned())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["echo", "garbage", "slow"],
        "only the allowed tools are listed"
    );
    // Everything listed is callable …
    let echo = attack.gateway.call_tool(json!(2), "echo", json!({}));
    result_text(&echo);
    // … and what is not listed is not callable.
    for (id, tool) in ["delete_file", "read_file", "crash"].iter().enumerate() {
        expect_error(
            &attack.gateway.call_tool(json!(10 + id), tool, json!({})),
            -32001,
        );
    }
    let received = attack.received();
    for tool in ["delete_file", "read_file", "crash"] {
        assert_never_received(&received, &format!("\"name\":\"{tool}\""));
    }
}

#[test]
fn attack_4_case_unicode_and_escapes() {
    let mut attack = Attack::start("spelling", |c| c);
    let tricks = [
        r#""Echo""#,
        r#""ECHO""#,
        r#""echo ""#,
        r#""ｅcho""#,
        r#""e\u0301cho""#,
        r#""delete\u005ffile""#,
        r#""\u0064elete_file""#,
    ];
    for (id, name) in tricks.iter().enumerate() {
        attack
            .gateway
            .send_line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{name},"arguments":{{}}}}}}"#));
        expect_error(&attack.gateway.response(&json!(id)), -32001);
    }
    let received = attack.received();
    assert_eq!(
        received.iter().filter(|l| l.contains("tools/call")).count(),
        1,
        "only the sentinel: {received:#?}"
    );
}

#[test]
fn attack_5_notification_carrying_a_call() {
    let mut attack = Attack::start("notification", |c| c);
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"x"}}}"#);
    assert_never_received(&attack.received(), "delete_file");
}

#[test]
fn attack_6_unknown_and_duplicate_ids() {
    let mut attack = Attack::start("ids", |c| c);
    // A response to a request the server never made is not passed on.
    attack
        .gateway
        .send_line(r#"{"jsonrpc":"2.0","id":"forged","result":{"approve":true}}"#);
    // A second request with an id still in flight is refused.
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"ms":300}}}"#);
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"second":true}}}"#);
    let first = attack.gateway.response(&json!(7));
    expect_error(&first, -32600);
    let second = attack.gateway.response(&json!(7));
    assert_eq!(
        result_text(&second),
        "done",
        "the original request still gets its answer"
    );
    let received = attack.received();
    assert_never_received(&received, "forged");
    assert_never_received(&received, "second");
}

#[test]
fn attack_7_a_policy_that_cannot_decide_blocks() {
    let mut attack = Attack::start("undecidable", |c| c);
    let undecidable = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"marker":"m1"}}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":null,"arguments":{"marker":"m2"}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":["echo"],"arguments":{"marker":"m3"}}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":{"n":"echo"},"arguments":{"marker":"m4"}}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":["echo",{"marker":"m5"}]}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call"}"#,
    ];
    for (i, line) in undecidable.iter().enumerate() {
        attack.gateway.send_line(line);
        let reply = attack.gateway.response(&json!(i + 1));
        assert_eq!(reply["error"]["code"], -32001, "{line}: {reply}");
    }
    let received = attack.received();
    assert_never_received(&received, "marker");
    assert_eq!(
        received.iter().filter(|l| l.contains("tools/call")).count(),
        1,
        "{received:#?}"
    );
}

#[test]
fn attack_8_unbounded_lines_and_in_flight_tables() {
    let mut attack = Attack::start("bounds", |c| {
        c.max_message_bytes(4096).max_in_flight_requests(2)
    });
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{{"name":"echo","arguments":{{"blob":"{}"}}}}}}"#,
        "A".repeat(100_000)
    );
    attack.gateway.send_line(&huge);
    expect_error(&attack.gateway.response(&json!("big")), -32004);
    // Two slow calls fill the table; the third is refused, not queued.
    for id in ["s1", "s2"] {
        attack.gateway.send_line(&format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"slow","arguments":{{"ms":400}}}}}}"#));
    }
    attack.gateway.send_line(r#"{"jsonrpc":"2.0","id":"s3","method":"tools/call","params":{"name":"echo","arguments":{"third":true}}}"#);
    expect_error(&attack.gateway.response(&json!("s3")), -32004);
    assert_eq!(result_text(&attack.gateway.response(&json!("s1"))), "done");
    assert_eq!(result_text(&attack.gateway.response(&json!("s2"))), "done");
    let received = attack.received();
    assert_never_received(&received, "AAAA");
    assert_never_received(&received, "third");
}

#[test]
fn attack_9_garbage_from_the_server_is_not_answered() {
    let mut attack = Attack::start("storm", |c| c);
    for id in 0..5 {
        // The tool makes the server print a non-JSON line before answering.
        result_text(&attack.gateway.call_tool(json!(id), "garbage", json!({})));
    }
    let received = attack.received();
    // Everything the server received came from the client: no error replies
    // to its garbage, which it could answer with more garbage.
    for line in &received {
        let message: Value = serde_json::from_str(line).expect("the server only received JSON");
        assert!(
            message.get("method").is_some(),
            "the gateway answered the server: {line}"
        );
    }
    assert_eq!(
        received.len(),
        1 + 5 + 1,
        "initialize, five calls, the sentinel: {received:#?}"
    );
}
