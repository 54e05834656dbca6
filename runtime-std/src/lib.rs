//! Runs the Gatekit core with blocking std threads and `std::process`.
//!
//! This crate moves bytes, runs timers and writes audit files; every
//! protocol and policy decision is made by [`gatekit_core::Gateway`]. [`run`]
//! is all the CLI needs:
//!
//! ```text
//!  stdin ──────► client reader ───┐  (feeds the gateway   ┌─► client writer* ──► stdout
//!                                 ├─► under one lock,     ┤
//!  child stdout ► upstream reader ┘   audit files)        └─► upstream writer* ► child stdin
//!  child exit ──► waiter ─────┐
//!  signals ─────► sigwait ────┴─► main thread: timers, rare events, exit, kill(-pgid, …)
//!  child stderr ► stderr copier ───────────────────────────────────────────────► stderr
//! ```
//!
//! Each reader feeds what it reads to the gateway itself, holding the lock
//! around it, and carries out the outputs in order until
//! [`gatekit_core::Output::Wait`]: audit records are written synchronously,
//! so a record is in its file before the message it describes is even
//! queued; the messages of one chunk then go to each peer as one write.
//! (*) Once the lock is released, those bytes go straight to the pipe, as
//! much of them as it takes without blocking (`RWF_NOWAIT`), when the
//! peer's writer thread is idle; the rest is left to the writer thread, so
//! a peer that stops reading never blocks the gateway. Once a queue holds
//! a bound's worth, the readers feeding it pause (see `pipes::QUEUE_BOUND`). A message thus crosses no thread
//! boundary inside the gateway on its way, as with a bare byte relay.
//!
//! The main thread runs the gateway's timer, feeds the rare events
//! (signals, the upstream's exit, a client that stopped reading) and, once
//! the gateway has exited, drops everything (an idle gateway uses no CPU).
//!
//! The [`audit_files`] and [`process`] modules do not depend on threads and
//! are meant to be shared with other runtimes.
#![deny(missing_docs)]
// libc is used for kill(2) in `process`, for the pipe calls in `pipes`
// and for mallopt in `memory`; those functions are the only ones allowed
// to opt out.
#![deny(unsafe_code)]

pub mod audit_files;
pub mod capture;
pub mod host;
pub mod memory;
mod pipes;
pub mod process;
pub mod signals;

pub use audit_files::AuditFile;
// Shared with other runtimes, so that they bound memory and time alike.
pub use pipes::{
    enlarge_pipe, is_nonblocking, set_blocking, DirectPipe, PIPE_SIZE, QUEUE_BOUND, READ_CHUNK,
    STDERR_LINE_MAX,
};
pub use process::UpstreamCommand;

use audit_files::AuditFiles;
use gatekit_core::{Gateway, Input};
use host::{GatewayHost, HostAction, HostEvent, PendingWrites};
use jiff::Timestamp;
use pipes::OutputQueue;
use process::ProcessGroup;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

pub(crate) const LOG_TARGET: &str = "gatekit.proxy.server";

/// How long the gateway, once it has decided to exit, waits for the client
/// to take the last replies from its stdout. A client that is not reading
/// any more must not keep it alive.
pub const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Events that may wait for the driver before the threads sending them
/// block. Here the readers feed the gateway themselves, so only rare events
/// wait; a runtime whose readers hand chunks over (runtime-smol) bounds the
/// chunks read but not handled yet with it: at most 16 × 64 KiB = 1 MiB,
/// since the readers' backpressure looks at the output queues, which only
/// grow once a chunk has been handled.
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
    memory::return_large_buffers();
    let signals = signals::TerminationSignals::block()?;
    // Replies may be written to stdout straight from the thread that made
    // them, when it is a pipe (see `pipes::OutputQueue`).
    let client_pipe = io::stdout().as_fd().try_clone_to_owned().ok();
    pipes::enlarge_pipe(&io::stdin());
    pipes::enlarge_pipe(&io::stdout());
    drive(
        gateway,
        options,
        io::stdin(),
        io::stdout(),
        Some(signals),
        client_pipe,
    )
}

/// Where the gateway stands after its outputs were carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Wait(Option<Timestamp>),
    Exit(i32),
}

