//! The audit trail under stress: rotation with thousands of records, a
//! gateway killed with SIGKILL mid-stream, and audit files that cannot be
//! written (a full disk via /dev/full, a directory where the file should
//! be), with `critical: true` (fail closed) and `critical: false` (warn and
//! keep proxying), and the recovery once the file is writable again.
//!
//! The tests run as root, so permissions cannot make a file unwritable:
//! /dev/full (every write fails with ENOSPC), a directory in place of the
//! file, and a symlink that is repointed stand in for a broken disk.

mod audit_support;
mod support;

use audit_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// Sends `ids` as pipelined `echo` calls (one write), then waits for every
/// answer; `pad(id)` is the padding each call carries.
fn echo_batch(gateway: &mut Session, ids: std::ops::Range<u64>, pad: impl Fn(u64) -> usize) {
    let mut batch = String::new();
    for id in ids.clone() {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"n": id, "pad": "x".repeat(pad(id))}}});
        batch.push_str(&request.to_string());
        batch.push('\n');
    }
    gateway.send_raw(batch.as_bytes());
    for id in ids {
        let response = gateway.response(&json!(id));
        assert!(
            response.get("result").is_some(),
            "echo {id} failed: {response}"
        );
    }
}

/// The limit in bytes for `max_file_size_mb`, as Gatekit computes it.
fn limit_bytes(max_file_size_mb: f64) -> u64 {
    (max_file_size_mb * 1024.0 * 1024.0).round() as u64
}

/// The ids (as numbers) of the echo REQUEST records, in file order.
fn echo_request_ids(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["event_type"] == "REQUEST" && r["tool"] == "echo")
        .map(|r| {
            r["request_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("bad request_id: {r}"))
        })
        .collect()
}

/// Reads every rotated json file (oldest first): each must be whole lines.
fn read_rotated_json(path: &Path) -> Vec<(PathBuf, String, Vec<Value>)> {
    rotated_files(path)
        .into_iter()
        .map(|file| {
            let text = read_text(&file);
            let records = parse_json_lines(&text, &file.display().to_string());
            (file, text, records)
        })
        .collect()
}

/// Reads every rotated csv file (oldest first): each starts with the
/// header and holds whole CRLF rows of ten columns. Returns the rows
/// without their headers.
fn read_rotated_csv(path: &Path) -> Vec<(PathBuf, u64, Vec<Vec<String>>)> {
    rotated_files(path)
        .into_iter()
        .map(|file| {
            let text = read_text(&file);
            assert!(
                text.starts_with(&format!("{CSV_HEADER}\r\n")),
                "{} does not start with the CSV header",
                file.display()
            );
            assert!(
                text.ends_with("\r\n"),
                "{} ends with a partial row",
                file.display()
            );
            let rows = parse_csv(&text, ',', CsvQuoting::Quotes);
            for row in &rows {
                assert_eq!(row.fields.len(), 10, "{}: {row:?}", file.display());
                assert!(row.crlf, "{}: {row:?}", file.display());
            }
            let rows: Vec<Vec<String>> = rows.into_iter().skip(1).map(|r| r.fields).collect();
            (file, text.len() as u64, rows)
        })
        .collect()
}

