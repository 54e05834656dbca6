//! Runs the Gatekit core on the `smol` async runtime, with `async-process`.
//!
//! It behaves exactly like `gatekit-runtime-std` (the reference) and reuses
//! its pieces that do not depend on threads: [`RunOptions`], the audit
//! files, the upstream command and its process group, and the bounds. Only
//! the threads become tasks, all on the thread that calls [`run`]:
//!
//! ```text
//!  stdin ─────► client reader ───┐                              ┌─► client writer ───► stdout
//!                                ├─► bounded channel ─► driver ─┤
//!  child stdout ► upstream reader┤   Gateway, audit files       ├─► upstream writer ─► child stdin
//!  child exit ──► waiter ────────┘                              └─► kill(-pgid, …)
//!  child stderr ► stderr copier ───────────────────────────────────────────────────► stderr
//! ```
//!
//! The child's pipes are watched by smol's reactor, and so is stdin when it
//! is a pipe or a socket (as it is under an MCP client): a message wakes the
//! driver's thread directly. A terminal or a file cannot be made
//! non-blocking without changing it for everyone who shares it, so then
//! each read is one call on smol's blocking pool. Writes to a peer go
//! straight to its pipe when that cannot block (runtime-std's
//! `DirectPipe`); otherwise the peer's writer task takes them (for stdout,
//! on the blocking pool).
//!
//! The driver feeds one event to the gateway with the current time, carries
//! out the outputs in order until [`gatekit_core::Output::Wait`], and then waits for the
//! next event or its one [`Timer`], set no later than the deadline, so an
//! idle gateway uses no CPU. Writes to the peers go through queues that the driver fills without
//! waiting; a reader pauses while a queue it feeds is over
//! [`gatekit_runtime_std::QUEUE_BOUND`], and the channel holds at most
//! [`gatekit_runtime_std::EVENT_CHANNEL_CAPACITY`] chunks read but not yet
//! handled, so memory stays bounded whichever peer stops reading.
//!
//! Audit records are written synchronously, on the driver's thread, as in
//! runtime-std: a record is one small append that lands in the page cache
//! (no fsync), it must be in its file before the message it describes is
//! queued, and a failure must reach the gateway before it polls the next
//! output. Doing it inline keeps that order without any machinery, at the
//! cost of a short, bounded stall of this one thread per record.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod pipes;

pub use gatekit_runtime_std::{AuditFile, RunOptions, UpstreamCommand};

use gatekit_runtime_std::DirectPipe;

use async_process::{Child, Stdio};
use gatekit_core::{Gateway, Input};
use gatekit_runtime_std::audit_files::AuditFiles;
use gatekit_runtime_std::capture::Recorder;
use gatekit_runtime_std::host::{GatewayHost, HostAction, HostEvent, PendingWrites};
use gatekit_runtime_std::process::{self, ProcessGroup};
use gatekit_runtime_std::signals::TerminationSignals;
use gatekit_runtime_std::{EVENT_CHANNEL_CAPACITY, EXIT_FLUSH_TIMEOUT};
use jiff::Timestamp;
use pipes::{Blocking, Nonblocking, OutputQueue, ReadHalf, Watched, WriteHalf};
use smol::channel::{self, Receiver, Sender};
use smol::{future, LocalExecutor, Timer};
use std::io;
#[cfg(test)]
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

const LOG_TARGET: &str = "gatekit.proxy.server";

