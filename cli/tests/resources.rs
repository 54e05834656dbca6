//! What the gateway costs the machine when nothing or too much happens:
//! an idle gateway uses no CPU, and a peer that stops reading cannot make
//! it grow without bound (backpressure, in both directions).

mod support;

use serde_json::json;
use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// utime + stime of `pid`, in clock ticks (from /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process exists");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Resident memory of `pid` in KiB (VmRSS from /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process exists");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn an_idle_gateway_uses_no_cpu() {
    let dir = TempDir::new("idle");
    let config = GatewayConfig::new(test_upstream(&[]))
        .allow(&["echo"])
        .write(dir.path());
    let mut gateway = Session::gateway(&config);
    gateway.initialize(json!(1));
    result_text(&gateway.call_tool(json!(2), "echo", json!({"warm": "up"})));
    let pid = gateway.pid();
    // Let startup work (threads, the first writes) settle.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    // A tick is 10 ms; a polling loop or short sleeps would burn many.
    assert!(
        used <= 2,
        "an idle gateway used {used} clock ticks of CPU in 3 s"
    );
    let finished = gateway.finish();
    assert!(finished.status.success(), "{}", finished.stderr);
}

/// Starts the gateway in front of `upstream` with raw pipes.
fn raw_gateway(dir: &TempDir, upstream: Vec<String>) -> Child {
    let config = GatewayConfig::new(upstream).write(dir.path());
    gateway_command(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts")
}

/// Bytes a stalled gateway may hold: its two queue bounds (8 MiB each), a
/// chunk or so in flight, plus the binary itself. Far below what was sent.
const MAX_RSS_KIB: u64 = 48 * 1024;

#[test]
fn an_upstream_that_never_reads_stops_the_gateway_reading_the_client() {
    let dir = TempDir::new("stalled-upstream");
    // `sleep` never reads its stdin.
    let mut gateway = raw_gateway(
        &dir,
        vec!["sh".into(), "-c".into(), "exec sleep 300".into()],
    );
    let pid = gateway.id();
    let mut stdin = gateway.stdin.take().expect("piped");
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    // Requests are forwarded and wait for answers that never come, so this
    // also keeps each message small enough to be a request, not a limit hit.
    std::thread::spawn(move || {
        let payload = "x".repeat(4000);
        for id in 0u64.. {
            let line = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"n\":{id},\"data\":\"{payload}\"}}}}\n");
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
            counter.fetch_add(line.len() as u64, Ordering::Relaxed);
        }
    });
    let stalled = wait_until_stalled(&written);
    let rss = rss_kib(pid);
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(
        stalled < 200 * 1024 * 1024,
        "the client kept writing ({stalled} bytes): no backpressure"
    );
    assert!(
        rss < MAX_RSS_KIB,
        "the gateway holds {rss} KiB after {stalled} bytes were sent to a stalled upstream"
    );
}

#[test]
fn a_client_that_never_reads_stops_the_gateway_reading_the_upstream() {
    let dir = TempDir::new("stalled-client");
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"flood"}}"#;
    // `yes` floods the gateway with valid notifications for the client.
    let mut gateway = raw_gateway(&dir, vec!["yes".into(), notification.into()]);
    let pid = gateway.id();
    // Never read the gateway's stdout.
    let _stdout = gateway.stdout.take();
    // Processing (and auditing) the flood takes a while before the queue
    // for the client reaches its bound; then the gateway must stop growing.
    let deadline = Instant::now() + TIMEOUT;
    let mut samples = vec![rss_kib(pid)];
    let stable = loop {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(rss_kib(pid));
        let n = samples.len();
        if n >= 3 && samples[n - 1] <= samples[n - 3] + 256 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let _ = gateway.kill();
    let _ = gateway.wait();
    let peak = samples.iter().copied().max().unwrap_or(0);
    assert!(
        peak < MAX_RSS_KIB,
        "the gateway grew to {peak} KiB while its client did not read: {samples:?}"
    );
    assert!(
        stable,
        "the gateway kept growing while its client did not read: {samples:?}"
    );
}

/// Waits until the writer stops making progress; returns the bytes written.
fn wait_until_stalled(written: &AtomicU64) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = written.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = written.load(Ordering::Relaxed);
        if now == last && now > 0 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the client could keep writing for {TIMEOUT:?} ({now} bytes)"
        );
        last = now;
    }
}