#[test]
fn rotation_under_load_keeps_every_record_exactly_once() {
    const CALLS: u64 = 3000;
    const WINDOW: u64 = 100;
    /// This call's REQUEST record (its arguments are in `params`) is larger
    /// than the limit: it must sit alone in a file of its own.
    const OVERSIZED: u64 = 1500;
    let max_mb = 0.05;
    let limit = limit_bytes(max_mb);
    let dir = TempDir::new("audit rotation load");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json").rotate(max_mb, 50))
        .sink(Sink::new("logs/audit.csv", "csv").rotate(max_mb, 50))
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    let mut start = 1;
    while start <= CALLS {
        let end = (start + WINDOW).min(CALLS + 1);
        echo_batch(&mut gateway, start..end, |id| {
            if id == OVERSIZED {
                limit as usize + 10_000
            } else {
                40
            }
        });
        start = end;
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    // json: nothing lost, nothing twice, no file past the limit.
    let audit_path = dir.join("logs/audit.log");
    let files = read_rotated_json(&audit_path);
    assert!(
        files.len() > 10,
        "thousands of records at {max_mb} MB per file rotate many times: {} files",
        files.len()
    );
    assert!(
        files.len() <= 51,
        "at most 50 backups: {} files",
        files.len()
    );
    let mut oversized_files = 0;
    for (file, text, records) in &files {
        let size = text.len() as u64;
        if size > limit {
            oversized_files += 1;
            assert_eq!(
                records.len(),
                1,
                "{} is past the limit ({size} > {limit}) but holds more than one record",
                file.display()
            );
            assert_eq!(records[0]["event_type"], "REQUEST");
            assert_eq!(records[0]["request_id"], OVERSIZED.to_string());
        }
    }
    assert_eq!(
        oversized_files, 1,
        "only the oversized record's file passes the limit"
    );
    let all: Vec<Value> = files.iter().flat_map(|(_, _, r)| r.clone()).collect();
    check_common_fields(&all);
    let expected: Vec<u64> = (1..=CALLS).collect();
    assert_eq!(
        echo_request_ids(&all),
        expected,
        "every REQUEST exactly once, in order, across the files"
    );
    let mut responses: Vec<u64> = all
        .iter()
        .filter(|r| r["event_type"] == "RESPONSE" && r["tool"] == "echo")
        .map(|r| r["request_id"].as_str().unwrap().parse().unwrap())
        .collect();
    responses.sort_unstable();
    assert_eq!(responses, expected, "every RESPONSE exactly once");
    assert_eq!(records(&all, "UPSTREAM_STARTED").len(), 1);
    assert_eq!(records(&all, "UPSTREAM_EXITED").len(), 1);
    assert_eq!(
        all.last().unwrap()["event_type"],
        "UPSTREAM_EXITED",
        "the last record is in the current file"
    );

    // csv: a header on top of every file, the same events as the json log.
    let csv_files = read_rotated_csv(&dir.join("logs/audit.csv"));
    assert!(
        csv_files.len() > 5,
        "the csv log rotates too: {}",
        csv_files.len()
    );
    for (file, size, _) in &csv_files {
        assert!(
            *size <= limit,
            "{} has {size} bytes > {limit}",
            file.display()
        );
    }
    let csv_events: Vec<(String, String)> = csv_files
        .iter()
        .flat_map(|(_, _, rows)| rows.iter().map(|f| (f[1].clone(), f[5].clone())))
        .collect();
    let json_events: Vec<(String, String)> = all
        .iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap().to_owned(),
                r["request_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(csv_events.len(), json_events.len());
    assert!(
        csv_events == json_events,
        "the csv files hold the same events, in the same order, as the json files"
    );
}

#[test]
fn backup_count_bounds_the_files_and_keeps_the_newest_records_whole() {
    const CALLS: u64 = 1000;
    const WINDOW: u64 = 50;
    let max_mb = 0.01;
    let limit = limit_bytes(max_mb);
    let dir = TempDir::new("audit rotation bound");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json").rotate(max_mb, 2))
        .sink(Sink::new("logs/audit.csv", "csv").rotate(max_mb, 2))
        .write(dir.path());
    let allowed: BTreeSet<&str> = [
        "audit.log",
        "audit.log.1",
        "audit.log.2",
        "audit.csv",
        "audit.csv.1",
        "audit.csv.2",
    ]
    .into();
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    let mut start = 1;
    while start <= CALLS {
        let end = (start + WINDOW).min(CALLS + 1);
        echo_batch(&mut gateway, start..end, |_| 40);
        start = end;
        // Never more than two backups, at any point of the run.
        for entry in std::fs::read_dir(dir.join("logs")).expect("logs/ exists") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(allowed.contains(&*name), "unexpected file logs/{name}");
        }
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let audit_path = dir.join("logs/audit.log");
    let files = read_rotated_json(&audit_path);
    assert_eq!(files.len(), 3, "audit.log, .1 and .2");
    for (file, text, _) in &files {
        assert!(
            text.len() as u64 <= limit,
            "{} has {} bytes > {limit}",
            file.display(),
            text.len()
        );
    }
    let kept: Vec<Value> = files.iter().flat_map(|(_, _, r)| r.clone()).collect();
    check_common_fields(&kept);
    // What is kept is the newest records: the REQUEST ids run without a gap
    // or a repeat up to the last call.
    let ids = echo_request_ids(&kept);
    assert!(ids.len() > 10, "{ids:?}");
    let first = ids[0];
    assert_eq!(
        ids,
        (first..=CALLS).collect::<Vec<_>>(),
        "consecutive, each once"
    );
    let mut responses = BTreeSet::new();
    for r in kept
        .iter()
        .filter(|r| r["event_type"] == "RESPONSE" && r["tool"] == "echo")
    {
        let id: u64 = r["request_id"].as_str().unwrap().parse().unwrap();
        assert!(responses.insert(id), "RESPONSE {id} twice");
    }
    for id in first..=CALLS {
        assert!(
            responses.contains(&id),
            "REQUEST {id} was kept, so its (later) RESPONSE must be too"
        );
    }
    let csv_files = read_rotated_csv(&dir.join("logs/audit.csv"));
    assert_eq!(csv_files.len(), 3, "audit.csv, .1 and .2");
    for (file, size, rows) in &csv_files {
        assert!(
            *size <= limit,
            "{} has {size} bytes > {limit}",
            file.display()
        );
        assert!(!rows.is_empty(), "{} has no rows", file.display());
    }
}

#[test]
fn sigkill_after_an_answer_loses_no_record_of_an_answered_request() {
    const CALLS: u64 = 400;
    const KILL_AFTER: u64 = 200;
    let dir = TempDir::new("audit sigkill");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json"))
        .sink(Sink::new("logs/audit.csv", "csv"))
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    let mut batch = String::new();
    for id in 1..=CALLS {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"n": id, "text": "some words to log"}}});
        batch.push_str(&request.to_string());
        batch.push('\n');
    }
    gateway.send_raw(batch.as_bytes());
    let answer = gateway.response(&json!(KILL_AFTER));
    assert!(answer.get("result").is_some(), "{answer}");
    let processes = process_tree(gateway.pid());
    send_signal(gateway.pid(), "KILL");
    let status = gateway.wait_exit(EXIT_TIMEOUT);
    kill_all(&survivors(&processes, Duration::from_secs(5)));
    assert!(!status.success(), "the gateway was killed");

    // Every answer the client had received when the gateway died. (What is
    // still in the pipe is not read: a line the kill cut short would fail
    // the JSON-only check of the session's reader.)
    let mut answered: BTreeSet<String> = BTreeSet::from([KILL_AFTER.to_string()]);
    for message in &gateway.take_unmatched() {
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            answered.insert(id.to_string());
        }
    }
    assert!(answered.len() as u64 >= 1);

    // read_audit fails on a last line without its newline or not parsing.
    let audit = read_audit(&dir.join("logs/audit.log"));
    check_common_fields(&audit);
    for id in &answered {
        let request = record_for(&audit, "REQUEST", id);
        assert_eq!(request["tool"], "echo");
        let response = record_for(&audit, "RESPONSE", id);
        assert_eq!(response["status"], "success", "{response}");
    }
    let mut seen = BTreeSet::new();
    for request in records(&audit, "REQUEST") {
        let id = request["request_id"].as_str().unwrap();
        assert!(seen.insert(id.to_owned()), "REQUEST {id} written twice");
    }

    let text = read_text(&dir.join("logs/audit.csv"));
    assert!(text.ends_with("\r\n"), "the csv file ends with a whole row");
    let rows = parse_csv(&text, ',', CsvQuoting::Quotes);
    assert_eq!(rows[0].fields, CSV_COLUMNS);
    for row in &rows {
        assert_eq!(row.fields.len(), 10, "{row:?}");
    }
    for id in &answered {
        for event in ["REQUEST", "RESPONSE"] {
            let found = rows
                .iter()
                .filter(|r| r.fields[1] == event && &r.fields[5] == id)
                .count();
            assert_eq!(found, 1, "one csv {event} row for answered request {id}");
        }
    }
    // Both files get the same events in the same order, json first: the
    // kill may fall between the json file's write and the csv file's write
    // of one chunk's records, so the csv file may lack the json file's last
    // few records, and nothing else.
    let json_events: Vec<(String, String)> = audit
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_owned();
            (field("event_type"), field("request_id"))
        })
        .collect();
    let csv_events: Vec<(String, String)> = rows[1..]
        .iter()
        .map(|r| (r.fields[1].clone(), r.fields[5].clone()))
        .collect();
    assert!(
        csv_events.len() <= json_events.len() && json_events[..csv_events.len()] == csv_events[..],
        "the csv file's events are not the json file's in order ({} vs {})",
        csv_events.len(),
        json_events.len()
    );
}

