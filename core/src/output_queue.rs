//! The gateway's queue of outputs, which folds the audit records of one
//! input into one write per sink, and the messages it forwards into one
//! buffer per peer.
//!
//! A chunk read from a busy peer holds many messages, and each message has
//! an audit record. Handing the runtime one write per record would cost one
//! system call per message, more than the core's own work on a small
//! message. So a record is appended to the latest queued write for its sink
//! (unless it must go to a fresh file after a rotation), which moves it
//! ahead of the outputs queued since then. Records only ever move earlier,
//! so each is still written before the message it describes is passed on,
//! and a sink's records stay in their order. If that combined write fails,
//! everything queued after it is judged as if its own record had failed:
//! the gateway fails closed for the whole batch.
//!
//! The forwarded messages of such a chunk are appended to one buffer per
//! peer in the same way, straight from the line, when nothing else was
//! queued since the previous one: a buffer per message (over a kilobyte
//! for a 1 KiB message, past the allocator's fast path) cost an allocation
//! and a free each, and the runtime copied them into one write anyway. A
//! joined forward keeps the fallback of each of its messages, in order.

use crate::audit::{AuditSinkId, AuditWrite};
use crate::framing::Line;
use crate::gateway::Output;
use std::collections::VecDeque;

/// An output waiting to be polled, with what replaces each message in it
/// (`F`, the gateway's fallback) if the audit log fails before it is
/// carried out.
#[derive(Debug)]
pub(crate) struct Queued<F> {
    pub(crate) output: Output,
    pub(crate) fallbacks: Fallbacks<F>,
}

/// The fallbacks of a queued output: none for what the gateway says
/// itself, one per forwarded message otherwise. Kept without a `Vec` for
/// the usual single message, which must not cost an allocation.
#[derive(Debug)]
pub(crate) enum Fallbacks<F> {
    None,
    One(F),
    Many(Vec<F>),
}

impl<F> Fallbacks<F> {
    fn push(&mut self, fallback: F) {
        *self = match std::mem::replace(self, Fallbacks::None) {
            Fallbacks::None => Fallbacks::One(fallback),
            Fallbacks::One(first) => Fallbacks::Many(vec![first, fallback]),
            Fallbacks::Many(mut all) => {
                all.push(fallback);
                Fallbacks::Many(all)
            }
        }
    }

    /// Whether these belong to forwarded messages.
    pub(crate) fn are_forwards(&self) -> bool {
        !matches!(self, Fallbacks::None)
    }
}

impl<F> IntoIterator for Fallbacks<F> {
    type Item = F;
    type IntoIter = std::iter::Chain<std::option::IntoIter<F>, std::vec::IntoIter<F>>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Fallbacks::None => (None, Vec::new()),
            Fallbacks::One(f) => (Some(f), Vec::new()),
            Fallbacks::Many(all) => (None, all),
        };
        one.into_iter().chain(many)
    }
}

/// Which peer a forwarded message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Client,
    Upstream,
}

/// A message to forward: the line as the framer holds it, or bytes the
/// gateway made in its place (a filtered `tools/list` answer), newline
/// included.
pub(crate) enum Forwarded<'a> {
    Line(Line<'a>),
    Made(Vec<u8>),
}

/// Writes larger than this are not folded together: a large record (a
/// 10 MiB argument) would be copied again to join a small write, and there
/// is no system call to save on a write that large anyway.
const FOLD_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct OutputQueue<F> {
    entries: VecDeque<Queued<F>>,
    /// Entries ever popped or taken: with it, a position counted from the
    /// start of the gateway's life finds an entry in `entries`.
    removed: u64,
    /// Per sink, the position of its latest queued write, which later
    /// records of that sink are appended to. Looked up, not searched for:
    /// an input of thousands of tiny lines must not cost quadratic time.
    open_writes: Vec<Option<u64>>,
}

impl<F> OutputQueue<F> {
    pub(crate) fn new(sinks: usize) -> Self {
        OutputQueue {
            entries: VecDeque::new(),
            removed: 0,
            open_writes: vec![None; sinks],
        }
    }

