//! `bench-echo`: a minimal, fast MCP server for the benchmark.
//!
//! It answers `initialize`, `ping`, `tools/list` (with `--tools N` tools,
//! prebuilt once) and `tools/call` of `echo`, whose result carries the
//! `arguments.text` string back exactly as it arrived (the raw JSON string,
//! escapes and all, never decoded or re-encoded). Notifications are ignored.
//!
//! It has to be fast, or it rather than the gateway dominates what is
//! measured: one buffered read per line, one parse pass that borrows
//! everything, one buffered write per answer and a flush after every line so
//! no answer waits in a buffer.
//!
//! ```text
//! bench-echo [--tools N]     (default 500)
//! ```

use serde_json::value::RawValue;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

#[path = "../tools_list.rs"]
mod tools_list;

use tools_list::tools_list_result;

fn main() {
    let mut tools = 500usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tools" => {
                tools = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--tools takes a number")
            }
            other => {
                eprintln!("bench-echo: unknown argument {other:?} (usage: bench-echo [--tools N])");
                std::process::exit(2);
            }
        }
    }
    let tools_result = tools_list_result(tools);
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut output = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = Vec::with_capacity(64 * 1024);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("bench-echo: read failed: {e}");
                std::process::exit(1);
            }
        }
        if answer(&line, &tools_result, &mut output).is_err() {
            // The client went away.
            return;
        }
    }
}

/// Writes the answer to one line (nothing for a notification), then flushes.
fn answer(line: &[u8], tools_result: &[u8], out: &mut impl Write) -> io::Result<()> {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let message: Message<'_> = match serde_json::from_slice(trimmed) {
        Ok(message) => message,
        Err(e) => {
            return error(out, None, -32700, &format!("parse error: {e}"));
        }
    };
    let Some(id) = message.id else {
        return Ok(()); // a notification (or a response): nothing to answer
    };
    let Some(method) = message.method else {
        return Ok(());
    };
    match method {
        "initialize" => result(
            out,
            id,
            br#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"bench-echo","version":"0.1.0"}}"#,
        ),
        "ping" => result(out, id, b"{}"),
        "tools/list" => result(out, id, tools_result),
        "tools/call" => {
            match message.params {
                Some(Params {
                    name: Some("echo"),
                    arguments: Some(EchoArguments { text: Some(text) }),
                }) => {
                    out.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":")?;
                    out.write_all(id.get().as_bytes())?;
                    out.write_all(b",\"result\":{\"content\":[{\"type\":\"text\",\"text\":")?;
                    out.write_all(text.get().as_bytes())?;
                    out.write_all(b"}],\"isError\":false}}\n")?;
                    out.flush()
                }
                _ => error(
                    out,
                    Some(id),
                    -32602,
                    "bench-echo only has the tool `echo`, with arguments {\"text\": string}",
                ),
            }
        }
        _ => error(out, Some(id), -32601, "method not found"),
    }
}

fn result(out: &mut impl Write, id: &RawValue, result: &[u8]) -> io::Result<()> {
    out.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":")?;
    out.write_all(id.get().as_bytes())?;
    out.write_all(b",\"result\":")?;
    out.write_all(result)?;
    out.write_all(b"}\n")?;
    out.flush()
}

fn error(out: &mut impl Write, id: Option<&RawValue>, code: i64, message: &str) -> io::Result<()> {
    let id = id.map_or("null", |id| id.get());
    let message = serde_json::to_string(message).expect("a string serialises");
    writeln!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":{code},\"message\":{message}}}}}"
    )?;
    out.flush()
}

/// The members of a JSON-RPC message the echo reads; the rest is skipped.
/// `params` is read in the same pass as the envelope (as a `tools/call`'s
/// params; other methods' params are skipped member by member), so a 10 MB
/// argument is scanned once.
#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(serde::Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default)]
    arguments: Option<EchoArguments<'a>>,
}

#[derive(serde::Deserialize)]
struct EchoArguments<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}
