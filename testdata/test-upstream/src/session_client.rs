//! `session-client`: a scripted MCP client that drives a gateway through one
//! session, for recording the golden sessions in `testdata/sessions/`
//! (see `testdata/record-sessions.sh`).
//!
//! ```text
//! session-client SCRIPT -- COMMAND [ARGS...]
//! ```
//!
//! It starts COMMAND with piped stdin/stdout (stderr is inherited), plays
//! SCRIPT, then closes the command's stdin (unless the script did) and
//! waits for it to exit. Every line the command writes is echoed to stderr.
//! Requests the command sends (`roots/list`, `sampling/createMessage`, …)
//! are answered at once with a canned result.
//!
//! The script is text, one step per line; blank lines and `#` comments are
//! skipped:
//! - `{…}` — send this line exactly as written, in one write;
//! - `@raw TEXT` — send TEXT and a newline (a malformed line);
//! - `@hex HEX` — send these bytes, exactly (no newline added);
//! - `@split N LINE` — send the first N bytes of LINE, pause, then the rest
//!   and a newline (one message in two reads);
//! - `@together` … `@end` — send the lines in between in one write;
//! - `@wait ID` — wait for the response with this id (JSON: `3`, `"a"`);
//! - `@wait-request METHOD` — wait for a request from the command;
//! - `@wait-notification METHOD` — wait for a notification;
//! - `@sleep MS` — pause;
//! - `@answer METHOD JSON` — answer later requests for METHOD with this result;
//! - `@close` — close the command's stdin (EOF);
//! - `@wait-exit` — wait until the command exits (and its stdout closes).
//!
//! Every wait gives up after 30 s, and the client then exits with 1.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{self, Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const WAIT_LIMIT: Duration = Duration::from_secs(30);
const SPLIT_PAUSE: Duration = Duration::from_millis(100);
const ECHO_MAX: usize = 300;

/// What the reader thread saw on the command's stdout.
enum Received {
    Line(Vec<u8>),
    Eof,
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Received>,
    /// Messages received and not yet claimed by a wait.
    unclaimed: Vec<Value>,
    stdout_closed: bool,
    answers: BTreeMap<String, Value>,
}

fn fail(message: &str) -> ! {
    eprintln!("session-client: {message}");
    process::exit(1)
}

impl Session {
    fn start(argv: &[String]) -> Session {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", argv[0])));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Received::Eof);
                        return;
                    }
                    Ok(_) => {
                        if tx.send(Received::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let answers = BTreeMap::from([
            ("ping".to_owned(), json!({})),
            (
                "roots/list".to_owned(),
                json!({"roots": [{"uri": "file:///tmp/gatekit-sessions/sandbox", "name": "sandbox"}]}),
            ),
            (
                "sampling/createMessage".to_owned(),
                json!({"role": "assistant", "content": {"type": "text", "text": "A canned answer from session-client."}, "model": "session-client", "stopReason": "endTurn"}),
            ),
            (
                "elicitation/create".to_owned(),
                json!({"action": "decline"}),
            ),
        ]);
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
            unclaimed: Vec::new(),
            stdout_closed: false,
            answers,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let Some(stdin) = self.stdin.as_mut() else {
            fail("cannot send: stdin is already closed");
        };
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            fail(&format!("cannot write to the command: {e}"));
        }
    }

    /// Takes what arrived within `timeout`; false at stdout EOF or timeout.
    fn receive(&mut self, timeout: Duration) -> bool {
        if self.stdout_closed {
            return false;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(Received::Line(line)) => {
                self.handle(&line);
                true
            }
            Ok(Received::Eof) | Err(RecvTimeoutError::Disconnected) => {
                eprintln!("session-client: ← (stdout closed)");
                self.stdout_closed = true;
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    fn handle(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let shown: String = text.chars().take(ECHO_MAX).collect();
        let more = if shown.len() < text.len() { " …" } else { "" };
        eprintln!("session-client: ← {shown}{more}");
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let (Some(method), Some(id)) = (
            message.get("method").and_then(Value::as_str),
            message.get("id"),
        ) {
            if self.stdin.is_some() {
                let reply = match self.answers.get(method) {
                    Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    None => json!({"jsonrpc": "2.0", "id": id,
                                   "error": {"code": -32601, "message": format!("session-client does not answer {method}")}}),
                };
                let mut bytes = reply.to_string().into_bytes();
                bytes.push(b'\n');
                eprintln!("session-client: → answer to {method}");
                self.send(&bytes);
            }
        }
        self.unclaimed.push(message);
    }

    /// Waits until a received message matches `wanted`, and claims it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            if let Some(i) = self.unclaimed.iter().position(&wanted) {
                self.unclaimed.remove(i);
                return;
            }
            let left = WAIT_LIMIT.saturating_sub(start.elapsed());
            if left.is_zero() || (!self.receive(left) && self.stdout_closed) {
                fail(&format!("gave up waiting for {what}"));
            }
        }
    }

