//! Helpers shared by the audit-trail end-to-end tests (`audit_trail.rs`,
//! `audit_durability.rs`, `audit_analysis.rs`): configs with several
//! `file_auditing` plugins, readers for the four formats, and the
//! missing-tool convention for `jq` and `python3`.
//!
//! Kept apart from `support/mod.rs` so the shared helpers stay as they are;
//! every test binary that uses this module also declares `mod support;`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use crate::support::{security_yaml, write_file, yaml_list};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The CSV columns, in order, as docs/audit-log.md and the tutorial give them.
pub const CSV_COLUMNS: [&str; 10] = [
    "timestamp",
    "event_type",
    "method",
    "tool",
    "status",
    "request_id",
    "plugin",
    "reason",
    "duration_ms",
    "server_name",
];

/// The CSV header line, without its line ending.
pub const CSV_HEADER: &str =
    "timestamp,event_type,method,tool,status,request_id,plugin,reason,duration_ms,server_name";

// ----- configs -----

/// One `file_auditing` plugin.
#[derive(Debug, Clone)]
pub struct Sink {
    /// `output_file`, relative to the config file.
    pub file: String,
    /// `format` as written in the config (`json`, `line`, `simple`, …).
    pub format: String,
    /// `mode`, if written.
    pub mode: Option<String>,
    /// `max_file_size_mb`.
    pub max_file_size_mb: f64,
    /// `backup_count`.
    pub backup_count: u32,
    /// `critical`, if written.
    pub critical: Option<bool>,
    /// `csv_config`: (delimiter, quote_style), if written.
    pub csv: Option<(String, String)>,
}

impl Sink {
    /// A sink writing `format` to `file` with the defaults (10 MB, 5 backups).
    pub fn new(file: &str, format: &str) -> Sink {
        Sink {
            file: file.to_owned(),
            format: format.to_owned(),
            mode: None,
            max_file_size_mb: 10.0,
            backup_count: 5,
            critical: None,
            csv: None,
        }
    }

    /// Sets `mode`.
    pub fn mode(mut self, mode: &str) -> Sink {
        self.mode = Some(mode.to_owned());
        self
    }

    /// Sets `max_file_size_mb` and `backup_count`.
    pub fn rotate(mut self, max_file_size_mb: f64, backup_count: u32) -> Sink {
        self.max_file_size_mb = max_file_size_mb;
        self.backup_count = backup_count;
        self
    }

    /// Sets `critical`.
    pub fn critical(mut self, critical: bool) -> Sink {
        self.critical = Some(critical);
        self
    }

    /// Sets `csv_config` (`delimiter` is the character itself, e.g. "\t").
    pub fn csv(mut self, delimiter: &str, quote_style: &str) -> Sink {
        self.csv = Some((delimiter.to_owned(), quote_style.to_owned()));
        self
    }

    fn yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
        let mut text =
            String::from("    - policy: \"file_auditing\"\n      enabled: true\n      config:\n");
        text.push_str(&format!("        output_file: {}\n", q(&self.file)));
        text.push_str(&format!("        format: {}\n", q(&self.format)));
        if let Some(mode) = &self.mode {
            text.push_str(&format!("        mode: {}\n", q(mode)));
        }
        text.push_str(&format!(
            "        max_file_size_mb: {}\n        backup_count: {}\n",
            self.max_file_size_mb, self.backup_count
        ));
        if let Some(critical) = self.critical {
            text.push_str(&format!("        critical: {critical}\n"));
        }
        if let Some((delimiter, quote_style)) = &self.csv {
            // JSON strings are YAML double-quoted scalars: "\t" is a tab.
            text.push_str(&format!(
                "        csv_config:\n          delimiter: {}\n          quote_style: {}\n",
                q(delimiter),
                q(quote_style)
            ));
        }
        text
    }
}