// ----- audit files that cannot be written -----

/// Points `link` at `target`, replacing what `link` was, atomically.
#[cfg(unix)]
fn point_symlink(link: &Path, target: &Path) {
    let temporary = link.with_extension("relinking");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", temporary.display()));
    std::fs::rename(&temporary, link)
        .unwrap_or_else(|e| panic!("cannot replace {}: {e}", link.display()));
}

/// The ids of the requests the upstream received (from its `--record` file).
fn upstream_received_ids(record: &Path) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(record) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m.get("method").is_some())
        .filter_map(|m| m.get("id").map(|id| id.to_string()))
        .collect()
}

/// A gateway whose audit log `logs/audit.log` is a symlink to /dev/full.
#[cfg(unix)]
fn gateway_on_a_full_disk(dir: &TempDir, critical: bool) -> (Session, PathBuf, PathBuf) {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("create logs/");
    let audit = logs.join("audit.log");
    point_symlink(&audit, Path::new("/dev/full"));
    let received = dir.join("upstream received.jsonl");
    let upstream = test_upstream(&["--record", &received.to_string_lossy()]);
    let config = AuditConfig::new(upstream)
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json").critical(critical))
        .write(dir.path());
    (Session::gateway(&config), audit, received)
}

#[cfg(unix)]
#[test]
fn a_critical_log_on_a_full_disk_refuses_requests_until_it_can_be_written() {
    let dir = TempDir::new("audit full critical");
    let (mut gateway, audit, received) = gateway_on_a_full_disk(&dir, true);
    let audit_name = audit.display().to_string();

    // Fail closed: nothing passes while its record cannot be written.
    let init = gateway.initialize(json!(1));
    let message = expect_error(&init, -32006);
    assert!(
        message.contains(&audit_name) && message.contains("No space left on device"),
        "the error names the file and the cause: {message}"
    );
    let echo = gateway.call_tool(json!(2), "echo", json!({"n": 2}));
    expect_error(&echo, -32006);
    let stderr = gateway.wait_for_stderr("No space left on device");
    assert!(
        stderr.contains(&audit_name) && stderr.contains("critical"),
        "stderr says which file, why, and that requests are refused:\n{stderr}"
    );

    // The disk has room again: the next record reopens the file.
    let real = dir.join("logs/real audit.log");
    point_symlink(&audit, &real);
    let init = gateway.initialize(json!(3));
    assert!(
        init.get("result").is_some(),
        "once the audit log is writable again, the next request must pass: {init}"
    );
    result_text(&gateway.call_tool(json!(4), "echo", json!({"n": 4})));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let upstream_got = upstream_received_ids(&received);
    assert!(
        !upstream_got.contains("1") && !upstream_got.contains("2"),
        "refused requests never reach the upstream: {upstream_got:?}"
    );
    assert!(
        upstream_got.contains("3") && upstream_got.contains("4"),
        "{upstream_got:?}"
    );
    let records = read_audit(&real);
    check_common_fields(&records);
    for id in ["3", "4"] {
        assert_eq!(record_for(&records, "REQUEST", id)["status"], "ALLOWED");
        assert_eq!(record_for(&records, "RESPONSE", id)["status"], "success");
    }
    assert!(
        !records
            .iter()
            .any(|r| r["request_id"] == "1" || r["request_id"] == "2"),
        "{}",
        show(&records)
    );
}

