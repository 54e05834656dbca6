//! The gateway binary in front of `test-upstream`, a server that misbehaves
//! on demand: crashes, garbage on stdout, slow answers, server→client
//! requests, paging, and processes that refuse to stop.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// Every test-upstream tool except `delete_file`.
const ALLOWED: [&str; 9] = [
    "echo",
    "slow",
    "crash",
    "garbage",
    "notify",
    "ask_client",
    "read_file",
    "write_file",
    "list_directory",
];

/// A gateway in `dir` in front of `test-upstream flags`, allowing [`ALLOWED`].
fn start(dir: &TempDir, flags: &[&str]) -> Session {
    let config = GatewayConfig::new(test_upstream(flags))
        .allow(&ALLOWED)
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(0));
    assert_eq!(
        init["result"]["serverInfo"]["name"], "test-upstream",
        "{init}"
    );
    gateway.notify("notifications/initialized", json!({}));
    gateway
}

fn audit_of(dir: &TempDir) -> Vec<Value> {
    let audit = read_audit(&dir.join("logs/audit.log"));
    check_common_fields(&audit);
    audit
}

#[test]
fn upstream_crash_mid_call_answers_pending_requests_and_exits_non_zero() {
    let dir = TempDir::new("crash");
    let mut gateway = start(&dir, &[]);
    // One request still waiting when the server dies, and the one that kills it.
    gateway.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "slow", "arguments": {"ms": 60000}}}));
    let crash = gateway.call_tool(json!(2), "crash", json!({}));
    let message = expect_error(&crash, -32002);
    // The runtime may see the closed stdout before the exit status, so the
    // reason names either; the audit record below always has the status.
    assert!(
        message.contains("upstream"),
        "the reason blames the upstream: {message}"
    );
    let slow = gateway.response(&json!(1));
    expect_error(&slow, -32002);

    let finished = gateway.finish_without_closing();
    assert!(
        !finished.status.success(),
        "the server went away under a connected client: the gateway must exit non-zero\n{}",
        finished.stderr
    );
    let audit = audit_of(&dir);
    let exited = records(&audit, "UPSTREAM_EXITED");
    assert_eq!(exited.len(), 1, "{}", show(&audit));
    assert_eq!(exited[0]["status"], "error");
    assert!(
        exited[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("exit code 3"),
        "{}",
        exited[0]
    );
    for id in ["1", "2"] {
        let response = record_for(&audit, "RESPONSE", id);
        assert_eq!(response["status"], "error", "{response}");
        assert_eq!(response["error_code"], -32002, "{response}");
    }
    assert_eq!(record_for(&audit, "RESPONSE", "2")["tool"], "crash");
}

#[test]
fn banner_and_garbage_lines_never_reach_the_client() {
    let dir = TempDir::new("garbage");
    // The initialize answer in `start` already came after the banner.
    let mut gateway = start(&dir, &["--banner"]);
    let garbage = gateway.call_tool(json!(1), "garbage", json!({}));
    assert_eq!(result_text(&garbage), "ok: garbage");
    let echo = gateway.call_tool(json!(2), "echo", json!({"after": "garbage"}));
    assert_eq!(
        serde_json::from_str::<Value>(&result_text(&echo)).unwrap(),
        json!({"after": "garbage"})
    );

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.unread.is_empty(),
        "nothing else reached the client: {:?}",
        finished.unread
    );
    for line in [
        "test-upstream starting (banner on stdout)",
        "this is not json",
    ] {
        assert!(
            finished.stderr.contains(line),
            "stderr should log the dropped line {line:?}:\n{}",
            finished.stderr
        );
    }
    let audit = audit_of(&dir);
    let errors = records(&audit, "PROTOCOL_ERROR");
    assert_eq!(errors.len(), 2, "{}", show(&audit));
    assert!(
        errors.iter().all(|e| e["source"] == "server"),
        "{}",
        show(&audit)
    );
}

