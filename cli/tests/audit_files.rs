//! The audit file on disk, as the tutorial's "Log Management and Rotation"
//! promises it: rotation by size with a bounded number of backups, records
//! appended across restarts, and files private to their owner.

mod support;

use serde_json::json;
use std::path::Path;
use support::*;

/// Runs one session of `calls` echo calls against `config`.
fn session(config: &Path, calls: u32, tag: &str) {
    let mut gateway = Session::gateway(config);
    gateway.initialize(json!(0));
    for n in 1..=calls {
        let response = gateway.call_tool(json!(n), "echo", json!({"tag": tag, "n": n}));
        result_text(&response);
    }
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
}

#[test]
fn audit_log_rotates_by_size_and_keeps_backup_count_files() {
    let dir = TempDir::new("rotation");
    let max_mb = 0.002; // 2097 bytes: a handful of records per file
    let max_bytes = (max_mb * 1024.0 * 1024.0) as u64;
    let config = GatewayConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .rotate(max_mb, 2);
    let path = config.write(dir.path());
    session(&path, 30, "rotation");

    let audit = dir.join("logs/audit.log");
    let files = [
        audit.clone(),
        dir.join("logs/audit.log.1"),
        dir.join("logs/audit.log.2"),
    ];
    for file in &files {
        let size = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("{} should exist: {e}", file.display()))
            .len();
        assert!(
            size <= max_bytes,
            "{} has {size} bytes, more than max_file_size_mb",
            file.display()
        );
        let records = read_audit(file);
        assert!(!records.is_empty(), "{} is empty", file.display());
        check_common_fields(&records);
    }
    assert!(
        !dir.join("logs/audit.log.3").exists(),
        "backup_count: 2 keeps two backups"
    );
    // The newest records are in audit.log, older ones in .1, then .2.
    let last_of = |file: &Path| read_audit(file).last().cloned().unwrap();
    let first_of = |file: &Path| read_audit(file)[0].clone();
    assert!(last_of(&files[2])["timestamp"].as_str() <= first_of(&files[1])["timestamp"].as_str());
    assert!(last_of(&files[1])["timestamp"].as_str() <= first_of(&files[0])["timestamp"].as_str());
    let newest = read_audit(&audit);
    assert!(
        newest.iter().any(|r| r["event_type"] == "UPSTREAM_EXITED"),
        "the session's last record is in the current file:\n{}",
        show(&newest)
    );
}

#[test]
fn a_restarted_gateway_appends_to_the_existing_audit_log() {
    let dir = TempDir::new("append");
    let config = GatewayConfig::new(test_upstream(&[])).allow(&["echo"]);
    let path = config.write(dir.path());
    session(&path, 2, "first run");
    let first = read_audit(&config.audit_path(dir.path()));
    session(&path, 2, "second run");
    let both = read_audit(&config.audit_path(dir.path()));
    assert!(both.len() > first.len(), "{}", show(&both));
    assert_eq!(
        &both[..first.len()],
        &first[..],
        "the first run's records are kept as they were"
    );
    let tags: Vec<&str> = both
        .iter()
        .filter(|r| r["event_type"] == "REQUEST" && r["tool"] == "echo")
        .filter_map(|r| r["params"]["tag"].as_str())
        .collect();
    assert_eq!(tags, ["first run", "first run", "second run", "second run"]);
    assert_eq!(records(&both, "UPSTREAM_STARTED").len(), 2);
}

#[cfg(unix)]
#[test]
fn an_existing_audit_file_keeps_the_permissions_the_user_gave_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perms");
    let config = GatewayConfig::new(test_upstream(&[])).allow(&["echo"]);
    let path = config.write(dir.path());
    let audit = config.audit_path(dir.path());
    std::fs::create_dir_all(audit.parent().unwrap()).unwrap();
    write_file(&audit, "");
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o640)).unwrap();
    session(&path, 1, "perms");
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o640,
        "Gatekit must not change an existing file's mode"
    );
    assert!(!read_audit(&audit).is_empty());
}
