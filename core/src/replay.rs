//! Deterministic replay: a capture fed into a fresh [`Gateway`], and what the
//! gateway did, as a transcript.
//!
//! A capture (see [`crate::capture`]) holds every input a live gateway was
//! fed and the time it was fed. The gateway is a pure function of those, so
//! feeding them again to a gateway built from the same [`Config`] makes it do
//! exactly what the live one did: the same messages to each peer, the same
//! audit bytes, the same exit. [`replay`] does that and returns a
//! [`Transcript`]; [`Transcript::render`] prints it, one line per action:
//!
//! ```text
//! 2024-06-16T10:30:15.123456789Z → upstream {"jsonrpc":"2.0","id":1,"method":"tools/list"}
//! 2024-06-16T10:30:15.123456789Z audit[0]   {"timestamp": "2024-06-16T10:30:15.123Z", …}
//! 2024-06-16T10:30:15.200000000Z → client   {"jsonrpc":"2.0","id":1,"result":{…}}
//! 2024-06-16T10:30:16.000000000Z close upstream stdin
//! 2024-06-16T10:30:16.010000000Z exit 0
//! ```
//!
//! Each line carries the time of the input that caused it. Inputs
//! themselves are not printed, except the runtime's reports about audit
//! files (`runtime audit[0] write failed: …`), because they change what the
//! gateway does next.
//!
//! The same capture can be fed in three [`Chunking`]s. The gateway acts on
//! a message only when its newline arrives, so all three give the same
//! transcript; a difference is a bug in the core's framing. The golden tests
//! in `testdata/sessions/` check every session all three ways.
//!
//! [`what_if`] replays one capture under two configs and compares what each
//! decided, for trying a new policy on recorded traffic before enforcing it.

mod what_if;

pub use what_if::{what_if, Decision, DecisionChange, ListOutcome, ToolsListChange, WhatIf};

use crate::audit::{AuditSinkId, AuditWrite};
use crate::capture::{decode, CaptureError, CaptureHeader, RecordedInput};
use crate::config::Config;
use crate::gateway::{Gateway, Input, Output, UpstreamSignal};
use jiff::Timestamp;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// A capture file, read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Its first line.
    pub header: CaptureHeader,
    /// Every recorded input with the time it was fed, in order.
    pub inputs: Vec<(Timestamp, RecordedInput)>,
    /// The last line was cut off (the recording gateway was killed while
    /// writing it) and has been left out.
    pub truncated: bool,
}

impl Capture {
    /// Reads a whole capture: the header line, then one input per line.
    ///
    /// Blank lines are skipped. A last line without its newline that does
    /// not decode is taken for a write the recording gateway could not
    /// finish: it is left out and [`Capture::truncated`] is set. Any other
    /// bad line is an error naming its line number.
    pub fn parse(text: &str) -> Result<Capture, CaptureError> {
        let mut lines = text.split_inclusive('\n').enumerate();
        let header = loop {
            match lines.next() {
                Some((_, line)) if line.trim().is_empty() => continue,
                Some((n, line)) => {
                    break CaptureHeader::parse(trim_newline(line)).map_err(|mut e| {
                        e.line = n + 1;
                        e
                    })?
                }
                None => {
                    return Err(CaptureError {
                        line: 1,
                        message: "the capture is empty: it has no header line".to_owned(),
                    })
                }
            }
        };
        let mut inputs = Vec::new();
        let mut truncated = false;
        for (n, line) in lines {
            let content = trim_newline(line);
            if content.trim().is_empty() {
                continue;
            }
            match decode(content, n + 1) {
                Ok(input) => inputs.push(input),
                Err(_) if !line.ends_with('\n') => truncated = true,
                Err(e) => return Err(e),
            }
        }
        Ok(Capture {
            header,
            inputs,
            truncated,
        })
    }
}