#[cfg(unix)]
#[test]
fn a_non_critical_log_on_a_full_disk_warns_and_keeps_proxying() {
    let dir = TempDir::new("audit full lenient");
    let (mut gateway, audit, received) = gateway_on_a_full_disk(&dir, false);
    let init = gateway.initialize(json!(1));
    assert!(init.get("result").is_some(), "{init}");
    result_text(&gateway.call_tool(json!(2), "echo", json!({"n": 2})));
    let stderr = gateway.wait_for_stderr("No space left on device");
    assert!(
        stderr.contains(&audit.display().to_string()) && stderr.contains("not critical"),
        "stderr warns, naming the file:\n{stderr}"
    );

    let real = dir.join("logs/real audit.log");
    point_symlink(&audit, &real);
    result_text(&gateway.call_tool(json!(3), "echo", json!({"n": 3})));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let upstream_got = upstream_received_ids(&received);
    for id in ["1", "2", "3"] {
        assert!(upstream_got.contains(id), "{id} passed: {upstream_got:?}");
    }
    let records = read_audit(&real);
    check_common_fields(&records);
    assert_eq!(record_for(&records, "REQUEST", "3")["status"], "ALLOWED");
    assert_eq!(record_for(&records, "RESPONSE", "3")["status"], "success");
    assert_eq!(records.last().unwrap()["event_type"], "UPSTREAM_EXITED");
}

