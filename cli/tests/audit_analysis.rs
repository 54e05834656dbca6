//! The audit-logging tutorial's analysis commands, run as printed against
//! the logs of a real session through the gateway, and their answers
//! checked against what the session did.
//!
//! The commands are copied character for character from the tutorial
//! ("Log Analysis Commands", "Useful Analysis Examples", "JSON Log Analysis
//! Best Practices", "Security Analytics Queries", "Daily/Weekly Reports" and
//! "Analysis with Command-Line Tools") and run with `bash -c` in a directory
//! holding `logs/audit.log` (json) and `logs/audit.csv` (csv), so not even
//! the paths change. Two mechanical changes, made by [`as_typed`] and
//! explained there, turn the markdown's doubled backslashes into what a user
//! types; `tail -f` (which never ends) becomes `tail -n +1`.
//!
//! jq is needed: without it the test fails with `CI=true` and is skipped
//! (visibly) otherwise. The same goes for python3, which reads the CSV with
//! its `csv` module the way the tutorial's pandas example does.

mod audit_support;
mod support;

use audit_support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// The tutorial looks for `duration_ms > 5000`: one call (in a test of its
/// own, which runs alongside the others) waits this long.
const SLOW_MS: u64 = 5001;

/// What a user types for a command the tutorial prints inside a markdown
/// code block. Some of its `jq` and `awk` strings were written with doubled
/// backslashes (`"\\(.tool)"`, `printf "...\\n"`), as if they had to
/// survive one more level of quoting; inside bash's single quotes that
/// reaches jq as `\\(` (a literal backslash, no interpolation) and awk as
/// `\\n` (a literal backslash and `n`, no newline). A user types — and the
/// tutorial's other examples use — `\(` and `\n`, so that is what runs.
fn as_typed(tutorial_text: &str) -> String {
    tutorial_text
        .replace("\\\\(", "\\(")
        .replace("\\\\n", "\\n")
}

/// Runs `command` with `bash -c` in `dir` and returns its stdout. The
/// harness adds `set -o pipefail` (so a failing `jq` is not hidden by the
/// last command of a pipeline) and insists on an empty stderr.
fn run(dir: &Path, command: &str) -> String {
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail\n{command}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stderr.is_empty(),
        "`{command}` failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    stdout
}

/// `uniq -c` output: (count, value) per line, in order.
fn uniq_counts(output: &str) -> Vec<(usize, String)> {
    output
        .lines()
        .map(|line| {
            let (count, value) = line
                .trim_start()
                .split_once(' ')
                .unwrap_or_else(|| panic!("not a `uniq -c` line: {line:?}"));
            let count = count
                .parse()
                .unwrap_or_else(|_| panic!("not a `uniq -c` line: {line:?}"));
            (count, value.to_owned())
        })
        .collect()
}

fn as_map(counts: &[(usize, String)]) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for (count, value) in counts {
        assert!(
            map.insert(value.clone(), *count).is_none(),
            "{value} counted twice: {counts:?}"
        );
    }
    map
}

/// `sort -nr` order: counts never increase.
fn assert_descending(counts: &[(usize, String)], what: &str) {
    assert!(
        counts.windows(2).all(|w| w[0].0 >= w[1].0),
        "{what}: not sorted by count, highest first: {counts:?}"
    );
}

/// The JSON values `jq -r` printed (objects are printed over several lines).
fn json_stream(output: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(output)
        .into_iter::<Value>()
        .map(|v| {
            v.unwrap_or_else(|e| panic!("jq printed something that is not JSON ({e}):\n{output}"))
        })
        .collect()
}

/// Counts of `key(record)` over the records it is defined for.
fn count_by(records: &[Value], key: impl Fn(&Value) -> Option<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        if let Some(k) = key(record) {
            *counts.entry(k).or_default() += 1;
        }
    }
    counts
}

/// `Average: 12.34 ms` printed by awk, as a number.
fn parse_average(output: &str) -> f64 {
    let text = output.trim_end();
    let number = text
        .strip_prefix("Average: ")
        .and_then(|t| t.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("not `Average: N ms`: {output:?}"));
    number
        .parse()
        .unwrap_or_else(|_| panic!("not a number in {output:?}"))
}

/// The hour (`2024-06-16T10`), in UTC, right now.
fn utc_hour_now(dir: &Path) -> String {
    run(dir, "date -u +%Y-%m-%dT%H").trim().to_owned()
}