/// Runs the gateway between this process's stdin/stdout (the client) and a
/// freshly started upstream server, until the gateway exits, blocking the
/// calling thread. Returns the exit code the process should exit with;
/// exiting is left to the caller.
///
/// Audit files are opened before anything else happens; if one cannot be
/// opened the error (naming the file) is returned and stdin has not been
/// touched, so the caller can still answer the client. An upstream that
/// cannot be started is not an error: the gateway answers the client's first
/// request with the reason and exits with 1.
pub fn run(gateway: Gateway, options: RunOptions) -> io::Result<i32> {
    gatekit_runtime_std::memory::return_large_buffers();
    // Before smol starts any thread, so that all of them inherit the mask.
    let signals = TerminationSignals::block()?;
    // Replies go straight to stdout when it is a pipe with room (see
    // `pipes::OutputQueue::push`), sparing the blocking pool a round.
    let client_pipe = io::stdout().as_fd().try_clone_to_owned().ok();
    gatekit_runtime_std::enlarge_pipe(&io::stdin());
    gatekit_runtime_std::enlarge_pipe(&io::stdout());
    let client_output = Blocking(io::stdout());
    let Some((stdin, was_nonblocking)) = watchable_stdin() else {
        let client_input = Blocking(io::stdin());
        return run_on(
            gateway,
            options,
            client_input,
            client_output,
            Some(signals),
            client_pipe,
        );
    };
    let result = run_on(
        gateway,
        options,
        stdin,
        client_output,
        Some(signals),
        client_pipe,
    );
    // The mode belongs to the pipe, which the client's side may share.
    if !was_nonblocking {
        gatekit_runtime_std::set_blocking(&io::stdin());
    }
    result
}

/// Stdin, watched by smol's reactor, when it is a pipe, and whether it was
/// non-blocking already: then a message from the client wakes the driver
/// itself, where a read on the blocking pool would cost a hand-over between
/// threads on every message.
///
/// Watching sets O_NONBLOCK, which belongs to the open pipe, not to this
/// descriptor. A pipe's read end is not its write end, so stdout is not
/// affected, unless stdout is that very pipe (a FIFO opened for both), which
/// is left alone. So is a socket, which inetd, systemd or socat often give
/// as stdin and stdout at once, a terminal and a file: `None`.
fn watchable_stdin() -> Option<(Watched, bool)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned().ok()?);
    let input = stdin.metadata().ok()?;
    if !input.file_type().is_fifo() {
        return None;
    }
    let stdout = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from);
    if let Ok(output) = stdout.and_then(|f| f.metadata()) {
        if (output.dev(), output.ino()) == (input.dev(), input.ino()) {
            return None;
        }
    }
    let was_nonblocking = gatekit_runtime_std::is_nonblocking(&stdin);
    match Watched::new(stdin) {
        Ok(watched) => Some((watched, was_nonblocking)),
        Err(_) => {
            if !was_nonblocking {
                gatekit_runtime_std::set_blocking(&io::stdin());
            }
            None
        }
    }
}

/// [`run`] with the client's streams as parameters, so tests can play the
/// client.
#[cfg(test)]
fn run_with(
    gateway: Gateway,
    options: RunOptions,
    client_input: impl Read + Send + 'static,
    client_output: impl Write + Send + 'static,
    signals: Option<TerminationSignals>,
    client_pipe: Option<OwnedFd>,
) -> io::Result<i32> {
    run_on(
        gateway,
        options,
        Blocking(client_input),
        Blocking(client_output),
        signals,
        client_pipe,
    )
}

/// Runs the driver and its tasks on this thread until the gateway exits.
fn run_on(
    gateway: Gateway,
    options: RunOptions,
    client_input: impl ReadHalf + 'static,
    client_output: impl WriteHalf + 'static,
    signals: Option<TerminationSignals>,
    client_pipe: Option<OwnedFd>,
) -> io::Result<i32> {
    let executor = Rc::new(LocalExecutor::new());
    // The driver is a task, not the future `block_on` polls: a reader that
    // hands it an event then merely queues it on this thread's executor.
    // Were it `block_on`'s own future, every event would wake `block_on`'s
    // parker, and `block_on` answers that with an extra, non-blocking turn
    // of the reactor (five system calls) before polling the driver.
    let driven = executor.spawn(drive(
        executor.clone(),
        gateway,
        options,
        client_input,
        client_output,
        signals,
        client_pipe.and_then(DirectPipe::new),
    ));
    // Tasks still running when this returns (a reader blocked on a peer)
    // are dropped with the executor. The driver's own reference to it went
    // when the driver finished.
    smol::block_on(executor.run(driven))
}

/// Where the gateway stands after its outputs were carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Wait(Option<Timestamp>),
    Exit(i32),
}

