//! Telling the user why Gatekit could not start.
//!
//! Claude Desktop and most MCP clients never show a server's stderr: a
//! gateway that just exits appears as "server disconnected" with no reason.
//! So when stdin is not a terminal, Gatekit waits briefly for the client's
//! first request and answers it with a JSON-RPC error carrying the reason,
//! then exits non-zero.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

/// How long to wait for the client's first request.
const WAIT_FOR_CLIENT: Duration = Duration::from_secs(10);
/// How many lines to read looking for a request (notifications get no reply).
const MAX_LINES: usize = 16;

/// Logs `message`, answers the client's first request with it when a client
/// is attached, and returns the exit code (1).
pub fn report(message: &str) -> i32 {
    log::error!(target: "gatekit.main", "{message}");
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return 1;
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = stdin.lock();
        for _ in 0..MAX_LINES {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let text = format!("Gatekit failed to start: {message}");
    while let Ok(line) = rx.recv_timeout(WAIT_FOR_CLIENT) {
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(reply) = gatekit_core::jsonrpc::startup_failure_reply(trimmed, &text) {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&reply);
            let _ = stdout.flush();
            break;
        }
    }
    1
}