    /// Queues an output that forwards no peer's message (a reply of the
    /// gateway's own, a signal, an exit); an audit write is folded into the
    /// latest queued write of its sink when it can be. Forwarded messages
    /// go through [`push_forward`](Self::push_forward).
    pub(crate) fn push(&mut self, output: Output) {
        if let Output::Audit(write) = output {
            self.push_audit(write);
            return;
        }
        self.entries.push_back(Queued {
            output,
            fallbacks: Fallbacks::None,
        });
    }

    /// Queues a message forwarded to `peer`, which `fallback` replaces if
    /// its audit record is lost. A message of at most [`FOLD_LIMIT`] bytes
    /// joins the forward queued last if that one is for the same peer and
    /// not larger than that: only then does nothing queued since stand
    /// between them. A line is copied once, into the buffer it joins or a
    /// new one of its own size; a large gathered line is handed on in its
    /// own buffer. A joined buffer grows by doubling, so it never holds
    /// more than twice what it carries: the runtimes bound their queues by
    /// length, and room reserved for messages that might follow (a
    /// chunk's rest can be blank lines, refused calls or the start of a
    /// large message) would let a client make them hold far more.
    pub(crate) fn push_forward(&mut self, peer: Peer, message: Forwarded<'_>, fallback: F) {
        let len = match &message {
            Forwarded::Line(line) => line.bytes().len() + 1,
            Forwarded::Made(bytes) => bytes.len(),
        };
        if len <= FOLD_LIMIT {
            if let Some((bytes, fallbacks)) = self.last_forward(peer) {
                match message {
                    Forwarded::Line(line) => {
                        bytes.extend_from_slice(line.bytes());
                        bytes.push(b'\n');
                    }
                    Forwarded::Made(made) => bytes.extend_from_slice(&made),
                }
                fallbacks.push(fallback);
                return;
            }
        }
        let bytes = match message {
            Forwarded::Line(line) => line.into_forwarded(),
            Forwarded::Made(made) => made,
        };
        let output = match peer {
            Peer::Client => Output::ToClient(bytes),
            Peer::Upstream => Output::ToUpstream(bytes),
        };
        self.entries.push_back(Queued {
            output,
            fallbacks: Fallbacks::One(fallback),
        });
    }

    /// The bytes and fallbacks of the last queued entry, if it is a
    /// forward to `peer` that later messages may join.
    fn last_forward(&mut self, peer: Peer) -> Option<(&mut Vec<u8>, &mut Fallbacks<F>)> {
        let last = self.entries.back_mut()?;
        if !last.fallbacks.are_forwards() {
            return None;
        }
        let bytes = match (&mut last.output, peer) {
            (Output::ToClient(bytes), Peer::Client) => bytes,
            (Output::ToUpstream(bytes), Peer::Upstream) => bytes,
            _ => return None,
        };
        (bytes.len() <= FOLD_LIMIT).then_some((bytes, &mut last.fallbacks))
    }

    fn push_audit(&mut self, write: AuditWrite) {
        let sink = write.sink.0;
        self.cover(sink);
        if !write.rotate_first && write.bytes.len() <= FOLD_LIMIT {
            if let Some(earlier) = self
                .open_write(sink)
                .filter(|w| w.bytes.len() <= FOLD_LIMIT)
            {
                earlier.bytes.extend_from_slice(&write.bytes);
                return;
            }
        }
        self.push_open_write(write);
    }