/// "Find requests with unusually long response times (potential issues)"
const LONG_RESPONSES: &str = r#"jq -r 'select(.duration_ms and .duration_ms > 5000) | {tool, duration_ms, timestamp, request_id}' logs/audit.log"#;
/// "Average response time", from the json log.
const AVERAGE_JSON: &str = r#"jq -r 'select(.event_type == "RESPONSE" and .duration_ms) | .duration_ms' logs/audit.log | awk '{sum+=$1; count++} END {printf "Average: %.2f ms\n", sum/count}'"#;
/// "Average response time", from the csv log.
const AVERAGE_CSV: &str = r#"tail -n +2 logs/audit.csv | awk -F',' '$9 != "" {sum+=$9; count++} END {if(count>0) printf "Average: %.2f ms\n", sum/count}'"#;

/// The mean of `duration_ms` over the RESPONSE records that have one.
fn mean_duration(audit: &[Value]) -> (usize, f64) {
    let durations: Vec<u64> = audit
        .iter()
        .filter(|r| r["event_type"] == "RESPONSE")
        .filter_map(|r| r["duration_ms"].as_u64())
        .collect();
    let mean = durations.iter().sum::<u64>() as f64 / durations.len() as f64;
    (durations.len(), mean)
}

/// Runs both "Average response time" commands and checks them against `mean`.
fn check_averages(dir: &Path, mean: f64) {
    for command in [AVERAGE_JSON, AVERAGE_CSV] {
        let out = run(dir, command);
        let average = parse_average(&out);
        assert!(
            (average - mean).abs() <= 0.005 + 1e-9,
            "`{command}` says {out:?}, the mean of duration_ms is {mean}"
        );
    }
}

fn str_of<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

