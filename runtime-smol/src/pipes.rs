//! Moving bytes between pipes and the driver task without blocking it.
//!
//! The async twin of runtime-std's `pipes`, with the same rules and the same
//! constants: readers hand chunks to the driver through a bounded channel;
//! writers take from an [`OutputQueue`] that the driver fills without ever
//! waiting; and a reader waits, before its next read, while a queue it feeds
//! holds [`QUEUE_BOUND`] bytes or more, so a peer that stops reading slows
//! down the peer that writes to it instead of growing the gateway's memory.
//!
//! Everything runs on one thread (a `LocalExecutor`), so the queue is a
//! `RefCell` and its waiters are plain wakers.

use gatekit_runtime_std::{DirectPipe, QUEUE_BOUND, READ_CHUNK, STDERR_LINE_MAX};
use smol::channel::Sender;
use smol::future;
use smol::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use smol::{Async, Timer};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::task::{Poll, Waker};
use std::time::Duration;

const LOG_TARGET: &str = "gatekit.proxy.server";

/// Bytes waiting to be written to one peer, shared by the driver (which
/// pushes), a writer task (which pops) and the readers (which wait on it).
#[derive(Debug, Default)]
pub(crate) struct OutputQueue {
    state: RefCell<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes pushed and not yet written, including a batch being written.
    queued_bytes: usize,
    /// No more pushes: the writer writes what is queued, then closes.
    closing: bool,
    /// The writer failed: everything pushed is dropped.
    dead: bool,
    /// Tasks waiting for any change of the above.
    waiters: Vec<Waker>,
    /// The pipe itself, written to directly when that cannot block (as in
    /// runtime-std); dropped on close so the reader sees EOF after the
    /// writer's last batch.
    direct: Option<DirectPipe>,
}

impl OutputQueue {
    /// A queue; `direct` lets pushes skip the writer task (and, for the
    /// client's stdout, the blocking pool's thread).
    pub(crate) fn new(direct: Option<DirectPipe>) -> Self {
        OutputQueue {
            state: RefCell::new(QueueState {
                direct,
                ..QueueState::default()
            }),
        }
    }

    /// Queues `bytes` for writing; never waits. Dropped if the queue was
    /// closed or its writer has failed. When nothing is queued or being
    /// written, the pipe is empty and the bytes fit, they are written here.
    pub(crate) fn push(&self, mut bytes: Vec<u8>) {
        {
            let state = self.state.borrow();
            if state.closing || state.dead {
                log::debug!(target: LOG_TARGET, "dropping {} bytes for a closed pipe", bytes.len());
                return;
            }
            if let Some(direct) = state.direct.as_ref().filter(|_| state.queued_bytes == 0) {
                let n = direct.write_if_room(&bytes);
                if n == bytes.len() {
                    return;
                }
                bytes.drain(..n);
            }
        }
        self.change(|state| {
            state.queued_bytes += bytes.len();
            state.chunks.push_back(bytes);
        });
    }

    /// Asks the writer to finish what is queued and then close its pipe.
    pub(crate) fn close(&self) {
        self.change(|state| {
            state.closing = true;
            state.direct = None;
        });
    }

    /// Waits while [`QUEUE_BOUND`] bytes or more wait to be written.
    pub(crate) async fn wait_below_bound(&self) {
        self.until(|state| state.queued_bytes < QUEUE_BOUND || state.dead)
            .await;
    }

    /// Waits up to `timeout` until everything pushed has been written (or
    /// can never be). Returns the bytes still waiting.
    pub(crate) async fn wait_drained(&self, timeout: Duration) -> usize {
        let drained = self.until(|state| state.queued_bytes == 0 || state.dead);
        future::or(drained, async {
            Timer::after(timeout).await;
        })
        .await;
        let state = self.state.borrow();
        if state.dead {
            0
        } else {
            state.queued_bytes
        }
    }

    /// Everything queued, as one buffer, once there is something; `None`
    /// once the queue is closed and empty.
    async fn next_batch(&self) -> Option<Vec<u8>> {
        self.until(|state| state.dead || state.closing || !state.chunks.is_empty())
            .await;
        let mut state = self.state.borrow_mut();
        if state.dead {
            return None;
        }
        match state.chunks.len() {
            0 => None,
            1 => state.chunks.pop_front(),
            _ => {
                let mut batch = Vec::with_capacity(state.queued_bytes);
                for chunk in state.chunks.drain(..) {
                    batch.extend_from_slice(&chunk);
                }
                Some(batch)
            }
        }
    }

    fn written(&self, len: usize) {
        self.change(|state| state.queued_bytes = state.queued_bytes.saturating_sub(len));
    }

    fn writer_failed(&self) {
        self.change(|state| {
            state.dead = true;
            state.direct = None;
            state.chunks.clear();
            state.queued_bytes = 0;
        });
    }