#[test]
fn concurrent_calls_come_back_out_of_order_and_are_paired() {
    let dir = TempDir::new("slow");
    let mut gateway = start(&dir, &[]);
    gateway.send(&json!({"jsonrpc": "2.0", "id": "s", "method": "tools/call",
                         "params": {"name": "slow", "arguments": {"ms": 400}}}));
    gateway.send(&json!({"jsonrpc": "2.0", "id": "e", "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"n": 1}}}));
    let first = gateway.recv().expect("a response");
    let second = gateway.recv().expect("a response");
    assert_eq!(
        first.value["id"], "e",
        "the fast answer overtakes the slow one: {}",
        first.raw
    );
    assert_eq!(
        serde_json::from_str::<Value>(&result_text(&first.value)).unwrap(),
        json!({"n": 1})
    );
    assert_eq!(second.value["id"], "s", "{}", second.raw);
    assert_eq!(result_text(&second.value), "done");

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let audit = audit_of(&dir);
    let slow = record_for(&audit, "RESPONSE", "s");
    let echo = record_for(&audit, "RESPONSE", "e");
    assert_eq!(slow["tool"], "slow");
    assert_eq!(echo["tool"], "echo");
    assert_eq!(slow["method"], "tools/call");
    let slow_ms = slow["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no duration_ms: {slow}"));
    assert!(slow_ms >= 400, "the slow call took at least 400 ms: {slow}");
    assert!(echo["duration_ms"].is_u64(), "{echo}");
    let position = |r: &Value| audit.iter().position(|x| x == r).unwrap();
    assert!(
        position(echo) < position(slow),
        "records follow the order of the answers"
    );
}

#[test]
fn upstream_command_not_found_is_told_to_the_client() {
    let dir = TempDir::new("not-found");
    let program = "gatekit-e2e-no-such-command";
    let config = GatewayConfig::new(vec![program.to_owned(), "--flag".to_owned()])
        .allow(&ALLOWED)
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(1));
    assert_eq!(init["id"], 1, "{init}");
    let code = init
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("expected an error: {init}"));
    assert!(
        (-32099..=-32000).contains(&code),
        "a gateway error code: {init}"
    );
    let message = init["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("command not found"), "{message}");
    assert!(
        message.contains(program),
        "the message names the command: {message}"
    );
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("command not found"),
        "{}",
        finished.stderr
    );
}

