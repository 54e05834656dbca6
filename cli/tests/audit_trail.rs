//! The audit trail's content, end to end: one session through the gateway
//! written by several `file_auditing` plugins at once (json, line, debug and
//! csv, the older spellings `jsonl` and `simple`, and the `security_only` and
//! `operations_only` modes), checked against each other and against the
//! shapes the audit-logging tutorial and docs/audit-log.md show; records in
//! the file before the client sees the message; and CSV rows that hostile
//! tool names and ids cannot break, for every quote style and delimiter.

mod audit_support;
mod support;

use audit_support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use support::*;

/// The client name `Session::initialize` sends.
const CLIENT_NAME: &str = "gatekit-e2e";
/// The name test-upstream gives in its `initialize` result.
const SERVER_NAME: &str = "test-upstream";

// ----- reading each format back -----

/// One record of the `line` format.
#[derive(Debug, Clone)]
struct LineRecord {
    raw: String,
    /// `2024-06-16 10:30:15`
    time: String,
    event_type: String,
    /// What follows `EVENT: `, without the ` (id …)` suffix.
    body: String,
    request_id: Option<String>,
}

fn parse_line_format(text: &str, what: &str) -> Vec<LineRecord> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends with a partial line"
    );
    text.lines()
        .map(|raw| {
            let b = raw.as_bytes();
            let shape_ok = b.len() > 26
                && b[..19].iter().enumerate().all(|(i, c)| match i {
                    4 | 7 => *c == b'-',
                    10 => *c == b' ',
                    13 | 16 => *c == b':',
                    _ => c.is_ascii_digit(),
                })
                && &raw[19..26] == " UTC - ";
            assert!(
                shape_ok,
                "{what}: a line that does not start like `2024-06-16 10:30:15 UTC - `: {raw:?}"
            );
            let rest = &raw[26..];
            let (event_type, body) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("{what}: no `EVENT: ` in {raw:?}"));
            let (body, request_id) = match body.rfind(" (id ") {
                Some(at) if body.ends_with(')') => {
                    (&body[..at], Some(body[at + 5..body.len() - 1].to_owned()))
                }
                _ => (body, None),
            };
            LineRecord {
                raw: raw.to_owned(),
                time: raw[..19].to_owned(),
                event_type: event_type.to_owned(),
                body: body.to_owned(),
                request_id,
            }
        })
        .collect()
}

/// One record of the `debug` format: `[2024-06-16 10:30:15.123] KEY=value …`.
#[derive(Debug, Clone)]
struct DebugRecord {
    raw: String,
    /// `2024-06-16 10:30:15.123`
    time: String,
    /// The pairs in order; string values decoded, JSON values as JSON.
    pairs: Vec<(String, Value)>,
}

impl DebugRecord {
    fn get(&self, key: &str) -> Option<&Value> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

fn parse_debug_format(text: &str, what: &str) -> Vec<DebugRecord> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends with a partial line"
    );
    text.lines()
        .map(|raw| {
            assert!(
                raw.len() > 25 && raw.starts_with('[') && &raw[24..26] == "] ",
                "{what}: a line that does not start like `[2024-06-16 10:30:15.123] `: {raw:?}"
            );
            let time = raw[1..24].to_owned();
            let mut rest = &raw[26..];
            let mut pairs = Vec::new();
            while !rest.is_empty() {
                let (key, after) = rest
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{what}: not KEY=value at {rest:?} in {raw:?}"));
                assert!(
                    key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "{what}: bad key {key:?} in {raw:?}"
                );
                let (value, used) = match after.as_bytes().first() {
                    Some(b'"' | b'{' | b'[') => {
                        let mut stream =
                            serde_json::Deserializer::from_str(after).into_iter::<Value>();
                        let value = stream.next().and_then(Result::ok).unwrap_or_else(|| {
                            panic!("{what}: bad JSON value for {key} in {raw:?}")
                        });
                        (value, stream.byte_offset())
                    }
                    _ => {
                        let end = after.find(' ').unwrap_or(after.len());
                        (Value::String(after[..end].to_owned()), end)
                    }
                };
                pairs.push((key.to_owned(), value));
                rest = &after[used..];
                if !rest.is_empty() {
                    rest = rest
                        .strip_prefix(' ')
                        .unwrap_or_else(|| panic!("{what}: no space after {key} in {raw:?}"));
                }
            }
            DebugRecord {
                raw: raw.to_owned(),
                time,
                pairs,
            }
        })
        .collect()
}

