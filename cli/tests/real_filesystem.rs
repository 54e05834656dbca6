//! The audit-logging tutorial, end to end: the `gatekit` binary with the
//! tutorial's own config, in front of the real
//! `@modelcontextprotocol/server-filesystem` (pinned in testdata/), playing
//! the tutorial's test prompts and checking what the tutorial promises.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use support::*;

/// A blocked tool the real server really offers (the tutorial's
/// `delete_file` does not exist in the filesystem server).
const BLOCKED_TOOL: &str = "move_file";

/// The tutorial's sandbox: readme.txt and projects/info.txt.
fn make_sandbox(dir: &TempDir) -> std::path::PathBuf {
    let sandbox = dir.join("claude-sandbox");
    std::fs::create_dir_all(sandbox.join("projects")).expect("create the sandbox");
    write_file(&sandbox.join("readme.txt"), "Hello from the sandbox!\n");
    write_file(&sandbox.join("projects/info.txt"), "Project info\n");
    sandbox
}

fn server_argv(server: &[String], sandbox: &Path) -> Vec<String> {
    let mut argv = server.to_vec();
    argv.push(sandbox.to_string_lossy().into_owned());
    argv
}

/// What the server itself answers to `initialize` and `tools/list`, without
/// the gateway: the raw initialize line and the tool names.
fn server_alone(argv: &[String], initialize: &Value) -> (String, Vec<String>) {
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    let mut server = Session::spawn(command, "server-filesystem");
    server.send(initialize);
    let init = server.response_raw(&initialize["id"]);
    server.notify("notifications/initialized", json!({}));
    let list = server.request(json!(2), "tools/list", json!({}));
    let finished = server.finish();
    assert!(
        finished.status.success(),
        "the server alone exited with {}",
        finished.status
    );
    (init.raw, tool_names(&list))
}

fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "claude-desktop-e2e", "version": "1.0.0"}
        }
    })
}