fn trim_newline(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// How the recorded bytes are cut into inputs when they are fed again.
///
/// Inputs that are not bytes (EOF, the upstream's exit, timeouts, audit file
/// reports) keep their place and time in every chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Every input exactly as it was recorded.
    AsRecorded,
    /// Every recorded chunk fed one byte at a time, each byte at its
    /// chunk's time.
    ByteByByte,
    /// Every message in one chunk: each side's bytes are cut at newlines and
    /// each line is fed at the time of the input that delivered its newline
    /// (when the gateway acts on it). An unterminated last line is fed right
    /// before its side's EOF. One chunk for the whole stream would move
    /// messages to other times, and the transcript with them.
    WholeLines,
}

impl Chunking {
    /// The three chunkings, as the golden tests use them.
    pub const ALL: [Chunking; 3] = [
        Chunking::AsRecorded,
        Chunking::ByteByByte,
        Chunking::WholeLines,
    ];

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Chunking::AsRecorded => "as recorded",
            Chunking::ByteByByte => "one byte at a time",
            Chunking::WholeLines => "one chunk per message",
        }
    }
}

/// What a replayed gateway did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// One entry per action.
    pub entries: Vec<Entry>,
    /// Recorded inputs left over when the gateway exited; a live runtime
    /// stops at the exit, so there are normally none.
    pub inputs_after_exit: usize,
}

/// One thing the gateway did (or, for the audit file reports, was told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The time of the input that caused it.
    pub at: Timestamp,
    /// What happened.
    pub action: Action,
}

/// The actions of a transcript: the gateway's [`Output`]s, except
/// [`Output::Wait`], plus the runtime's audit file reports.
///
/// `Output::Wait` is left out on purpose: when several messages arrive in
/// one chunk the gateway is polled once for all of them, so the deadlines in
/// between depend on the chunking, while everything listed here does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// [`Output::ToClient`].
    ToClient(Vec<u8>),
    /// [`Output::ToUpstream`].
    ToUpstream(Vec<u8>),
    /// [`Output::Audit`].
    Audit(AuditWrite),
    /// [`Output::CloseUpstreamInput`].
    CloseUpstreamInput,
    /// [`Output::SignalUpstream`].
    SignalUpstream(UpstreamSignal),
    /// [`Output::Exit`]; the last entry.
    Exit(i32),
    /// The runtime reported [`Input::AuditFileOpened`].
    AuditFileOpened {
        /// Which sink.
        sink: AuditSinkId,
        /// What the file held.
        existing_bytes: u64,
    },
    /// The runtime reported [`Input::AuditWriteFailed`]. Right after an
    /// [`Action::Audit`] of the same sink, it says that write failed.
    AuditWriteFailed {
        /// Which sink.
        sink: AuditSinkId,
        /// Why.
        reason: String,
    },
}

/// How [`Transcript::render`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// A line of a message or record longer than this many bytes is shortened
    /// to its beginning, its length and a fingerprint (FNV-1a, 64 bits), so a
    /// multi-megabyte message does not bury the transcript. `None` prints
    /// everything.
    pub elide_lines_over: Option<usize>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            elide_lines_over: Some(64 * 1024),
        }
    }
}

/// How much of an elided line is kept.
const ELIDED_PREFIX_BYTES: usize = 256;
/// The width of the label column.
const LABEL_WIDTH: usize = 10;