/// Reads a CSV audit file written with the default csv_config.
fn read_default_csv(path: &Path) -> Vec<Vec<String>> {
    let text = read_text(path);
    let rows = parse_csv(&text, ',', CsvQuoting::Quotes);
    assert!(
        text.starts_with(&format!("{CSV_HEADER}\r\n")),
        "{} does not start with the header:\n{text}",
        path.display()
    );
    for row in &rows {
        assert!(row.crlf, "rows end with CRLF: {row:?}");
        assert_eq!(row.fields.len(), 10, "ten columns: {row:?}");
    }
    rows.into_iter().skip(1).map(|r| r.fields).collect()
}

/// (event_type, request_id) of every record, in file order, for each of
/// the formats: what "the four formats describe the same events" compares.
type Events = Vec<(String, Option<String>)>;

fn json_events(records: &[Value]) -> Events {
    records
        .iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap_or_default().to_owned(),
                r["request_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The `all`-mode files of the format test, in each format's own terms.
struct AllFiles<'a> {
    json: &'a Path,
    line: &'a Path,
    debug: &'a Path,
    csv: &'a Path,
}

impl AllFiles<'_> {
    /// The events of each file right now: json, line, debug, csv.
    fn events(&self) -> [Events; 4] {
        let json = json_events(&parse_json_lines(&read_text(self.json), "the json file"));
        let line = parse_line_format(&read_text(self.line), "the line file")
            .into_iter()
            .map(|r| (r.event_type, r.request_id))
            .collect();
        let debug = parse_debug_format(&read_text(self.debug), "the debug file")
            .into_iter()
            .map(|r| {
                (
                    r.text("EVENT").unwrap_or_default().to_owned(),
                    r.text("REQUEST_ID").map(str::to_owned),
                )
            })
            .collect();
        let csv = read_default_csv(self.csv)
            .into_iter()
            .map(|f| {
                let id = (!f[5].is_empty()).then(|| f[5].clone());
                (f[1].clone(), id)
            })
            .collect();
        [json, line, debug, csv]
    }

    /// Asserts that every file already holds a record of `event_type`
    /// for `request_id` (the client has just received that message).
    fn assert_recorded(&self, event_type: &str, request_id: Option<&str>, count: usize) {
        let names = ["json", "line", "debug", "csv"];
        for (name, events) in names.iter().zip(self.events()) {
            let found = events
                .iter()
                .filter(|(e, id)| e == event_type && id.as_deref() == request_id)
                .count();
            assert!(
                found >= count,
                "the client received a {event_type} (id {request_id:?}) before the {name} file had its record ({found} of {count}):\n{events:?}"
            );
        }
    }
}

