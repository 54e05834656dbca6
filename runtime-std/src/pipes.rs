//! Moving bytes between pipes and the main thread without blocking it.
//!
//! Every read that may block happens on a thread of its own. Readers hand
//! chunks to a callback (which feeds the gateway); writers take from an
//! [`OutputQueue`] that the gateway's side fills without ever waiting. When
//! the queue's writer is idle, [`OutputQueue::send`] writes what was pushed
//! straight to the pipe, as much as it takes without blocking
//! ([`DirectPipe`]), and leaves only the rest to the writer. Backpressure
//! goes the other way: a reader waits, before its next read, while a queue
//! it feeds holds [`QUEUE_BOUND`] bytes or more, so a peer that stops
//! reading slows down the peer that writes to it instead of growing the
//! gateway's memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

const LOG_TARGET: &str = "gatekit.proxy.server";

/// Largest chunk a reader passes on at once. A pipe holds 64 KiB on Linux,
/// so one read usually empties it.
pub const READ_CHUNK: usize = 64 * 1024;

/// Bytes queued for a peer at which the readers feeding that queue stop
/// reading until it drains.
///
/// Large enough that ordinary bursts (a long `tools/list`, a file's contents
/// in a `tools/call` result) pass without stalling anybody; small enough
/// that the two queues together stay at a few tens of MiB even when a peer
/// stops reading for good. It is a threshold, not a cap: the main thread
/// never blocks, so one message larger than the bound is still queued
/// whole, and the readers then wait until it has been written.
pub const QUEUE_BOUND: usize = 8 * 1024 * 1024;

/// Longest piece of the upstream's stderr passed on as one write: a line
/// longer than this is passed on in pieces rather than buffered whole.
pub const STDERR_LINE_MAX: usize = 64 * 1024;

/// Bytes waiting to be written to one peer, shared by the gateway's side
/// (which pushes), a writer thread (which pops) and the readers (which wait
/// on it).
#[derive(Debug, Default)]
pub(crate) struct OutputQueue {
    state: Mutex<QueueState>,
    changed: Condvar,
    /// Whether [`QUEUE_BOUND`] bytes or more wait and the writer is alive,
    /// as last set under the lock: a reader checks it before every read,
    /// and there is nearly always room, so the usual check takes no lock.
    full: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes pushed and not yet written, including a batch being written.
    queued_bytes: usize,
    /// The writer thread holds a batch it is writing.
    writing: bool,
    /// Threads in `wait_below_bound` or `wait_drained`.
    waiting: usize,
    /// No more pushes: the writer writes what is queued, then closes.
    closing: bool,
    /// The writer failed: everything pushed is dropped.
    dead: bool,
    /// The pipe the writer writes to (a duplicate of its descriptor) and
    /// its capacity, for writing straight to it; dropped on close, so the
    /// reader sees EOF once the writer is done.
    direct: Option<DirectPipe>,
}

/// A pipe the gateway may write to from the thread that has the bytes,
/// when that cannot block: see [`DirectPipe::write_if_room`]. Shared with
/// runtime-smol, whose driver writes the same way.
#[derive(Debug)]
pub struct DirectPipe {
    pipe: File,
    capacity: usize,
    /// The kernel takes `RWF_NOWAIT` writes to pipes (Linux 5.x and later
    /// do); cleared at the first refusal, then the emptiness test is used.
    nowait: AtomicBool,
}

impl DirectPipe {
    /// `fd` (a duplicate of the descriptor the peer's writer uses), if it
    /// is a pipe.
    pub fn new(fd: OwnedFd) -> Option<DirectPipe> {
        let capacity = pipe_capacity(&fd)?;
        Some(DirectPipe {
            pipe: File::from(fd),
            capacity,
            nowait: AtomicBool::new(true),
        })
    }