impl Transcript {
    /// The transcript as text, one line per entry (and an indented line for
    /// each further line of a multi-line write, such as a CSV header).
    pub fn render(&self, options: RenderOptions) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let at = format!("{:.9}", entry.at);
            let (label, payload): (String, Option<&[u8]>) = match &entry.action {
                Action::ToClient(bytes) => ("→ client".into(), Some(bytes)),
                Action::ToUpstream(bytes) => ("→ upstream".into(), Some(bytes)),
                Action::Audit(write) => (format!("audit[{}]", write.sink.0), Some(&write.bytes)),
                Action::CloseUpstreamInput => ("close upstream stdin".into(), None),
                Action::SignalUpstream(UpstreamSignal::Terminate) => ("signal TERM".into(), None),
                Action::SignalUpstream(UpstreamSignal::Kill) => ("signal KILL".into(), None),
                Action::Exit(code) => (format!("exit {code}"), None),
                Action::AuditFileOpened {
                    sink,
                    existing_bytes,
                } => (
                    format!(
                        "runtime    audit[{}] file opened, holding {existing_bytes} bytes",
                        sink.0
                    ),
                    None,
                ),
                Action::AuditWriteFailed { sink, reason } => (
                    format!("runtime    audit[{}] write failed: {reason}", sink.0),
                    None,
                ),
            };
            let Some(payload) = payload else {
                let _ = writeln!(out, "{at} {label}");
                continue;
            };
            let marker = match &entry.action {
                Action::Audit(write) if write.rotate_first => "(rotate first) ",
                _ => "",
            };
            let (body, newline) = match payload.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (payload, false),
            };
            let indent = " ".repeat(at.len() + LABEL_WIDTH + 2);
            for (n, line) in body.split(|&b| b == b'\n').enumerate() {
                let text = render_line(line, options.elide_lines_over);
                if n == 0 {
                    let _ = write!(out, "{at} {label:<LABEL_WIDTH$} {marker}{text}");
                } else {
                    let _ = write!(out, "\n{indent}{text}");
                }
            }
            out.push_str(if newline {
                "\n"
            } else {
                " (no newline at end)\n"
            });
        }
        if self.inputs_after_exit > 0 {
            let _ = writeln!(
                out,
                "({} recorded inputs after the exit were not fed)",
                self.inputs_after_exit
            );
        }
        out
    }

    /// The audit writes a live runtime carried out, in order: every
    /// [`Action::Audit`] except those the capture says failed. Appending
    /// these to empty files (rotating when asked) gives the bytes the live
    /// run added to its audit files.
    pub fn audit_writes(&self) -> impl Iterator<Item = &AuditWrite> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| match &entry.action {
                Action::Audit(write) => {
                    let failed = matches!(
                        self.entries.get(i + 1).map(|e| &e.action),
                        Some(Action::AuditWriteFailed { sink, .. }) if *sink == write.sink
                    );
                    (!failed).then_some(write)
                }
                _ => None,
            })
    }

    /// The transcript with the audit writes of each moment gathered: for
    /// every run of entries caused by inputs of the same time, each sink's
    /// records as one write (split only where a rotation or a failure
    /// splits them), ahead of that moment's other actions, and each
    /// message to a peer as an entry of its own.
    ///
    /// The gateway folds the records of one input into one write per sink
    /// and moves them ahead of the messages they describe, and joins the
    /// messages it forwards from one input, so which records share a write,
    /// where it stands among the messages, and which messages share a
    /// write depends on how the bytes were chunked. What reaches the peers,
    /// in what order, and what each file receives does not: two chunkings
    /// of one capture give the same canonical transcript.
    pub fn canonical(&self) -> Transcript {
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut rest = &self.entries[..];
        while let Some(first) = rest.first() {
            let len = rest.iter().take_while(|e| e.at == first.at).count();
            let (moment, after) = rest.split_at(len);
            gather_audit_writes(moment, &mut entries);
            rest = after;
        }
        Transcript {
            entries,
            inputs_after_exit: self.inputs_after_exit,
        }
    }
}

/// An audit write, with the report of its failure if it failed.
type WriteAndReport = (AuditWrite, Option<Entry>);