#[test]
fn tools_list_filter_applies_to_every_page() {
    let dir = TempDir::new("pages");
    let allowed = ["echo", "notify", "write_file"];
    let config = GatewayConfig::new(test_upstream(&["--page-size", "3"]))
        .allow(&allowed)
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for id in 1..=10 {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let page = gateway.request(json!(id), "tools/list", params);
        pages.push(tool_names(&page));
        match page.pointer("/result/nextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // 10 tools, 3 per page: every page is filtered, the cursors survive.
    assert_eq!(
        pages,
        vec![vec!["echo"], vec!["notify"], vec!["write_file"], vec![]]
    );

    // Listed ⇔ callable.
    let notify = gateway.call_tool(json!(20), "notify", json!({}));
    assert_eq!(result_text(&notify), "ok: notify");
    let methods: Vec<Value> = gateway
        .take_unmatched()
        .iter()
        .map(|m| m["method"].clone())
        .collect();
    assert_eq!(
        methods,
        [
            json!("notifications/progress"),
            json!("notifications/message")
        ],
        "server notifications pass through"
    );
    expect_error(
        &gateway.call_tool(json!(21), "slow", json!({"ms": 1})),
        -32001,
    );

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let audit = audit_of(&dir);
    let filtered = records(&audit, "TOOLS_FILTERED");
    let counts: Vec<&Value> = filtered
        .iter()
        .map(|r| &r["plugin_metadata"]["filtered_count"])
        .collect();
    assert_eq!(
        counts,
        [&json!(2), &json!(2), &json!(2), &json!(1)],
        "{}",
        show(&audit)
    );
    assert_eq!(
        filtered[3]["plugin_metadata"]["filtered_tools"],
        json!(["delete_file"])
    );
    let from_server: Vec<&Value> = records(&audit, "NOTIFICATION")
        .into_iter()
        .filter(|r| r["source"] == "server")
        .collect();
    assert_eq!(from_server.len(), 2, "{}", show(&audit));
}

#[test]
fn server_to_client_requests_reach_the_client_and_answers_reach_the_server() {
    let dir = TempDir::new("ask");
    let mut gateway = start(&dir, &[]);
    // The second call reuses, as a client id, the id the server will use for
    // its own second request: the two directions are separate id spaces.
    for (call_id, answer) in [
        (json!(10), "first answer"),
        (json!("srv-2"), "second answer"),
    ] {
        gateway.send(
            &json!({"jsonrpc": "2.0", "id": call_id, "method": "tools/call",
                             "params": {"name": "ask_client", "arguments": {}}}),
        );
        let asked = gateway.incoming_request();
        assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
        let server_id = asked["id"].clone();
        gateway.send(&json!({"jsonrpc": "2.0", "id": server_id, "result": {
            "role": "assistant", "model": "e2e", "content": {"type": "text", "text": answer}}}));
        let result = gateway.response(&call_id);
        let text = result_text(&result);
        let echoed: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(
            echoed["content"]["text"], answer,
            "the server got the client's answer: {result}"
        );
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let audit = audit_of(&dir);
    for server_id in ["srv-1", "srv-2"] {
        let asked = audit
            .iter()
            .find(|r| {
                r["event_type"] == "REQUEST"
                    && r["source"] == "server"
                    && r["request_id"] == server_id
            })
            .unwrap_or_else(|| {
                panic!(
                    "no REQUEST record from the server for {server_id}:\n{}",
                    show(&audit)
                )
            });
        assert_eq!(asked["method"], "sampling/createMessage");
        let answered = audit
            .iter()
            .find(|r| {
                r["event_type"] == "RESPONSE"
                    && r["source"] == "client"
                    && r["request_id"] == server_id
            })
            .unwrap_or_else(|| {
                panic!(
                    "no RESPONSE record from the client for {server_id}:\n{}",
                    show(&audit)
                )
            });
        assert_eq!(answered["method"], "sampling/createMessage");
        assert_eq!(answered["status"], "success");
    }
    let call = audit
        .iter()
        .find(|r| {
            r["event_type"] == "RESPONSE" && r["source"] == "server" && r["request_id"] == "srv-2"
        })
        .unwrap_or_else(|| panic!("no RESPONSE for the client's call srv-2:\n{}", show(&audit)));
    assert_eq!(call["tool"], "ask_client");
}

#[test]
fn blocked_calls_never_reach_the_server() {
    let dir = TempDir::new("record");
    let record = dir.join("received by server.jsonl");
    let record_arg = record.to_string_lossy().into_owned();
    let mut gateway = start(&dir, &["--record", &record_arg]);

    let blocked = gateway.call_tool(json!(1), "delete_file", json!({"path": "readme.txt"}));
    assert_eq!(expect_error(&blocked, -32001), BLOCK_MESSAGE);
    assert_eq!(blocked["id"], 1);
    // A JSON escape spelling the blocked name.
    gateway.send_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete\u005ffile","arguments":{}}}"#);
    expect_error(&gateway.response(&json!(2)), -32001);
    // Case tricks are other names, and not allowed either.
    expect_error(&gateway.call_tool(json!(3), "Echo", json!({})), -32001);
    // A notification carrying a blocked call cannot be answered, only dropped.
    gateway.send_line(
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{}}}"#,
    );
    let allowed_line = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"x":"y"}}}"#;
    gateway.send_line(allowed_line);
    result_text(&gateway.response(&json!(4)));

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(finished.unread.is_empty(), "{:?}", finished.unread);

    let received = std::fs::read_to_string(&record).expect("the server recorded what it received");
    assert!(
        !received.contains("delete"),
        "a blocked call reached the server:\n{received}"
    );
    assert!(
        !received.contains("Echo"),
        "a blocked call reached the server:\n{received}"
    );
    assert!(
        received.lines().any(|l| l == allowed_line),
        "what is authorised is exactly what is forwarded, byte for byte:\n{received}"
    );

    let audit_path = dir.join("logs/audit.log");
    #[cfg(unix)]
    check_private(&audit_path);
    let audit = audit_of(&dir);
    let blocks = records(&audit, "SECURITY_BLOCK");
    assert_eq!(
        blocks.len(),
        4,
        "three requests and one notification:\n{}",
        show(&audit)
    );
    for id in ["1", "2", "3"] {
        assert_eq!(record_for(&audit, "REQUEST", id)["status"], "BLOCKED");
        let response = record_for(&audit, "RESPONSE", id);
        assert_eq!(response["status"], "error");
        assert_eq!(response["error_code"], -32001);
    }
    assert_eq!(
        record_for(&audit, "SECURITY_BLOCK", "2")["tool"],
        "delete_file"
    );
}

