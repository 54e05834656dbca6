//! Sessions of every MCP revision in use pass through unchanged.
//!
//! Each session is a script of lines from the client (`C`) and from the
//! server (`S`), shaped as the revision's specification shows them. Every
//! line must come out of the gateway byte for byte on the other side (no
//! tool here is outside the allowlist, so nothing is removed), and the
//! audit trail must pair every response with its request.

use gatekit_core::{Config, Gateway, Input, Output};
use jiff::Timestamp;
use serde_json::{json, Value};

enum Side {
    C,
    S,
}
use Side::{C, S};

fn config() -> Config {
    serde_json::from_value(json!({
        "proxy": {"upstream": {"command": "server"}},
        "plugins": {
            "auditing": [{"policy": "file_auditing", "config": {"output_file": "a.log"}}],
            "security": [{"policy": "tool_allowlist", "config": {"mode": "allowlist", "tools": ["get_weather", "echo"]}}]
        }
    }))
    .unwrap()
}

/// Runs `script`; returns (lines to client, lines to upstream, audit records).
fn run(script: &[(Side, &str)]) -> (Vec<String>, Vec<String>, Vec<Value>) {
    let mut gateway = Gateway::new(&config());
    let now: Timestamp = "2025-06-18T12:00:00Z".parse().unwrap();
    let (mut to_client, mut to_upstream, mut audit) = (Vec::new(), Vec::new(), Vec::new());
    for (side, line) in script {
        let bytes = format!("{line}\n");
        let input = match side {
            C => Input::ClientBytes(bytes.as_bytes()),
            S => Input::UpstreamBytes(bytes.as_bytes()),
        };
        gateway.handle_input(input, now);
        loop {
            match gateway.poll_output() {
                Output::ToClient(b) => {
                    to_client.push(String::from_utf8(b).unwrap().trim_end().to_owned())
                }
                Output::ToUpstream(b) => {
                    to_upstream.push(String::from_utf8(b).unwrap().trim_end().to_owned())
                }
                Output::Audit(w) => {
                    // One write may hold several records, one per line.
                    for record in w.bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        audit.push(serde_json::from_slice(record).unwrap());
                    }
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
    }
    (to_client, to_upstream, audit)
}

/// Everything each side said reaches the other side unchanged.
fn assert_transparent(name: &str, script: &[(Side, &str)]) -> Vec<Value> {
    let (to_client, to_upstream, audit) = run(script);
    let from_client: Vec<&str> = script
        .iter()
        .filter(|(s, _)| matches!(s, C))
        .map(|(_, l)| *l)
        .collect();
    let from_server: Vec<&str> = script
        .iter()
        .filter(|(s, _)| matches!(s, S))
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(
        to_upstream, from_client,
        "{name}: client lines changed on the way"
    );
    assert_eq!(
        to_client, from_server,
        "{name}: server lines changed on the way"
    );
    for record in &audit {
        assert_ne!(record["event_type"], "PROTOCOL_ERROR", "{name}: {record}");
        if record["event_type"] == "RESPONSE" {
            assert!(
                record.get("method").is_some(),
                "{name}: unpaired response {record}"
            );
        }
    }
    audit
}

#[test]
fn revision_2024_11_05() {
    assert_transparent(
        "2024-11-05",
        &[
            (
                C,
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"ExampleClient","version":"1.0.0"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2024-11-05","capabilities":{"logging":{},"prompts":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"tools":{"listChanged":true}},"serverInfo":{"name":"ExampleServer","version":"1.0.0"}}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"optional-cursor-value"}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_weather","description":"Get current weather information for a location","inputSchema":{"type":"object","properties":{"location":{"type":"string","description":"City name or zip code"}},"required":["location"]}}],"nextCursor":"next-page-cursor"}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"New York"},"_meta":{"progressToken":"abc123"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"abc123","progress":50,"total":100}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","logger":"database","data":{"error":"Connection failed","details":{"host":"localhost","port":5432}}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"Current weather in New York:\nTemperature: 72°F\nConditions: Partly cloudy"}],"isError":false}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":4,"method":"resources/list","params":{}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":4,"result":{"resources":[{"uri":"file:///project/src/main.rs","name":"main.rs","mimeType":"text/x-rust"}]}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"file:///project/src/main.rs"}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":5,"result":{"contents":[{"uri":"file:///project/src/main.rs","mimeType":"text/x-rust","text":"fn main() {\n    println!(\"Hello world!\");\n}"}]}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":6,"method":"resources/subscribe","params":{"uri":"file:///project/src/main.rs"}}"#,
            ),
            (S, r#"{"jsonrpc":"2.0","id":6,"result":{}}"#),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///project/src/main.rs"}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{"name":"code_review","arguments":{"code":"def hello():\n    print('world')"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":7,"result":{"description":"Code review prompt","messages":[{"role":"user","content":{"type":"text","text":"Please review this Python code"}}]}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":8,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"code_review"},"argument":{"name":"language","value":"py"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":8,"result":{"completion":{"values":["python","pytorch","pyside"],"total":10,"hasMore":true}}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":9,"method":"logging/setLevel","params":{"level":"info"}}"#,
            ),
            (S, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#),
            (C, r#"{"jsonrpc":"2.0","id":"ping-1","method":"ping"}"#),
            (S, r#"{"jsonrpc":"2.0","id":"ping-1","result":{}}"#),
            (S, r#"{"jsonrpc":"2.0","id":"s1","method":"ping"}"#),
            (C, r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#),
            (S, r#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#),
            (
                C,
                r#"{"jsonrpc":"2.0","id":1,"result":{"roots":[{"uri":"file:///home/user/projects/myproject","name":"My Project"}]}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":2,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"What is the capital of France?"}}],"maxTokens":100}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":2,"result":{"role":"assistant","content":{"type":"text","text":"The capital of France is Paris."},"model":"claude-3-sonnet-20240307","stopReason":"endTurn"}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":10,"reason":"User requested cancellation"}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
            ),
        ],
    );
}

#[test]
fn revision_2025_03_26_and_2025_06_18() {
    let audit = assert_transparent(
        "2025-06-18",
        &[
            (
                C,
                r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"ExampleClient","title":"Example Client","version":"1.0.0"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"ExampleServer","title":"Example Server","version":"1.0.0"},"instructions":"Optional instructions for the client"}}"#,
            ),
            (C, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            (
                S,
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","title":"Weather","inputSchema":{"type":"object"},"outputSchema":{"type":"object","properties":{"temperature":{"type":"number"}}},"annotations":{"readOnlyHint":true}}]}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"Paris"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1,"total":2,"message":"halfway"}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":"e1","method":"elicitation/create","params":{"message":"Please provide your GitHub username","requestedSchema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":"e1","result":{"action":"accept","content":{"name":"octocat"}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"{\"temperature\": 22.5}"},{"type":"resource_link","uri":"file:///project/src/main.rs","name":"main.rs"}],"structuredContent":{"temperature":22.5}}}"#,
            ),
        ],
    );
    let elicit = audit
        .iter()
        .find(|r| r["method"] == "elicitation/create" && r["event_type"] == "RESPONSE")
        .unwrap();
    assert_eq!(elicit["source"], "client");
}