/// [`run`] with the client's streams as parameters, so tests can play the
/// client. `client_pipe` is a duplicate of the descriptor `client_output`
/// writes to, when that is a pipe the gateway may write to directly.
fn drive<R, W>(
    gateway: Gateway,
    options: RunOptions,
    client_input: R,
    client_output: W,
    signals: Option<signals::TerminationSignals>,
    client_pipe: Option<OwnedFd>,
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

    let to_client = Arc::new(OutputQueue::new(client_pipe));
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
            let _ = tx.send(Wake::Event(HostEvent::ClientEof));
        },
    )?;

    let mut driver = Driver {
        host: GatewayHost::new(gateway, audit, recorder),
        to_client,
        upstream: None,
        pending: PendingWrites::default(),
        pushed_to_client: false,
        pushed_to_upstream: false,
    };
    if let Some(signals) = signals {
        let tx = events_tx.clone();
        thread::Builder::new()
            .name("gatekit-signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    if tx.send(Wake::Event(HostEvent::Signal(signal))).is_err() {
                        return;
                    }
                }
            })?;
    }
    if let Step::Exit(code) = driver.carry_out_actions() {
        return Ok(code);
    }
    driver.outlets().send();

    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            driver: None,
            step: Step::Wait(None),
        }),
    });
    // Held until the driver is in place: the upstream's reader may have
    // bytes before that.
    let mut state = shared.lock();
    let step = match process::command(&options.upstream).spawn() {
        Ok(child) => {
            let pid = child.id();
            log::debug!(
                target: LOG_TARGET,
                "started upstream server {} (pid {pid})",
                options.upstream.program
            );
            log::info!(target: LOG_TARGET, "Connected to upstream server");
            driver.upstream = Some(start_upstream(
                child,
                &shared,
                &events_tx,
                &driver.to_client,
            )?);
            driver.feed(Input::UpstreamStarted { pid })
        }
        Err(error) => {
            let reason = process::spawn_failure_reason(&options.upstream.program, &error);
            driver.feed(Input::UpstreamFailedToStart { reason: &reason })
        }
    };
    if let Step::Exit(code) = step {
        return Ok(code);
    }
    driver.outlets().send();

    // Client input waits while either queue is full: the upstream's, for
    // the requests it forwards, and the client's own, for the error replies
    // the gateway makes to bad input.
    let gates = driver
        .upstream
        .iter()
        .map(|u| u.stdin.clone())
        .chain([driver.to_client.clone()])
        .collect();
    state.driver = Some(driver);
    state.step = step;
    drop(state);
    let (feeder, wake) = (shared.clone(), events_tx.clone());
    pipes::spawn_reader("gatekit-client-reader", client_input, gates, move |chunk| {
        feeder.feed_from_reader(&wake, |driver| match chunk {
            Some(bytes) => driver.feed(Input::ClientBytes(bytes)),
            None => driver.handle_event(HostEvent::ClientEof),
        })
    })?;
    // From here on only the threads hold senders, so the channel reports when
    // every one of them has ended.
    drop(events_tx);
    log::info!(target: LOG_TARGET, "MCPProxy now accepting client connections");

    loop {
        let step = shared.lock().step;
        let deadline = match step {
            Step::Wait(deadline) => deadline,
            Step::Exit(code) => {
                // Dropping the driver closes the queues and kills the
                // upstream's process group.
                drop(shared.lock().driver.take());
                return Ok(code);
            }
        };
        let event = match next_event(&events, deadline) {
            NextEvent::Event(Wake::Look) => continue,
            NextEvent::Event(Wake::Event(event)) => event,
            NextEvent::Deadline => HostEvent::Deadline,
            NextEvent::Disconnected => {
                log::error!(
                    target: LOG_TARGET,
                    "nothing more can happen but the gateway has not exited; exiting with 1"
                );
                drop(shared.lock().driver.take());
                return Ok(1);
            }
        };
        // Nothing happens if a reader made the gateway exit meanwhile.
        shared.feed(|driver| driver.handle_event(event));
    }
}

/// What wakes the main thread.
enum Wake {
    /// An event for the gateway: a signal, the upstream's exit, a client
    /// that stopped reading.
    Event(HostEvent),
    /// A reader fed the gateway, which now has an earlier deadline or has
    /// exited: look at the state again.
    Look,
}

/// The driver, shared by the readers, which feed it what they read on
/// their own thread (no hand-over to another thread on a message's way),
/// and the main thread, which runs the timer and feeds the rare events.
/// It holds no sender of the main thread's channel: only the threads do,
/// so the channel tells when all of them have ended.
struct Shared {
    state: Mutex<State>,
}

struct State {
    /// Taken (and dropped) by the main thread when the gateway exits.
    driver: Option<Driver>,
    /// Where the gateway stood after its last input.
    step: Step,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock: ignore poisoning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds the gateway under the lock, then sends what it queued for the
    /// peers once the lock is released. Returns the steps before and after,
    /// or `None` (feeding nothing) once the gateway has exited: the core
    /// ignores everything from then on, and its answer (`Wait`) must not
    /// undo the exit. The one way in for the readers and the main thread
    /// alike.
    fn feed(&self, feed: impl FnOnce(&mut Driver) -> Step) -> Option<(Step, Step)> {
        let mut state = self.lock();
        let before = state.step;
        if let Step::Exit(_) = before {
            return None;
        }
        let driver = state.driver.as_mut()?;
        let after = feed(driver);
        let outlets = driver.outlets();
        state.step = after;
        drop(state);
        outlets.send();
        Some((before, after))
    }