#[test]
fn every_format_and_mode_describes_the_same_session() {
    let dir = TempDir::new("audit formats");
    let config = AuditConfig::new(test_upstream(&[]))
        .name("test upstream")
        .allow(&["echo", "read_file", "notify"])
        .sink(Sink::new("logs/all.json", "json"))
        .sink(Sink::new("logs/all-jsonl.json", "jsonl").mode("all_events"))
        .sink(Sink::new("logs/all.line", "line"))
        .sink(Sink::new("logs/all-simple.line", "simple"))
        .sink(Sink::new("logs/all.debug", "debug"))
        .sink(Sink::new("logs/all.csv", "csv"))
        .sink(Sink::new("logs/security.json", "json").mode("security_only"))
        .sink(Sink::new("logs/security.csv", "csv").mode("security_only"))
        .sink(Sink::new("logs/operations.line", "line").mode("operations_only"))
        .write(dir.path());
    let json_path = dir.join("logs/all.json");
    let line_path = dir.join("logs/all.line");
    let debug_path = dir.join("logs/all.debug");
    let csv_path = dir.join("logs/all.csv");
    let files = AllFiles {
        json: &json_path,
        line: &line_path,
        debug: &debug_path,
        csv: &csv_path,
    };

    let mut gateway = Session::gateway(&config);
    // After every message the client receives, each file must already hold
    // its record: records are written before the message is forwarded.
    let init = gateway.initialize(json!(1));
    assert_eq!(init["result"]["serverInfo"]["name"], SERVER_NAME, "{init}");
    files.assert_recorded("RESPONSE", Some("1"), 1);
    gateway.notify("notifications/initialized", json!({}));

    let list = gateway.request(json!(2), "tools/list", json!({}));
    assert_eq!(tool_names(&list), ["echo", "notify", "read_file"]);
    files.assert_recorded("TOOLS_FILTERED", Some("2"), 1);
    files.assert_recorded("RESPONSE", Some("2"), 1);

    result_text(&gateway.call_tool(json!(3), "echo", json!({"say": "hello"})));
    files.assert_recorded("RESPONSE", Some("3"), 1);

    let read = gateway.call_tool(
        json!("call-4"),
        "read_file",
        json!({"path": "/srv/readme.txt"}),
    );
    assert_eq!(result_text(&read), "ok: read_file");
    files.assert_recorded("RESPONSE", Some("call-4"), 1);

    let blocked = gateway.call_tool(json!(5), "delete_file", json!({"path": "/srv/readme.txt"}));
    assert_eq!(expect_error(&blocked, -32001), BLOCK_MESSAGE);
    files.assert_recorded("SECURITY_BLOCK", Some("5"), 1);
    files.assert_recorded("RESPONSE", Some("5"), 1);

    // Server notifications, then the answer: each recorded before it arrives.
    gateway.send(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                         "params": {"name": "notify", "arguments": {}, "_meta": {"progressToken": "p6"}}}));
    let mut notifications = 0;
    loop {
        let message = gateway
            .recv()
            .unwrap_or_else(|| panic!("stdout closed during the notify call"));
        if message.value.get("method").is_some() {
            notifications += 1;
            files.assert_recorded("NOTIFICATION", None, notifications + 1);
        } else {
            assert_eq!(message.value["id"], 6, "{}", message.raw);
            files.assert_recorded("RESPONSE", Some("6"), 1);
            break;
        }
    }
    assert_eq!(notifications, 2, "progress and log notifications");

    // A line that is not JSON: a protocol error, answered by the gateway.
    gateway.send_line("this is not json");
    let parse_error = gateway.response(&Value::Null);
    expect_error(&parse_error, -32700);
    files.assert_recorded("PROTOCOL_ERROR", None, 1);

    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    // --- json: the reference the other formats are compared with ---
    let json_text = read_text(&json_path);
    let json = parse_json_lines(&json_text, "all.json");
    check_common_fields(&json);
    let events = json_events(&json);
    let expected_events: Vec<(&str, Option<&str>)> = vec![
        ("UPSTREAM_STARTED", None),
        ("REQUEST", Some("1")),
        ("RESPONSE", Some("1")),
        ("NOTIFICATION", None),
        ("REQUEST", Some("2")),
        ("TOOLS_FILTERED", Some("2")),
        ("RESPONSE", Some("2")),
        ("REQUEST", Some("3")),
        ("RESPONSE", Some("3")),
        ("REQUEST", Some("call-4")),
        ("RESPONSE", Some("call-4")),
        ("REQUEST", Some("5")),
        ("SECURITY_BLOCK", Some("5")),
        ("RESPONSE", Some("5")),
        ("REQUEST", Some("6")),
        ("NOTIFICATION", None),
        ("NOTIFICATION", None),
        ("RESPONSE", Some("6")),
        ("PROTOCOL_ERROR", None),
        ("UPSTREAM_EXITED", None),
    ];
    let got: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|(e, id)| (e.as_str(), id.as_deref()))
        .collect();
    assert_eq!(
        got,
        expected_events,
        "the session's events, in order:\n{}",
        show(&json)
    );
    for record in &json {
        assert_eq!(record["server_name"], "test upstream", "{record}");
    }
    let request3 = record_for(&json, "REQUEST", "3");
    assert_eq!(request3["method"], "tools/call");
    assert_eq!(request3["tool"], "echo");
    assert_eq!(request3["status"], "ALLOWED");
    assert_eq!(request3["plugin"], "tool_allowlist");
    assert_eq!(request3["reason"], "Request approved");
    assert_eq!(request3["params"], json!({"say": "hello"}));
    let response3 = record_for(&json, "RESPONSE", "3");
    assert_eq!(response3["status"], "success");
    assert_eq!(response3["tool"], "echo");
    assert!(response3["duration_ms"].is_u64(), "{response3}");
    let block = record_for(&json, "SECURITY_BLOCK", "5");
    assert_eq!(block["reason"], "Tool 'delete_file' is not in allowlist");
    assert_eq!(block["plugin_metadata"], json!({"mode": "allowlist"}));
    let filtered = record_for(&json, "TOOLS_FILTERED", "2");
    assert_eq!(
        filtered["plugin_metadata"]["filtered_count"], 7,
        "{filtered}"
    );
    assert_eq!(filtered["reason"], "Filtered 7 tools from response");
    let response5 = record_for(&json, "RESPONSE", "5");
    assert_eq!(response5["status"], "error");
    assert_eq!(response5["error_code"], -32001);
    assert!(response5.get("duration_ms").is_none(), "{response5}");

    // The older spellings write the same bytes as the current ones.
    assert_eq!(
        read_text(&dir.join("logs/all-jsonl.json")),
        json_text,
        "jsonl = json"
    );
    let line_text = read_text(&line_path);
    assert_eq!(
        read_text(&dir.join("logs/all-simple.line")),
        line_text,
        "simple = line"
    );

    // --- the four formats: same events, same order, same times ---
    let [from_json, from_line, from_debug, from_csv] = files.events();
    assert_eq!(from_json, events);
    assert_eq!(from_line, events, "the line file describes the same events");
    assert_eq!(
        from_debug, events,
        "the debug file describes the same events"
    );
    assert_eq!(from_csv, events, "the csv file describes the same events");

    // line: `2024-06-16 10:30:15 UTC - REQUEST: tools/call - list_directory - ALLOWED`
    let lines = parse_line_format(&line_text, "all.line");
    for (line, record) in lines.iter().zip(&json) {
        let ts = record["timestamp"].as_str().unwrap();
        assert_eq!(
            line.time,
            format!("{} {}", &ts[..10], &ts[11..19]),
            "{}",
            line.raw
        );
    }
    let line_of = |event: &str, id: &str| {
        lines
            .iter()
            .find(|l| l.event_type == event && l.request_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no {event} line for {id}:\n{line_text}"))
    };
    assert_eq!(line_of("REQUEST", "3").body, "tools/call - echo - ALLOWED");
    assert_eq!(
        line_of("RESPONSE", "3").body,
        format!(
            "success - tools/call - echo - {} ms",
            response3["duration_ms"]
        )
    );
    assert_eq!(
        line_of("SECURITY_BLOCK", "5").body,
        "delete_file - [tool_allowlist] Tool 'delete_file' is not in allowlist"
    );
    assert!(
        line_of("RESPONSE", "5")
            .body
            .starts_with("error - tools/call - delete_file"),
        "{}",
        line_of("RESPONSE", "5").raw
    );
    assert_eq!(
        line_of("TOOLS_FILTERED", "2").body,
        "tools/list - [tool_allowlist] Filtered 7 tools from response"
    );

    // debug: every field of the json record, under its own key.
    let debug = parse_debug_format(&read_text(&debug_path), "all.debug");
    let mut named = false;
    for (entry, record) in debug.iter().zip(&json) {
        let ts = record["timestamp"].as_str().unwrap();
        assert_eq!(
            entry.time,
            format!("{} {}", &ts[..10], &ts[11..23]),
            "{}",
            entry.raw
        );
        let same_text = [
            ("REQUEST_ID", "request_id"),
            ("EVENT", "event_type"),
            ("METHOD", "method"),
            ("TOOL", "tool"),
            ("STATUS", "status"),
            ("PLUGIN", "plugin"),
            ("REASON", "reason"),
            ("SERVER", "server_name"),
            ("ERROR", "error_message"),
        ];
        for (key, field) in same_text {
            assert_eq!(
                entry.text(key),
                record.get(field).and_then(Value::as_str),
                "{key} of {}\nvs {record}",
                entry.raw
            );
        }
        assert_eq!(
            entry.get("METADATA"),
            record.get("plugin_metadata"),
            "{}",
            entry.raw
        );
        assert_eq!(entry.get("PARAMS"), record.get("params"), "{}", entry.raw);
        assert_eq!(
            entry.text("ERROR_CODE").map(str::to_owned),
            record.get("error_code").map(Value::to_string),
            "{}",
            entry.raw
        );
        let duration = record["duration_ms"]
            .as_u64()
            .map(|ms| format!("{}.{:03}s", ms / 1000, ms % 1000));
        assert_eq!(
            entry.text("DURATION").map(str::to_owned),
            duration,
            "{}",
            entry.raw
        );
        // SOURCE: the name each peer gave in the handshake, once given.
        let source = entry
            .text("SOURCE")
            .unwrap_or_else(|| panic!("no SOURCE: {}", entry.raw));
        let generic = record["source"].as_str().unwrap();
        let handshake_name = match generic {
            "client" => CLIENT_NAME,
            "server" => SERVER_NAME,
            _ => "gateway",
        };
        if named {
            assert_eq!(source, handshake_name, "{}", entry.raw);
        } else {
            assert!(
                source == handshake_name || source == generic,
                "{}",
                entry.raw
            );
        }
        if record["event_type"] == "RESPONSE" && record["request_id"] == "1" {
            named = true;
        }
        if record["event_type"] == "REQUEST" && record["tool"].is_string() {
            let decision = if record["status"] == "ALLOWED" {
                "ALLOWED"
            } else {
                "BLOCKED"
            };
            assert_eq!(
                entry.get("SECURITY_CHECKS"),
                Some(&json!([format!("tool_allowlist:{decision}")])),
                "{}",
                entry.raw
            );
        }
    }

    // csv: the header, then each json record as its ten columns.
    let csv = read_default_csv(&csv_path);
    assert_eq!(csv.len(), json.len());
    for (row, record) in csv.iter().zip(&json) {
        assert_eq!(row, &csv_fields_of(record), "csv row vs {record}");
    }

    // --- modes: the same records, filtered ---
    let is_security = |r: &Value| {
        matches!(
            r["event_type"].as_str(),
            Some("SECURITY_BLOCK" | "TOOLS_FILTERED" | "PROTOCOL_ERROR")
        )
    };
    let json_lines: Vec<&str> = json_text.lines().collect();
    let security_expected: Vec<&str> = json_lines
        .iter()
        .zip(&json)
        .filter(|(_, r)| is_security(r) || r["status"] == "BLOCKED")
        .map(|(l, _)| *l)
        .collect();
    let security_text = read_text(&dir.join("logs/security.json"));
    assert_eq!(
        security_text.lines().collect::<Vec<_>>(),
        security_expected,
        "security_only keeps the security records and blocked requests, byte for byte"
    );
    let security_events: Vec<String> = parse_json_lines(&security_text, "security.json")
        .iter()
        .map(|r| format!("{} {}", r["event_type"], r["status"]))
        .collect();
    assert_eq!(
        security_events,
        [
            r#""TOOLS_FILTERED" null"#,
            r#""REQUEST" "BLOCKED""#,
            r#""SECURITY_BLOCK" "BLOCKED""#,
            r#""PROTOCOL_ERROR" "error""#
        ]
    );
    let security_csv = read_default_csv(&dir.join("logs/security.csv"));
    let security_rows: Vec<&Vec<String>> = csv
        .iter()
        .zip(&json)
        .filter(|(_, r)| is_security(r) || r["status"] == "BLOCKED")
        .map(|(row, _)| row)
        .collect();
    assert_eq!(security_csv.iter().collect::<Vec<_>>(), security_rows);
    let operations_expected: Vec<&str> = line_text
        .lines()
        .zip(&json)
        .filter(|(_, r)| !is_security(r))
        .map(|(l, _)| l)
        .collect();
    let operations_text = read_text(&dir.join("logs/operations.line"));
    assert_eq!(
        operations_text.lines().collect::<Vec<_>>(),
        operations_expected,
        "operations_only keeps the traffic and the upstream lifecycle"
    );
    let lifecycle = operations_text
        .lines()
        .filter(|l| l.contains("UPSTREAM_STARTED: ") || l.contains("UPSTREAM_EXITED: "))
        .count();
    assert_eq!(lifecycle, 2, "{operations_text}");
}