#[test]
fn tutorial_session_through_the_real_filesystem_server() {
    let Some(server) = real_server("server-filesystem") else {
        return;
    };
    let dir = TempDir::new("tutorial");
    let sandbox = make_sandbox(&dir);
    let argv = server_argv(&server, &sandbox);
    let (server_init_line, server_tools) = server_alone(&argv, &initialize_request());
    assert!(
        server_tools.iter().any(|t| t == BLOCKED_TOOL),
        "the real server no longer offers {BLOCKED_TOOL}: {server_tools:?}"
    );
    let config = write_tutorial_config(dir.path(), &argv);
    let audit_path = dir.join("logs/audit.log");
    assert!(
        !audit_path.parent().unwrap().exists(),
        "Gatekit must create logs/ itself"
    );

    let mut gateway = Session::gateway(&config);

    // initialize: the server's own answer passes unchanged, byte for byte.
    gateway.send(&initialize_request());
    let init = gateway.response_raw(&json!(1));
    assert_eq!(
        init.value["result"]["serverInfo"]["name"],
        "secure-filesystem-server"
    );
    assert_eq!(
        init.raw, server_init_line,
        "the initialize result must pass unchanged"
    );
    gateway.notify("notifications/initialized", json!({}));

    // tools/list: only the allowlisted tools remain.
    let list = gateway.request(json!(2), "tools/list", json!({}));
    let listed: BTreeSet<String> = tool_names(&list).into_iter().collect();
    let allowed: BTreeSet<String> = TUTORIAL_TOOLS.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        listed, allowed,
        "the client sees exactly the allowlisted tools"
    );
    let removed: Vec<String> = server_tools
        .iter()
        .filter(|t| !allowed.contains(*t))
        .cloned()
        .collect();
    assert!(
        !removed.is_empty(),
        "the server offers tools outside the allowlist: {server_tools:?}"
    );

    // "Can you list the files in my sandbox directory?"
    let root = sandbox.to_string_lossy().into_owned();
    let listing =
        result_text(&gateway.call_tool(json!(3), "list_directory", json!({"path": root})));
    assert!(listing.contains("[FILE] readme.txt"), "{listing}");
    assert!(listing.contains("[DIR] projects"), "{listing}");

    // "Please create a test file called 'audit-test.txt' ..."
    let test_file = sandbox.join("audit-test.txt");
    let write_args =
        json!({"path": test_file.to_string_lossy(), "content": "Testing audit logging!"});
    let written = gateway.call_tool(json!(4), "write_file", write_args.clone());
    result_text(&written);
    assert_eq!(
        std::fs::read_to_string(&test_file).expect("write_file really wrote the file"),
        "Testing audit logging!"
    );

    // "Can you read the contents of the readme.txt file?"
    let readme = sandbox.join("readme.txt");
    let read = result_text(&gateway.call_tool(
        json!(5),
        "read_file",
        json!({"path": readme.to_string_lossy()}),
    ));
    assert_eq!(read.trim_end(), "Hello from the sandbox!");

    // A blocked operation.
    let renamed = sandbox.join("renamed.txt");
    let blocked = gateway.call_tool(
        json!(6),
        BLOCKED_TOOL,
        json!({"source": readme.to_string_lossy(), "destination": renamed.to_string_lossy()}),
    );
    assert_eq!(blocked["id"], 6);
    assert_eq!(expect_error(&blocked, -32001), BLOCK_MESSAGE);
    assert!(
        readme.exists() && !renamed.exists(),
        "the blocked call must not run"
    );

    let finished = gateway.finish();
    assert!(
        finished.status.success(),
        "the gateway exits 0 when the client leaves: {}\n{}",
        finished.status,
        finished.stderr
    );
    let unexpected: Vec<&Value> = finished
        .unread
        .iter()
        .filter(|m| m.get("id").is_some())
        .collect();
    assert!(unexpected.is_empty(), "unexpected messages: {unexpected:?}");

    // The audit log, line by line.
    let audit = read_audit(&audit_path);
    check_common_fields(&audit);
    #[cfg(unix)]
    check_private(&audit_path);

    let expected_requests: [(&str, &str, Option<&str>, &str); 6] = [
        ("1", "initialize", None, "ALLOWED"),
        ("2", "tools/list", None, "ALLOWED"),
        ("3", "tools/call", Some("list_directory"), "ALLOWED"),
        ("4", "tools/call", Some("write_file"), "ALLOWED"),
        ("5", "tools/call", Some("read_file"), "ALLOWED"),
        ("6", "tools/call", Some(BLOCKED_TOOL), "BLOCKED"),
    ];
    let client_requests: Vec<&Value> = records(&audit, "REQUEST")
        .into_iter()
        .filter(|r| r["source"] == "client")
        .collect();
    assert_eq!(
        client_requests.len(),
        6,
        "one REQUEST per request:\n{}",
        show(&audit)
    );
    for (id, method, tool, status) in expected_requests {
        let request = record_for(&audit, "REQUEST", id);
        assert_eq!(request["method"], method, "{request}");
        assert_eq!(request["status"], status, "{request}");
        assert_eq!(request["source"], "client", "{request}");
        match tool {
            Some(tool) => {
                assert_eq!(request["tool"], tool, "{request}");
                assert_eq!(request["plugin"], "tool_allowlist", "{request}");
            }
            None => assert!(request.get("tool").is_none(), "{request}"),
        }
        let response = record_for(&audit, "RESPONSE", id);
        assert_eq!(response["method"], method, "{response}");
        if let Some(tool) = tool {
            assert_eq!(response["tool"], tool, "{response}");
        }
        let position = |r: &Value| audit.iter().position(|x| x == r).unwrap();
        assert!(
            position(request) < position(response),
            "REQUEST before RESPONSE for {id}"
        );
        if status == "ALLOWED" {
            assert_eq!(response["status"], "success", "{response}");
            assert_eq!(response["source"], "server", "{response}");
            assert!(
                response["duration_ms"].is_u64(),
                "a forwarded request's response has duration_ms: {response}"
            );
        } else {
            assert_eq!(response["status"], "error", "{response}");
            assert_eq!(response["error_code"], -32001, "{response}");
        }
    }
    assert_eq!(
        record_for(&audit, "REQUEST", "3")["reason"],
        "Request approved"
    );
    assert_eq!(
        record_for(&audit, "REQUEST", "3")["params"],
        json!({"path": root})
    );
    assert_eq!(record_for(&audit, "REQUEST", "4")["params"], write_args);
    assert_eq!(
        records(&audit, "RESPONSE").len(),
        6,
        "one RESPONSE per response:\n{}",
        show(&audit)
    );

    let blocks = records(&audit, "SECURITY_BLOCK");
    assert_eq!(blocks.len(), 1, "{}", show(&audit));
    let block = blocks[0];
    assert_eq!(block["method"], "tools/call");
    assert_eq!(block["tool"], BLOCKED_TOOL);
    assert_eq!(
        block["reason"],
        format!("Tool '{BLOCKED_TOOL}' is not in allowlist")
    );
    assert_eq!(block["request_id"], "6");
    assert_eq!(block["plugin"], "tool_allowlist");
    assert_eq!(block["plugin_metadata"]["mode"], "allowlist");

    let filtered = records(&audit, "TOOLS_FILTERED");
    assert_eq!(filtered.len(), 1, "{}", show(&audit));
    let filtered = filtered[0];
    assert_eq!(filtered["method"], "tools/list");
    assert_eq!(filtered["request_id"], "2");
    assert_eq!(filtered["plugin"], "tool_allowlist");
    assert_eq!(
        filtered["plugin_metadata"]["filtered_count"],
        removed.len(),
        "{filtered}"
    );
    assert_eq!(
        filtered["reason"],
        format!("Filtered {} tools from response", removed.len())
    );
    let filtered_tools: BTreeSet<String> = filtered["plugin_metadata"]["filtered_tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(filtered_tools, removed.into_iter().collect::<BTreeSet<_>>());

    let notifications = records(&audit, "NOTIFICATION");
    assert!(
        notifications
            .iter()
            .any(|n| n["method"] == "notifications/initialized" && n["source"] == "client"),
        "{}",
        show(&audit)
    );
    assert_eq!(
        records(&audit, "PROTOCOL_ERROR").len(),
        0,
        "{}",
        show(&audit)
    );
    assert_eq!(
        records(&audit, "UPSTREAM_STARTED").len(),
        1,
        "{}",
        show(&audit)
    );
    let exited = records(&audit, "UPSTREAM_EXITED");
    assert_eq!(exited.len(), 1, "{}", show(&audit));
    assert_eq!(
        exited[0]["status"], "success",
        "the server exits 0 when its stdin closes"
    );
}