    /// Feeds the gateway from a reader thread, and wakes the main thread
    /// when its timer or the exit needs a look. Returns false once the
    /// gateway has exited, which ends the reader.
    fn feed_from_reader(
        &self,
        wake: &SyncSender<Wake>,
        feed: impl FnOnce(&mut Driver) -> Step,
    ) -> bool {
        let Some((before, after)) = self.feed(feed) else {
            return false;
        };
        let look_again = match (before, after) {
            (_, Step::Exit(_)) => true,
            (Step::Wait(Some(old)), Step::Wait(Some(new))) => new < old,
            (Step::Wait(None), Step::Wait(Some(_))) => true,
            _ => false,
        };
        if look_again {
            // A full channel already holds a reason to look.
            let _ = wake.try_send(Wake::Look);
        }
        !matches!(after, Step::Exit(_))
    }
}

/// The gateway and what carries out its actions. Dropping it closes the
/// queues and kills the upstream's process group.
struct Driver {
    host: GatewayHost,
    to_client: Arc<OutputQueue>,
    upstream: Option<Upstream>,
    /// Messages for each peer from one input's actions, queued together.
    pending: PendingWrites,
    /// Pushed to since the queues were last sent.
    pushed_to_client: bool,
    pushed_to_upstream: bool,
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
                    self.outlets().send();
                    let unsent = self.to_client.wait_drained(EXIT_FLUSH_TIMEOUT);
                    if unsent > 0 {
                        log::warn!(
                            target: LOG_TARGET,
                            "the client did not read the last {unsent} bytes within {EXIT_FLUSH_TIMEOUT:?}; exiting without them"
                        );
                    }
                    // The process group is killed when the driver is dropped.
                    return Step::Exit(code);
                }
                HostAction::Wait(deadline) => {
                    self.send_pending();
                    return Step::Wait(deadline);
                }
            }
        }
    }

    /// The queues to [`Outlets::send`] once the lock is released.
    /// Only the queues pushed to since the last call: sending to another
    /// would take its lock for nothing, and that lock may be held by a
    /// reader the peer's wake-up has just preempted.
    fn outlets(&mut self) -> Outlets {
        Outlets {
            to_client: std::mem::take(&mut self.pushed_to_client).then(|| self.to_client.clone()),
            to_upstream: std::mem::take(&mut self.pushed_to_upstream)
                .then(|| self.upstream.as_ref().map(|u| u.stdin.clone()))
                .flatten(),
        }
    }

    /// Hands the messages gathered for each peer to its queue.
    fn send_pending(&mut self) {
        let (to_client, to_upstream) = self.pending.take();
        if let Some(bytes) = to_upstream {
            match &self.upstream {
                Some(upstream) => {
                    upstream.stdin.push(bytes);
                    self.pushed_to_upstream = true;
                }
                None => log::debug!(
                    target: LOG_TARGET,
                    "no upstream is running; dropping {} bytes for it",
                    bytes.len()
                ),
            }
        }
        if let Some(bytes) = to_client {
            self.to_client.push(bytes);
            self.pushed_to_client = true;
        }
    }
}

/// The peers' queues, held outside the lock to send what was queued.
struct Outlets {
    to_client: Option<Arc<OutputQueue>>,
    to_upstream: Option<Arc<OutputQueue>>,
}

impl Outlets {
    fn send(&self) {
        for queue in [&self.to_upstream, &self.to_client].into_iter().flatten() {
            queue.send();
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
    shared: &Arc<Shared>,
    events: &SyncSender<Wake>,
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

    pipes::enlarge_pipe(&stdin);
    pipes::enlarge_pipe(&stdout);
    let stdin_queue = Arc::new(OutputQueue::new(stdin.as_fd().try_clone_to_owned().ok()));
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

    let (feeder, wake) = (shared.clone(), events.clone());
    pipes::spawn_reader(
        "gatekit-upstream-reader",
        stdout,
        vec![to_client.clone()],
        move |chunk| {
            feeder.feed_from_reader(&wake, |driver| match chunk {
                Some(bytes) => driver.feed(Input::UpstreamBytes(bytes)),
                None => driver.handle_event(HostEvent::UpstreamEof),
            })
        },
    )?;

    pipes::spawn_stderr_copier(stderr, io::stderr())?;

    let tx = events.clone();
    thread::Builder::new()
        .name("gatekit-upstream-waiter".to_owned())
        .spawn(move || match child.wait() {
            Ok(status) => {
                let status = process::exit_status(status);
                let _ = tx.send(Wake::Event(HostEvent::UpstreamExited(status)));
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
    Event(Wake),
    Deadline,
    /// Every thread that could send an event has ended.
    Disconnected,
}

/// Blocks until an event arrives or `deadline` passes. A deadline already
/// passed wins over waiting events, so a busy peer cannot starve the timers.
fn next_event(events: &Receiver<Wake>, deadline: Option<Timestamp>) -> NextEvent {
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
        let code = drive(gateway(), options, input, output.clone(), None, None).expect("runs");
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
        let code =
            drive(gateway(), shell(script), input, output.clone(), None, None).expect("runs");
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
        let code = drive(gateway(), shell("sleep 300"), input, output, None, None).expect("runs");
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
        let code = drive(gateway(), shell(&script), input, output, None, None).expect("runs");
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