    /// Handles whatever arrives during `pause`.
    fn pause(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if !self.receive(left) && self.stdout_closed {
                thread::sleep(left);
                return;
            }
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        while !self.stdout_closed {
            let left = WAIT_LIMIT.saturating_sub(start.elapsed());
            if left.is_zero() {
                let _ = self.child.kill();
                fail("gave up waiting for the command to close its stdout");
            }
            self.receive(left);
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if start.elapsed() < WAIT_LIMIT => {
                    thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    fail("gave up waiting for the command to exit");
                }
            }
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (script_path, argv) = match args.iter().position(|a| a == "--") {
        Some(1) if args.len() > 2 => (&args[0], &args[2..]),
        _ => fail("usage: session-client SCRIPT -- COMMAND [ARGS...]"),
    };
    let script = std::fs::read_to_string(script_path)
        .unwrap_or_else(|e| fail(&format!("cannot read {script_path}: {e}")));
    let mut session = Session::start(argv);
    let mut together: Option<Vec<u8>> = None;
    let mut exited: Option<ExitStatus> = None;
    for (n, raw) in script.lines().enumerate() {
        let line = raw.trim_end();
        let bad = |why: &str| -> ! { fail(&format!("{script_path}:{}: {why}", n + 1)) };
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(buffer) = together.as_mut() {
            if line == "@end" {
                let bytes = together.take().expect("inside @together");
                session.send(&bytes);
            } else if line.starts_with('@') {
                bad("only messages may stand between @together and @end");
            } else {
                buffer.extend_from_slice(line.as_bytes());
                buffer.push(b'\n');
            }
            continue;
        }
        if !line.starts_with('@') {
            session.send(format!("{line}\n").as_bytes());
            continue;
        }
        let (directive, rest) = line.split_once(' ').unwrap_or((line, ""));
        match directive {
            "@raw" => session.send(format!("{rest}\n").as_bytes()),
            "@hex" => match decode_hex(rest) {
                Some(bytes) => session.send(&bytes),
                None => bad("@hex needs pairs of hex digits"),
            },
            "@split" => {
                let (count, message) = rest.split_once(' ').unwrap_or_else(|| bad("@split N LINE"));
                let count: usize = count
                    .parse()
                    .unwrap_or_else(|_| bad("@split N: not a number"));
                let bytes = format!("{message}\n").into_bytes();
                let cut = count.min(bytes.len());
                session.send(&bytes[..cut]);
                session.pause(SPLIT_PAUSE);
                session.send(&bytes[cut..]);
            }
            "@together" => together = Some(Vec::new()),
            "@wait" => {
                let id: Value = serde_json::from_str(rest)
                    .unwrap_or_else(|_| bad("@wait ID: the id is not JSON"));
                session.wait_for(&format!("the response to id {id}"), |m| {
                    m.get("id") == Some(&id)
                        && (m.get("result").is_some() || m.get("error").is_some())
                });
            }
            "@wait-request" => session.wait_for(&format!("a {rest} request"), |m| {
                m.get("method").and_then(Value::as_str) == Some(rest) && m.get("id").is_some()
            }),
            "@wait-notification" => session.wait_for(&format!("a {rest} notification"), |m| {
                m.get("method").and_then(Value::as_str) == Some(rest) && m.get("id").is_none()
            }),
            "@sleep" => {
                let ms: u64 = rest
                    .parse()
                    .unwrap_or_else(|_| bad("@sleep MS: not a number"));
                session.pause(Duration::from_millis(ms));
            }
            "@answer" => {
                let (method, result) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| bad("@answer METHOD JSON"));
                let result: Value = serde_json::from_str(result)
                    .unwrap_or_else(|_| bad("@answer: the result is not JSON"));
                session.answers.insert(method.to_owned(), result);
            }
            "@close" => {
                eprintln!("session-client: → (closing stdin)");
                session.stdin = None;
            }
            "@wait-exit" => exited = Some(session.wait_exit()),
            other => bad(&format!("unknown directive {other}")),
        }
    }
    if together.is_some() {
        fail("@together without @end");
    }
    if exited.is_none() {
        session.stdin = None;
        exited = Some(session.wait_exit());
    }
    eprintln!(
        "session-client: the command exited with {}",
        exited.expect("set just above")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_pairs_and_ignores_spaces() {
        assert_eq!(decode_hex("7b 0a ff"), Some(vec![0x7b, 0x0a, 0xff]));
        assert_eq!(decode_hex("7"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