/// The system log lines the tutorial shows under "What happens behind the
/// scenes", in that order, on stderr.
#[test]
fn tutorial_log_lines_appear_on_stderr() {
    let Some(server) = real_server("server-filesystem") else {
        return;
    };
    let dir = TempDir::new("tutorial-log");
    let sandbox = make_sandbox(&dir);
    let config = write_tutorial_config(dir.path(), &server_argv(&server, &sandbox));
    let mut gateway = Session::gateway(&config);
    gateway.send(&initialize_request());
    gateway.response(&json!(1));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let expected = [
        format!(
            "[INFO] gatekit.main: Loading configuration from {}",
            config.display()
        ),
        "[INFO] gatekit.main: Starting Gatekit MCP Gateway".to_owned(),
        "[INFO] gatekit.plugins.manager: Loaded auditing plugin: file_auditing".to_owned(),
        "[INFO] gatekit.plugins.manager: Loaded security plugin: tool_allowlist".to_owned(),
        "[INFO] gatekit.proxy.server: Connected to upstream server".to_owned(),
        "[INFO] gatekit.proxy.server: MCPProxy now accepting client connections".to_owned(),
    ];
    let lines: Vec<&str> = finished.stderr.lines().collect();
    let mut from = 0;
    for wanted in &expected {
        match lines[from..].iter().position(|l| l == wanted) {
            Some(at) => from += at + 1,
            None => panic!(
                "stderr lacks the tutorial's line {wanted:?} (after the previous ones)\n--- stderr ---\n{}",
                finished.stderr
            ),
        }
    }
}