    /// Queues one audit record of `sink`, which `format` appends to the
    /// buffer it is given and answers whether the file must be rotated
    /// first (see `AuditSink::append`). The record is formatted straight
    /// into the sink's latest queued write when it may join it, as
    /// [`push`](Self::push) would have joined it, so a record is neither
    /// allocated nor copied on its own; a record that turns out to need a
    /// rotation, or to be larger than [`FOLD_LIMIT`], is split off into a
    /// write of its own. `size_hint` is about the record's length: one
    /// expected to be large never joins (a 10 MiB argument would otherwise
    /// be formatted into a small write, then copied out of it).
    pub(crate) fn push_audit_with(
        &mut self,
        sink: AuditSinkId,
        size_hint: usize,
        format: impl FnOnce(&mut Vec<u8>) -> bool,
    ) {
        self.cover(sink.0);
        if size_hint <= FOLD_LIMIT {
            if let Some(earlier) = self
                .open_write(sink.0)
                .filter(|w| w.bytes.len() <= FOLD_LIMIT)
            {
                let start = earlier.bytes.len();
                let rotate_first = format(&mut earlier.bytes);
                if !rotate_first && earlier.bytes.len() - start <= FOLD_LIMIT {
                    return;
                }
                let bytes = earlier.bytes.split_off(start);
                self.push_open_write(AuditWrite {
                    sink,
                    rotate_first,
                    bytes,
                });
                return;
            }
        }
        let mut bytes = Vec::with_capacity(size_hint);
        let rotate_first = format(&mut bytes);
        self.push_open_write(AuditWrite {
            sink,
            rotate_first,
            bytes,
        });
    }

    /// Makes room in `open_writes` for `sink`.
    fn cover(&mut self, sink: usize) {
        if sink >= self.open_writes.len() {
            self.open_writes.resize(sink + 1, None);
        }
    }

    /// Queues `write` as its sink's latest write, which later records join.
    fn push_open_write(&mut self, write: AuditWrite) {
        self.open_writes[write.sink.0] = Some(self.removed + self.entries.len() as u64);
        self.entries.push_back(Queued {
            output: Output::Audit(write),
            fallbacks: Fallbacks::None,
        });
    }