/// Tool names (and ids) an agent or a hostile server could send: delimiters,
/// quotes, newlines, backslashes, and text a spreadsheet would execute.
const HOSTILE_NAMES: [&str; 17] = [
    "a,b",
    "semi;colon",
    "tab\there",
    "say \"hi\"",
    "\"quoted\"",
    "two\nlines",
    "cr\r\nlf",
    "=cmd|' /C calc'!A0",
    "@x",
    "-1+2",
    "+SUM(1,2)",
    "\tleading tab",
    "\rleading cr",
    " edge space ",
    "back\\slash\\",
    "'single'",
    "é→✓ unicode",
];

const DELIMITERS: [(&str, &str); 3] = [("comma", ","), ("semicolon", ";"), ("tab", "\t")];
const QUOTE_STYLES: [&str; 4] = ["minimal", "all", "nonnumeric", "none"];

#[test]
fn hostile_tool_names_and_ids_never_break_a_record() {
    let dir = TempDir::new("audit hostile");
    let mut config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/h.json", "json"))
        .sink(Sink::new("logs/h.line", "line"))
        .sink(Sink::new("logs/h.debug", "debug"));
    for (name, delimiter) in DELIMITERS {
        for style in QUOTE_STYLES {
            config = config.sink(
                Sink::new(&format!("logs/h-{name}-{style}.csv"), "csv").csv(delimiter, style),
            );
        }
    }
    let config = config.write(dir.path());

    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    // Each hostile name is blocked by the allowlist and recorded three times
    // (REQUEST, SECURITY_BLOCK, RESPONSE), reason included.
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let response = gateway.call_tool(json!(n + 1), name, json!({"x": name}));
        assert_eq!(expect_error(&response, -32001), BLOCK_MESSAGE, "{name:?}");
    }
    // Hostile ids, on a call that passes (with a duration) and one that does not.
    let ids = [json!("=1+1"), json!("a,\"b\";c\td"), json!(-7)];
    for id in &ids {
        result_text(&gateway.call_tool(id.clone(), "echo", json!({"id": id})));
        let blocked = gateway.call_tool(id.clone(), "-=evil,\"name\"\n", json!({}));
        expect_error(&blocked, -32001);
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let json = read_audit(&dir.join("logs/h.json"));
    check_common_fields(&json);
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let id = (n + 1).to_string();
        for event in ["REQUEST", "SECURITY_BLOCK", "RESPONSE"] {
            assert_eq!(record_for(&json, event, &id)["tool"], *name, "{event} {id}");
        }
        assert_eq!(
            record_for(&json, "SECURITY_BLOCK", &id)["reason"],
            format!("Tool '{name}' is not in allowlist")
        );
    }
    let id_texts = ["=1+1", "a,\"b\";c\td", "-7"];
    for id in id_texts {
        let ids_seen = json.iter().filter(|r| r["request_id"] == id).count();
        assert_eq!(
            ids_seen, 5,
            "two REQUESTs, a block, two RESPONSEs for {id:?}"
        );
    }

    // line and debug: one line per record, whatever the names hold.
    let lines = parse_line_format(&read_text(&dir.join("logs/h.line")), "h.line");
    assert_eq!(
        lines.len(),
        json.len(),
        "one line per record in the line format"
    );
    let debug = parse_debug_format(&read_text(&dir.join("logs/h.debug")), "h.debug");
    assert_eq!(
        debug.len(),
        json.len(),
        "one line per record in the debug format"
    );
    for (entry, record) in debug.iter().zip(&json) {
        assert_eq!(entry.text("TOOL"), record["tool"].as_str(), "{}", entry.raw);
        assert_eq!(
            entry.text("REQUEST_ID"),
            record["request_id"].as_str(),
            "{}",
            entry.raw
        );
        assert_eq!(
            entry.text("REASON"),
            record["reason"].as_str(),
            "{}",
            entry.raw
        );
    }

    // csv: every style and delimiter reads back to the same ten columns.
    let mut parsed = Vec::new();
    for (name, delimiter) in DELIMITERS {
        let d = delimiter.chars().next().unwrap();
        for style in QUOTE_STYLES {
            let path = dir.join(format!("logs/h-{name}-{style}.csv"));
            let what = format!("csv with delimiter {name}, quote_style {style}");
            let text = read_text(&path);
            let quoting = if style == "none" {
                CsvQuoting::Backslash
            } else {
                CsvQuoting::Quotes
            };
            let header = match style {
                "all" | "nonnumeric" => CSV_COLUMNS
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(delimiter),
                _ => CSV_COLUMNS.join(delimiter),
            };
            assert!(
                text.starts_with(&format!("{header}\r\n")),
                "{what}: header\n{text}"
            );
            let rows = parse_csv(&text, d, quoting);
            assert_eq!(
                rows.len(),
                json.len() + 1,
                "{what}: one row per record\n{text}"
            );
            assert_eq!(rows[0].fields, CSV_COLUMNS, "{what}");
            for (row, record) in rows[1..].iter().zip(&json) {
                assert!(row.crlf, "{what}: rows end with CRLF: {row:?}");
                let mut expected = csv_fields_of(record);
                if style == "none" {
                    // A backslash escape keeps the row whole; reading it back
                    // turns an escaped newline into the letter after the `\`.
                    for field in &mut expected {
                        *field = field.replace('\n', "n").replace('\r', "r");
                    }
                }
                assert_eq!(row.fields, expected, "{what}: row vs {record}");
                for (column, value) in CSV_COLUMNS.iter().zip(&row.fields) {
                    if *column != "duration_ms" {
                        assert!(
                            !value.starts_with(['=', '+', '-', '@', '\t', '\r']),
                            "{what}: {column} {value:?} would run in a spreadsheet"
                        );
                    }
                }
            }
            // The quote style shows on the row of a passed call's response.
            let echo = json
                .iter()
                .find(|r| {
                    r["event_type"] == "RESPONSE"
                        && r["request_id"] == "=1+1"
                        && r["tool"] == "echo"
                })
                .expect("the echo call with id =1+1 has a response");
            let ms = echo["duration_ms"].to_string();
            let raw = text
                .split("\r\n")
                .find(|row| {
                    row.contains("RESPONSE") && row.contains("echo") && row.contains("=1+1")
                })
                .unwrap_or_else(|| panic!("{what}: no raw row for the echo response\n{text}"));
            match style {
                "all" => assert!(raw.contains(&format!("\"{ms}\"")), "{what}: {raw:?}"),
                "nonnumeric" => assert!(
                    raw.contains(&format!("{d}{ms}{d}")) && raw.starts_with('"'),
                    "{what}: {raw:?}"
                ),
                _ => assert!(raw.contains(&format!("{d}{ms}{d}")), "{what}: {raw:?}"),
            }
            parsed.push((path, d, quoting, rows));
        }
    }
    // An independent reader: Python's csv module reads every file to the
    // same rows, ten columns each.
    let specs: Vec<_> = parsed
        .iter()
        .map(|(path, d, quoting, _)| (path.clone(), *d, *quoting))
        .collect();
    if let Some(python) = python_csv_rows(&specs) {
        for ((path, _, _, rows), python_rows) in parsed.iter().zip(&python) {
            let ours: Vec<&Vec<String>> = rows.iter().map(|r| &r.fields).collect();
            assert_eq!(
                python_rows.iter().collect::<Vec<_>>(),
                ours,
                "Python reads the same rows from {}",
                path.display()
            );
            for row in python_rows {
                assert_eq!(row.len(), 10, "Python sees ten columns in {row:?}");
            }
        }
    }
}