#[test]
fn the_tutorials_analysis_commands_agree_with_the_session() {
    if !have_tool("jq", "the tutorial's jq analysis commands") {
        return;
    }
    let dir = TempDir::new("audit analysis");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&TUTORIAL_TOOLS)
        .sink(Sink::new("logs/audit.log", "json"))
        .sink(Sink::new("logs/audit.csv", "csv").csv(",", "minimal"))
        .write(dir.path());
    let first_hour = utc_hour_now(dir.path());

    // The session: the tutorial's prompts (list, write, read, a blocked
    // delete), more of them so the counts differ.
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(1));
    gateway.notify("notifications/initialized", json!({}));
    let listed = tool_names(&gateway.request(json!(3), "tools/list", json!({})));
    assert_eq!(listed, ["read_file", "write_file", "list_directory"]);
    let sandbox = json!({"path": "/home/user/claude-sandbox"});
    let calls: [(u64, &str, Value); 6] = [
        (4, "list_directory", sandbox.clone()),
        (
            5,
            "write_file",
            json!({"path": "/home/user/claude-sandbox/audit-test.txt", "content": "Testing audit logging!"}),
        ),
        (
            6,
            "read_file",
            json!({"path": "/home/user/claude-sandbox/readme.txt"}),
        ),
        (7, "list_directory", sandbox.clone()),
        (
            8,
            "write_file",
            json!({"path": "/home/user/claude-sandbox/second.txt", "content": "again"}),
        ),
        (9, "list_directory", sandbox),
    ];
    for (id, tool, arguments) in calls {
        result_text(&gateway.call_tool(json!(id), tool, arguments));
    }
    for (id, tool) in [
        (10, "delete_file"),
        (11, "delete_file"),
        (12, "execute_command"),
    ] {
        let response = gateway.call_tool(json!(id), tool, json!({"path": "readme.txt"}));
        assert_eq!(expect_error(&response, -32001), BLOCK_MESSAGE);
    }
    gateway.request(json!(13), "tools/list", json!({}));
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
    let last_hour = utc_hour_now(dir.path());

    // What the session did, counted by the test itself.
    let requests_sent = 12;
    let request_tools: BTreeMap<String, usize> = [
        ("list_directory", 3),
        ("write_file", 2),
        ("delete_file", 2),
        ("read_file", 1),
        ("execute_command", 1),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect();
    let blocked_tools: BTreeMap<String, usize> = [("delete_file", 2), ("execute_command", 1)]
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    let tool_calls: usize = request_tools.values().sum();
    let security_events = 3 + 2; // three blocks, two filtered lists
    let plugin_events = tool_calls + security_events;

    let audit = read_audit(&dir.join("logs/audit.log"));
    check_common_fields(&audit);
    let (forwarded, mean) = mean_duration(&audit);
    // initialize, two lists and six calls were forwarded.
    assert_eq!(forwarded, 9, "{}", show(&audit));
    let dir = dir.path();

    // ----- Log Analysis Commands -----
    // (`tail -f logs/audit.log` follows the file forever; not run.)

    // Count total requests performed using jq
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "REQUEST") | .event_type' logs/audit.log | wc -l"#,
    );
    assert_eq!(out.trim(), requests_sent.to_string(), "total requests");

    // Find security events and blocked operations
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "SECURITY_BLOCK" or .event_type == "TOOLS_FILTERED")' logs/audit.log"#,
    );
    let events = json_stream(&out);
    assert_eq!(events.len(), security_events, "{out}");
    let kinds = count_by(&events, |e| str_of(e, "event_type").map(str::to_owned));
    assert_eq!(kinds["SECURITY_BLOCK"], 3);
    assert_eq!(kinds["TOOLS_FILTERED"], 2);

    // Extract usage of specific tools
    let out = run(
        dir,
        r#"jq -r 'select(.tool == "write_file")' logs/audit.log"#,
    );
    let writes = json_stream(&out);
    let kinds: Vec<(&str, &str)> = writes
        .iter()
        .map(|r| {
            (
                str_of(r, "event_type").unwrap(),
                str_of(r, "request_id").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("REQUEST", "5"),
            ("RESPONSE", "5"),
            ("REQUEST", "8"),
            ("RESPONSE", "8")
        ]
    );

    // View logs from a specific time period: as printed, the tutorial's date
    // (none of this session's records, unless the clock says 2024-06-16)…
    let out = run(
        dir,
        r#"jq -r 'select(.timestamp | startswith("2024-06-16"))' logs/audit.log"#,
    );
    let on_tutorial_day = audit
        .iter()
        .filter(|r| str_of(r, "timestamp").unwrap().starts_with("2024-06-16"))
        .count();
    assert_eq!(json_stream(&out).len(), on_tutorial_day);
    // …and with the date of this session's records put in its place.
    let today = &str_of(&audit[0], "timestamp").unwrap()[..10];
    let out = run(
        dir,
        &r#"jq -r 'select(.timestamp | startswith("2024-06-16"))' logs/audit.log"#
            .replace("2024-06-16", today),
    );
    let on_today = audit
        .iter()
        .filter(|r| str_of(r, "timestamp").unwrap().starts_with(today))
        .count();
    assert!(on_today > 0);
    assert_eq!(json_stream(&out).len(), on_today);

    // ----- Useful Analysis Examples -----

    // Most frequently used tools
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "REQUEST" and .tool) | .tool' logs/audit.log | sort | uniq -c | sort -nr"#,
    );
    let counts = uniq_counts(&out);
    assert_descending(&counts, "most frequently used tools");
    assert_eq!(as_map(&counts), request_tools, "{out}");
    assert_eq!(counts[0], (3, "list_directory".to_owned()));

    // Security blocks by tool type
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "SECURITY_BLOCK") | .tool' logs/audit.log | sort | uniq -c"#,
    );
    assert_eq!(as_map(&uniq_counts(&out)), blocked_tools, "{out}");

    // Operations per hour
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "REQUEST") | .timestamp[0:13]' logs/audit.log | sort | uniq -c"#,
    );
    let per_hour = as_map(&uniq_counts(&out));
    assert_eq!(per_hour.values().sum::<usize>(), requests_sent, "{out}");
    let session_hours: BTreeSet<String> = [first_hour, last_hour].into();
    for hour in per_hour.keys() {
        assert!(
            session_hours.contains(hour),
            "hour {hour} is not when the session ran ({session_hours:?})"
        );
    }
    let expected_per_hour = count_by(&audit, |r| {
        (r["event_type"] == "REQUEST").then(|| str_of(r, "timestamp").unwrap()[..13].to_owned())
    });
    assert_eq!(per_hour, expected_per_hour);

    // Average response time (and its csv twin, below)
    check_averages(dir, mean);

    // Security plugin activity
    let out = run(
        dir,
        r#"jq -r 'select(.plugin) | .plugin' logs/audit.log | sort | uniq -c | sort -nr"#,
    );
    assert_eq!(
        uniq_counts(&out),
        [(plugin_events, "tool_allowlist".to_owned())]
    );

    // ----- Real-time Security Monitoring (`tail -f` becomes `tail -n +1`) -----

    let out = run(
        dir,
        &as_typed(
            r#"tail -f logs/audit.log | jq -r 'select(.event_type == "SECURITY_BLOCK") | "⚠️  \\(.timestamp) - \\(.tool) blocked by \\(.plugin): \\(.reason)"'"#,
        )
        .replace("tail -f", "tail -n +1"),
    );
    let expected: Vec<String> = records(&audit, "SECURITY_BLOCK")
        .iter()
        .map(|r| {
            format!(
                "⚠️  {} - {} blocked by tool_allowlist: Tool '{}' is not in allowlist",
                r["timestamp"].as_str().unwrap(),
                r["tool"].as_str().unwrap(),
                r["tool"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    let out = run(
        dir,
        &as_typed(
            r#"tail -f logs/audit.log | jq -r 'select(.tool == "delete_file" or .tool == "execute_command") | "🔍 \\(.timestamp) - High-risk tool: \\(.tool) (\\(.status))"'"#,
        )
        .replace("tail -f", "tail -n +1"),
    );
    let expected: Vec<String> = audit
        .iter()
        .filter(|r| r["tool"] == "delete_file" || r["tool"] == "execute_command")
        .map(|r| {
            format!(
                "🔍 {} - High-risk tool: {} ({})",
                r["timestamp"].as_str().unwrap(),
                r["tool"].as_str().unwrap(),
                r["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(expected.len(), 9, "three records per blocked call");
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    // ----- Security Analytics Queries -----

    // Find the most blocked tools (potential attack patterns)
    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "SECURITY_BLOCK") | .tool' logs/audit.log | sort | uniq -c | sort -nr | head -10"#,
    );
    assert_eq!(
        uniq_counts(&out),
        [
            (2, "delete_file".to_owned()),
            (1, "execute_command".to_owned())
        ]
    );

    // Analyze failed vs successful requests by tool
    let out = run(
        dir,
        &as_typed(
            r#"jq -r 'select(.tool) | "\\(.tool),\\(.status)"' logs/audit.log | sort | uniq -c | sort -k2,2 -k1,1nr"#,
        ),
    );
    let by_tool_status = as_map(&uniq_counts(&out));
    let expected = count_by(&audit, |r| {
        let tool = str_of(r, "tool")?;
        Some(format!("{tool},{}", str_of(r, "status").unwrap_or("null")))
    });
    assert_eq!(by_tool_status, expected, "{out}");
    assert_eq!(by_tool_status["list_directory,ALLOWED"], 3);
    assert_eq!(by_tool_status["list_directory,success"], 3);
    assert_eq!(
        by_tool_status["delete_file,BLOCKED"], 4,
        "a blocked REQUEST and a SECURITY_BLOCK per call"
    );
    assert_eq!(by_tool_status["delete_file,error"], 2);
    assert_eq!(by_tool_status["read_file,success"], 1);

    // Find requests with unusually long response times (potential issues):
    // none in this session (see the next test for one that has one).
    let long = audit
        .iter()
        .filter(|r| r["duration_ms"].as_u64().is_some_and(|ms| ms > 5000))
        .count();
    let out = run(dir, LONG_RESPONSES);
    assert_eq!(json_stream(&out).len(), long, "{out}");

    // Security plugin effectiveness report
    let out = run(
        dir,
        &as_typed(
            r#"jq -r 'select(.plugin) | .plugin' logs/audit.log | sort | uniq -c | awk '{printf "Plugin: %-25s Events: %d\\n", $2, $1}'"#,
        ),
    );
    assert_eq!(
        out,
        format!("Plugin: {:<25} Events: {plugin_events}\n", "tool_allowlist")
    );

    // ----- Daily/Weekly Reports -----

    let out = run(
        dir,
        &as_typed(
            "# Generate daily activity summary\n\
             echo \"=== Daily Activity Report ===\" && \\\n\
             jq -r '.timestamp[0:10]' logs/audit.log | sort | uniq -c | awk '{printf \"Date: %s - Events: %d\\\\n\", $2, $1}' | tail -7",
        ),
    );
    let per_day = count_by(&audit, |r| {
        Some(str_of(r, "timestamp").unwrap()[..10].to_owned())
    });
    let mut expected = String::from("=== Daily Activity Report ===\n");
    for (day, n) in &per_day {
        expected.push_str(&format!("Date: {day} - Events: {n}\n"));
    }
    assert_eq!(out, expected);

    let out = run(
        dir,
        r#"jq -r 'select(.event_type == "SECURITY_BLOCK") | .timestamp[0:10]' logs/audit.log | sort | uniq -c | tail -7"#,
    );
    let blocks_per_day = count_by(&audit, |r| {
        (r["event_type"] == "SECURITY_BLOCK")
            .then(|| str_of(r, "timestamp").unwrap()[..10].to_owned())
    });
    assert_eq!(as_map(&uniq_counts(&out)), blocks_per_day);

    let out = run(
        dir,
        "echo \"=== Most Used Tools ===\" && \\\n\
         jq -r 'select(.event_type == \"REQUEST\" and .tool) | .tool' logs/audit.log | sort | uniq -c | sort -nr | head -10",
    );
    let (title, rest) = out.split_once('\n').expect("a title line");
    assert_eq!(title, "=== Most Used Tools ===");
    assert_eq!(as_map(&uniq_counts(rest)), request_tools);

    // ----- CSV Format Analysis: Analysis with Command-Line Tools -----

    // "Count total requests (excluding header)": it counts every row, that
    // is every event (the csv file holds the same events as the json one).
    let out = run(dir, "tail -n +2 logs/audit.csv | wc -l");
    assert_eq!(out.trim(), audit.len().to_string(), "one csv row per event");

    // Most frequently used tools (every row that names a tool)
    let out = run(
        dir,
        r#"tail -n +2 logs/audit.csv | cut -d',' -f4 | grep -v '^$' | sort | uniq -c | sort -nr"#,
    );
    let counts = uniq_counts(&out);
    assert_descending(&counts, "csv tools");
    let tool_rows = count_by(&audit, |r| str_of(r, "tool").map(str::to_owned));
    assert_eq!(as_map(&counts), tool_rows, "{out}");

    // Security blocks by tool
    let out = run(
        dir,
        r#"tail -n +2 logs/audit.csv | awk -F',' '$2=="SECURITY_BLOCK" {print $4}' | sort | uniq -c"#,
    );
    assert_eq!(as_map(&uniq_counts(&out)), blocked_tools, "{out}");

    // Average response time: checked with the json one above.

    // ----- Analysis with Python (the csv module instead of pandas) -----
    if have_tool(
        "python3",
        "the tutorial's Python analysis of the CSV audit file",
    ) {
        let script = "import csv, json\n\
            with open('logs/audit.csv', newline='') as f:\n\
            \x20   rows = list(csv.DictReader(f))\n\
            tools = [r['tool'] for r in rows if r['tool']]\n\
            blocks = [r for r in rows if r['event_type'] == 'SECURITY_BLOCK']\n\
            times = [float(r['duration_ms']) for r in rows if r['duration_ms']]\n\
            print(json.dumps({'total': len(rows), 'unique_tools': len(set(tools)),\n\
            \x20   'blocks': len(blocks), 'average': sum(times) / len(times)}))\n";
        let output = Command::new("python3")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run python3");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(summary["total"], audit.len());
        assert_eq!(summary["unique_tools"], tool_rows.len());
        assert_eq!(summary["blocks"], 3);
        let average = summary["average"].as_f64().unwrap();
        assert!((average - mean).abs() < 1e-9, "{summary} vs {mean}");
    }
}

#[test]
fn the_long_response_query_finds_the_slow_call() {
    if !have_tool("jq", "the tutorial's jq analysis commands") {
        return;
    }
    let dir = TempDir::new("audit analysis slow");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["slow", "read_file"])
        .sink(Sink::new("logs/audit.log", "json"))
        .sink(Sink::new("logs/audit.csv", "csv"))
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(1));
    gateway.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                         "params": {"name": "slow", "arguments": {"ms": SLOW_MS}}}));
    for id in [3, 4] {
        let read = gateway.call_tool(json!(id), "read_file", json!({"path": "readme.txt"}));
        assert_eq!(result_text(&read), "ok: read_file");
    }
    assert_eq!(result_text(&gateway.response(&json!(2))), "done");
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let audit = read_audit(&dir.join("logs/audit.log"));
    let slow = record_for(&audit, "RESPONSE", "2");
    assert!(slow["duration_ms"].as_u64().unwrap() >= SLOW_MS, "{slow}");
    let out = run(dir.path(), LONG_RESPONSES);
    let long = json_stream(&out);
    assert_eq!(long.len(), 1, "only the slow call took over 5 s: {out}");
    assert_eq!(
        long[0],
        json!({
            "tool": "slow",
            "duration_ms": slow["duration_ms"],
            "timestamp": slow["timestamp"],
            "request_id": "2"
        })
    );
    // One long call among short ones: the averages must not round it away.
    let (forwarded, mean) = mean_duration(&audit);
    assert_eq!(forwarded, 4, "{}", show(&audit));
    check_averages(dir.path(), mean);
}