#[test]
fn revision_2025_11_25_tasks() {
    assert_transparent(
        "2025-11-25",
        &[
            (
                C,
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"tasks":{"requests":{"tools":{"call":{}}}}},"clientInfo":{"name":"c","version":"1","icons":[{"src":"https://example.com/icon.png"}]}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tasks":{"list":{},"cancel":{},"requests":{"tools":{"call":{}}}}},"serverInfo":{"name":"s","version":"1"}}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"New York"},"task":{"ttl":60000}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":2,"result":{"task":{"taskId":"786512e2-9e0d-44bd-8f29-789f320fe840","status":"working","createdAt":"2025-11-25T10:30:00Z","ttl":60000,"pollInterval":5000}}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"786512e2-9e0d-44bd-8f29-789f320fe840","status":"completed"}}"#,
            ),
            (
                C,
                r#"{"jsonrpc":"2.0","id":3,"method":"tasks/result","params":{"taskId":"786512e2-9e0d-44bd-8f29-789f320fe840"}}"#,
            ),
            (
                S,
                r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"Sunny"}],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"786512e2-9e0d-44bd-8f29-789f320fe840"}}}}"#,
            ),
        ],
    );
}

#[test]
fn revision_2026_07_28_stateless_with_retried_calls() {
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"ExampleClient","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}"#;
    let discover = format!(
        r#"{{"jsonrpc":"2.0","id":"discover-1","method":"server/discover","params":{{{meta}}}}}"#
    );
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_weather","arguments":{{"location":"Paris"}},{meta}}}}}"#
    );
    let retry = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"get_weather","arguments":{{"location":"Paris"}},"inputResponses":{{"github_login":{{"action":"accept","content":{{"name":"octocat"}}}}}},"requestState":"AEAD-protected blob",{meta}}}}}"#
    );
    let audit = assert_transparent(
        "2026-07-28",
        &[
            (C, &discover),
            (
                S,
                r#"{"jsonrpc":"2.0","id":"discover-1","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"serverInfo":{"name":"ExampleServer","version":"1.0.0"},"instructions":"Weather.","ttlMs":3600000,"cacheScope":"public"}}"#,
            ),
            (C, &call),
            (
                S,
                r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"incomplete","inputRequests":{"github_login":{"method":"elicitation/create","params":{"mode":"form","message":"Please provide your GitHub username","requestedSchema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}},"requestState":"AEAD-protected blob"}}"#,
            ),
            (C, &retry),
            (
                S,
                r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","content":[{"type":"text","text":"Sunny"}]}}"#,
            ),
        ],
    );
    let checked: Vec<&Value> = audit
        .iter()
        .filter(|r| r["event_type"] == "REQUEST" && r["tool"] == "get_weather")
        .collect();
    assert_eq!(
        checked.len(),
        2,
        "the retried call is checked and audited again"
    );
    assert!(checked
        .iter()
        .all(|r| r["status"] == "ALLOWED" && r["plugin"] == "tool_allowlist"));
}

#[test]
fn a_2026_retry_of_a_blocked_tool_is_blocked_again() {
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    let script = [
        (
            C,
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"delete_file",{meta}}}}}"#
            ),
        ),
        (
            C,
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"delete_file","requestState":"x",{meta}}}}}"#
            ),
        ),
    ];
    let script: Vec<(Side, &str)> = script
        .iter()
        .map(|(s, l)| (if matches!(s, C) { C } else { S }, l.as_str()))
        .collect();
    let (to_client, to_upstream, _) = run(&script);
    assert!(to_upstream.is_empty());
    assert_eq!(to_client.len(), 2);
    assert!(to_client.iter().all(|l| l.contains("-32001")));
}