/// A gateway config with any number of audit sinks.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The upstream argv.
    pub upstream: Vec<String>,
    /// `proxy.upstream.name`, if set.
    pub upstream_name: Option<String>,
    /// `Some(tools)`: a `tool_allowlist` in allowlist mode.
    pub allowed_tools: Option<Vec<String>>,
    /// The `file_auditing` plugins, in order.
    pub sinks: Vec<Sink>,
}

impl AuditConfig {
    /// No sinks, no allowlist.
    pub fn new(upstream: Vec<String>) -> AuditConfig {
        AuditConfig {
            upstream,
            upstream_name: None,
            allowed_tools: None,
            sinks: Vec::new(),
        }
    }

    /// Adds a sink.
    pub fn sink(mut self, sink: Sink) -> AuditConfig {
        self.sinks.push(sink);
        self
    }

    /// Only `tools` may be listed and called.
    pub fn allow(mut self, tools: &[&str]) -> AuditConfig {
        self.allowed_tools = Some(tools.iter().map(|t| t.to_string()).collect());
        self
    }

    /// Sets `proxy.upstream.name`.
    pub fn name(mut self, name: &str) -> AuditConfig {
        self.upstream_name = Some(name.to_owned());
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut text = String::from("proxy:\n  transport: stdio\n  upstream:\n");
        text.push_str(&format!("    command: {}\n", yaml_list(&self.upstream)));
        if let Some(name) = &self.upstream_name {
            text.push_str(&format!(
                "    name: {}\n",
                serde_json::to_string(name).expect("strings serialise")
            ));
        }
        text.push_str("plugins:\n  auditing:\n");
        for sink in &self.sinks {
            text.push_str(&sink.yaml());
        }
        if let Some(tools) = &self.allowed_tools {
            text.push_str(&security_yaml(tools));
        }
        text
    }

    /// Writes `gatekit.yaml` into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("gatekit.yaml");
        write_file(&path, &self.yaml());
        path
    }
}

// ----- tools the tests need besides cargo -----

/// Whether `program` (e.g. `jq`, `python3`) can be run. When it cannot,
/// this fails the test if `CI=true` and otherwise prints why the check is
/// skipped, as [`crate::support::real_server`] does for Node.js.
pub fn have_tool(program: &str, needed_for: &str) -> bool {
    static FOUND: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());
    let known = FOUND
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(program)
        .copied();
    let runs = known.unwrap_or_else(|| {
        let runs = Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(program.to_owned(), runs);
        runs
    });
    if runs {
        return true;
    }
    let why = format!("`{program}` is not installed or not on PATH");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}; it is needed for {needed_for} (CI=true, so this is a failure, not a skip)");
    }
    // Straight to the stderr handle: libtest captures `eprintln!`, and a
    // skip must be visible without --nocapture.
    let _ = writeln!(std::io::stderr(), "SKIPPED {needed_for}: {why}");
    false
}

// ----- audit files on disk -----

/// Reads a file as UTF-8 text, failing the test with the path.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `n`th backup of `path`: `audit.log` → `audit.log.n`.
pub fn backup_path_of(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `path` and its backups that exist, oldest first (`path.N` … `path.1`,
/// then `path`), so their contents concatenate in the order written.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut n = 1;
    while backup_path_of(path, n).exists() {
        n += 1;
    }
    let mut files: Vec<PathBuf> = (1..n).rev().map(|n| backup_path_of(path, n)).collect();
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

/// Parses json audit text: every line one JSON object, the text ending
/// with a newline.
pub fn parse_json_lines(text: &str, what: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends with a partial line"
    );
    text.lines()
        .enumerate()
        .map(|(n, line)| match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("line {} of {what} is not a JSON object: {line:?}", n + 1),
        })
        .collect()
}

// ----- csv -----

/// How a CSV file quotes, as far as reading it back is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvQuoting {
    /// `minimal`, `all`, `nonnumeric`: RFC 4180 double quotes.
    Quotes,
    /// `none`: no quotes; `\` escapes the next character.
    Backslash,
}

/// One CSV row as read back: its fields, and whether it ended with CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub fields: Vec<String>,
    pub crlf: bool,
}