#[test]
fn a_critical_log_that_cannot_be_opened_stops_the_start() {
    let dir = TempDir::new("audit dir critical");
    let audit = dir.join("logs/audit.log");
    std::fs::create_dir_all(&audit).expect("a directory where the log should be");
    let received = dir.join("upstream received.jsonl");
    let upstream = test_upstream(&["--record", &received.to_string_lossy()]);
    let config = AuditConfig::new(upstream)
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json").critical(true))
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(1));
    let message = expect_error(&init, -32005);
    assert!(
        message.contains(&audit.display().to_string()),
        "the client learns which file: {message}"
    );
    let finished = gateway.finish_without_closing();
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&audit.display().to_string()),
        "{}",
        finished.stderr
    );
    assert!(
        !received.exists(),
        "the upstream must not start without its critical audit log"
    );
}

#[test]
fn a_non_critical_log_that_cannot_be_opened_is_retried_with_every_record() {
    let dir = TempDir::new("audit dir lenient");
    let audit = dir.join("logs/audit.log");
    std::fs::create_dir_all(&audit).expect("a directory where the log should be");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json").critical(false))
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    let init = gateway.initialize(json!(1));
    assert!(init.get("result").is_some(), "{init}");
    result_text(&gateway.call_tool(json!(2), "echo", json!({"n": 2})));
    let stderr = gateway.wait_for_stderr("not critical");
    assert!(
        stderr.contains(&audit.display().to_string()),
        "the warning names the file:\n{stderr}"
    );

    std::fs::remove_dir(&audit).expect("remove the directory");
    result_text(&gateway.call_tool(json!(3), "echo", json!({"n": 3})));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let records = read_audit(&audit);
    check_common_fields(&records);
    assert_eq!(record_for(&records, "REQUEST", "3")["status"], "ALLOWED");
    assert_eq!(record_for(&records, "RESPONSE", "3")["status"], "success");
}