/// Client EOF, with a server that ignores SIGTERM and never exits on its
/// own and a grandchild in its process group: the gateway closes stdin,
/// sends SIGTERM, then SIGKILLs the group, and exits.
#[test]
fn client_eof_stops_a_stubborn_upstream_and_its_grandchild() {
    let dir = TempDir::new("stubborn");
    let mut gateway = start(
        &dir,
        &["--ignore-sigterm", "--spawn-grandchild", "--no-exit-on-eof"],
    );
    let processes = upstream_processes(&gateway);
    gateway.close_stdin();
    let status = gateway.wait_exit(EXIT_TIMEOUT);
    check_no_survivors(&processes);
    assert!(
        status.success(),
        "the client left first, so the gateway exits 0: {status}"
    );
}

/// A polite server that exits when its stdin closes but leaves a grandchild
/// behind (like an `npx` wrapper): the gateway still removes the group.
#[test]
fn client_eof_leaves_no_grandchild_of_a_polite_upstream() {
    let dir = TempDir::new("grandchild");
    let mut gateway = start(&dir, &["--spawn-grandchild"]);
    let processes = upstream_processes(&gateway);
    gateway.close_stdin();
    let status = gateway.wait_exit(EXIT_TIMEOUT);
    check_no_survivors(&processes);
    assert!(status.success(), "{status}");
}

/// The upstream's processes (itself, the grandchild, their group), checked
/// to run in a process group of their own.
fn upstream_processes(gateway: &Session) -> std::collections::BTreeSet<u32> {
    let stderr = gateway.wait_for_stderr("grandchild pid ");
    let grandchild: u32 = stderr
        .split("grandchild pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no grandchild pid on stderr:\n{stderr}"));
    let mut processes = process_tree(gateway.pid());
    processes.insert(grandchild);
    let upstream_group = process_group(grandchild).expect("the grandchild runs");
    assert_ne!(
        Some(upstream_group),
        process_group(gateway.pid()),
        "the upstream must run in its own process group"
    );
    assert!(
        processes.len() >= 2,
        "the upstream and its grandchild: {processes:?}"
    );
    processes
}

fn check_no_survivors(processes: &std::collections::BTreeSet<u32>) {
    let alive = survivors(processes, Duration::from_secs(5));
    if !alive.is_empty() {
        let description = describe_processes(&alive);
        kill_all(&alive);
        panic!("processes of the upstream's group survived the gateway:\n{description}");
    }
}

#[test]
fn upstream_exiting_by_itself_ends_the_session_non_zero() {
    let dir = TempDir::new("exit-after");
    let gateway = start(&dir, &["--exit-after-ms", "800"]);
    let finished = gateway.finish_without_closing();
    assert!(
        !finished.status.success(),
        "the server left a connected client: exit non-zero\n{}",
        finished.stderr
    );
    let audit = audit_of(&dir);
    let exited = records(&audit, "UPSTREAM_EXITED");
    assert_eq!(exited.len(), 1, "{}", show(&audit));
    assert_eq!(
        exited[0]["status"], "success",
        "test-upstream exits 0: {}",
        exited[0]
    );
}

/// Big messages in both directions at once, while other calls go on: the
/// runtime must read and write both pipes concurrently and keep every line
/// whole.
#[test]
fn large_messages_pass_whole_in_both_directions() {
    let dir = TempDir::new("large");
    let mut gateway = start(&dir, &[]);
    let blobs: Vec<String> = (0..4u8)
        .map(|n| char::from(b'a' + n).to_string().repeat(1 << 20))
        .collect();
    for (n, blob) in blobs.iter().enumerate() {
        gateway.send(&json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                             "params": {"name": "echo", "arguments": {"blob": blob}}}));
    }
    let ping = gateway.request(json!("ping"), "ping", json!({}));
    assert_eq!(ping["result"], json!({}));
    for (n, blob) in blobs.iter().enumerate() {
        let response = gateway.response(&json!(n));
        let echoed: Value = serde_json::from_str(&result_text(&response)).expect("echo is JSON");
        assert!(echoed["blob"] == *blob, "call {n} came back altered");
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
}

