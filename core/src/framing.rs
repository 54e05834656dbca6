//! Newline framing with a hard bound on line length.
//!
//! MCP's stdio transport carries one JSON-RPC message per line. Peers may hand
//! us bytes in any chunking, so the framer keeps the unfinished tail of a line
//! between calls. A peer must not be able to grow that tail without limit:
//! once a line passes `max_line_bytes` the framer stops buffering it, keeps
//! only a short prefix (enough to read the request id out of it) and
//! discards the rest up to the next newline.

/// How many leading bytes of an over-long line are kept so that the gateway
/// can still answer the request it started (the id is usually near the front).
pub(crate) const OVERLONG_PREFIX_BYTES: usize = 4096;

/// One complete frame taken out of the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(&'a [u8]),
    /// A line that exceeded the bound. Only its first bytes are kept.
    Overlong {
        /// The first bytes of the line (at most [`OVERLONG_PREFIX_BYTES`]).
        prefix: &'a [u8],
        /// The full length the line had, including the discarded part.
        total_len: u64,
    },
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
    /// Scratch space holding the last frame handed out.
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
        if let Some(total_len) = self.discarding.take() {
            self.frame.clear();
            self.frame.append(&mut self.partial);
            return Some(Frame::Overlong {
                prefix: &self.frame,
                total_len,
            });
        }
        if self.partial.is_empty() {
            return None;
        }
        self.frame.clear();
        std::mem::swap(&mut self.frame, &mut self.partial);
        trim_cr(&mut self.frame);
        if self.frame.is_empty() {
            return None; // a last line of just "\r" is blank, like any other
        }
        Some(Frame::Line(&self.frame))
    }

    /// Starts framing a new chunk with [`next_frame_in`](Self::next_frame_in).
    pub(crate) fn begin(&mut self) {
        self.pos = 0;
    }

    /// Returns the next complete frame of `input` (the chunk given since
    /// [`begin`](Self::begin); call with the same chunk until it returns
    /// `None`), or `None` when more bytes are needed.
    pub(crate) fn next_frame_in<'a>(&'a mut self, input: &'a [u8]) -> Option<Frame<'a>> {
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
                    self.frame.clear();
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
                        self.frame.clear();
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
                        return Some(Frame::Line(&input[start..end]));
                    }
                    self.partial.extend_from_slice(&input[start..start + pos]);
                    self.frame.clear();
                    std::mem::swap(&mut self.frame, &mut self.partial);
                    trim_cr(&mut self.frame);
                    if self.frame.is_empty() {
                        continue;
                    }
                    return Some(Frame::Line(&self.frame));
                }
                (None, None) => {
                    let line_len = self.partial.len() + unframed.len();
                    if line_len > self.max_line_bytes {
                        let keep = OVERLONG_PREFIX_BYTES.saturating_sub(self.partial.len());
                        let take = keep.min(unframed.len());
                        self.partial.extend_from_slice(&unframed[..take]);
                        self.partial.truncate(OVERLONG_PREFIX_BYTES);
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
                Frame::Line(l) => Owned::Line(l.to_vec()),
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
                Frame::Line(l) => Owned::Line(l.to_vec()),
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
        assert_eq!(framer.next_frame_in(tail), Some(Frame::Line(b"ok")));
    }
}