#[test]
fn a_security_only_csv_counts_the_same_blocks_as_the_json_log() {
    // Several plugins with different modes see one stream of events: the
    // security_only csv holds exactly the blocked calls the json file holds.
    let dir = TempDir::new("audit counts");
    let config = AuditConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .sink(Sink::new("logs/audit.log", "json"))
        .sink(
            Sink::new("logs/security.csv", "csv")
                .mode("security_only")
                .csv(";", "all"),
        )
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(0));
    let mut blocked_expected: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=30u32 {
        let tool = match n % 3 {
            0 => "echo",
            1 => "delete_file",
            _ => "write_file",
        };
        let response = gateway.call_tool(json!(n), tool, json!({"n": n}));
        if tool == "echo" {
            result_text(&response);
        } else {
            expect_error(&response, -32001);
            *blocked_expected.entry(tool.to_owned()).or_default() += 1;
        }
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);

    let json = read_audit(&dir.join("logs/audit.log"));
    let mut blocked_json: BTreeMap<String, usize> = BTreeMap::new();
    for block in records(&json, "SECURITY_BLOCK") {
        *blocked_json
            .entry(block["tool"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(blocked_json, blocked_expected);
    let text = read_text(&dir.join("logs/security.csv"));
    let rows = parse_csv(&text, ';', CsvQuoting::Quotes);
    let mut blocked_csv: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows[1..] {
        assert_eq!(row.fields.len(), 10);
        if row.fields[1] == "SECURITY_BLOCK" {
            *blocked_csv.entry(row.fields[3].clone()).or_default() += 1;
        } else {
            assert_eq!(
                (row.fields[1].as_str(), row.fields[4].as_str()),
                ("REQUEST", "BLOCKED"),
                "security_only: {row:?}"
            );
        }
    }
    assert_eq!(blocked_csv, blocked_expected);
    assert_eq!(
        rows.len(),
        1 + 2 * 20,
        "header + a blocked REQUEST and a SECURITY_BLOCK per block"
    );
}