/// The driver: starts everything in runtime-std's order (audit files, the
/// upstream, then the client reader) and feeds the gateway until it exits.
async fn drive(
    executor: Rc<LocalExecutor<'static>>,
    gateway: Gateway,
    options: RunOptions,
    client_input: impl ReadHalf + 'static,
    client_output: impl WriteHalf + 'static,
    signals: Option<TerminationSignals>,
    client_pipe: Option<DirectPipe>,
) -> io::Result<i32> {
    let audit = AuditFiles::open(options.audit_files)?;
    let recorder = match &options.capture {
        Some(path) => Some(Recorder::create(path, "smol", Timestamp::now())?),
        None => None,
    };
    let (events_tx, events) = channel::bounded(EVENT_CHANNEL_CAPACITY);

    let to_client = Rc::new(OutputQueue::new(client_pipe));
    let (queue, tx) = (to_client.clone(), events_tx.clone());
    let client_writer = async move {
        let Err(error) = pipes::write_batches(&queue, client_output).await else {
            return;
        };
        if error.kind() == io::ErrorKind::BrokenPipe {
            log::info!(target: LOG_TARGET, "the client stopped reading the gateway's stdout");
        } else {
            log::error!(target: LOG_TARGET, "writing to the client failed: {error}");
        }
        let _ = tx.send(HostEvent::ClientEof).await;
    };
    executor.spawn(client_writer).detach();

    let mut driver = Driver {
        host: GatewayHost::new(gateway, audit, recorder),
        to_client,
        upstream: None,
        pending: PendingWrites::default(),
    };
    if let Some(signals) = signals {
        // sigwait blocks for good, so it gets a thread of its own rather
        // than a place in the blocking pool.
        let tx = events_tx.clone();
        thread::Builder::new()
            .name("gatekit-signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    if tx.send_blocking(HostEvent::Signal(signal)).is_err() {
                        return;
                    }
                }
            })?;
    }
    if let Step::Exit(code) = driver.carry_out_actions().await {
        return Ok(code);
    }

    // `From<std::process::Command>` forgets the std command's stdio choices
    // (async-process would spawn with inherited streams), so they are set
    // again here; the process group and everything else carry over.
    let mut command = async_process::Command::from(process::command(&options.upstream));
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let step = match command.spawn() {
        Ok(child) => {
            let pid = child.id();
            log::debug!(
                target: LOG_TARGET,
                "started upstream server {} (pid {pid})",
                options.upstream.program
            );
            log::info!(target: LOG_TARGET, "Connected to upstream server");
            let upstream = start_upstream(&executor, child, &events_tx, &driver.to_client)?;
            driver.upstream = Some(upstream);
            driver.feed(Input::UpstreamStarted { pid }).await
        }
        Err(error) => {
            let reason = process::spawn_failure_reason(&options.upstream.program, &error);
            driver
                .feed(Input::UpstreamFailedToStart { reason: &reason })
                .await
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
    let client_reader = pipes::read_chunks(
        "gatekit-client-reader",
        client_input,
        gates,
        events_tx,
        |chunk| chunk.map_or(HostEvent::ClientEof, HostEvent::ClientBytes),
    );
    executor.spawn(client_reader).detach();
    // From here on only the tasks hold senders, so the channel reports when
    // every one of them has ended.
    log::info!(target: LOG_TARGET, "MCPProxy now accepting client connections");

    let mut alarm = Alarm::new();

    loop {
        let step = match next_event(&events, deadline, &mut alarm).await {
            NextEvent::Event(event) => driver.handle_event(event).await,
            NextEvent::Deadline => driver.handle_event(HostEvent::Deadline).await,
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

/// The driver's state: the gateway and what carries out its actions.
/// Dropping it closes the queues and kills the upstream's process group.
struct Driver {
    host: GatewayHost,
    to_client: Rc<OutputQueue>,
    upstream: Option<Upstream>,
    /// Messages for each peer from one input's actions, pushed together:
    /// one write per peer per chunk read, as in runtime-std.
    pending: PendingWrites,
}

/// A running upstream server.
struct Upstream {
    stdin: Rc<OutputQueue>,
    group: ProcessGroup,
}

impl Driver {
    async fn handle_event(&mut self, event: HostEvent) -> Step {
        match self.host.event(event) {
            Some(code) => Step::Exit(code),
            None => self.carry_out_actions().await,
        }
    }

    async fn feed(&mut self, input: Input<'_>) -> Step {
        self.host.handle(input);
        self.carry_out_actions().await
    }

    /// Carries out every pending action, in order. Only [`HostAction::Exit`]
    /// waits (for the client to take its last bytes).
    async fn carry_out_actions(&mut self) -> Step {
        loop {
            match self.host.next_action() {
                HostAction::ToClient(bytes) => self.pending.to_client(bytes),
                HostAction::ToUpstream(bytes) => self.pending.to_upstream(bytes),
                HostAction::CloseUpstreamInput => {
                    self.send_pending();
                    if let Some(upstream) = &self.upstream {
                        upstream.stdin.close();
                    }
                }
                HostAction::SignalUpstream(signal) => {
                    self.send_pending();
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
                    self.send_pending();
                    let unsent = self.to_client.wait_drained(EXIT_FLUSH_TIMEOUT).await;
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
                HostAction::Wait(deadline) => {
                    self.send_pending();
                    return Step::Wait(deadline);
                }
            }
        }
    }

    /// Hands the messages gathered for each peer to its queue.
    fn send_pending(&mut self) {
        let (to_client, to_upstream) = self.pending.take();
        if let Some(bytes) = to_upstream {
            match &self.upstream {
                Some(upstream) => upstream.stdin.push(bytes),
                None => log::debug!(
                    target: LOG_TARGET,
                    "no upstream is running; dropping {} bytes for it",
                    bytes.len()
                ),
            }
        }
        if let Some(bytes) = to_client {
            self.to_client.push(bytes);
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

/// Starts the tasks that serve a freshly spawned upstream.
fn start_upstream(
    executor: &LocalExecutor<'static>,
    mut child: Child,
    events: &Sender<HostEvent>,
    to_client: &Rc<OutputQueue>,
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

    gatekit_runtime_std::enlarge_pipe(&stdin);
    gatekit_runtime_std::enlarge_pipe(&stdout);
    let direct = stdin.as_fd().try_clone_to_owned().ok();
    let stdin_queue = Rc::new(OutputQueue::new(direct.and_then(DirectPipe::new)));
    let queue = stdin_queue.clone();
    executor
        .spawn(async move {
            // Dropping `stdin` when this ends closes the pipe.
            let Err(error) = pipes::write_batches(&queue, Nonblocking(stdin)).await else {
                return;
            };
            if error.kind() == io::ErrorKind::BrokenPipe {
                log::debug!(target: LOG_TARGET, "the upstream closed its stdin; its exit will follow");
            } else {
                log::warn!(target: LOG_TARGET, "writing to the upstream failed: {error}");
            }
        })
        .detach();

    let upstream_reader = pipes::read_chunks(
        "gatekit-upstream-reader",
        Watched::new(OwnedFd::try_from(stdout)?)?,
        vec![to_client.clone()],
        events.clone(),
        |chunk| chunk.map_or(HostEvent::UpstreamEof, HostEvent::UpstreamBytes),
    );
    executor.spawn(upstream_reader).detach();

    executor.spawn(pipes::copy_stderr(stderr)).detach();

    let tx = events.clone();
    executor
        .spawn(async move {
            match child.status().await {
                Ok(status) => {
                    let _ = tx
                        .send(HostEvent::UpstreamExited(process::exit_status(status)))
                        .await;
                }
                Err(error) => {
                    // The gateway still learns of the end through the closed
                    // stdout, and stops the group on its own timer.
                    log::error!(target: LOG_TARGET, "waiting for the upstream failed: {error}");
                }
            }
        })
        .detach();

    Ok(Upstream {
        stdin: stdin_queue,
        group,
    })
}

enum NextEvent {
    Event(HostEvent),
    Deadline,
    /// Every task that could send an event has ended.
    Disconnected,
}

/// Waits until an event arrives or `deadline` passes. A deadline already
/// passed wins over waiting events, so a busy peer cannot starve the timers.
async fn next_event(
    events: &Receiver<HostEvent>,
    deadline: Option<Timestamp>,
    alarm: &mut Alarm,
) -> NextEvent {
    let Some(deadline) = deadline else {
        return events
            .recv()
            .await
            .map_or(NextEvent::Disconnected, NextEvent::Event);
    };
    loop {
        let timeout = match Duration::try_from(deadline.duration_since(Timestamp::now())) {
            Ok(timeout) if !timeout.is_zero() => timeout,
            _ => return NextEvent::Deadline,
        };
        alarm.ring_by(Instant::now() + timeout);
        let event = async {
            match events.recv().await {
                Ok(event) => Some(NextEvent::Event(event)),
                // Nothing can arrive any more, but the timer still matters.
                Err(_) => future::pending().await,
            }
        };
        let rang = async {
            alarm.rung().await;
            None
        };
        // The alarm may have been set for an earlier deadline: look again.
        if let Some(event) = future::or(event, rang).await {
            return event;
        }
    }
}

/// The driver's one timer, moved only when a deadline comes earlier than
/// the time it is set for.
///
/// Setting an async-io timer also wakes the reactor (a write to its
/// eventfd, and often one more turn of it), so a fresh timer per event
/// costs that on every message while a request has a timeout. With one
/// timer that rings at the earliest deadline seen, later deadlines (each
/// new request's) leave it alone; when it rings early, the caller looks at
/// its deadline again and sets it once more.
struct Alarm {
    timer: Timer,
    /// When `timer` rings; `None` once it has rung (a rung timer must not be
    /// polled again before it is set).
    at: Option<Instant>,
}

impl Alarm {
    fn new() -> Self {
        Alarm {
            timer: Timer::never(),
            at: None,
        }
    }

    /// Makes the alarm ring no later than `when`.
    fn ring_by(&mut self, when: Instant) {
        if self.at.is_some_and(|at| at <= when) {
            return;
        }
        self.timer.set_at(when);
        self.at = Some(when);
    }

    /// Resolves when the alarm rings; call [`Alarm::ring_by`] first.
    async fn rung(&mut self) {
        if self.at.is_none() {
            return;
        }
        (&mut self.timer).await;
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_core::Config;
    use gatekit_runtime_std::QUEUE_BOUND;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Instant;

    /// The client's stdin: bytes sent on a channel, EOF when it is dropped.
    struct ClientInput {
        chunks: mpsc::Receiver<Vec<u8>>,
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

    fn client() -> (mpsc::Sender<Vec<u8>>, ClientInput, ClientOutput) {
        let (tx, rx) = mpsc::channel();
        let input = ClientInput {
            chunks: rx,
            pending: Vec::new(),
        };
        (tx, input, ClientOutput::default())
    }

    fn gateway() -> Gateway {
        // The upstream's command is given to `run` separately.
        let json = r#"{"proxy": {"upstream": {"command": "unused"}}}"#;
        let config: Config = serde_json::from_str(json).expect("a valid config");
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
    const REPLY: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n";

    #[test]
    fn the_alarm_rings_by_the_earliest_time_it_was_given() {
        // A later time leaves it where it is; an earlier one moves it. The
        // hour is what it would wait if either were wrong (the test then
        // fails after a minute instead of hanging).
        let ring = |times: &[Duration]| {
            let mut alarm = Alarm::new();
            let now = Instant::now();
            for &time in times {
                alarm.ring_by(now + time);
            }
            let rung = async {
                alarm.rung().await;
                true
            };
            let stuck = async {
                Timer::after(Duration::from_secs(60)).await;
                false
            };
            assert!(smol::block_on(future::or(rung, stuck)), "{times:?}");
            assert_eq!(alarm.at, None);
        };
        let (soon, later) = (Duration::from_millis(1), Duration::from_secs(3600));
        ring(&[soon, later]);
        ring(&[later, soon]);
    }

    #[test]
    fn an_upstream_that_cannot_start_is_reported_to_the_client() {
        let (tx, input, output) = client();
        tx.send(REQUEST.to_vec()).expect("queued");
        let mut options = shell("");
        options.upstream.program = "/nonexistent/gatekit-test-server".to_owned();
        let code = run_with(gateway(), options, input, output.clone(), None, None).expect("runs");
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
        // The server answers only what it read, so the answer proves the
        // request went through.
        let script = r#"read line; echo "got $line" >&2; case "$line" in *tools/list*) echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}';; esac; cat >/dev/null"#;
        let start = Instant::now();
        let code =
            run_with(gateway(), shell(script), input, output.clone(), None, None).expect("runs");
        assert_eq!(code, 0);
        assert_eq!(output.text(), REPLY);
        // The server left as soon as its stdin closed: no grace period used.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_client_that_stops_reading_counts_as_gone() {
        struct BrokenPipe;
        impl Write for BrokenPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, input, _) = client();
        tx.send(REQUEST.to_vec()).expect("queued");
        let script =
            r#"read line; echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'; cat >/dev/null"#;
        // stdin stays open (`tx` lives on): only the broken stdout ends it.
        let code = run_with(gateway(), shell(script), input, BrokenPipe, None, None).expect("runs");
        assert_eq!(code, 0);
        drop(tx);
    }

    #[test]
    fn the_shutdown_deadlines_are_honoured() {
        let (tx, input, output) = client();
        drop(tx);
        // Ignores both its closed stdin and SIGTERM: only SIGKILL, one grace
        // period after SIGTERM, which came one grace period after the close,
        // stops it.
        let start = Instant::now();
        let code = run_with(
            gateway(),
            shell("trap '' TERM; sleep 300"),
            input,
            output,
            None,
            None,
        )
        .expect("runs");
        let elapsed = start.elapsed();
        assert_eq!(code, 0);
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    }

    #[test]
    fn a_server_that_stops_reading_stops_the_client_reader() {
        /// An endless stream of notifications that counts what was read.
        struct Flood {
            line: Vec<u8>,
            at: usize,
            read: Arc<AtomicUsize>,
            stop: Arc<AtomicBool>,
        }
        impl Read for Flood {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(0);
                }
                for byte in buf.iter_mut() {
                    *byte = self.line[self.at];
                    self.at = (self.at + 1) % self.line.len();
                }
                self.read.fetch_add(buf.len(), Ordering::SeqCst);
                Ok(buf.len())
            }
        }
        // Long lines, so the gateway's work per byte (and so the test's
        // time on a busy machine) stays small.
        let pad = "x".repeat(16 * 1024);
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"pad\":\"{pad}\"}}}}\n"
        );
        let read = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let input = Flood {
            line: line.into_bytes(),
            at: 0,
            read: read.clone(),
            stop: stop.clone(),
        };
        let (watched, stopper) = (read.clone(), stop.clone());
        let watcher = thread::spawn(move || {
            // Wait until the reading has stopped for a while.
            let start = Instant::now();
            let mut last = 0;
            let mut still_since = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(50));
                let now = watched.load(Ordering::SeqCst);
                if now != last {
                    last = now;
                    still_since = Instant::now();
                } else if last >= QUEUE_BOUND && still_since.elapsed() > Duration::from_millis(500)
                {
                    break;
                }
            }
            stopper.store(true, Ordering::SeqCst);
            last
        });
        // Never reads its stdin; exits after the watcher is done, so the
        // test ends.
        let options = shell("exec sleep 6");
        run_with(
            gateway(),
            options,
            input,
            ClientOutput::default(),
            None,
            None,
        )
        .expect("runs");
        let stalled_at = watcher.join().expect("watcher");
        // The queue towards the server filled to its bound, and reading
        // stopped soon after: the kernel's pipe, the channel's chunks and
        // the read-ahead of stdin are all that may come on top.
        assert!(stalled_at >= QUEUE_BOUND, "{stalled_at}");
        assert!(stalled_at < QUEUE_BOUND + 2 * 1024 * 1024, "{stalled_at}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn no_process_of_the_upstream_outlives_the_gateway() {
        let pid_file = std::env::temp_dir().join(format!(
            "gatekit-runtime-smol-{}-grandchild.pid",
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
        let code = run_with(gateway(), shell(&script), input, output, None, None).expect("runs");
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
