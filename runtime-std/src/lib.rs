//! Runs the Gatekit core with blocking std threads and `std::process`.
//!
//! This crate moves bytes, runs timers and writes audit files; every
//! protocol and policy decision is made by [`gatekit_core::Gateway`]. [`run`]
//! is all the CLI needs:
//!
//! ```text
//!  stdin ──────► client reader ──┐                        ┌─► client writer ───► stdout
//!                                ├─► mpsc ─► main thread ─┤
//!  child stdout ► upstream reader┤   Gateway, audit files ├─► upstream writer ─► child stdin
//!  child exit ──► waiter ────────┘                        └─► kill(-pgid, …)
//!  child stderr ► stderr copier ─────────────────────────────────────────────► stderr
//! ```
//!
//! The main thread feeds one event to the gateway with the current time,
//! carries out the outputs in order until [`gatekit_core::Output::Wait`], and blocks on
//! the channel until the next event or the deadline (an idle gateway uses no
//! CPU). Audit records are written synchronously, so a record is in its file
//! before the message it describes is even queued. Writes to the peers go
//! through queues and writer threads, so a peer that stops reading never
//! blocks the main thread; instead, once a queue holds more than a bound,
//! the reader feeding it pauses (see `pipes::QUEUE_BOUND`).
//!
//! The [`audit_files`] and [`process`] modules do not depend on threads and
//! are meant to be shared with other runtimes.
#![deny(missing_docs)]
// libc is used for exactly one call, kill(2), in `process`; that is the only
// place allowed to opt out.
#![deny(unsafe_code)]

pub mod audit_files;
pub mod capture;
pub mod host;
mod pipes;
pub mod process;
pub mod signals;

pub use audit_files::AuditFile;
// Shared with other runtimes, so that they bound memory and time alike.
pub use pipes::{QUEUE_BOUND, READ_CHUNK, STDERR_LINE_MAX};
pub use process::UpstreamCommand;

use audit_files::AuditFiles;
use gatekit_core::{Gateway, Input};
use host::{GatewayHost, HostAction, HostEvent};
use jiff::Timestamp;
use pipes::OutputQueue;
use process::ProcessGroup;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub(crate) const LOG_TARGET: &str = "gatekit.proxy.server";

/// How long the gateway, once it has decided to exit, waits for the client
/// to take the last replies from its stdout. A client that is not reading
/// any more must not keep it alive.
pub const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Events that may wait for the main thread before the threads sending them
/// block. The readers' backpressure looks at the output queues, which only
/// grow once the main thread has handled a chunk; this bound covers the
/// chunks read but not handled yet: at most 16 × 64 KiB = 1 MiB.
pub const EVENT_CHANNEL_CAPACITY: usize = 16;

/// What [`run`] needs besides the gateway.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The upstream MCP server to start.
    pub upstream: UpstreamCommand,
    /// One file per audit sink of the gateway (see
    /// `gatekit_core::audit_sinks`).
    pub audit_files: Vec<AuditFile>,
    /// Record every input into this capture file (see `gatekit replay`).
    pub capture: Option<PathBuf>,
}

/// Runs the gateway between this process's stdin/stdout (the client) and a
/// freshly started upstream server, until the gateway exits. Returns the exit
/// code the process should exit with; exiting is left to the caller.
///
/// Audit files are opened before anything else happens; if one cannot be
/// opened the error (naming the file) is returned and stdin has not been
/// touched, so the caller can still answer the client. An upstream that
/// cannot be started is not an error: the gateway answers the client's first
/// request with the reason and exits with 1.
pub fn run(gateway: Gateway, options: RunOptions) -> io::Result<i32> {
    let signals = signals::TerminationSignals::block()?;
    drive(gateway, options, io::stdin(), io::stdout(), Some(signals))
}

/// Where the gateway stands after its outputs were carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Wait(Option<Timestamp>),
    Exit(i32),
}

