//! Golden sessions: every recorded session in `testdata/sessions/` is
//! replayed and must give exactly its expected transcript.
//!
//! Each session directory holds `config.yaml`, `capture.jsonl` (recorded
//! through the live gateway by `testdata/record-sessions.sh`) and
//! `transcript.txt`; optionally `audit.expected/` (the audit files the live
//! run wrote) and `what-if.yaml` + `what-if.txt` (a NEW config and the
//! expected what-if report against `config.yaml`). Every session is replayed
//! three ways — as recorded, one byte at a time, one chunk per message —
//! and all three must do the same (compared in canonical form, since which
//! audit records share one write depends on the chunking). The `gatekit replay` binary must print
//! the transcript too and write the same audit bytes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p gatekit --test golden` rewrites the
//! expected files from the replay; review every changed file in the diff.
//! A failure lists every failing session by name, with the first
//! difference of each.

use gatekit_core::replay::{replay, what_if, Capture, Chunking, RenderOptions};
use gatekit_core::Config;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many sessions the suite is expected to hold at least: the issue asks
/// for a dozen real ones; a lost directory must not shrink the suite quietly.
const MIN_SESSIONS: usize = 12;

fn sessions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .join("testdata/sessions")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

#[test]
fn golden_sessions() {
    let mut names: Vec<String> = fs::read_dir(sessions_dir())
        .expect("testdata/sessions exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= MIN_SESSIONS,
        "only {} sessions in {}",
        names.len(),
        sessions_dir().display()
    );
    let mut failures = Vec::new();
    for name in &names {
        let problems = check_session(&sessions_dir().join(name));
        if !problems.is_empty() {
            failures.push(format!("── {name}\n{}", problems.join("\n")));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} golden sessions failed: {}\n\n{}\n\nIf the change is intended, run `UPDATE_GOLDEN=1 cargo test -p gatekit --test golden` and review every changed file.",
            failures.len(),
            names.len(),
            failures
                .iter()
                .map(|f| f.lines().next().unwrap_or("").trim_start_matches("── "))
                .collect::<Vec<_>>()
                .join(", "),
            failures.join("\n\n")
        );
    }
}

/// Everything wrong with one session, as messages.
fn check_session(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let config = match read_config(&dir.join("config.yaml")) {
        Ok(config) => config,
        Err(e) => return vec![e],
    };
    let capture = match fs::read_to_string(dir.join("capture.jsonl"))
        .map_err(|e| e.to_string())
        .and_then(|text| Capture::parse(&text).map_err(|e| e.to_string()))
    {
        Ok(capture) => capture,
        Err(e) => return vec![format!("capture.jsonl: {e}")],
    };
    if capture.truncated {
        problems.push("capture.jsonl: the last line is cut off".to_owned());
    }

    // Which audit records share a write depends on the chunking, so the
    // chunkings are compared in canonical form (`Transcript::canonical`);
    // the golden file holds the transcript as recorded.
    let transcripts: Vec<(Chunking, _)> = Chunking::ALL
        .iter()
        .map(|&chunking| (chunking, replay(&config, &capture.inputs, chunking)))
        .collect();
    let recorded = &transcripts[0].1.render(RenderOptions::default());
    let canonical = transcripts[0]
        .1
        .canonical()
        .render(RenderOptions::default());
    for (chunking, transcript) in &transcripts[1..] {
        let text = transcript.canonical().render(RenderOptions::default());
        if text != canonical {
            problems.push(format!(
                "replayed {} it differs from as recorded (a framing bug in the core):\n{}",
                chunking.name(),
                first_difference(&canonical, &text)
            ));
        }
    }
    compare_or_update(&dir.join("transcript.txt"), recorded, &mut problems);

    let binary = run_binary_replay(dir);
    match binary {
        Ok((stdout, audit_dir)) => {
            if stdout != *recorded {
                problems.push(format!(
                    "`gatekit replay` prints something else than the core's replay:\n{}",
                    first_difference(recorded, &stdout)
                ));
            }
            check_audit_files(dir, &audit_dir, &mut problems);
            let _ = fs::remove_dir_all(&audit_dir);
        }
        Err(e) => problems.push(e),
    }

    let new_config = dir.join("what-if.yaml");
    if new_config.exists() {
        match read_config(&new_config) {
            Ok(new) => {
                let result = what_if(&capture.inputs, &config, &new);
                let report = result.render();
                compare_or_update(&dir.join("what-if.txt"), &report, &mut problems);
                let expected_code = if result.changes_anything() { 1 } else { 0 };
                check_binary_what_if(dir, &report, expected_code, &mut problems);
            }
            Err(e) => problems.push(e),
        }
    }
    problems
}

