//! `test-upstream`: a scriptable MCP stdio server used as the upstream in
//! Gatekit's end-to-end tests, mostly to produce faults on demand (crashes,
//! garbage on stdout, slow answers, server→client requests, stubborn
//! processes). Tool behaviours live in `tools.rs`; this file holds the flags
//! and the I/O.
//!
//! Flags:
//! - `--record FILE`: append every line read from stdin to FILE (flushed per line).
//! - `--banner`: print a non-JSON banner line on stdout first.
//! - `--page-size N`: `tools/list` returns N tools per page.
//! - `--ignore-sigterm`: run with SIGTERM ignored.
//! - `--spawn-grandchild`: start a detached `sleep 300` child, never waited on.
//! - `--exit-after-ms N`: exit with code 0 after N ms.
//! - `--no-exit-on-eof`: keep running after stdin closes, until killed.

mod tools;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::{self, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tools::{Action, Config};

const BANNER: &str = "test-upstream starting (banner on stdout)";
const IGNORE_SIGTERM: &str = "--ignore-sigterm";

/// Command-line settings.
#[derive(Debug, Default, PartialEq)]
struct Args {
    record: Option<PathBuf>,
    banner: bool,
    page_size: Option<usize>,
    ignore_sigterm: bool,
    spawn_grandchild: bool,
    exit_after_ms: Option<u64>,
    no_exit_on_eof: bool,
}

/// Parses the arguments after the program name. Values may follow as the
/// next argument or after `=` (`--page-size 3`, `--page-size=3`).
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--record" => parsed.record = Some(PathBuf::from(value(flag)?)),
            "--page-size" => {
                let n = value(flag)?;
                parsed.page_size = Some(
                    n.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--page-size: bad value {n:?}"))?,
                );
            }
            "--exit-after-ms" => {
                let n = value(flag)?;
                parsed.exit_after_ms = Some(
                    n.parse::<u64>()
                        .map_err(|_| format!("--exit-after-ms: bad value {n:?}"))?,
                );
            }
            "--banner" | IGNORE_SIGTERM | "--spawn-grandchild" | "--no-exit-on-eof"
                if inline.is_some() =>
            {
                return Err(format!("{flag} takes no value"));
            }
            "--banner" => parsed.banner = true,
            IGNORE_SIGTERM => parsed.ignore_sigterm = true,
            "--spawn-grandchild" => parsed.spawn_grandchild = true,
            "--no-exit-on-eof" => parsed.no_exit_on_eof = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(parsed)
}

/// Serialises every write to stdout and every deliberate exit, so lines from
/// concurrent threads never interleave and no exit cuts a line in half.
static STDOUT_LOCK: Mutex<()> = Mutex::new(());

/// Writes one whole line to stdout and flushes it. If stdout is gone the
/// client is gone too, so the server exits.
fn write_line(line: &str) {
    let _guard = STDOUT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = io::stdout().lock();
    let written = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("test-upstream: cannot write stdout ({e}), exiting");
        process::exit(1);
    }
}

fn send(message: &Value) {
    write_line(&message.to_string());
}

/// Exits with `code` once no line is being written.
fn exit_now(code: i32) -> ! {
    let _guard = STDOUT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    process::exit(code)
}

/// State shared by the request threads.
struct Server {
    config: Config,
    /// Server→client requests awaiting the client's response, by id.
    pending: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    next_request: AtomicU64,
}

impl Server {
    /// Handles one line read from stdin.
    fn incoming(self: &Arc<Self>, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            eprintln!("test-upstream: ignoring line that is not UTF-8");
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let message = match serde_json::from_str::<Value>(text) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("test-upstream: ignoring invalid JSON ({e}): {text}");
                return;
            }
        };
        let Some(object) = message.as_object() else {
            eprintln!("test-upstream: ignoring non-object message: {text}");
            return;
        };
        match (object.get("method"), object.get("id")) {
            (Some(Value::String(method)), Some(id)) => {
                let (server, method, id) = (Arc::clone(self), method.clone(), id.clone());
                let params = object.get("params").cloned().unwrap_or(Value::Null);
                thread::spawn(move || server.answer(id, &method, &params));
            }
            (Some(Value::String(method)), None) => {
                eprintln!("test-upstream: notification {method} ignored");
            }
            (None, Some(id)) => {
                let waiter = id
                    .as_str()
                    .and_then(|id| self.pending.lock().ok()?.remove(id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(message.clone());
                    }
                    None => eprintln!("test-upstream: response with unknown id {id}"),
                }
            }
            _ => eprintln!("test-upstream: ignoring malformed message: {text}"),
        }
    }

    /// Answers one request; runs on its own thread.
    fn answer(&self, id: Value, method: &str, params: &Value) {
        let reply = |result: Result<Value, tools::RpcError>| {
            send(&match result {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err(e) => json!({"jsonrpc": "2.0", "id": id,
                                 "error": {"code": e.code, "message": e.message}}),
            })
        };
        match tools::handle_request(&self.config, method, params) {
            Action::Reply(result) => reply(result),
            Action::Crash => {
                eprintln!("test-upstream: crash tool called, exiting with code 3");
                exit_now(3);
            }
            Action::Slow { ms } => {
                thread::sleep(Duration::from_millis(ms));
                reply(Ok(tools::text_result("done")));
            }
            Action::Garbage => {
                write_line(tools::GARBAGE_LINE);
                reply(Ok(tools::text_result("ok: garbage")));
            }
            Action::Notify { token } => {
                send(&tools::progress_notification(&token));
                send(&tools::log_notification());
                reply(Ok(tools::text_result("ok: notify")));
            }
            Action::AskClient { method, params } => {
                let request_id = format!(
                    "srv-{}",
                    self.next_request.fetch_add(1, Ordering::SeqCst) + 1
                );
                let (tx, rx) = mpsc::channel();
                if let Ok(mut pending) = self.pending.lock() {
                    pending.insert(request_id.clone(), tx);
                }
                send(
                    &json!({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}),
                );
                // Waits as long as it takes; stdin EOF ends the process anyway.
                match rx.recv() {
                    Ok(response) => reply(Ok(tools::ask_client_result(&response))),
                    Err(_) => eprintln!("test-upstream: lost the wait for {request_id}"),
                }
            }
        }
    }
}