    /// The queued write of `sink` that new records may still join.
    fn open_write(&mut self, sink: usize) -> Option<&mut AuditWrite> {
        let position = self.open_writes[sink]?;
        let index = usize::try_from(position.checked_sub(self.removed)?).ok()?;
        match self.entries.get_mut(index) {
            Some(Queued {
                output: Output::Audit(write),
                ..
            }) if write.sink.0 == sink => Some(write),
            _ => None,
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Queued<F>> {
        let entry = self.entries.pop_front()?;
        self.removed += 1;
        Some(entry)
    }

    /// Takes every queued entry out, to be judged again and pushed back.
    pub(crate) fn take_all(&mut self) -> VecDeque<Queued<F>> {
        self.removed += self.entries.len() as u64;
        self.open_writes.fill(None);
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditSinkId;

    fn write(sink: usize, rotate_first: bool, bytes: &str) -> Output {
        Output::Audit(AuditWrite {
            sink: AuditSinkId(sink),
            rotate_first,
            bytes: bytes.as_bytes().to_vec(),
        })
    }

    fn drain(queue: &mut OutputQueue<()>) -> Vec<Output> {
        std::iter::from_fn(|| queue.pop().map(|q| q.output)).collect()
    }

    #[test]
    fn records_of_one_input_become_one_write_per_sink_ahead_of_the_messages() {
        let mut queue = OutputQueue::<()>::new(2);
        queue.push(write(0, false, "a1\n"));
        queue.push(write(1, false, "b1\n"));
        queue.push_forward(Peer::Upstream, made("m1\n"), ());
        queue.push(write(0, false, "a2\n"));
        queue.push(write(1, false, "b2\n"));
        queue.push_forward(Peer::Upstream, made("m2\n"), ());
        assert_eq!(
            drain(&mut queue),
            vec![
                write(0, false, "a1\na2\n"),
                write(1, false, "b1\nb2\n"),
                Output::ToUpstream(b"m1\nm2\n".to_vec()),
            ]
        );
    }

    #[test]
    fn a_rotation_starts_a_new_write_that_later_records_join() {
        let mut queue = OutputQueue::<()>::new(1);
        queue.push(write(0, false, "a1\n"));
        queue.push(Output::ToClient(b"m1\n".to_vec()));
        queue.push(write(0, true, "a2\n"));
        queue.push(write(0, false, "a3\n"));
        assert_eq!(
            drain(&mut queue),
            vec![
                write(0, false, "a1\n"),
                Output::ToClient(b"m1\n".to_vec()),
                write(0, true, "a2\na3\n"),
            ]
        );
    }

    #[test]
    fn large_writes_stay_apart() {
        let large = "x".repeat(FOLD_LIMIT) + "\n";
        let mut queue = OutputQueue::<()>::new(1);
        queue.push(write(0, false, "a1\n"));
        queue.push(write(0, false, &large));
        queue.push(write(0, false, "a3\n"));
        assert_eq!(
            drain(&mut queue),
            vec![
                write(0, false, "a1\n"),
                write(0, false, &large),
                write(0, false, "a3\n"),
            ]
        );
    }

    #[test]
    fn a_write_already_polled_is_not_extended() {
        let mut queue = OutputQueue::<()>::new(1);
        queue.push(write(0, false, "a1\n"));
        assert_eq!(drain(&mut queue), vec![write(0, false, "a1\n")]);
        queue.push(write(0, false, "a2\n"));
        queue.push(Output::Exit(0));
        assert_eq!(
            drain(&mut queue),
            vec![write(0, false, "a2\n"), Output::Exit(0)]
        );
    }

    #[test]
    fn entries_taken_out_and_pushed_back_can_be_joined_again() {
        let mut queue = OutputQueue::<()>::new(1);
        queue.push(Output::ToClient(b"m0\n".to_vec()));
        queue.push(write(0, false, "a1\n"));
        queue.push_forward(Peer::Upstream, made("m1\n"), ());
        let _ = queue.pop();
        // As the gateway does after a failed write: what forwards no
        // message goes back as it was, a forward is replaced by a reply.
        for entry in queue.take_all() {
            if entry.fallbacks.are_forwards() {
                queue.push(Output::ToClient(b"r1\n".to_vec()));
            } else {
                queue.push(entry.output);
            }
        }
        queue.push(write(0, false, "a2\n"));
        assert_eq!(
            drain(&mut queue),
            vec![
                write(0, false, "a1\na2\n"),
                Output::ToClient(b"r1\n".to_vec()),
            ]
        );
    }

    fn made(bytes: &str) -> Forwarded<'static> {
        Forwarded::Made(bytes.as_bytes().to_vec())
    }

    fn drain_with_fallbacks(queue: &mut OutputQueue<u32>) -> Vec<(Output, Vec<u32>)> {
        std::iter::from_fn(|| queue.pop())
            .map(|q| (q.output, q.fallbacks.into_iter().collect()))
            .collect()
    }

    #[test]
    fn forwards_of_one_input_join_per_peer_and_keep_every_fallback() {
        let mut queue = OutputQueue::<u32>::new(1);
        format_in_u32(&mut queue, "a1\n");
        queue.push_forward(Peer::Upstream, made("m1\n"), 1);
        format_in_u32(&mut queue, "a2\n");
        queue.push_forward(Peer::Upstream, made("m2\n"), 2);
        // A reply of the gateway's own stands between: no joining across it.
        queue.push(Output::ToClient(b"e3\n".to_vec()));
        queue.push_forward(Peer::Upstream, made("m4\n"), 4);
        queue.push_forward(Peer::Client, made("r5\n"), 5);
        queue.push_forward(Peer::Client, made("r6\n"), 6);
        assert_eq!(
            drain_with_fallbacks(&mut queue),
            vec![
                (write(0, false, "a1\na2\n"), vec![]),
                (Output::ToUpstream(b"m1\nm2\n".to_vec()), vec![1, 2]),
                (Output::ToClient(b"e3\n".to_vec()), vec![]),
                (Output::ToUpstream(b"m4\n".to_vec()), vec![4]),
                (Output::ToClient(b"r5\nr6\n".to_vec()), vec![5, 6]),
            ]
        );
    }

    #[test]
    fn large_forwards_stay_apart_and_a_polled_one_is_not_extended() {
        let large = "x".repeat(FOLD_LIMIT) + "\n";
        let mut queue = OutputQueue::<u32>::new(1);
        queue.push_forward(Peer::Client, made("r1\n"), 1);
        queue.push_forward(Peer::Client, made(&large), 2);
        queue.push_forward(Peer::Client, made("r3\n"), 3);
        let _ = queue.pop();
        let _ = queue.pop();
        let _ = queue.pop();
        queue.push_forward(Peer::Client, made("r4\n"), 4);
        queue.push_forward(Peer::Client, made("r5\n"), 5);
        assert_eq!(
            drain_with_fallbacks(&mut queue),
            vec![(Output::ToClient(b"r4\nr5\n".to_vec()), vec![4, 5])]
        );
        let mut queue = OutputQueue::<u32>::new(1);
        queue.push_forward(Peer::Client, made("r1\n"), 1);
        queue.push_forward(Peer::Client, made(&large), 2);
        queue.push_forward(Peer::Client, made("r3\n"), 3);
        let sizes: Vec<usize> = drain_with_fallbacks(&mut queue)
            .iter()
            .map(|(o, _)| match o {
                Output::ToClient(b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [3, large.len(), 3]);
    }

    #[test]
    fn lines_of_a_chunk_join_into_a_buffer_at_most_twice_their_size() {
        let chunk = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let mut framer = crate::framing::LineFramer::new(1024);
        let mut queue = OutputQueue::<u32>::new(1);
        framer.begin();
        let mut n = 0;
        while let Some(crate::framing::Frame::Line(line)) = framer.next_frame_in(chunk) {
            n += 1;
            queue.push_forward(Peer::Upstream, Forwarded::Line(line), n);
        }
        let out = drain_with_fallbacks(&mut queue);
        assert_eq!(out.len(), 1);
        let (Output::ToUpstream(bytes), fallbacks) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(bytes, chunk);
        assert!(bytes.capacity() <= 2 * chunk.len(), "{}", bytes.capacity());
        assert_eq!(fallbacks, &[1, 2, 3]);
    }

    fn format_in_u32(queue: &mut OutputQueue<u32>, line: &str) {
        queue.push_audit_with(AuditSinkId(0), 512, |out| {
            out.extend_from_slice(line.as_bytes());
            false
        });
    }

    /// Queues `line` through [`OutputQueue::push_audit_with`], as a sink
    /// that asks for `rotate` would.
    fn format_in(queue: &mut OutputQueue<()>, sink: usize, hint: usize, line: &str, rotate: bool) {
        queue.push_audit_with(AuditSinkId(sink), hint, |out| {
            out.extend_from_slice(line.as_bytes());
            rotate
        });
    }

    #[test]
    fn records_formatted_in_place_join_as_pushed_ones_do() {
        let mut queue = OutputQueue::<()>::new(2);
        format_in(&mut queue, 0, 512, "a1\n", false);
        format_in(&mut queue, 1, 512, "b1\n", false);
        queue.push_forward(Peer::Upstream, made("m1\n"), ());
        format_in(&mut queue, 0, 512, "a2\n", false);
        // A rotation splits the record off into a write of its own, which
        // later records join.
        format_in(&mut queue, 1, 512, "b2\n", true);
        format_in(&mut queue, 1, 512, "b3\n", false);
        queue.push_forward(Peer::Upstream, made("m2\n"), ());
        assert_eq!(
            drain(&mut queue),
            vec![
                write(0, false, "a1\na2\n"),
                write(1, false, "b1\n"),
                Output::ToUpstream(b"m1\n".to_vec()),
                write(1, true, "b2\nb3\n"),
                Output::ToUpstream(b"m2\n".to_vec()),
            ]
        );
    }

    #[test]
    fn large_records_formatted_in_place_stay_apart() {
        let big = "x".repeat(FOLD_LIMIT + 1);
        let mut queue = OutputQueue::<()>::new(1);
        format_in(&mut queue, 0, 512, "a1\n", false);
        // Expected to be large: never formatted into the small write.
        format_in(&mut queue, 0, FOLD_LIMIT + 1, &big, false);
        // Only found large once formatted: split off.
        format_in(&mut queue, 0, 512, "a2\n", false);
        let mut queue2 = OutputQueue::<()>::new(1);
        format_in(&mut queue2, 0, 512, "a1\n", false);
        format_in(&mut queue2, 0, 512, &big, false);
        for queue in [&mut queue, &mut queue2] {
            let outputs = drain(queue);
            assert_eq!(outputs[0], write(0, false, "a1\n"));
            assert_eq!(outputs[1], write(0, false, &big));
        }
    }
}
