//! Newline framing with a hard bound on line length.
//!
//! MCP's stdio transport carries one JSON-RPC message per line. Peers may hand
//! us bytes in any chunking, so the framer keeps the unfinished tail of a line
//! between calls. A peer must not be able to grow that tail without limit:
//! once a line passes `max_line_bytes` the framer stops buffering it, keeps
//! only a short prefix (enough to read the request id out of it) and
//! discards the rest up to the next newline.
//!
//! Large messages are where memory goes, so the framer copies them as
//! little as it can: a line that had to be gathered from several chunks is
//! handed on as the buffer it was gathered in (see [`Line::into_forwarded`]),
//! and buffers a large line made large are let go once it is handled.

/// How many leading bytes of an over-long line are kept so that the gateway
/// can still answer the request it started (the id is usually near the front).
pub(crate) const OVERLONG_PREFIX_BYTES: usize = 4096;

/// Buffers up to this capacity are kept for the next lines; larger ones
/// (grown by a large message) are let go once their line is handled, or
/// given away with it, so a gateway that once saw a 10 MiB message does
/// not hold 10 MiB per direction for the rest of its life. The std runtime
/// reads 64 KiB at a time, so ordinary messages split over two reads stay
/// within it.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

/// One complete frame taken out of the byte stream.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(Line<'a>),
    /// A line that exceeded the bound. Only its first bytes are kept.
    Overlong {
        /// The first bytes of the line (at most [`OVERLONG_PREFIX_BYTES`]).
        prefix: &'a [u8],
        /// The full length the line had, including the discarded part.
        total_len: u64,
    },
}

/// A complete line: read it with [`bytes`](Self::bytes), and pass it on with
/// [`into_forwarded`](Self::into_forwarded).
#[derive(Debug)]
pub(crate) struct Line<'a>(LineBytes<'a>);

#[derive(Debug)]
enum LineBytes<'a> {
    /// The line lies whole in the chunk being framed.
    InChunk(&'a [u8]),
    /// The line was gathered from several chunks into the framer's buffer,
    /// which has room for one more byte (the newline put back when it is
    /// forwarded).
    Gathered(&'a mut Vec<u8>),
}

impl Line<'_> {
    /// The line, without its `\n` (and without a trailing `\r`).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.0 {
            LineBytes::InChunk(line) => line,
            LineBytes::Gathered(buffer) => buffer,
        }
    }

    /// The line followed by `\n`, as the bytes to write to the other peer.
    /// A large line gathered from several chunks is handed over in the
    /// buffer it was gathered in, not copied (a 10 MiB message would
    /// otherwise be held twice); any other line is copied out, which leaves
    /// a small buffer with the framer for the next line.
    pub(crate) fn into_forwarded(self) -> Vec<u8> {
        match self.0 {
            LineBytes::Gathered(buffer) if buffer.capacity() > RETAINED_BUFFER_BYTES => {
                let mut line = std::mem::take(buffer);
                line.push(b'\n'); // within capacity: room was left for it
                line
            }
            LineBytes::Gathered(buffer) => with_newline(buffer),
            LineBytes::InChunk(line) => with_newline(line),
        }
    }
}

/// `line` followed by `\n`, in a buffer of exactly that size.
fn with_newline(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 1);
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// Splits a byte stream into lines, enforcing the line-length bound.
///
/// Usage: for each chunk read from the peer, call [`LineFramer::begin`],
/// then [`LineFramer::next_frame_in`] with that chunk until it returns
/// `None`. A line that lies whole in the chunk is borrowed from it; only the
/// unfinished tail of a line is kept between chunks. At end of stream,
/// [`LineFramer::finish`] hands out an unterminated last line.
#[derive(Debug)]
pub(crate) struct LineFramer {
    max_line_bytes: usize,
    /// Bytes of the current, unfinished line.
    partial: Vec<u8>,
    /// Set while discarding the remainder of an over-long line.
    discarding: Option<u64>,
    /// Scratch space holding the last frame handed out (empty if it was
    /// given away).
    frame: Vec<u8>,
    /// Start of the unframed part of the current chunk.
    pos: usize,
}