/// [`run`] with the client's streams as parameters, so tests can play the
/// client.
fn drive<R, W>(
    gateway: Gateway,
    options: RunOptions,
    client_input: R,
    client_output: W,
    signals: Option<signals::TerminationSignals>,
) -> io::Result<i32>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let audit = AuditFiles::open(options.audit_files)?;
    let recorder = match &options.capture {
        Some(path) => Some(capture::Recorder::create(path, "std", Timestamp::now())?),
        None => None,
    };
    let (events_tx, events) = mpsc::sync_channel(EVENT_CHANNEL_CAPACITY);

    let to_client = Arc::new(OutputQueue::default());
    let tx = events_tx.clone();
    pipes::spawn_writer(
        "gatekit-client-writer",
        to_client.clone(),
        client_output,
        move |error| {
            if error.kind() == io::ErrorKind::BrokenPipe {
                log::info!(target: LOG_TARGET, "the client stopped reading the gateway's stdout");
            } else {
                log::error!(target: LOG_TARGET, "writing to the client failed: {error}");
            }
            let _ = tx.send(HostEvent::ClientEof);
        },
    )?;

    let mut driver = Driver {
        host: GatewayHost::new(gateway, audit, recorder),
        to_client,
        upstream: None,
    };
    if let Some(signals) = signals {
        let tx = events_tx.clone();
        thread::Builder::new()
            .name("gatekit-signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    if tx.send(HostEvent::Signal(signal)).is_err() {
                        return;
                    }
                }
            })?;
    }
    if let Step::Exit(code) = driver.carry_out_actions() {
        return Ok(code);
    }

    let step = match process::command(&options.upstream).spawn() {
        Ok(child) => {
            let pid = child.id();
            log::debug!(
                target: LOG_TARGET,
                "started upstream server {} (pid {pid})",
                options.upstream.program
            );
            log::info!(target: LOG_TARGET, "Connected to upstream server");
            driver.upstream = Some(start_upstream(child, &events_tx, &driver.to_client)?);
            driver.feed(Input::UpstreamStarted { pid })
        }
        Err(error) => {
            let reason = process::spawn_failure_reason(&options.upstream.program, &error);
            driver.feed(Input::UpstreamFailedToStart { reason: &reason })
        }
    };
    let mut deadline = match step {
        Step::Wait(deadline) => deadline,
        Step::Exit(code) => return Ok(code),
    };

    // Client input waits while either queue is full: the upstream's, for
    // the requests it forwards, and the client's own, for the error replies
    // the gateway makes to bad input.
    let gates = driver
        .upstream
        .iter()
        .map(|u| u.stdin.clone())
        .chain([driver.to_client.clone()])
        .collect();
    let tx = events_tx.clone();
    pipes::spawn_reader("gatekit-client-reader", client_input, gates, move |chunk| {
        let event = chunk.map_or(HostEvent::ClientEof, HostEvent::ClientBytes);
        tx.send(event).is_ok()
    })?;
    // From here on only the threads hold senders, so the channel reports when
    // every one of them has ended.
    drop(events_tx);
    log::info!(target: LOG_TARGET, "MCPProxy now accepting client connections");

    loop {
        let step = match next_event(&events, deadline) {
            NextEvent::Event(event) => driver.handle_event(event),
            NextEvent::Deadline => driver.handle_event(HostEvent::Deadline),
            NextEvent::Disconnected => {
                log::error!(
                    target: LOG_TARGET,
                    "nothing more can happen but the gateway has not exited; exiting with 1"
                );
                return Ok(1);
            }
        };
        deadline = match step {
            Step::Wait(deadline) => deadline,
            Step::Exit(code) => return Ok(code),
        };
    }
}

/// The main thread's state: the gateway and what carries out its actions.
/// Dropping it closes the queues and kills the upstream's process group.
struct Driver {
    host: GatewayHost,
    to_client: Arc<OutputQueue>,
    upstream: Option<Upstream>,
}

/// A running upstream server.
struct Upstream {
    stdin: Arc<OutputQueue>,
    group: ProcessGroup,
}

impl Driver {
    fn handle_event(&mut self, event: HostEvent) -> Step {
        match self.host.event(event) {
            Some(code) => Step::Exit(code),
            None => self.carry_out_actions(),
        }
    }

    fn feed(&mut self, input: Input<'_>) -> Step {
        self.host.handle(input);
        self.carry_out_actions()
    }