/// Appends `moment` (entries of one time) to `out` in canonical order: see
/// [`Transcript::canonical`].
fn gather_audit_writes(moment: &[Entry], out: &mut Vec<Entry>) {
    // Per sink, in order of first appearance: its writes, each with the
    // failure report that followed it.
    let mut sinks: Vec<(AuditSinkId, Vec<WriteAndReport>)> = Vec::new();
    let mut others = Vec::new();
    for entry in moment {
        match &entry.action {
            Action::Audit(write) => {
                let index = match sinks.iter().position(|(sink, _)| *sink == write.sink) {
                    Some(index) => index,
                    None => {
                        sinks.push((write.sink, Vec::new()));
                        sinks.len() - 1
                    }
                };
                let writes = &mut sinks[index].1;
                match writes.last_mut() {
                    Some((last, None)) if !write.rotate_first => {
                        last.bytes.extend_from_slice(&write.bytes)
                    }
                    _ => writes.push((write.clone(), None)),
                }
            }
            Action::AuditWriteFailed { sink, .. } => {
                let failed = sinks
                    .iter_mut()
                    .find(|(s, _)| s == sink)
                    .and_then(|(_, writes)| writes.last_mut())
                    .filter(|(_, report)| report.is_none());
                match failed {
                    Some((_, report)) => *report = Some(entry.clone()),
                    None => others.push(entry.clone()),
                }
            }
            // One entry per message: how many messages share a write
            // depends on the chunking too.
            Action::ToClient(bytes) | Action::ToUpstream(bytes) => {
                let to_peer = match entry.action {
                    Action::ToClient(_) => Action::ToClient,
                    _ => Action::ToUpstream,
                };
                for message in bytes.split_inclusive(|&b| b == b'\n') {
                    others.push(Entry {
                        at: entry.at,
                        action: to_peer(message.to_vec()),
                    });
                }
            }
            _ => others.push(entry.clone()),
        }
    }
    let at = moment[0].at;
    for (_, writes) in sinks {
        for (write, report) in writes {
            out.push(Entry {
                at,
                action: Action::Audit(write),
            });
            out.extend(report);
        }
    }
    out.extend(others);
}

/// One line of a payload, made printable: invalid UTF-8 as `\xNN`, and
/// shortened when longer than `elide_over`.
fn render_line(line: &[u8], elide_over: Option<usize>) -> String {
    let shown = match elide_over {
        Some(limit) if line.len() > limit => {
            // Cut before a UTF-8 continuation byte, not in a character.
            let mut end = ELIDED_PREFIX_BYTES.min(limit);
            while end > 0 && line[end] & 0xc0 == 0x80 {
                end -= 1;
            }
            &line[..end]
        }
        _ => line,
    };
    let mut text = String::with_capacity(shown.len());
    for chunk in shown.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    if shown.len() < line.len() {
        let _ = write!(
            text,
            "… [{} bytes in all, fnv1a64 {:016x}]",
            line.len(),
            fnv1a64(line)
        );
    }
    text
}

/// FNV-1a, 64 bits: a fingerprint for elided lines (not a security hash).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Feeds `inputs` into a fresh gateway built from `config`, cut as
/// `chunking` says, and returns what the gateway did.
///
/// The replay does what a runtime does: after each input it polls every
/// output, and it stops at [`Output::Exit`]. A runtime reports a failed or
/// reopened audit file right after the write it concerns, before polling
/// further; the capture records the report right after the input whose
/// outputs held that write, so the replay feeds it after the next audit
/// write of the same sink while that input's outputs are polled (see
/// `docs/capture-format.md` for when that is an approximation).
pub fn replay(
    config: &Config,
    inputs: &[(Timestamp, RecordedInput)],
    chunking: Chunking,
) -> Transcript {
    play(config, inputs, chunking, &mut ())
}