impl Default for LineFramer {
    /// An empty placeholder (it allocates nothing).
    fn default() -> Self {
        LineFramer::new(1)
    }
}

impl LineFramer {
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes: max_line_bytes.max(1),
            partial: Vec::new(),
            discarding: None,
            frame: Vec::new(),
            pos: 0,
        }
    }

    /// Takes the unfinished last line at end of stream, if any. A peer that
    /// closes its output without a final newline still had its message read:
    /// MCP peers normally end every line, but a lost newline must not lose a
    /// request.
    pub(crate) fn finish(&mut self) -> Option<Frame<'_>> {
        self.recycle();
        if let Some(total_len) = self.discarding.take() {
            self.frame.append(&mut self.partial);
            return Some(Frame::Overlong {
                prefix: &self.frame,
                total_len,
            });
        }
        if self.partial.is_empty() {
            return None;
        }
        self.partial.reserve(1); // room for the newline when forwarded
        std::mem::swap(&mut self.frame, &mut self.partial);
        trim_cr(&mut self.frame);
        if self.frame.is_empty() {
            return None; // a last line of just "\r" is blank, like any other
        }
        Some(Frame::Line(Line(LineBytes::Gathered(&mut self.frame))))
    }

    /// Starts framing a new chunk with [`next_frame_in`](Self::next_frame_in).
    pub(crate) fn begin(&mut self) {
        self.pos = 0;
    }

    /// Returns the next complete frame of `input` (the chunk given since
    /// [`begin`](Self::begin); call with the same chunk until it returns
    /// `None`), or `None` when more bytes are needed.
    pub(crate) fn next_frame_in<'a>(&'a mut self, input: &'a [u8]) -> Option<Frame<'a>> {
        self.recycle();
        loop {
            let unframed = &input[self.pos..];
            if unframed.is_empty() {
                return None;
            }
            let newline = memchr_newline(unframed);
            match (self.discarding, newline) {
                (Some(seen), Some(pos)) => {
                    let start = self.pos;
                    self.keep_prefix_of(input, start, pos);
                    self.pos += pos + 1;
                    self.discarding = None;
                    self.frame.append(&mut self.partial);
                    return Some(Frame::Overlong {
                        prefix: &self.frame,
                        total_len: seen + pos as u64,
                    });
                }
                (Some(seen), None) => {
                    let len = unframed.len();
                    self.keep_prefix_of(input, self.pos, len);
                    self.discarding = Some(seen + len as u64);
                    self.pos = input.len();
                    return None;
                }
                (None, Some(pos)) => {
                    let start = self.pos;
                    self.pos += pos + 1;
                    let line_len = self.partial.len() + pos;
                    if line_len > self.max_line_bytes {
                        let keep = OVERLONG_PREFIX_BYTES.saturating_sub(self.partial.len());
                        let take = keep.min(pos);
                        self.partial.extend_from_slice(&input[start..start + take]);
                        self.frame.append(&mut self.partial);
                        return Some(Frame::Overlong {
                            prefix: &self.frame,
                            total_len: line_len as u64,
                        });
                    }
                    if self.partial.is_empty() {
                        let mut end = start + pos;
                        if end > start && input[end - 1] == b'\r' {
                            end -= 1;
                        }
                        if end == start {
                            continue; // blank line: ignored
                        }
                        return Some(Frame::Line(Line(LineBytes::InChunk(&input[start..end]))));
                    }
                    // One byte more: room for the newline when forwarded.
                    self.partial.reserve(pos + 1);
                    self.partial.extend_from_slice(&input[start..start + pos]);
                    std::mem::swap(&mut self.frame, &mut self.partial);
                    trim_cr(&mut self.frame);
                    if self.frame.is_empty() {
                        continue;
                    }
                    return Some(Frame::Line(Line(LineBytes::Gathered(&mut self.frame))));
                }
                (None, None) => {
                    let line_len = self.partial.len() + unframed.len();
                    if line_len > self.max_line_bytes {
                        let keep = OVERLONG_PREFIX_BYTES.saturating_sub(self.partial.len());
                        let take = keep.min(unframed.len());
                        self.partial.extend_from_slice(&unframed[..take]);
                        self.partial.truncate(OVERLONG_PREFIX_BYTES);
                        if self.partial.capacity() > RETAINED_BUFFER_BYTES {
                            // It grew close to the bound before the line
                            // passed it; only the prefix is kept now.
                            self.partial.shrink_to(OVERLONG_PREFIX_BYTES);
                        }
                        self.discarding = Some(line_len as u64);
                    } else {
                        self.partial.extend_from_slice(unframed);
                    }
                    self.pos = input.len();
                    return None;
                }
            }
        }
    }

    /// Empties the scratch space of the last frame, which has been handled
    /// by now, and lets go of buffers a large line made large (an
    /// unfinished line keeps its buffer, of course).
    fn recycle(&mut self) {
        self.frame.clear();
        if self.frame.capacity() > RETAINED_BUFFER_BYTES {
            self.frame = Vec::new();
        }
        if self.partial.is_empty() && self.partial.capacity() > RETAINED_BUFFER_BYTES {
            self.partial = Vec::new();
        }
    }

    /// Adds `input[start..start + len]` to the kept prefix of an over-long
    /// line, up to [`OVERLONG_PREFIX_BYTES`].
    fn keep_prefix_of(&mut self, input: &[u8], start: usize, len: usize) {
        let room = OVERLONG_PREFIX_BYTES.saturating_sub(self.partial.len());
        let take = room.min(len);
        self.partial.extend_from_slice(&input[start..start + take]);
    }
}