/// MCP clients stop a server by closing its stdin and then, if it is still
/// there, sending SIGTERM. A gateway stopped that way must still take its
/// upstream's process group with it (orphaned servers are the most common
/// complaint about stdio MCP).
#[test]
fn sigterm_to_the_gateway_leaves_no_upstream_behind() {
    let dir = TempDir::new("sigterm");
    let mut gateway = start(&dir, &["--spawn-grandchild", "--no-exit-on-eof"]);
    let processes = upstream_processes(&gateway);
    gateway.close_stdin();
    std::thread::sleep(Duration::from_millis(200));
    send_signal(gateway.pid(), "TERM");
    gateway.wait_exit(EXIT_TIMEOUT);
    check_no_survivors(&processes);
    let audit = audit_of(&dir);
    assert_eq!(
        records(&audit, "UPSTREAM_EXITED").len(),
        1,
        "the audit log records the upstream's end:\n{}",
        show(&audit)
    );
}

#[test]
fn upstream_without_execute_permission_is_told_to_the_client() {
    let dir = TempDir::new("not-executable");
    let program = dir.join("server.sh");
    write_file(&program, "#!/bin/sh\nexit 0\n");
    // Readable but not executable: exec fails with EACCES (also for root).
    let config = GatewayConfig::new(vec![program.to_string_lossy().into_owned()])
        .allow(&ALLOWED)
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(1));
    let message = init["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("permission denied"), "{init}");
    assert!(message.contains("server.sh"), "{init}");
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success(), "{}", finished.stderr);
}

#[test]
fn a_request_that_times_out_is_answered_cancelled_and_its_late_answer_dropped() {
    let dir = TempDir::new("timeout");
    let record = dir.join("received.jsonl");
    let record_arg = record.to_string_lossy().into_owned();
    let config = GatewayConfig::new(test_upstream(&["--record", &record_arg]))
        .allow(&ALLOWED)
        .request_timeout_ms(300)
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    let slow = gateway.call_tool(json!("slow"), "slow", json!({"ms": 1500}));
    assert_eq!(slow["error"]["code"], -32007, "{slow}");
    // The late answer arrives at the gateway meanwhile; the next call still works.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    result_text(&gateway.call_tool(json!("after"), "echo", json!({})));
    let finished = gateway.finish();
    assert!(
        finished.unread.is_empty(),
        "the late answer was passed on: {:?}",
        finished.unread
    );
    let received = std::fs::read_to_string(&record).expect("recorded");
    assert!(
        received
            .lines()
            .any(|l| l.contains("notifications/cancelled") && l.contains("\"slow\"")),
        "the server was told to stop:\n{received}"
    );
    let audit = audit_of(&dir);
    assert_eq!(records(&audit, "TIMEOUT").len(), 1, "{}", show(&audit));
    let late = audit
        .iter()
        .find(|r| r["event_type"] == "RESPONSE" && r["status"] == "dropped")
        .unwrap_or_else(|| panic!("no record of the late answer:\n{}", show(&audit)));
    assert_eq!(late["request_id"], "slow");
}

/// The gateway blocks termination signals for itself; its upstream must
/// not inherit that, or SIGTERM could never stop it and every shutdown
/// would end in SIGKILL.
#[test]
fn an_upstream_that_ignores_stdin_eof_is_stopped_by_sigterm_not_sigkill() {
    let dir = TempDir::new("sigterm-works");
    let config = GatewayConfig::new(vec!["sh".into(), "-c".into(), "exec sleep 300".into()])
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.close_stdin();
    let status = gateway.wait_exit(EXIT_TIMEOUT);
    let finished = gateway.finish_without_closing();
    assert!(status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("sending SIGTERM"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("SIGKILL"),
        "SIGTERM did not stop the upstream (were its signals blocked?):\n{}",
        finished.stderr
    );
}

/// A client that dies without closing the gateway's stdin (here the
/// gateway's stdin stays open in the test while its parent process exits):
/// the kernel's parent-death signal starts the orderly shutdown, and no
/// process of the upstream survives.
#[test]
fn the_gateway_shuts_down_when_its_parent_dies() {
    let python = "python3";
    let found = std::process::Command::new(python)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is needed for the parent-death test"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED parent-death test: python3 is not on PATH"
        );
        return;
    }
    let dir = TempDir::new("parent-death");
    let pid_file = dir.join("upstream.pid");
    let script = format!("echo $$ > '{}'; exec sleep 300", pid_file.display());
    let config = GatewayConfig::new(vec!["sh".into(), "-c".into(), script]).write(dir.path());
    let gateway_cmd = gateway_command(&config);
    // A parent that starts the gateway (sharing the test's stdin pipe, which
    // stays open) and exits at once, printing the gateway's pid.
    let launcher = format!(
        "import subprocess, sys\np = subprocess.Popen({:?}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint(p.pid)\n",
        std::iter::once(gateway_cmd.get_program().to_string_lossy().into_owned())
            .chain(gateway_cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
    );
    let mut parent = std::process::Command::new(python)
        .arg("-c")
        .arg(launcher)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    let output = parent
        .stdout
        .take()
        .map(std::io::read_to_string)
        .transpose()
        .expect("pid");
    let _keep_stdin_open = parent.stdin.take();
    let _ = parent.wait();
    let gateway_pid: u32 = output
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("the gateway's pid");
    // The upstream started; its parent (the gateway) now has a dead parent.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let upstream_pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let processes: std::collections::BTreeSet<u32> = [gateway_pid, upstream_pid].into();
    // Shutdown: stdin close, 2 s, SIGTERM (sleep dies then).
    check_no_survivors(&processes);
}