/// Watches a replay as it goes; what [`what_if`] uses to learn each
/// decision.
trait Observer {
    /// `input` is about to be fed at `at`.
    fn fed(&mut self, at: Timestamp, input: &Input<'_>);
    /// The gateway did this.
    fn acted(&mut self, entry: &Entry);
}

impl Observer for () {
    fn fed(&mut self, _: Timestamp, _: &Input<'_>) {}
    fn acted(&mut self, _: &Entry) {}
}

/// A gateway being replayed.
struct Run<'a, O: Observer> {
    gateway: Gateway,
    entries: Vec<Entry>,
    exited: bool,
    /// Audit file reports recorded after the input being fed, waiting for
    /// the audit write they concern.
    reports: VecDeque<&'a (Timestamp, RecordedInput)>,
    observer: &'a mut O,
}

fn is_audit_report(input: &RecordedInput) -> bool {
    matches!(
        input,
        RecordedInput::AuditFileOpened { .. } | RecordedInput::AuditWriteFailed { .. }
    )
}

fn report_sink(input: &RecordedInput) -> Option<AuditSinkId> {
    match input {
        RecordedInput::AuditFileOpened { sink, .. }
        | RecordedInput::AuditWriteFailed { sink, .. } => Some(*sink),
        _ => None,
    }
}

fn play<O: Observer>(
    config: &Config,
    inputs: &[(Timestamp, RecordedInput)],
    chunking: Chunking,
    observer: &mut O,
) -> Transcript {
    let mut run = Run {
        gateway: Gateway::new(config),
        entries: Vec::new(),
        exited: false,
        reports: VecDeque::new(),
        observer,
    };
    let mut client_lines = LineBuffer::default();
    let mut upstream_lines = LineBuffer::default();
    let mut next = 0;
    while next < inputs.len() && !run.exited {
        let (at, input) = &inputs[next];
        next += 1;
        if is_audit_report(input) {
            // Reported on its own (at startup, before anything was written).
            run.report(*at, input);
            run.drain(*at);
            continue;
        }
        let reports_end = inputs[next..]
            .iter()
            .position(|(_, i)| !is_audit_report(i))
            .map_or(inputs.len(), |p| next + p);
        run.reports.extend(&inputs[next..reports_end]);
        next = reports_end;

        match (chunking, input) {
            (Chunking::ByteByByte, RecordedInput::ClientBytes(bytes)) => {
                for byte in bytes.chunks(1) {
                    run.feed(*at, Input::ClientBytes(byte));
                }
            }
            (Chunking::ByteByByte, RecordedInput::UpstreamBytes(bytes)) => {
                for byte in bytes.chunks(1) {
                    run.feed(*at, Input::UpstreamBytes(byte));
                }
            }
            (Chunking::WholeLines, RecordedInput::ClientBytes(bytes)) => {
                for line in client_lines.push(bytes) {
                    run.feed(*at, Input::ClientBytes(&line));
                }
            }
            (Chunking::WholeLines, RecordedInput::UpstreamBytes(bytes)) => {
                for line in upstream_lines.push(bytes) {
                    run.feed(*at, Input::UpstreamBytes(&line));
                }
            }
            (Chunking::WholeLines, RecordedInput::ClientEof) => {
                if let Some(tail) = client_lines.take_tail() {
                    run.feed(*at, Input::ClientBytes(&tail));
                }
                run.feed(*at, Input::ClientEof);
            }
            (Chunking::WholeLines, RecordedInput::UpstreamEof) => {
                if let Some(tail) = upstream_lines.take_tail() {
                    run.feed(*at, Input::UpstreamBytes(&tail));
                }
                run.feed(*at, Input::UpstreamEof);
            }
            _ => run.feed(*at, input.as_input()),
        }
        // Reports no write claimed (another config, or a write the chunking
        // never reached) are fed where they were recorded.
        while let Some((_, report)) = run.reports.pop_front() {
            if run.exited {
                break;
            }
            run.report(*at, report);
            run.drain(*at);
        }
    }
    let left_over = run.reports.len() + (inputs.len() - next);
    Transcript {
        entries: run.entries,
        inputs_after_exit: if run.exited { left_over } else { 0 },
    }
}

impl<O: Observer> Run<'_, O> {
    fn feed(&mut self, at: Timestamp, input: Input<'_>) {
        if self.exited {
            return;
        }
        self.observer.fed(at, &input);
        self.gateway.handle_input(input, at);
        self.drain(at);
    }

    /// Feeds an audit file report, without polling. `at` is the time of the
    /// input whose audit write it concerns (its own for a report at startup).
    fn report(&mut self, at: Timestamp, input: &RecordedInput) {
        let action = match input {
            RecordedInput::AuditFileOpened {
                sink,
                existing_bytes,
            } => Action::AuditFileOpened {
                sink: *sink,
                existing_bytes: *existing_bytes,
            },
            RecordedInput::AuditWriteFailed { sink, reason } => Action::AuditWriteFailed {
                sink: *sink,
                reason: reason.clone(),
            },
            _ => unreachable!("only audit reports are fed here"),
        };
        self.push(at, action);
        self.gateway.handle_input(input.as_input(), at);
    }