fn read_config(path: &Path) -> Result<Config, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks `actual` against the file, or rewrites the file when updating.
fn compare_or_update(path: &Path, actual: &str, problems: &mut Vec<String>) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let expected = fs::read_to_string(path).ok();
    if expected.as_deref() == Some(actual) {
        return;
    }
    if updating() {
        fs::write(path, actual).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    match expected {
        None => problems.push(format!("{name} is missing (UPDATE_GOLDEN=1 writes it)")),
        Some(expected) => problems.push(format!(
            "{name} differs:\n{}",
            first_difference(&expected, actual)
        )),
    }
}

/// Runs `gatekit replay --audit-dir` on the session; returns its stdout and
/// the directory it wrote.
fn run_binary_replay(dir: &Path) -> Result<(String, PathBuf), String> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let audit_dir =
        std::env::temp_dir().join(format!("gatekit-golden-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&audit_dir);
    let output = Command::new(env!("CARGO_BIN_EXE_gatekit"))
        .arg("replay")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg(dir.join("capture.jsonl"))
        .arg("--audit-dir")
        .arg(&audit_dir)
        .env_remove("GATEKIT_LOG")
        .output()
        .map_err(|e| format!("cannot run gatekit replay: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "gatekit replay failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8(output.stdout)
        .map_err(|_| "gatekit replay printed something that is not UTF-8".to_owned())?;
    Ok((stdout, audit_dir))
}

/// `gatekit replay --diff` prints the report after its header and exits
/// with 1 when something changes, 0 when nothing does.
fn check_binary_what_if(dir: &Path, report: &str, expected_code: i32, problems: &mut Vec<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatekit"))
        .arg("replay")
        .arg("--config")
        .arg(dir.join("what-if.yaml"))
        .arg(dir.join("capture.jsonl"))
        .arg("--diff")
        .arg(dir.join("config.yaml"))
        .env_remove("GATEKIT_LOG")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => return problems.push(format!("cannot run gatekit replay --diff: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.code() != Some(expected_code) {
        problems.push(format!(
            "gatekit replay --diff exited with {} instead of {expected_code}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if !stdout.starts_with("What-if on ") || !stdout.ends_with(report) {
        problems.push(format!(
            "gatekit replay --diff prints something else than the core's what-if:\n{}",
            first_difference(report, &stdout)
        ));
    }
}

/// Every file in `audit.expected/` must equal the file of the same name
/// that replay wrote; a non-empty replayed file must have an expectation.
fn check_audit_files(dir: &Path, written: &Path, problems: &mut Vec<String>) {
    let expected_dir = dir.join("audit.expected");
    let mut written_names: Vec<String> = fs::read_dir(written)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    written_names.sort();
    // Only recorded sessions have it: it is what the live gateway wrote.
    if !expected_dir.is_dir() {
        return;
    }
    for name in &written_names {
        let actual = fs::read(written.join(name)).unwrap_or_default();
        let expected_path = expected_dir.join(name);
        let expected = fs::read(&expected_path).ok();
        if expected.as_deref() == Some(actual.as_slice()) {
            continue;
        }
        if updating() {
            fs::write(&expected_path, &actual).expect("audit.expected file can be written");
            continue;
        }
        match expected {
            None => problems.push(format!(
                "replay wrote audit file {name}, which audit.expected/ does not have"
            )),
            Some(expected) => problems.push(format!(
                "audit file {name} differs from audit.expected/{name} (what the live run wrote):\n{}",
                first_difference(
                    &String::from_utf8_lossy(&expected),
                    &String::from_utf8_lossy(&actual)
                )
            )),
        }
    }
    if let Ok(entries) = fs::read_dir(&expected_dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !written_names.contains(&name) {
                if updating() {
                    let _ = fs::remove_file(entry.path());
                } else {
                    problems.push(format!("audit.expected/{name} was not written by replay"));
                }
            }
        }
    }
}

/// The first differing line with a little context, long lines shortened.
fn first_difference(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let at = expected
        .iter()
        .zip(&actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let shorten = |line: &str| {
        let cut: String = line.chars().take(300).collect();
        if cut.len() < line.len() {
            format!("{cut}…")
        } else {
            cut
        }
    };
    let mut out = format!(
        "  first difference at line {} (expected {} lines, got {}):\n",
        at + 1,
        expected.len(),
        actual.len()
    );
    for line in &expected[at.saturating_sub(2)..at] {
        out.push_str(&format!("    {}\n", shorten(line)));
    }
    for line in expected.iter().skip(at).take(3) {
        out.push_str(&format!("  - {}\n", shorten(line)));
    }
    for line in actual.iter().skip(at).take(3) {
        out.push_str(&format!("  + {}\n", shorten(line)));
    }
    out
}