/// An upstream (a shell script) that answers the first request with a
/// 3 MB result, then runs `then` (or exits).
fn big_answer_upstream(then: &str) -> Vec<String> {
    let script = format!(
        r#"read line; printf '{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"'; head -c 3000000 /dev/zero | tr '\0' a; printf '"}}]}}}}\n'{then}"#
    );
    vec!["sh".into(), "-c".into(), script]
}

/// The upstream answers with a large message and exits while the client is
/// busy and not reading. The gateway decides to exit as soon as its reader
/// sees the end, then waits (at most a second) for the client to take the
/// answer; the shutdown timer that fires meanwhile must not undo the exit.
/// (It once did in runtime-std: the gateway then waited for ever, upstream
/// group and all.)
#[test]
fn an_exit_decided_while_the_client_is_slow_to_read_still_happens() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::Instant;

    let dir = TempDir::new("slow-reader-exit");
    let config = GatewayConfig::new(big_answer_upstream("")).write(dir.path());
    let mut gateway = gateway_command(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    let mut stdin = gateway.stdin.take().expect("piped");
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"big\"}}\n")
        .expect("request sent");
    // Busy for a moment: the answer waits in the gateway meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let mut stdout = gateway.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        let _ = stdout.read_to_end(&mut received);
        received
    });
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = gateway.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = gateway.kill();
            panic!("the gateway was still running 15 s after the client closed stdin");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let received = reader.join().expect("reader");
    assert!(
        !status.success(),
        "the server left a connected client: exit non-zero ({status}, {} bytes received)",
        received.len()
    );
    // What the client had not taken within the second the gateway waits is
    // dropped (a client that stops reading must not keep it alive); what
    // the pipes held reached it.
    assert!(!received.is_empty(), "the client got nothing");
}

/// Some launchers (inetd, systemd socket activation, socat) give a program
/// one socket as both stdin and stdout. Reading stdin must not change how
/// stdout is written: a large answer to a client that reads late arrives
/// whole. (runtime-smol once made the shared socket non-blocking, and the
/// answer was cut off.)
#[test]
fn stdin_and_stdout_on_one_socket_carry_a_large_answer_whole() {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;

    let dir = TempDir::new("one-socket");
    let config = GatewayConfig::new(big_answer_upstream("; exec cat >/dev/null")).write(dir.path());
    let (mut client, theirs) = UnixStream::pair().expect("a socket pair");
    let theirs = OwnedFd::from(theirs);
    let mut gateway = gateway_command(&config)
        .stdin(Stdio::from(theirs.try_clone().expect("dup")))
        .stdout(Stdio::from(theirs))
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    client
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"big\"}}\n")
        .expect("request sent");
    // The client reads late, so the gateway's writes meet a full socket.
    std::thread::sleep(Duration::from_millis(1500));
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buffer = vec![0; 1 << 16];
    while !answer.ends_with(b"\n") {
        match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("EOF to the gateway");
    let _ = gateway.wait();
    assert!(
        answer.len() > 3_000_000 && answer.ends_with(b"}]}}\n"),
        "the answer arrived cut off: {} bytes",
        answer.len()
    );
}