    /// Polls every output, as a runtime does after each input.
    fn drain(&mut self, at: Timestamp) {
        loop {
            let action = match self.gateway.poll_output() {
                Output::Wait(_) => return,
                Output::ToClient(bytes) => Action::ToClient(bytes),
                Output::ToUpstream(bytes) => Action::ToUpstream(bytes),
                Output::CloseUpstreamInput => Action::CloseUpstreamInput,
                Output::SignalUpstream(signal) => Action::SignalUpstream(signal),
                Output::Exit(code) => {
                    self.push(at, Action::Exit(code));
                    self.exited = true;
                    return;
                }
                Output::Audit(write) => {
                    let sink = write.sink;
                    self.push(at, Action::Audit(write));
                    let concerns_this_write = self
                        .reports
                        .front()
                        .is_some_and(|(_, r)| report_sink(r) == Some(sink));
                    if concerns_this_write {
                        if let Some((_, report)) = self.reports.pop_front() {
                            // Shown with the time of the input whose write it concerns.
                            self.report(at, report);
                        }
                    }
                    continue;
                }
            };
            self.push(at, action);
        }
    }

    fn push(&mut self, at: Timestamp, action: Action) {
        let entry = Entry { at, action };
        self.observer.acted(&entry);
        self.entries.push(entry);
    }
}