    /// Writes as much of `bytes` as the pipe takes without blocking;
    /// returns how many bytes were written (the caller's writer must take
    /// the rest). Only call it when no other write to this pipe is under
    /// way, or the bytes could pass others.
    ///
    /// A write with `RWF_NOWAIT` takes what fits, even into a pipe that
    /// still holds bytes (as it does under a pipelined load). Where the
    /// kernel refuses the flag, only an empty pipe with room for all of
    /// `bytes` is written to, which cannot block either.
    pub fn write_if_room(&self, bytes: &[u8]) -> usize {
        if self.nowait.load(Ordering::Relaxed) {
            match write_nowait(&self.pipe, bytes) {
                Ok(n) => return n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                        self.nowait.store(false, Ordering::Relaxed)
                    }
                    // Full (EAGAIN), interrupted, or broken: the writer
                    // takes the bytes, and reports a broken pipe.
                    _ => return 0,
                },
            }
        }
        if bytes.len() > self.capacity || !pipe_is_empty(&self.pipe) {
            return 0;
        }
        // EINTR and the like: the caller's writer tries again, and reports
        // what does not pass.
        (&self.pipe).write(bytes).unwrap_or(0)
    }
}

/// `write(2)` that never blocks: pwritev2 at the current position with
/// `RWF_NOWAIT`. EAGAIN when the pipe is full; EOPNOTSUPP off Linux.
#[cfg(not(target_os = "linux"))]
fn write_nowait(_: &File, _: &[u8]) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// `write(2)` that never blocks: pwritev2 at the current position with
/// `RWF_NOWAIT`. EAGAIN when the pipe is full.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn write_nowait(pipe: &File, bytes: &[u8]) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: one iovec describing `bytes`, which outlives the call; the
    // kernel only reads from it. Offset -1 means the current position (a
    // pipe has none).
    let n = unsafe { libc::pwritev2(pipe.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl OutputQueue {
    /// A queue; `pipe`, a duplicate of the descriptor its writer will
    /// write to, lets pushes skip the writer thread when that descriptor is
    /// a pipe (anything else is ignored).
    pub(crate) fn new(pipe: Option<OwnedFd>) -> Self {
        let direct = pipe.and_then(DirectPipe::new);
        OutputQueue {
            state: Mutex::new(QueueState {
                direct,
                ..QueueState::default()
            }),
            changed: Condvar::new(),
            full: AtomicBool::new(false),
        }
    }

    /// Queues `bytes`; never blocks. Nothing is written before
    /// [`send`](Self::send). Dropped if the queue was closed or its writer
    /// has failed.
    pub(crate) fn push(&self, bytes: Vec<u8>) {
        let mut state = self.lock();
        if state.closing || state.dead {
            log::debug!(target: LOG_TARGET, "dropping {} bytes for a closed pipe", bytes.len());
            return;
        }
        state.queued_bytes += bytes.len();
        state.chunks.push_back(bytes);
        self.note_fullness(&state);
    }

    /// Sends what was pushed: written here when that cannot block (the
    /// writer is idle, the pipe empty and the bytes fit in it), otherwise
    /// handed to the writer thread. Never blocks.
    ///
    /// Writing here saves the hand-over to the writer thread, which costs a
    /// scheduling round. It is separate from [`push`](Self::push) so that
    /// the gateway's lock can be released first: the write wakes the peer,
    /// and on a busy CPU the peer runs at once; its answer must not find the
    /// lock still held by a thread that has not run since.
    pub(crate) fn send(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.chunks.is_empty() {
            return;
        }
        if let Some(direct) = state.direct.as_ref().filter(|_| !state.writing) {
            // Usually one chunk: the driver gathers a peer's messages.
            while let Some(chunk) = state.chunks.front_mut() {
                let n = direct.write_if_room(chunk);
                state.queued_bytes -= n;
                if n < chunk.len() {
                    // The writer takes the rest.
                    chunk.drain(..n);
                    break;
                }
                state.chunks.pop_front();
            }
            self.note_fullness(state);
        }
        // Wakes the writer for what is left, and whoever waits for room or
        // for the queue to drain. Waking the idle writer for nothing would
        // cost the very scheduling round writing here saves.
        if !state.chunks.is_empty() || state.waiting > 0 {
            self.changed.notify_all();
        }
    }

    /// Asks the writer to finish what is queued and then close its pipe.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closing = true;
        state.direct = None;
        self.changed.notify_all();
    }

    /// Blocks while [`QUEUE_BOUND`] bytes or more wait to be written.
    pub(crate) fn wait_below_bound(&self) {
        if !self.full.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        while state.queued_bytes >= QUEUE_BOUND && !state.dead {
            state.waiting += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// Waits up to `timeout` until everything pushed has been written (or
    /// can never be). Returns the bytes still waiting.
    pub(crate) fn wait_drained(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.queued_bytes > 0 && !state.dead {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state.waiting += 1;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
        if state.dead {
            0
        } else {
            state.queued_bytes
        }
    }

    /// Everything queued, as one buffer, once there is something; `None`
    /// once the queue is closed and empty.
    fn next_batch(&self) -> Option<Vec<u8>> {
        let mut state = self.lock();
        loop {
            if state.dead {
                return None;
            }
            match state.chunks.len() {
                0 if state.closing => return None,
                0 => {}
                1 => {
                    state.writing = true;
                    return state.chunks.pop_front();
                }
                _ => {
                    let mut batch = Vec::with_capacity(state.queued_bytes);
                    for chunk in state.chunks.drain(..) {
                        batch.extend_from_slice(&chunk);
                    }
                    state.writing = true;
                    return Some(batch);
                }
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn written(&self, len: usize) {
        let mut state = self.lock();
        state.writing = false;
        state.queued_bytes = state.queued_bytes.saturating_sub(len);
        self.note_fullness(&state);
        self.changed.notify_all();
    }

    fn writer_failed(&self) {
        let mut state = self.lock();
        state.dead = true;
        state.direct = None;
        state.chunks.clear();
        state.queued_bytes = 0;
        self.note_fullness(&state);
        self.changed.notify_all();
    }

    /// Sets [`full`](Self::full) from `state`; called under the lock after
    /// every change of `queued_bytes` or `dead`.
    fn note_fullness(&self, state: &QueueState) {
        self.full.store(
            state.queued_bytes >= QUEUE_BOUND && !state.dead,
            Ordering::Release,
        );
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock, and the state stays
        // consistent between statements anyway: ignore poisoning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The capacity of the pipe `fd`, or `None` when it is not a pipe (or the
/// system cannot tell: writing straight to pipes is then left out).
#[cfg(not(target_os = "linux"))]
fn pipe_capacity(_: &OwnedFd) -> Option<usize> {
    None
}

/// The capacity of the pipe `fd`, or `None` when it is not a pipe.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn pipe_capacity(fd: &OwnedFd) -> Option<usize> {
    // SAFETY: fcntl(F_GETPIPE_SZ) reads a property of a descriptor we own;
    // no memory is passed.
    let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).ok().filter(|&size| size > 0)
}

/// How large the gateway asks its four pipes to be. With the default
/// 64 KiB, a large message crosses a pipe in 64 KiB steps, each a wake-up
/// of the other side. Larger helps little beyond this (measured: 10 MiB
/// echoes at 116, 122 and 126 MiB/s with 64 KiB, 256 KiB and 1 MiB pipes)
/// and costs more than it seems: Linux charges a pipe's size, not what it
/// holds, to its user's pipe quota (`/proc/sys/fs/pipe-user-pages-soft`,
/// 64 MiB by default), and a user over it gets small pipes everywhere. A
/// desktop client runs a gateway per MCP server, so each takes 1 MiB of the
/// quota, not 4.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Asks for [`PIPE_SIZE`] bytes of room in the pipe `fd`. Best effort: not
/// a pipe, a lower system limit or a user over its pipe quota all leave the
/// pipe as it is, which only costs speed.
#[allow(unsafe_code)]
pub fn enlarge_pipe(fd: &impl AsRawFd) {
    // SAFETY: fcntl(F_SETPIPE_SZ) changes a property of an open
    // descriptor; no memory is passed. Non-pipes fail with EBADF/EINVAL.
    #[cfg(target_os = "linux")]
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Whether `fd` is in non-blocking mode (O_NONBLOCK).
#[allow(unsafe_code)]
pub fn is_nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: fcntl(F_GETFL) reads the status flags of an open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// Puts `fd` back into blocking mode (after a runtime watched it with
/// O_NONBLOCK). Best effort.
#[allow(unsafe_code)]
pub fn set_blocking(fd: &impl AsRawFd) {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl(F_GETFL / F_SETFL) reads and sets the status flags of
    // an open descriptor; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Whether nothing waits in the pipe for its reader.
#[allow(unsafe_code)]
fn pipe_is_empty(pipe: &File) -> bool {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points
    // to one.
    let ok = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut queued) } == 0;
    ok && queued == 0
}

/// Starts a thread that writes what `queue` receives to `output`, flushing
/// after each batch. Whatever is queued when the thread wakes goes out in
/// one write, so a ready message is never held back. `on_error` runs once if
/// a write fails; the queue then drops everything, so no reader waits on it.
pub(crate) fn spawn_writer<W>(
    name: &str,
    queue: Arc<OutputQueue>,
    mut output: W,
    on_error: impl FnOnce(io::Error) + Send + 'static,
) -> io::Result<()>
where
    W: Write + Send + 'static,
{
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = write_batches(&queue, &mut output);
            // Dropping `output` here closes the pipe.
            drop(output);
            if let Err(error) = result {
                queue.writer_failed();
                on_error(error);
            }
        })?;
    Ok(())
}

fn write_batches(queue: &OutputQueue, output: &mut impl Write) -> io::Result<()> {
    while let Some(batch) = queue.next_batch() {
        output.write_all(&batch)?;
        output.flush()?;
        queue.written(batch.len());
    }
    Ok(())
}

/// Starts a thread that reads `input` in chunks of up to [`READ_CHUNK`]
/// bytes and hands each to `deliver` as `Some` (borrowed: the buffer is
/// reused), then `None` at the end. A
/// read error other than EINTR is logged and counts as the end. Before each
/// read it waits until every queue in `gates` is below [`QUEUE_BOUND`]. The
/// thread stops when `deliver` returns false (nobody is listening).
pub(crate) fn spawn_reader<R>(
    name: &str,
    mut input: R,
    gates: Vec<Arc<OutputQueue>>,
    mut deliver: impl FnMut(Option<&[u8]>) -> bool + Send + 'static,
) -> io::Result<()>
where
    R: Read + Send + 'static,
{
    let label = name.to_owned();
    thread::Builder::new().name(name.to_owned()).spawn(move || {
        let mut buffer = vec![0; READ_CHUNK];
        loop {
            for gate in &gates {
                gate.wait_below_bound();
            }
            let chunk = match input.read(&mut buffer) {
                Ok(0) => None,
                Ok(n) => Some(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: LOG_TARGET, "{label}: read failed, treating it as the end of input: {e}");
                    None
                }
            };
            let more = chunk.is_some();
            if !deliver(chunk) || !more {
                return;
            }
        }
    })?;
    Ok(())
}

/// Starts a thread that copies the upstream's stderr to `output` line by
/// line, so the server never blocks on a full stderr pipe and its lines do
/// not interleave mid-line with the gateway's own log lines. Write errors
/// are ignored: draining is what matters.
pub(crate) fn spawn_stderr_copier<R, W>(input: R, mut output: W) -> io::Result<()>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    thread::Builder::new()
        .name("gatekit-upstream-stderr".to_owned())
        .spawn(move || {
            let mut input = BufReader::with_capacity(STDERR_LINE_MAX, input);
            let mut line = Vec::new();
            loop {
                let available = match input.fill_buf() {
                    Ok(available) => available,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::debug!(target: LOG_TARGET, "reading the upstream's stderr failed: {e}");
                        &[]
                    }
                };
                if available.is_empty() {
                    if !line.is_empty() {
                        let _ = output.write_all(&line).and_then(|()| output.flush());
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
                    let _ = output.write_all(&line).and_then(|()| output.flush());
                    line.clear();
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that reports each write to a channel.
    struct Recorder(mpsc::Sender<Vec<u8>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_everything_in_order_and_drains() {
        let queue = Arc::new(OutputQueue::default());
        let (tx, rx) = mpsc::channel();
        spawn_writer("test-writer", queue.clone(), Recorder(tx), |_| {}).expect("thread");
        queue.push(b"one\n".to_vec());
        queue.push(b"two\n".to_vec());
        queue.send();
        assert_eq!(queue.wait_drained(Duration::from_secs(5)), 0);
        queue.close();
        let written: Vec<u8> = rx.iter().flatten().collect();
        assert_eq!(written, b"one\ntwo\n");
    }

    #[test]
    fn the_lock_free_fullness_check_follows_the_queue() {
        let full = |queue: &OutputQueue| queue.full.load(Ordering::Acquire);
        let queue = OutputQueue::default();
        assert!(!full(&queue));
        queue.push(vec![0; QUEUE_BOUND - 1]);
        assert!(!full(&queue));
        queue.push(vec![0; 1]);
        assert!(full(&queue));
        queue.written(1);
        assert!(!full(&queue));
        queue.push(vec![0; 1]);
        assert!(full(&queue));
        queue.writer_failed();
        assert!(!full(&queue), "a dead writer must not hold readers");
    }

    #[test]
    fn a_failed_writer_releases_waiting_readers() {
        let queue = Arc::new(OutputQueue::default());
        queue.push(vec![0; QUEUE_BOUND]);
        queue.send();
        let (tx, rx) = mpsc::channel();
        spawn_writer("test-broken", queue.clone(), Broken, move |e| {
            let _ = tx.send(e.kind());
        })
        .expect("thread");
        queue.wait_below_bound();
        assert_eq!(rx.recv().ok(), Some(io::ErrorKind::BrokenPipe));
        queue.push(b"dropped\n".to_vec());
        assert_eq!(queue.wait_drained(Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_direct_write_takes_what_fits_and_never_blocks() {
        let (mut reader, writer) = io::pipe().expect("a pipe");
        let direct = DirectPipe::new(OwnedFd::from(writer)).expect("a pipe is a pipe");
        let capacity = direct.capacity;
        let bytes = vec![b'x'; capacity + 1000];
        let first = direct.write_if_room(&bytes);
        assert!(
            first > 0 && first <= capacity,
            "wrote {first} of {}",
            bytes.len()
        );
        // Full: nothing more goes in, and the call returns at once.
        assert_eq!(direct.write_if_room(&bytes[first..]), 0);
        let mut drained = vec![0; first];
        reader.read_exact(&mut drained).expect("what was written");
        assert_eq!(direct.write_if_room(b"more\n"), 5);
    }

    #[test]
    fn only_pipes_are_written_directly() {
        let file = tempfile_fd();
        assert!(DirectPipe::new(file).is_none());
    }

    fn tempfile_fd() -> OwnedFd {
        let path = std::env::temp_dir().join(format!("gatekit-pipes-{}", std::process::id()));
        let file = File::create(&path).expect("a temporary file");
        let _ = std::fs::remove_file(&path);
        OwnedFd::from(file)
    }

    #[test]
    fn a_reader_waits_while_its_gate_is_full() {
        let gate = Arc::new(OutputQueue::default());
        gate.push(vec![0; QUEUE_BOUND]);
        let (tx, rx) = mpsc::channel();
        spawn_reader(
            "test-reader",
            &b"data"[..],
            vec![gate.clone()],
            move |chunk| tx.send(chunk.map(<[u8]>::to_vec)).is_ok(),
        )
        .expect("thread");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        gate.written(1);
        assert_eq!(rx.recv().ok(), Some(Some(b"data".to_vec())));
        assert_eq!(rx.recv().ok(), Some(None));
    }
}