fn trim_cr(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Line(Vec<u8>),
        Overlong(Vec<u8>, u64),
    }

    fn drain(framer: &mut LineFramer, chunk: &[u8], out: &mut Vec<Owned>) {
        framer.begin();
        while let Some(frame) = framer.next_frame_in(chunk) {
            out.push(match frame {
                Frame::Line(l) => Owned::Line(l.bytes().to_vec()),
                Frame::Overlong { prefix, total_len } => {
                    Owned::Overlong(prefix.to_vec(), total_len)
                }
            });
        }
    }

    fn frames_in_chunks(input: &[u8], chunk: usize, max: usize) -> Vec<Owned> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            drain(&mut framer, piece, &mut out);
        }
        if let Some(frame) = framer.finish() {
            out.push(match frame {
                Frame::Line(l) => Owned::Line(l.bytes().to_vec()),
                Frame::Overlong { prefix, total_len } => {
                    Owned::Overlong(prefix.to_vec(), total_len)
                }
            });
        }
        out
    }

    #[test]
    fn splits_lines_and_ignores_blank_ones_and_trailing_cr() {
        let got = frames_in_chunks(b"a\r\n\n\r\nbc\nd\n\r", 100, 100);
        assert_eq!(
            got,
            vec![
                Owned::Line(b"a".to_vec()),
                Owned::Line(b"bc".to_vec()),
                Owned::Line(b"d".to_vec())
            ]
        );
    }

    #[test]
    fn every_chunking_gives_the_same_frames() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"id\":1}\r\n\n");
        input.extend_from_slice(&[b'x'; 300]);
        input.extend_from_slice(b"\nshort\n");
        input.extend_from_slice(&[b'y'; 5000]);
        input.extend_from_slice(b"\n\xff\xfe\nlast");
        let whole = frames_in_chunks(&input, input.len(), 200);
        assert_eq!(whole.len(), 6, "{whole:?}");
        assert_eq!(whole[1], Owned::Overlong(vec![b'x'; 300], 300));
        assert_eq!(
            whole[3],
            Owned::Overlong(vec![b'y'; OVERLONG_PREFIX_BYTES], 5000)
        );
        for chunk in 1..=input.len() {
            let got = frames_in_chunks(&input, chunk, 200);
            assert!(got == whole, "chunk size {chunk} gives different frames");
        }
    }

    /// What the gateway writes for each line of `input` fed in `chunk`-byte
    /// pieces, and the framer's buffer capacities after each chunk.
    fn forwarded_in_chunks(input: &[u8], chunk: usize) -> (Vec<u8>, Vec<usize>) {
        let mut framer = LineFramer::new(1 << 20);
        let mut out = Vec::new();
        let mut held = Vec::new();
        for piece in input.chunks(chunk) {
            framer.begin();
            while let Some(frame) = framer.next_frame_in(piece) {
                if let Frame::Line(line) = frame {
                    out.extend(line.into_forwarded());
                }
            }
            held.push(framer.partial.capacity() + framer.frame.capacity());
        }
        if let Some(Frame::Line(line)) = framer.finish() {
            out.extend(line.into_forwarded());
        }
        (out, held)
    }

    #[test]
    fn forwarded_lines_are_the_same_however_they_were_gathered() {
        let mut input = b"{\"id\":1}\r\n\n".to_vec();
        input.extend_from_slice(&[b'x'; 200_000]);
        input.extend_from_slice(b"\r\nshort\n");
        input.extend_from_slice(&[b'y'; 100_000]);
        input.extend_from_slice(b"\nlast\r");
        let mut expected = b"{\"id\":1}\n".to_vec();
        expected.extend_from_slice(&[b'x'; 200_000]);
        expected.extend_from_slice(b"\nshort\n");
        expected.extend_from_slice(&[b'y'; 100_000]);
        expected.extend_from_slice(b"\nlast\n");
        for chunk in [1, 7, 4096, 65_536, 99_999, input.len()] {
            let (out, _) = forwarded_in_chunks(&input, chunk);
            assert!(
                out == expected,
                "chunk size {chunk} forwards different bytes"
            );
        }
    }

    #[test]
    fn a_large_line_leaves_no_large_buffer_behind() {
        let mut input = vec![b'z'; 1_000_000];
        input.extend_from_slice(b"\nsmall\n");
        let (_, held) = forwarded_in_chunks(&input, 65_536);
        assert!(held[held.len() / 2] > 400_000, "it was gathered: {held:?}");
        let after = *held.last().expect("chunks");
        assert!(after <= RETAINED_BUFFER_BYTES, "{after} bytes kept");
        // Also when the line is not passed on (a blocked or invalid message).
        let mut framer = LineFramer::new(1 << 20);
        let mut out = Vec::new();
        for piece in input.chunks(65_536) {
            drain(&mut framer, piece, &mut out);
        }
        assert_eq!(out.len(), 2);
        let kept = framer.partial.capacity() + framer.frame.capacity();
        assert!(kept <= RETAINED_BUFFER_BYTES, "{kept} bytes kept");
    }

    #[test]
    fn line_exactly_at_the_bound_is_kept() {
        let mut input = vec![b'z'; 64];
        input.push(b'\n');
        assert_eq!(
            frames_in_chunks(&input, 7, 64),
            vec![Owned::Line(vec![b'z'; 64])]
        );
        input.insert(0, b'z');
        assert_eq!(
            frames_in_chunks(&input, 7, 64),
            vec![Owned::Overlong(vec![b'z'; 65], 65)]
        );
    }

    #[test]
    fn discarding_never_buffers_the_whole_line() {
        let mut framer = LineFramer::new(10);
        let chunk = [b'q'; 1000];
        for _ in 0..1000 {
            framer.begin();
            assert!(framer.next_frame_in(&chunk).is_none());
            assert!(framer.partial.len() <= OVERLONG_PREFIX_BYTES);
        }
        let tail = b"\nok\n";
        framer.begin();
        assert!(matches!(
            framer.next_frame_in(tail),
            Some(Frame::Overlong {
                total_len: 1_000_000,
                ..
            })
        ));
        match framer.next_frame_in(tail) {
            Some(Frame::Line(line)) => assert_eq!(line.bytes(), b"ok"),
            other => panic!("expected the line after it, got {other:?}"),
        }
    }
}
