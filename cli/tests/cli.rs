//! The command line: `--version`, `--help`, `check`, `demo`, `--verbose`,
//! and what the client sees when the gateway cannot start.

mod support;

use serde_json::{json, Value};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Runs a command to completion with no stdin, failing after `timeout`.
fn run(mut command: std::process::Command, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{command:?} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_prints_the_package_version() {
    let output = run(gatekit(&["--version"]), TIMEOUT);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        format!("gatekit {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_mentions_config_and_the_subcommands() {
    let output = run(gatekit(&["--help"]), TIMEOUT);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let help = text(&output.stdout);
    for word in ["--config", "--verbose", "check", "demo"] {
        assert!(help.contains(word), "--help should mention {word}:\n{help}");
    }
}

#[test]
fn no_config_is_a_usage_error() {
    let output = run(gatekit(&[]), TIMEOUT);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "stdout is for JSON-RPC only");
    assert!(
        text(&output.stderr).contains("--config"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn check_describes_the_tutorial_config() {
    let config = std::fs::canonicalize(tutorial_config_path()).expect("the tutorial config exists");
    // From another directory: the audit path resolves against the config's
    // directory, not the working directory; `~` is the user's home.
    let elsewhere = TempDir::new("check-cwd");
    let home = "/home/gatekit-e2e-user";
    let mut command = gatekit(&["check", "--config", &config.to_string_lossy()]);
    command.current_dir(elsewhere.path()).env("HOME", home);
    let output = run(command, TIMEOUT);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let expected_audit = config.parent().unwrap().join("logs/audit.log");
    let upstream = format!("npx @modelcontextprotocol/server-filesystem {home}/claude-sandbox/");
    assert!(
        stdout.contains(&upstream),
        "check names the upstream command {upstream:?}:\n{stdout}"
    );
    assert!(
        stdout.contains(&*expected_audit.to_string_lossy()),
        "check names the resolved audit file {}:\n{stdout}",
        expected_audit.display()
    );
    for tool in TUTORIAL_TOOLS {
        assert!(
            stdout.contains(tool),
            "check names the allowed tool {tool}:\n{stdout}"
        );
    }
    assert!(stdout.contains(BLOCK_MESSAGE), "{stdout}");
}

/// A config with a typo (`formt`) and the 1-based line it is on.
fn config_with_unknown_key(dir: &TempDir) -> (std::path::PathBuf, usize) {
    let yaml = GatewayConfig::new(test_upstream(&[]))
        .yaml()
        .replace("format: \"json\"", "formt: \"json\"");
    let line = yaml
        .lines()
        .position(|l| l.contains("formt"))
        .expect("the typo is there")
        + 1;
    let path = dir.join("broken config.yaml");
    write_file(&path, &yaml);
    (path, line)
}

#[test]
fn check_reports_an_unknown_key_with_file_key_and_line() {
    let dir = TempDir::new("check-bad");
    let (path, line) = config_with_unknown_key(&dir);
    let output = run(
        gatekit(&["check", "--config", &path.to_string_lossy()]),
        TIMEOUT,
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: invalid configuration "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&*path.to_string_lossy()),
        "names the file:\n{stderr}"
    );
    assert!(
        stderr.contains("plugins.auditing[0].config"),
        "names the key path:\n{stderr}"
    );
    assert!(stderr.contains("formt"), "names the key:\n{stderr}");
    assert!(
        stderr.contains(&format!("line {line}")),
        "names line {line}:\n{stderr}"
    );
}

#[test]
fn a_broken_config_is_told_to_the_client_and_exits_non_zero() {
    let dir = TempDir::new("run-bad");
    let (path, line) = config_with_unknown_key(&dir);
    let mut gateway = Session::gateway(&path);
    // A notification first: it gets no answer; the request after it does.
    gateway.notify("notifications/cancelled", json!({"requestId": 99}));
    let init = gateway.initialize(json!("init-1"));
    let message = expect_error(&init, -32005);
    for part in [
        "formt",
        "plugins.auditing[0].config",
        &format!("line {line}"),
    ] {
        assert!(
            message.contains(part),
            "the client learns what is wrong ({part}): {message}"
        );
    }
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(finished.unread.is_empty(), "{:?}", finished.unread);
    assert!(finished.stderr.contains("formt"), "{}", finished.stderr);
    assert!(
        !dir.join("logs").exists(),
        "a gateway that did not start writes no audit log"
    );
}

#[test]
fn a_missing_config_is_told_to_the_client() {
    let dir = TempDir::new("run-missing");
    let path = dir.join("no such config.yaml");
    let mut gateway = Session::gateway(&path);
    let init = gateway.initialize(json!(1));
    let message = expect_error(&init, -32005);
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success());
}

#[test]
fn verbose_logs_messages_to_stderr_and_keeps_stdout_clean() {
    let dir = TempDir::new("verbose");
    let config = GatewayConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .write(dir.path());
    let mut command = gateway_command(&config);
    command.arg("--verbose");
    let mut gateway = Session::spawn(command, "gatekit --verbose");
    gateway.initialize(json!(1));
    let echo = gateway.call_tool(json!(2), "echo", json!({"marker": "verbose-e2e"}));
    assert_eq!(result_text(&echo), r#"{"marker":"verbose-e2e"}"#);
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("[DEBUG]"),
        "--verbose logs at debug level:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("verbose-e2e"),
        "--verbose logs the messages:\n{}",
        finished.stderr
    );
}

#[test]
fn demo_shows_the_blocked_call_and_the_security_block() {
    let output = run(gatekit(&["demo"]), Duration::from_secs(60));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let blocked = stdout
        .lines()
        .skip_while(|l| !l.contains("tools/call delete_file"))
        .nth(1)
        .unwrap_or_else(|| panic!("the demo calls delete_file:\n{stdout}"));
    assert!(
        blocked.contains("error -32001"),
        "delete_file is blocked: {blocked}\n{stdout}"
    );
    let block_record = stdout
        .lines()
        .find(|l| l.contains("\"SECURITY_BLOCK\""))
        .unwrap_or_else(|| panic!("the demo prints the SECURITY_BLOCK record:\n{stdout}"));
    let record: Value = serde_json::from_str(block_record.trim()).expect("the record is JSON");
    assert_eq!(record["tool"], "delete_file");
}

#[test]
fn an_unwritable_audit_log_is_told_to_the_client_and_the_server_never_starts() {
    let dir = TempDir::new("run-unwritable");
    // A file where the log directory should be: fails even for root.
    write_file(&dir.join("logs"), "not a directory");
    let record = dir.join("server started.txt");
    let upstream = test_upstream(&["--record", &record.to_string_lossy()]);
    let config = GatewayConfig::new(upstream)
        .allow(&["echo"])
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(1));
    let message = expect_error(&init, -32005);
    let audit = dir.join("logs/audit.log");
    assert!(
        message.contains(&*audit.to_string_lossy()),
        "names the audit file: {message}"
    );
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(
        !record.exists(),
        "the upstream must not start when the audit log cannot be written"
    );
}