/// Cuts one side's byte stream into lines, for [`Chunking::WholeLines`].
#[derive(Debug, Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// The lines (with their newlines) that `bytes` completes.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..=pos]);
            lines.push(line);
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        lines
    }

    /// The unterminated end of the stream, if any.
    fn take_tail(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::encode;
    use crate::gateway::ExitStatus;
    use serde_json::json;

    pub(super) fn config(tools: &[&str]) -> Config {
        serde_json::from_value(json!({
            "proxy": {"upstream": {"command": "server"}},
            "plugins": {
                "auditing": [{"policy": "file_auditing", "config": {"output_file": "a.log", "format": "line"}}],
                "security": [{"policy": "tool_allowlist", "config": {
                    "mode": "allowlist", "tools": tools, "block_message": "denied"
                }}]
            }
        }))
        .unwrap()
    }

    pub(super) fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_718_533_815_000 + ms).unwrap()
    }

    /// A session with messages split across chunks and two in one chunk.
    pub(super) fn session() -> Vec<(Timestamp, RecordedInput)> {
        use RecordedInput::*;
        let bytes = |s: &str| s.as_bytes().to_vec();
        vec![
            (at(0), AuditFileOpened { sink: AuditSinkId(0), existing_bytes: 0 }),
            (at(1), UpstreamStarted { pid: 42 }),
            (at(2), ClientBytes(bytes(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#))),
            (at(3), ClientBytes(bytes("\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\"}}\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"delete_file\"}}\n"))),
            (at(4), UpstreamBytes(bytes("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"read_file\"},{\"name\":\"delete_file\"}]}}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"res"))),
            (at(5), UpstreamBytes(bytes("ult\":{}}\n"))),
            (at(6), ClientBytes(bytes("not json\r\n{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}"))),
            (at(7), ClientEof),
            (at(8), UpstreamEof),
            (at(9), UpstreamExited(ExitStatus::Code(0))),
        ]
    }

    #[test]
    fn every_chunking_gives_the_same_transcript() {
        let config = config(&["read_file"]);
        let inputs = session();
        let expected = replay(&config, &inputs, Chunking::AsRecorded);
        assert!(matches!(
            expected.entries.last().map(|e| &e.action),
            Some(Action::Exit(0))
        ));
        let expected = expected.canonical().render(RenderOptions::default());
        for chunking in Chunking::ALL {
            let transcript = replay(&config, &inputs, chunking);
            assert_eq!(
                transcript.canonical().render(RenderOptions::default()),
                expected,
                "{}",
                chunking.name()
            );
        }
    }

    #[test]
    fn renders_one_line_per_action_with_the_time_of_its_input() {
        let text = replay(&config(&["read_file"]), &session(), Chunking::AsRecorded)
            .render(RenderOptions::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "2024-06-16T10:30:15.000000000Z runtime    audit[0] file opened, holding 0 bytes"
        );
        // Requests 1 and 2 were completed by one input: one write, its
        // second line indented.
        let upstream = lines
            .iter()
            .position(|l| l.starts_with("2024-06-16T10:30:15.003000000Z → upstream "))
            .expect("a write to the upstream");
        assert!(lines[upstream].ends_with(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#));
        assert_eq!(
            lines[upstream + 1].trim_start(),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file"}}"#
        );
        assert!(lines.contains(&"2024-06-16T10:30:15.003000000Z → client   {\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32001,\"message\":\"denied\"}}"), "{text}");
        assert!(
            lines.contains(&"2024-06-16T10:30:15.007000000Z close upstream stdin"),
            "{text}"
        );
        assert_eq!(lines.last(), Some(&"2024-06-16T10:30:15.009000000Z exit 0"));
        assert!(
            text.lines().any(|l| l.contains(" audit[0]   2024-06-16 ")),
            "{text}"
        );
    }

    #[test]
    fn a_failed_write_is_reported_right_after_it_and_left_out_of_the_files() {
        let mut config = config(&["read_file"]);
        let crate::config::AuditingPlugin::FileAuditing(file) =
            &mut config.plugins.auditing[0].plugin;
        file.critical = true;
        let mut inputs = session();
        // The live write of the REQUEST record for id 1 (completed at 3 ms) failed.
        inputs.insert(
            4,
            (
                at(3),
                RecordedInput::AuditWriteFailed {
                    sink: AuditSinkId(0),
                    reason: "disk full".into(),
                },
            ),
        );
        for chunking in Chunking::ALL {
            let transcript = replay(&config, &inputs, chunking);
            let actions: Vec<&Action> = transcript.entries.iter().map(|e| &e.action).collect();
            let failed = actions
                .iter()
                .position(|a| matches!(a, Action::AuditWriteFailed { .. }))
                .unwrap();
            assert!(matches!(actions[failed - 1], Action::Audit(_)));
            // Fail closed: the request was refused (and the refusal
            // audited), not forwarded.
            assert!(
                matches!(actions[failed + 1], Action::Audit(_)),
                "{chunking:?}"
            );
            match actions[failed + 2] {
                Action::ToClient(bytes) => {
                    assert!(
                        String::from_utf8_lossy(bytes).contains("-32006"),
                        "{chunking:?}"
                    )
                }
                other => panic!("{chunking:?}: {other:?}"),
            }
            let written = transcript.audit_writes().count();
            let all = actions
                .iter()
                .filter(|a| matches!(a, Action::Audit(_)))
                .count();
            assert_eq!(written + 1, all);
        }
    }

    #[test]
    fn long_lines_are_elided_with_length_and_fingerprint() {
        let line = "x".repeat(1000);
        assert_eq!(render_line(line.as_bytes(), None), line);
        let short = render_line(line.as_bytes(), Some(999));
        assert!(short.starts_with(&"x".repeat(256)), "{short}");
        assert!(
            short.ends_with(&format!(
                "… [1000 bytes in all, fnv1a64 {:016x}]",
                fnv1a64(line.as_bytes())
            )),
            "{short}"
        );
        assert_eq!(render_line(b"a\xffb", None), "a\\xffb");
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn capture_text_is_read_and_a_cut_off_last_line_is_left_out() {
        let mut text =
            String::from_utf8(crate::capture::CaptureHeader::new("std", at(0)).to_line()).unwrap();
        for (t, input) in session() {
            text.push_str(std::str::from_utf8(&encode(t, &input.as_input())).unwrap());
        }
        let capture = Capture::parse(&text).unwrap();
        assert_eq!(capture.inputs, session());
        assert!(!capture.truncated);

        let cut = &text[..text.len() - 10];
        let capture = Capture::parse(cut).unwrap();
        assert_eq!(capture.inputs.len(), session().len() - 1);
        assert!(capture.truncated);

        let bad = text.replacen("client_eof", "client_eel", 1);
        let e = Capture::parse(&bad).unwrap_err();
        assert_eq!(e.line, 9, "{e}");
        assert_eq!(Capture::parse("").unwrap_err().line, 1);
    }
}