/// Replaces this process (same pid) with `sh`, which ignores SIGTERM and
/// then execs this program again without `--ignore-sigterm`: an ignored
/// signal stays ignored across exec, and no libc crate is needed.
#[cfg(unix)]
fn reexec_ignoring_sigterm(raw_args: &[String]) -> ! {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("test-upstream: cannot find own executable: {e}");
        process::exit(2)
    });
    let error = Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" TERM; exec "$0" "$@""#)
        .arg(exe)
        .args(raw_args.iter().filter(|a| a.as_str() != IGNORE_SIGTERM))
        .exec();
    eprintln!("test-upstream: cannot exec sh: {error}");
    process::exit(2)
}

#[cfg(not(unix))]
fn reexec_ignoring_sigterm(_raw_args: &[String]) -> ! {
    eprintln!("test-upstream: --ignore-sigterm needs a Unix system");
    process::exit(2)
}

fn main() {
    let raw_args: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&raw_args).unwrap_or_else(|e| {
        eprintln!("test-upstream: {e}");
        process::exit(2)
    });
    if args.ignore_sigterm {
        reexec_ignoring_sigterm(&raw_args);
    }
    if args.banner {
        write_line(BANNER);
    }
    let mut record = args.record.as_ref().map(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| {
                eprintln!("test-upstream: cannot open {}: {e}", path.display());
                process::exit(2)
            })
    });
    if args.spawn_grandchild {
        match Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            // Dropping the handle neither waits for nor kills the child.
            Ok(child) => eprintln!("test-upstream: grandchild pid {}", child.id()),
            Err(e) => eprintln!("test-upstream: cannot spawn grandchild: {e}"),
        }
    }
    if let Some(ms) = args.exit_after_ms {
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            eprintln!("test-upstream: --exit-after-ms elapsed, exiting");
            exit_now(0);
        });
    }

    let server = Arc::new(Server {
        config: Config {
            page_size: args.page_size,
        },
        pending: Mutex::new(HashMap::new()),
        next_request: AtomicU64::new(0),
    });
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("test-upstream: cannot read stdin: {e}");
                break;
            }
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(file) = record.as_mut() {
            append_record(file, line);
        }
        server.incoming(line);
    }
    if args.no_exit_on_eof {
        eprintln!("test-upstream: stdin closed, staying alive (--no-exit-on-eof)");
        loop {
            thread::park();
        }
    }
    exit_now(0);
}

fn append_record(file: &mut File, line: &[u8]) {
    let written = file
        .write_all(line)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.flush());
    if let Err(e) = written {
        eprintln!("test-upstream: cannot write record file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_every_flag() {
        let args = parse_args(&strings(&[
            "--record",
            "/tmp/rec.log",
            "--banner",
            "--page-size=3",
            "--ignore-sigterm",
            "--spawn-grandchild",
            "--exit-after-ms",
            "250",
            "--no-exit-on-eof",
        ]))
        .unwrap();
        assert_eq!(
            args,
            Args {
                record: Some(PathBuf::from("/tmp/rec.log")),
                banner: true,
                page_size: Some(3),
                ignore_sigterm: true,
                spawn_grandchild: true,
                exit_after_ms: Some(250),
                no_exit_on_eof: true,
            }
        );
        assert_eq!(parse_args(&[]).unwrap(), Args::default());
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["--page-size"][..],
            &["--page-size", "0"],
            &["--page-size", "x"],
            &["--exit-after-ms", "-5"],
            &["--banner=yes"],
            &["--frobnicate"],
            &["extra"],
        ] {
            assert!(parse_args(&strings(bad)).is_err(), "{bad:?}");
        }
    }
}