    /// Applies `change` and wakes every waiting task to look again.
    fn change(&self, change: impl FnOnce(&mut QueueState)) {
        let waiters = {
            let mut state = self.state.borrow_mut();
            change(&mut state);
            std::mem::take(&mut state.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Resolves once `ready` holds for the queue's state.
    async fn until(&self, ready: impl Fn(&QueueState) -> bool) {
        future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if ready(&state) {
                return Poll::Ready(());
            }
            // A future polled again before any change must not pile up
            // copies of its waker.
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// A stream a reader task reads from.
pub(crate) trait ReadHalf: Sized {
    /// Reads once into `buffer`, handing back the stream and the buffer.
    async fn read_chunk(self, buffer: Vec<u8>) -> (Self, Vec<u8>, io::Result<usize>);
}

/// A stream a writer task writes to.
pub(crate) trait WriteHalf: Sized {
    /// Writes all of `batch` and flushes, handing back the stream.
    async fn write_batch(self, batch: Vec<u8>) -> (Self, io::Result<()>);
}

/// A pipe the reactor watches, read the way runtime-std's threads read it:
/// one `read` per message that arrives.
///
/// A plain `AsyncRead` read tries the pipe first and waits only when that
/// fails. After a message has been taken, the pipe is almost always empty,
/// so that costs failed reads (async-io retries once after an event it
/// has not yet seen consumed) before the reactor is asked to wait. A read
/// that took less than the buffer held emptied the pipe, so the next one
/// waits for readiness first and then reads once; after a full buffer
/// there may be more, so it reads straight away.
pub(crate) struct Watched {
    pipe: Async<File>,
    /// The last read emptied the pipe: wait before reading again.
    emptied: bool,
}

impl Watched {
    /// Watches `pipe` (making it non-blocking).
    pub(crate) fn new(pipe: impl Into<OwnedFd>) -> io::Result<Self> {
        Ok(Watched {
            pipe: Async::new(File::from(pipe.into()))?,
            emptied: false,
        })
    }
}

impl ReadHalf for Watched {
    async fn read_chunk(mut self, mut buffer: Vec<u8>) -> (Self, Vec<u8>, io::Result<usize>) {
        if self.emptied {
            if let Err(error) = self.pipe.readable().await {
                return (self, buffer, Err(error));
            }
        }
        let result = self.pipe.read(&mut buffer).await;
        self.emptied = matches!(result, Ok(n) if n > 0 && n < buffer.len());
        (self, buffer, result)
    }
}

/// A stream the reactor watches, written through `AsyncWrite`: the
/// upstream's stdin.
pub(crate) struct Nonblocking<T>(pub(crate) T);

impl<T: AsyncRead + Unpin> ReadHalf for Nonblocking<T> {
    async fn read_chunk(mut self, mut buffer: Vec<u8>) -> (Self, Vec<u8>, io::Result<usize>) {
        let result = self.0.read(&mut buffer).await;
        (self, buffer, result)
    }
}

impl<T: AsyncWrite + Unpin> WriteHalf for Nonblocking<T> {
    async fn write_batch(mut self, batch: Vec<u8>) -> (Self, io::Result<()>) {
        let result = match self.0.write_all(&batch).await {
            Ok(()) => self.0.flush().await,
            Err(error) => Err(error),
        };
        (self, result)
    }
}

/// A stream whose calls block: the client's stdin and stdout, which may be
/// a terminal or a file and cannot be made non-blocking without changing
/// the client's end too. Each call runs on smol's blocking pool, and only
/// when the task asks for it: unlike `smol::Unblock`, nothing is read ahead
/// of the backpressure or buffered behind it, exactly as runtime-std's
/// threads do.
pub(crate) struct Blocking<T>(pub(crate) T);

impl<T: Read + Send + 'static> ReadHalf for Blocking<T> {
    async fn read_chunk(mut self, mut buffer: Vec<u8>) -> (Self, Vec<u8>, io::Result<usize>) {
        smol::unblock(move || {
            let result = self.0.read(&mut buffer);
            (self, buffer, result)
        })
        .await
    }
}

impl<T: Write + Send + 'static> WriteHalf for Blocking<T> {
    async fn write_batch(mut self, batch: Vec<u8>) -> (Self, io::Result<()>) {
        smol::unblock(move || {
            let result = self.0.write_all(&batch).and_then(|()| self.0.flush());
            (self, result)
        })
        .await
    }
}

/// Writes what `queue` receives to `output`, flushing after each batch, then
/// drops `output` (closing a pipe) once the queue is closed and empty.
/// Whatever is queued when the task wakes goes out in one write, so a ready
/// message is never held back. If a write fails the queue drops everything,
/// so no reader waits on it, and the error is returned.
pub(crate) async fn write_batches(
    queue: &OutputQueue,
    mut output: impl WriteHalf,
) -> io::Result<()> {
    while let Some(batch) = queue.next_batch().await {
        let len = batch.len();
        let result;
        (output, result) = output.write_batch(batch).await;
        if let Err(error) = result {
            queue.writer_failed();
            return Err(error);
        }
        queue.written(len);
    }
    Ok(())
}

/// Reads `input` in chunks of up to [`READ_CHUNK`] bytes and sends each,
/// wrapped by `event`, as `Some`, then `None` at the end. A read error other
/// than EINTR is logged and counts as the end. Before each read it waits
/// until every queue in `gates` is below [`QUEUE_BOUND`]; the bounded
/// channel makes it wait, too, while the driver has not caught up. Returns
/// when nobody is listening any more.
pub(crate) async fn read_chunks<E>(
    label: &str,
    mut input: impl ReadHalf,
    gates: Vec<std::rc::Rc<OutputQueue>>,
    events: Sender<E>,
    event: impl Fn(Option<Vec<u8>>) -> E,
) {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        for gate in &gates {
            gate.wait_below_bound().await;
        }
        let result;
        (input, buffer, result) = input.read_chunk(buffer).await;
        let chunk = match result {
            Ok(0) => None,
            Ok(n) => Some(buffer[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!(target: LOG_TARGET, "{label}: read failed, treating it as the end of input: {e}");
                None
            }
        };
        let more = chunk.is_some();
        if events.send(event(chunk)).await.is_err() || !more {
            return;
        }
    }
}

/// Copies the upstream's stderr to gatekit's stderr line by line, so the
/// server never blocks on a full stderr pipe and its lines do not interleave
/// mid-line with the gateway's own log lines. Each line is one blocking
/// `write_all` on the blocking pool, as in runtime-std: a stderr nobody reads
/// stalls this copier (and so the server's stderr), never the driver. Write
/// errors are ignored: draining is what matters.
pub(crate) async fn copy_stderr(input: impl AsyncRead + Unpin) {
    let mut input = BufReader::with_capacity(STDERR_LINE_MAX, input);
    let mut line = Vec::new();
    loop {
        let available = match input.fill_buf().await {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!(target: LOG_TARGET, "reading the upstream's stderr failed: {e}");
                &[]
            }
        };
        if available.is_empty() {
            if !line.is_empty() {
                to_stderr(line).await;
            }
            return;
        }
        let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        input.consume(taken);
        if complete || line.len() >= STDERR_LINE_MAX {
            line = to_stderr(line).await;
            line.clear();
        }
    }
}

/// Writes `line` to stderr in one `write_all` and hands the buffer back.
async fn to_stderr(line: Vec<u8>) -> Vec<u8> {
    smol::unblock(move || {
        let mut stderr = io::stderr();
        let _ = stderr.write_all(&line).and_then(|()| stderr.flush());
        line
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn writes_everything_in_order_and_closes() {
        let queue = OutputQueue::default();
        queue.push(b"one\n".to_vec());
        queue.push(b"two\n".to_vec());
        queue.close();
        let mut written = Vec::new();
        smol::block_on(write_batches(&queue, Nonblocking(&mut written))).expect("writes");
        assert_eq!(written, b"one\ntwo\n");
        assert_eq!(smol::block_on(queue.wait_drained(Duration::ZERO)), 0);
    }

    #[test]
    fn a_watched_pipe_is_read_to_its_end() {
        // More than a buffer at once (a full read, then one that empties the
        // pipe), then, after a pause, more (read once the pipe is readable
        // again), then the end.
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "head -c 200000 /dev/zero; sleep 0.1; printf tail"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pipe = writer.stdout.take().expect("piped");
        let executor = smol::LocalExecutor::new();
        let (tx, rx) = smol::channel::unbounded();
        executor
            .spawn(read_chunks(
                "test-reader",
                Watched::new(pipe).expect("watched"),
                Vec::new(),
                tx,
                |c| c,
            ))
            .detach();
        let read = smol::block_on(executor.run(async {
            let mut read = Vec::new();
            while let Ok(Some(chunk)) = rx.recv().await {
                read.extend_from_slice(&chunk);
            }
            read
        }));
        writer.wait().expect("sh exits");
        assert_eq!(read.len(), 200_004);
        assert!(read[..200_000].iter().all(|&b| b == 0));
        assert_eq!(&read[200_000..], b"tail");
    }

    #[test]
    fn a_reader_waits_while_its_gate_is_full() {
        let executor = smol::LocalExecutor::new();
        let gate = Rc::new(OutputQueue::default());
        gate.push(vec![0; QUEUE_BOUND]);
        let (tx, rx) = smol::channel::bounded(1);
        executor
            .spawn(read_chunks(
                "test-reader",
                Nonblocking(&b"data"[..]),
                vec![gate.clone()],
                tx,
                |c| c,
            ))
            .detach();
        smol::block_on(executor.run(async {
            let early = future::or(async { rx.recv().await.ok() }, async {
                Timer::after(Duration::from_millis(100)).await;
                None
            });
            assert_eq!(early.await, None, "read while the gate was full");
            gate.written(1);
            assert_eq!(rx.recv().await.ok(), Some(Some(b"data".to_vec())));
            assert_eq!(rx.recv().await.ok(), Some(None));
        }));
    }
}