/// Parses CSV text (an independent reader, not Gatekit's writer). Quoted
/// fields may hold the delimiter, doubled quotes and newlines; with
/// [`CsvQuoting::Backslash`] a `\` makes the next character literal, as
/// Python's `csv` reader does with `escapechar='\\'` and `QUOTE_NONE`.
pub fn parse_csv(text: &str, delimiter: char, quoting: CsvQuoting) -> Vec<CsvRow> {
    let chars: Vec<char> = text.chars().collect();
    let mut rows = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut i = 0;
    let mut at_field_start = true;
    let mut in_quotes = false;
    while i < chars.len() {
        let c = chars[i];
        if in_quotes {
            if c == '"' {
                if chars.get(i + 1) == Some(&'"') {
                    field.push('"');
                    i += 2;
                    continue;
                }
                in_quotes = false;
            } else {
                field.push(c);
            }
            i += 1;
            continue;
        }
        match c {
            '"' if quoting == CsvQuoting::Quotes && at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            '\\' if quoting == CsvQuoting::Backslash => {
                let next = *chars
                    .get(i + 1)
                    .unwrap_or_else(|| panic!("a CSV file ends with a lone backslash"));
                field.push(next);
                at_field_start = false;
                i += 1;
            }
            c if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.get(i + 1) == Some(&'\n') => {
                fields.push(std::mem::take(&mut field));
                rows.push(CsvRow {
                    fields: std::mem::take(&mut fields),
                    crlf: true,
                });
                at_field_start = true;
                i += 1;
            }
            '\n' => {
                fields.push(std::mem::take(&mut field));
                rows.push(CsvRow {
                    fields: std::mem::take(&mut fields),
                    crlf: false,
                });
                at_field_start = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
        i += 1;
    }
    assert!(!in_quotes, "a CSV file ends inside a quoted field");
    assert!(
        field.is_empty() && fields.is_empty(),
        "a CSV file ends with a partial row: {fields:?} {field:?}"
    );
    rows
}

/// A text value as Gatekit's CSV writer stores it: text a spreadsheet would
/// evaluate (starting with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`.
pub fn neutralised(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

/// The CSV row docs/audit-log.md says a json record becomes: the ten
/// columns, absent fields empty, text neutralised, `duration_ms` as is.
pub fn csv_fields_of(record: &Value) -> Vec<String> {
    CSV_COLUMNS
        .iter()
        .map(|column| match record.get(*column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => neutralised(s),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => panic!("unexpected {column} value {other} in {record}"),
        })
        .collect()
}

/// Reads CSV files with Python's `csv` module, each with its delimiter and
/// quoting, in one python3 run; returns each file's rows, or `None` (after
/// the visible skip message) when python3 is missing.
pub fn python_csv_rows(files: &[(PathBuf, char, CsvQuoting)]) -> Option<Vec<Vec<Vec<String>>>> {
    if !have_tool(
        "python3",
        "reading the CSV audit file with Python's csv module",
    ) {
        return None;
    }
    let script = "import csv, json, sys\n\
                  out = []\n\
                  for spec in json.load(sys.stdin):\n\
                  \x20   extra = {} if spec['quotes'] else {'quoting': csv.QUOTE_NONE, 'escapechar': '\\\\'}\n\
                  \x20   with open(spec['path'], newline='', encoding='utf-8') as f:\n\
                  \x20       out.append(list(csv.reader(f, delimiter=spec['delimiter'], strict=True, **extra)))\n\
                  json.dump(out, sys.stdout)\n";
    let specs: Vec<Value> = files
        .iter()
        .map(|(path, delimiter, quoting)| {
            serde_json::json!({
                "path": path.to_string_lossy(),
                "delimiter": delimiter.to_string(),
                "quotes": *quoting == CsvQuoting::Quotes,
            })
        })
        .collect();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(Value::Array(specs).to_string().as_bytes())
        .expect("write to python3");
    let output = child.wait_with_output().expect("wait for python3");
    assert!(
        output.status.success(),
        "Python's csv module cannot read the audit files: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the script prints JSON"))
}