    /// Carries out every pending action, in order.
    fn carry_out_actions(&mut self) -> Step {
        loop {
            match self.host.next_action() {
                HostAction::ToClient(bytes) => self.to_client.push(bytes),
                HostAction::ToUpstream(bytes) => match &self.upstream {
                    Some(upstream) => upstream.stdin.push(bytes),
                    None => log::debug!(
                        target: LOG_TARGET,
                        "no upstream is running; dropping {} bytes for it",
                        bytes.len()
                    ),
                },
                HostAction::CloseUpstreamInput => {
                    if let Some(upstream) = &self.upstream {
                        upstream.stdin.close();
                    }
                }
                HostAction::SignalUpstream(signal) => {
                    if let Some(upstream) = &self.upstream {
                        if let Err(error) = upstream.group.signal(signal) {
                            log::warn!(
                                target: LOG_TARGET,
                                "could not signal the upstream's process group {}: {error}",
                                upstream.group.id()
                            );
                        }
                    }
                }
                HostAction::Exit(code) => {
                    let unsent = self.to_client.wait_drained(EXIT_FLUSH_TIMEOUT);
                    if unsent > 0 {
                        log::warn!(
                            target: LOG_TARGET,
                            "the client did not read the last {unsent} bytes within {EXIT_FLUSH_TIMEOUT:?}; exiting without them"
                        );
                    }
                    // The process group is killed when the driver is dropped,
                    // right after this returns.
                    return Step::Exit(code);
                }
                HostAction::Wait(deadline) => return Step::Wait(deadline),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.to_client.close();
        if let Some(upstream) = self.upstream.take() {
            upstream.stdin.close();
            // Dropping the group sends SIGKILL to all of it, so no server or
            // helper (npx starts some) outlives the gateway.
            drop(upstream.group);
        }
    }
}

/// Starts the threads that serve a freshly spawned upstream.
fn start_upstream(
    mut child: Child,
    events: &SyncSender<HostEvent>,
    to_client: &Arc<OutputQueue>,
) -> io::Result<Upstream> {
    // First, so that any failure below kills what was started.
    let group = ProcessGroup::led_by(child.id())?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other(
            "the upstream's standard streams were not piped",
        ));
    };

    let stdin_queue = Arc::new(OutputQueue::default());
    pipes::spawn_writer(
        "gatekit-upstream-writer",
        stdin_queue.clone(),
        stdin,
        |error| {
            if error.kind() == io::ErrorKind::BrokenPipe {
                log::debug!(target: LOG_TARGET, "the upstream closed its stdin; its exit will follow");
            } else {
                log::warn!(target: LOG_TARGET, "writing to the upstream failed: {error}");
            }
        },
    )?;

    let tx = events.clone();
    pipes::spawn_reader(
        "gatekit-upstream-reader",
        stdout,
        vec![to_client.clone()],
        move |chunk| {
            let event = chunk.map_or(HostEvent::UpstreamEof, HostEvent::UpstreamBytes);
            tx.send(event).is_ok()
        },
    )?;

    pipes::spawn_stderr_copier(stderr, io::stderr())?;

    let tx = events.clone();
    thread::Builder::new()
        .name("gatekit-upstream-waiter".to_owned())
        .spawn(move || match child.wait() {
            Ok(status) => {
                let _ = tx.send(HostEvent::UpstreamExited(process::exit_status(status)));
            }
            Err(error) => {
                // The gateway still learns of the end through the closed
                // stdout, and stops the group on its own timer.
                log::error!(target: LOG_TARGET, "waiting for the upstream failed: {error}");
            }
        })?;

    Ok(Upstream {
        stdin: stdin_queue,
        group,
    })
}

enum NextEvent {
    Event(HostEvent),
    Deadline,
    /// Every thread that could send an event has ended.
    Disconnected,
}

/// Blocks until an event arrives or `deadline` passes. A deadline already
/// passed wins over waiting events, so a busy peer cannot starve the timers.
fn next_event(events: &Receiver<HostEvent>, deadline: Option<Timestamp>) -> NextEvent {
    let Some(deadline) = deadline else {
        return events
            .recv()
            .map_or(NextEvent::Disconnected, NextEvent::Event);
    };
    let timeout = match Duration::try_from(deadline.duration_since(Timestamp::now())) {
        Ok(timeout) if !timeout.is_zero() => timeout,
        _ => return NextEvent::Deadline,
    };
    match events.recv_timeout(timeout) {
        Ok(event) => NextEvent::Event(event),
        Err(RecvTimeoutError::Timeout) => NextEvent::Deadline,
        Err(RecvTimeoutError::Disconnected) => {
            // Nothing can arrive any more, but the timer still matters.
            thread::sleep(timeout);
            NextEvent::Deadline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_core::Config;
    use std::sync::mpsc::Sender;
    use std::sync::Mutex;
    use std::time::Instant;

    /// The client's stdin: bytes sent on a channel, EOF when it is dropped.
    struct ClientInput {
        chunks: Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    impl Read for ClientInput {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                match self.chunks.recv() {
                    Ok(chunk) => self.pending = chunk,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    /// The client's view of the gateway's stdout.
    #[derive(Clone, Default)]
    struct ClientOutput(Arc<Mutex<Vec<u8>>>);

    impl ClientOutput {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
        }
    }

    impl Write for ClientOutput {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn client() -> (Sender<Vec<u8>>, ClientInput, ClientOutput) {
        let (tx, rx) = mpsc::channel();
        let input = ClientInput {
            chunks: rx,
            pending: Vec::new(),
        };
        (tx, input, ClientOutput::default())
    }

    fn gateway() -> Gateway {
        // The upstream command is given to `run` separately.
        let config: Config =
            serde_json::from_str(r#"{"proxy": {"upstream": {"command": "unused"}}}"#)
                .expect("a minimal config parses");
        Gateway::new(&config)
    }

    fn shell(script: &str) -> RunOptions {
        RunOptions {
            upstream: UpstreamCommand {
                program: "sh".to_owned(),
                args: vec!["-c".to_owned(), script.to_owned()],
            },
            audit_files: Vec::new(),
            capture: None,
        }
    }

    const REQUEST: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n";

    #[test]
    fn an_upstream_that_cannot_start_is_reported_to_the_client() {
        let (tx, input, output) = client();
        tx.send(REQUEST.to_vec()).expect("queued");
        let options = RunOptions {
            upstream: UpstreamCommand {
                program: "/nonexistent/gatekit-test-server".to_owned(),
                args: Vec::new(),
            },
            audit_files: Vec::new(),
            capture: None,
        };
        let code = drive(gateway(), options, input, output.clone(), None).expect("runs");
        assert_eq!(code, 1);
        let reply = output.text();
        assert!(reply.contains("\"id\":1"), "{reply}");
        assert!(
            reply.contains("command not found: /nonexistent/gatekit-test-server"),
            "{reply}"
        );
        drop(tx);
    }

    #[test]
    fn relays_both_ways_and_exits_when_the_client_leaves() {
        let (tx, input, output) = client();
        tx.send(REQUEST.to_vec()).expect("queued");
        let watched = output.clone();
        // The client leaves once it has its answer.
        thread::spawn(move || {
            let start = Instant::now();
            while !watched.text().contains("\"result\"") && start.elapsed().as_secs() < 10 {
                thread::sleep(Duration::from_millis(10));
            }
            drop(tx);
        });
        let script = r#"read line; echo "got $line" >&2; echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'; cat >/dev/null"#;
        let code = drive(gateway(), shell(script), input, output.clone(), None).expect("runs");
        assert_eq!(code, 0);
        assert_eq!(
            output.text(),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n"
        );
    }

    #[test]
    fn an_upstream_that_ignores_its_closed_stdin_is_terminated() {
        let (tx, input, output) = client();
        drop(tx);
        let start = Instant::now();
        let code = drive(gateway(), shell("sleep 300"), input, output, None).expect("runs");
        assert_eq!(code, 0);
        // Closed stdin, a grace period, SIGTERM: well before the sleep ends.
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn no_process_of_the_upstream_outlives_the_gateway() {
        let pid_file = std::env::temp_dir().join(format!(
            "gatekit-runtime-std-{}-grandchild.pid",
            std::process::id()
        ));
        let (tx, input, output) = client();
        drop(tx);
        // A wrapper that exits when its stdin closes and leaves a helper
        // behind, as npx can.
        let script = format!(
            "sleep 300 & echo $! > '{}'; exec cat >/dev/null",
            pid_file.display()
        );
        let code = drive(gateway(), shell(&script), input, output, None).expect("runs");
        assert_eq!(code, 0);
        let pid = std::fs::read_to_string(&pid_file).expect("pid written");
        let _ = std::fs::remove_file(&pid_file);
        let stat = format!("/proc/{}/stat", pid.trim());
        let start = Instant::now();
        loop {
            // Gone, or a zombie waiting for init to reap it: not running.
            let running = std::fs::read_to_string(&stat).is_ok_and(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            });
            if !running {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the helper {} is still running",
                pid.trim()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}
