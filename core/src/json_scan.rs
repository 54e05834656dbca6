//! One validating pass over a message line: JSON syntax, repeated keys and
//! case-variant keys, and the byte spans of the envelope's members.
//!
//! This is the hot path of every message. It decides only the usual case —
//! a well-formed object whose keys are plain — and answers "unsure" for
//! anything else; the caller then runs the full serde-based check in
//! `strict_json`, which produces the exact error. So this scanner must never
//! accept a line the full path would refuse; refusing one it would accept
//! only costs time.
//!
//! What it accepts is exactly what the gateway's previous fast path (a serde
//! parse of the envelope plus a key scan) accepted: JSON syntax as serde_json
//! checks it when it skips a value (`\u` escapes need four hex digits, no
//! control characters in strings, no lone-surrogate or number-range checks),
//! no key repeated in any object, and near the envelope (the message and the
//! objects directly in it) no two keys equal but for ASCII case. Keys with
//! escapes, non-ASCII keys near the envelope, envelope objects with many
//! keys and nesting deeper than [`SCAN_DEPTH`] are left to the full check.
//!
//! Strings, most of a message's bytes, are skipped a word (eight bytes) at a
//! time, then sixteen bytes at a time in a loop the compiler vectorises; a
//! long string switches to `memchr` for its quotes and backslashes and a
//! vectorisable minimum for its control bytes, so a 10 MiB argument costs
//! little more than reading it (about 0.9 instructions a byte, most of it
//! the UTF-8 check the caller makes first).
//!
//! The same pass notes where the tools of a `tools/list` result are
//! ([`ToolsIndex`]), so that the filter can rebuild such an answer from
//! spans.

use std::collections::BTreeSet;

/// Nesting beyond this is left to the full check (serde_json stops at 128).
pub(crate) const SCAN_DEPTH: usize = 100;

/// Objects this deep (1 = the message) also refuse keys that differ only in
/// ASCII case: the envelope and `params`/`result`, where the gateway reads
/// the members it decides on. Matches `strict_json::CASE_CHECK_DEPTH + 1`.
const CASE_CHECK_DEPTH: usize = 2;

/// The deepest level [`ToolsWatch`] and the envelope spans look at (the
/// name of a tool in `result.tools`): deeper values skip that bookkeeping.
const WATCH_DEPTH: usize = 4;

/// Objects with more keys than this switch from a linear scan to a set.
const LINEAR_SCAN_KEYS: usize = 16;

/// The envelope members the gateway reads, as the exact text of each value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnvelopeSpans<'a> {
    pub jsonrpc: Option<&'a str>,
    pub id: Option<&'a str>,
    pub method: Option<&'a str>,
    pub params: Option<&'a str>,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> EnvelopeSpans<'a> {
    /// Records the text of `member`'s value.
    #[inline(always)]
    fn set(&mut self, member: Member, value: &'a str) {
        let slot = match member {
            Member::Jsonrpc => &mut self.jsonrpc,
            Member::Id => &mut self.id,
            Member::Method => &mut self.method,
            Member::Params => &mut self.params,
            Member::Result => &mut self.result,
            Member::Error => &mut self.error,
            Member::Other => return,
        };
        *slot = Some(value);
    }
}

/// Which envelope member a key of the message names: worked out once per
/// key, where comparing the key again at the start and the end of its
/// value cost a string comparison each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Other,
}

impl Member {
    #[inline(always)]
    fn of(key: Key<'_>) -> Member {
        // Every member name is shorter than eight bytes: its first word
        // decides (see `Key::is`).
        if key.text.len() >= 8 {
            return Member::Other;
        }
        const fn word(name: &[u8]) -> u64 {
            KeyWords::of(name).first
        }
        const JSONRPC: u64 = word(b"jsonrpc");
        const ID: u64 = word(b"id");
        const METHOD: u64 = word(b"method");
        const PARAMS: u64 = word(b"params");
        const RESULT: u64 = word(b"result");
        const ERROR: u64 = word(b"error");
        match key.words.first {
            JSONRPC => Member::Jsonrpc,
            ID => Member::Id,
            METHOD => Member::Method,
            PARAMS => Member::Params,
            RESULT => Member::Result,
            ERROR => Member::Error,
            _ => Member::Other,
        }
    }
}

/// What one scan found in a message it accepted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Scanned<'a> {
    /// The envelope members the gateway reads.
    pub envelope: EnvelopeSpans<'a>,
    /// Where the tools of `result.tools` are, should the message answer a
    /// `tools/list`.
    pub tools: ToolsIndex,
    /// The members of `params` a `tools/call` is judged by, when `params`
    /// is an object.
    pub call: Option<CallMembers<'a>>,
}

/// The `name` and `arguments` members of a `params` object, as the exact
/// text of their values (`None`: no such member). Keys are matched exactly,
/// as serde matches a struct's fields; a repeated key or a case variant
/// near the envelope makes the scan leave the message to the full check,
/// so a member found here is the only one of its name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallMembers<'a> {
    pub name: Option<&'a str>,
    pub arguments: Option<&'a str>,
}

/// The tools of a `tools/list` result, located during the scan so that the
/// filter can rebuild the line from spans without reading it again.
///
/// It follows the filter's rules: `result` (exactly) must be an object,
/// its member named `tools` in any ASCII case (the only case-insensitive
/// match for that name, since the envelope's keys are ASCII here) must be
/// an array, and a tool's name is the value of its one member named
/// `name` in any case, if that member is spelled exactly `name`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ToolsIndex {
    /// Where the `result` object starts, if it is one.
    pub result_start: Option<usize>,
    /// Where the tools array starts and ends (exclusive), if there is one.
    pub array: Option<(usize, usize)>,
    /// Each element of the array, in order.
    pub tools: Vec<ToolSpan>,
}

/// One element of the tools array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ToolSpan {
    /// Where the element's text starts and ends (exclusive).
    pub start: usize,
    pub end: usize,
    /// Where the value of its name member starts, if the element is an
    /// object with exactly one member named `name` in any case, spelled
    /// `name`. The value may still be something other than a string.
    pub name: Option<usize>,
}

/// The scan's bookkeeping for [`ToolsIndex`] and [`CallMembers`]: a few
/// comparisons per key and per value, on depths 1 to 4 only.
#[derive(Default)]
struct ToolsWatch {
    index: ToolsIndex,
    /// Inside the `params` object.
    in_params: bool,
    /// The next value in `params` is that of `name` (1) or `arguments` (2).
    call_next: u8,
    /// Where that value starts.
    call_start: usize,
    /// The spans of `name` and `arguments`, once read.
    call_name: Option<(usize, usize)>,
    call_arguments: Option<(usize, usize)>,
    /// Inside the `result` object.
    in_result: bool,
    /// The next value in `result` is the `tools` member's.
    tools_next: bool,
    /// Inside the tools array.
    in_tools: bool,
    /// The element being read: where it started, how many members it has
    /// named `name` in any case, whether the first is spelled `name`, and
    /// where that one's value starts.
    start: usize,
    names: u32,
    exact: bool,
    name_next: bool,
    name_at: Option<usize>,
}

impl ToolsWatch {
    /// A value starts at `i` at `depth` with `byte`; `member`: the
    /// envelope member it is in.
    #[inline(always)]
    fn value(&mut self, depth: usize, i: usize, byte: u8, member: Member) {
        match depth {
            1 if byte == b'{' && member == Member::Result => {
                self.in_result = true;
                self.index.result_start = Some(i);
            }
            1 if byte == b'{' && member == Member::Params => self.in_params = true,
            2 if self.call_next != 0 => self.call_start = i,
            2 if self.tools_next => {
                self.tools_next = false;
                if byte == b'[' {
                    self.in_tools = true;
                    self.index.array = Some((i, i));
                }
            }
            3 if self.in_tools => {
                self.start = i;
                self.names = 0;
                self.exact = false;
                self.name_next = false;
                self.name_at = None;
            }
            4 if self.name_next => {
                self.name_next = false;
                self.name_at = Some(i);
            }
            _ => {}
        }
    }

    /// A key was read in the object at `depth`.
    #[inline(always)]
    fn key(&mut self, depth: usize, key: Key<'_>) {
        match depth {
            2 if self.in_params => {
                self.call_next = if key.is(b"name") {
                    1
                } else if key.text == b"arguments" {
                    2
                } else {
                    0
                }
            }
            2 if self.in_result && key.is_ignoring_case(b"tools") => self.tools_next = true,
            // Deeper keys have no words (see `Key`).
            4 if self.in_tools && key.text.eq_ignore_ascii_case(b"name") => {
                self.names += 1;
                if self.names == 1 {
                    self.exact = key.text == b"name";
                    self.name_next = true;
                }
            }
            _ => {}
        }
    }

    /// A value ended at `i` (exclusive) at `depth`.
    #[inline(always)]
    fn value_end(&mut self, depth: usize, i: usize) {
        if depth == 2 && self.call_next != 0 {
            let span = Some((self.call_start, i));
            match self.call_next {
                1 => self.call_name = span,
                _ => self.call_arguments = span,
            }
            self.call_next = 0;
        }
        if depth == 3 && self.in_tools {
            let name = if self.names == 1 && self.exact {
                self.name_at
            } else {
                None
            };
            self.index.tools.push(ToolSpan {
                start: self.start,
                end: i,
                name,
            });
        }
    }

    /// A container closed at `i` (exclusive), leaving `depth` open.
    #[inline(always)]
    fn close(&mut self, depth: usize, i: usize) {
        match depth {
            1 => {
                self.in_result = false;
                self.in_params = false;
            }
            2 if self.in_tools => {
                self.in_tools = false;
                if let Some((start, _)) = self.index.array {
                    self.index.array = Some((start, i));
                }
            }
            _ => {}
        }
    }
}

/// Validates `text` as one JSON object with unique keys (see the module
/// docs) and returns what the gateway reads from it, or `None` when the
/// full check must decide.
pub(crate) fn scan_message(text: &str) -> Option<Scanned<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    // Keys are noted by their place as a `u32`.
    if b.get(i) != Some(&b'{') || u32::try_from(b.len()).is_err() {
        return None;
    }
    let mut inline_keys = [SeenKey::default(); INLINE_KEYS];
    let mut keys = Keys::new(&mut inline_keys);
    let mut spans = EnvelopeSpans::default();
    let mut watch = ToolsWatch::default();
    // `object[d]`: the container at depth d + 1 is an object.
    let mut object = [false; SCAN_DEPTH];
    let mut depth = 0usize;
    let mut in_object = false;
    // The envelope member whose value is being read, and where the value
    // started.
    let mut member = Member::Other;
    let mut member_start = 0;
    // Whether a key comes before the next value: read in one place, where
    // the key check is written out once.
    let mut key_next = false;
    'value: loop {
        if key_next {
            let key;
            (i, key) = keys.key(b, skip_ws(b, i), depth)?;
            if depth <= WATCH_DEPTH {
                watch.key(depth, key);
                if depth == 1 {
                    member = Member::of(key);
                }
            }
        }
        // A value starts at `i` (after whitespace).
        i = skip_ws(b, i);
        let byte = *b.get(i)?;
        if depth <= WATCH_DEPTH {
            if depth == 1 {
                member_start = i;
            }
            watch.value(depth, i, byte, member);
        }
        match byte {
            open @ (b'{' | b'[') => {
                if depth >= SCAN_DEPTH {
                    return None;
                }
                in_object = open == b'{';
                object[depth] = in_object;
                depth += 1;
                i = skip_ws(b, i + 1);
                let close = if in_object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    // Empty: closed at once, and no keys to forget.
                    depth -= 1;
                    in_object = depth > 0 && object[depth - 1];
                    i += 1;
                    watch.close(depth, i);
                } else {
                    if in_object {
                        keys.open(depth);
                    }
                    key_next = in_object;
                    continue 'value;
                }
            }
            b'"' => i = string_end(b, i + 1)?.0 + 1,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => return None,
        }
        // After a value: record an envelope member, then a comma or the
        // end of one or more containers.
        loop {
            if depth <= WATCH_DEPTH {
                if depth == 1 {
                    spans.set(member, &text[member_start..i]);
                }
                watch.value_end(depth, i);
                if depth == 0 {
                    i = skip_ws(b, i);
                    let call = spans.params.filter(|p| p.starts_with('{')).map(|_| {
                        let span = |s: Option<(usize, usize)>| s.map(|(a, z)| &text[a..z]);
                        CallMembers {
                            name: span(watch.call_name),
                            arguments: span(watch.call_arguments),
                        }
                    });
                    return (i == b.len()).then_some(Scanned {
                        envelope: spans,
                        tools: watch.index,
                        call,
                    });
                }
            }
            i = skip_ws(b, i);
            match *b.get(i)? {
                b',' => {
                    i += 1;
                    key_next = in_object;
                    continue 'value;
                }
                b'}' if in_object => keys.close(depth),
                b']' if !in_object => {}
                _ => return None,
            }
            depth -= 1;
            in_object = depth > 0 && object[depth - 1];
            i += 1;
            if depth <= WATCH_DEPTH {
                watch.close(depth, i);
            }
        }
    }
}

/// The keys of the open objects, for finding repeats.
struct Keys<'a, 's> {
    /// Keys of all open objects, outermost first.
    seen: KeyStack<'s>,
    /// Where the keys of the object at depth d + 1 begin in `seen`, for
    /// the first [`INLINE_DEPTH`] levels: kept small so that setting it up
    /// for every message costs little.
    start: [u32; INLINE_DEPTH],
    /// The same for deeper levels (`deep_start[0]` for depth
    /// `INLINE_DEPTH + 1`), grown when one is first reached.
    deep_start: Vec<u32>,
    /// Objects with many keys, innermost last, with their depth.
    sets: Vec<(usize, BTreeSet<&'a [u8]>)>,
    /// The depth of the innermost set (`usize::MAX` for none): checked for
    /// every key, so kept apart.
    set_depth: usize,
}

/// Levels of [`Keys::start`] kept in place.
const INLINE_DEPTH: usize = 16;

/// A key of an open object: small, and all zeros when empty, so that the
/// in-place stack of them is cheap to set up for every message.
#[derive(Clone, Copy, Default)]
struct SeenKey {
    /// A summary of the key that differs for most different keys: one
    /// comparison clears most pairs before the texts are compared. Near
    /// the envelope it is [`KeyWords::folded`], which is also equal for
    /// keys equal but for ASCII case; deeper, the length and last byte.
    tag: u64,
    /// Where its text is in the message (which is shorter than 4 GiB).
    at: u32,
    len: u32,
}

impl SeenKey {
    #[inline(always)]
    fn text(self, b: &[u8]) -> &[u8] {
        &b[self.at as usize..][..self.len as usize]
    }
}

/// A key just read: its text, and, near the envelope, its [`KeyWords`].
#[derive(Clone, Copy)]
struct Key<'a> {
    text: &'a [u8],
    words: KeyWords,
}

impl Key<'_> {
    /// Whether the key is exactly `name`, which is shorter than eight
    /// bytes: the key's first word (zero-padded) says it, since no key
    /// holds a zero byte. Only for keys with words.
    #[inline(always)]
    fn is(self, name: &[u8]) -> bool {
        self.words.first == KeyWords::of(name).first && self.text.len() == name.len()
    }

    /// [`Key::is`], ignoring ASCII case; `name` must be ASCII letters
    /// only, whose case folding is setting bit 5.
    #[inline(always)]
    fn is_ignoring_case(self, name: &[u8]) -> bool {
        let fold = ONES * 0x20;
        self.text.len() == name.len() && self.words.first | fold == KeyWords::of(name).first | fold
    }
}

impl<'a, 's> Keys<'a, 's> {
    fn new(inline: &'s mut [SeenKey; INLINE_KEYS]) -> Self {
        Keys {
            seen: KeyStack {
                inline,
                inline_len: 0,
                heap: Vec::new(),
            },
            start: [0; INLINE_DEPTH],
            deep_start: Vec::new(),
            sets: Vec::new(),
            set_depth: usize::MAX,
        }
    }

    /// Where the keys of the object at `depth` begin.
    #[inline(always)]
    fn start(&self, depth: usize) -> usize {
        match self.start.get(depth - 1) {
            Some(&start) => start as usize,
            None => self.deep_start[depth - 1 - INLINE_DEPTH] as usize,
        }
    }

    /// An object opens at `depth` (1 = the message).
    #[inline(always)]
    fn open(&mut self, depth: usize) {
        // Fewer than 4 Gi keys, as the message is shorter than 4 GiB.
        let len = self.seen.len() as u32;
        match self.start.get_mut(depth - 1) {
            Some(start) => *start = len,
            None => self.open_deep(depth, len),
        }
    }

    #[cold]
    fn open_deep(&mut self, depth: usize, len: u32) {
        let at = depth - 1 - INLINE_DEPTH;
        if self.deep_start.len() <= at {
            self.deep_start.resize(at + 1, 0);
        }
        self.deep_start[at] = len;
    }

    /// The object at `depth` closes.
    #[inline(always)]
    fn close(&mut self, depth: usize) {
        self.seen.truncate(self.start(depth));
        if self.set_depth == depth {
            self.sets.pop();
            self.set_depth = self.sets.last().map_or(usize::MAX, |(d, _)| *d);
        }
    }

    /// Reads the key at `i` (its opening quote) of the object at `depth`,
    /// and the colon after it; returns where its value starts, and the key.
    /// `None` for a key to leave to the full check.
    #[inline(always)]
    fn key(&mut self, b: &'a [u8], i: usize, depth: usize) -> Option<(usize, Key<'a>)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (end, key) = if depth <= CASE_CHECK_DEPTH {
            // Near the envelope: keys are also compared ignoring case, and
            // read by the watch; their words serve both.
            let (end, words) = key_end(b, i + 1)?;
            let text = &b[i + 1..end];
            if !words.is_ascii(text) {
                return None;
            }
            let tag = words.folded(text.len());
            self.add(b, i + 1, text, tag, depth, true)?;
            (end, Key { text, words })
        } else {
            let (end, escaped) = string_end(b, i + 1)?;
            if escaped {
                return None;
            }
            let text = &b[i + 1..end];
            // Different keys of one length usually differ in their last
            // byte too.
            let tag = (text.len() as u64) << 8 | u64::from(text.last().copied().unwrap_or(0));
            self.add(b, i + 1, text, tag, depth, false)?;
            let words = KeyWords { first: 0, last: 0 };
            (end, Key { text, words })
        };
        if b.get(end + 1) == Some(&b':') {
            return Some((end + 2, key));
        }
        let colon = skip_ws(b, end + 1);
        (b.get(colon) == Some(&b':')).then_some((colon + 1, key))
    }

    /// Notes the key `text` at `at` with `tag`, unless its object has it
    /// already (or has it but for ASCII case if `any_case`).
    #[inline(always)]
    fn add(
        &mut self,
        b: &'a [u8],
        at: usize,
        text: &'a [u8],
        tag: u64,
        depth: usize,
        any_case: bool,
    ) -> Option<()> {
        if self.set_depth == depth {
            let (_, set) = self.sets.last_mut()?;
            return set.insert(text).then_some(());
        }
        let first = self.start(depth);
        let key = SeenKey {
            tag,
            // The message is shorter than 4 GiB.
            at: at as u32,
            len: text.len() as u32,
        };
        let earlier = self.seen.push_unique(b, first, key, text, any_case)?;
        if earlier >= LINEAR_SCAN_KEYS {
            if any_case {
                return None;
            }
            let set = self.seen.drain_from(b, first);
            self.sets.push((depth, set));
            self.set_depth = depth;
        }
        Some(())
    }
}

/// The first and last eight bytes of a key (zero-padded, and `last` zero,
/// for a key shorter than eight bytes): enough to tell most keys apart,
/// and to see whether a short key is ASCII, without reading it again.
#[derive(Clone, Copy)]
struct KeyWords {
    first: u64,
    last: u64,
}

impl KeyWords {
    /// The words of `key`, read from the key itself.
    #[inline(always)]
    const fn of(key: &[u8]) -> KeyWords {
        match (key.first_chunk::<8>(), key.last_chunk::<8>()) {
            (Some(first), Some(last)) => KeyWords {
                first: u64::from_le_bytes(*first),
                last: u64::from_le_bytes(*last),
            },
            _ => {
                let mut first = 0;
                let mut at = key.len();
                while at > 0 {
                    at -= 1;
                    first = first << 8 | key[at] as u64;
                }
                KeyWords { first, last: 0 }
            }
        }
    }

    /// Whether `key`, whose words these are, is ASCII.
    #[inline(always)]
    fn is_ascii(self, key: &[u8]) -> bool {
        if key.len() > 16 {
            return key.is_ascii();
        }
        (self.first | self.last) & HIGHS == 0
    }

    /// A summary of a key of `len` bytes with these words, equal for two
    /// keys equal but for ASCII case (setting bit 5 of every byte maps
    /// `A` and `a` alike), and unequal for most other pairs.
    #[inline(always)]
    fn folded(self, len: usize) -> u64 {
        let fold = ONES * 0x20;
        ((self.first | fold) ^ (self.last | fold).rotate_left(29)).wrapping_add(len as u64)
    }
}

/// For the key whose text starts at `i` (just after the opening quote):
/// the index of its closing quote and its [`KeyWords`]. `None` if the key
/// has an escape (left to the full check), is invalid or does not end.
#[inline(always)]
fn key_end(b: &[u8], i: usize) -> Option<(usize, KeyWords)> {
    // Most keys end within two words, read once for both the end and the
    // words.
    if let Some(first) = word_at(b, i) {
        let hits = special_bytes(first);
        if hits != 0 {
            let k = hits.trailing_zeros() / 8;
            if (first >> (8 * k)) as u8 != b'"' {
                return None;
            }
            let words = KeyWords {
                first: first & ((1 << (8 * k)) - 1),
                last: 0,
            };
            return Some((i + k as usize, words));
        }
        if let Some(second) = word_at(b, i + 8) {
            let hits = special_bytes(second);
            if hits != 0 {
                let k = hits.trailing_zeros() / 8;
                if (second >> (8 * k)) as u8 != b'"' {
                    return None;
                }
                let end = i + 8 + k as usize;
                let last = word_at(b, end - 8)?;
                return Some((end, KeyWords { first, last }));
            }
        }
    }
    key_end_slow(b, i)
}

#[inline(never)]
fn key_end_slow(b: &[u8], i: usize) -> Option<(usize, KeyWords)> {
    let (end, escaped) = string_end(b, i)?;
    (!escaped).then(|| (end, KeyWords::of(&b[i..end])))
}

/// The eight bytes at `i`, if there are eight.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*b.get(i..)?.first_chunk::<8>()?))
}

/// Keys held on the stack before [`KeyStack`] moves to the heap: more
/// than any usual message has open at once.
const INLINE_KEYS: usize = 16;

/// A stack of keys kept in place while it is short: every message is
/// scanned, and allocating a list for each was a measurable share of a
/// small message's cost.
struct KeyStack<'s> {
    /// The keys, while `heap` is empty.
    inline: &'s mut [SeenKey; INLINE_KEYS],
    inline_len: usize,
    /// All keys, once more than [`INLINE_KEYS`] were open at once (and
    /// until they are all closed).
    heap: Vec<SeenKey>,
}

impl KeyStack<'_> {
    #[inline(always)]
    fn all(&self) -> &[SeenKey] {
        if self.heap.is_empty() {
            &self.inline[..self.inline_len]
        } else {
            &self.heap
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        if self.heap.is_empty() {
            self.inline_len
        } else {
            self.heap.len()
        }
    }

    /// Pushes `key`, whose text is `text`, unless one from `first` on is
    /// the same (or the same but for ASCII case if `any_case`). Returns how many keys there were
    /// from `first` on.
    #[inline(always)]
    fn push_unique(
        &mut self,
        b: &[u8],
        first: usize,
        key: SeenKey,
        text: &[u8],
        any_case: bool,
    ) -> Option<usize> {
        let mine = self.all().get(first..)?;
        for k in mine {
            if k.tag == key.tag {
                let other = k.text(b);
                if other == text || any_case && other.eq_ignore_ascii_case(text) {
                    return None;
                }
            }
        }
        let earlier = mine.len();
        if !self.heap.is_empty() {
            self.heap.push(key);
        } else if let Some(slot) = self.inline.get_mut(self.inline_len) {
            *slot = key;
            self.inline_len += 1;
        } else {
            self.spill(key);
        }
        Some(earlier)
    }

    #[cold]
    fn spill(&mut self, key: SeenKey) {
        self.heap.reserve(4 * INLINE_KEYS);
        self.heap.extend_from_slice(&self.inline[..]);
        self.heap.push(key);
    }

    /// Keeps the first `len` keys.
    #[inline(always)]
    fn truncate(&mut self, len: usize) {
        if self.heap.is_empty() {
            self.inline_len = self.inline_len.min(len);
        } else {
            // Back in place once every key is closed (the heap keeps its
            // room for the next spill).
            self.heap.truncate(len);
            self.inline_len = 0;
        }
    }

    /// Removes the keys from `first` on, and returns them as a set.
    fn drain_from<'a>(&mut self, b: &'a [u8], first: usize) -> BTreeSet<&'a [u8]> {
        let set = self.all()[first..].iter().map(|k| k.text(b)).collect();
        self.truncate(first);
        set
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    // Whitespace is rare between tokens: one comparison settles most calls.
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The end of a literal (`true`, `false`, `null`) expected at `i`.
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..)?.starts_with(word).then_some(i + word.len())
}

/// The end of the number at `i`, in JSON's grammar (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`).
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => {
            i += 1;
            if b.get(i).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// Strings longer than this (without a quote or backslash) are scanned in
/// blocks with `memchr` instead of sixteen bytes at a time.
const SHORT_STRING: usize = 256;

/// Block size of the long-string scan: small enough to stay in cache for
/// the second look at its bytes.
const BLOCK: usize = 16 * 1024;

/// For the string whose contents start at `i` (just after the opening
/// quote): the index of the closing quote, and whether the string has an
/// escape. `None` if the string is invalid (a control byte, a bad escape)
/// or does not end.
#[inline(always)]
pub(crate) fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    // Most strings (keys, short values) end within a few words.
    let mut j = i;
    while let Some(chunk) = b.get(j..).and_then(<[u8]>::first_chunk::<8>) {
        let hits = special_bytes(u64::from_le_bytes(*chunk));
        if hits != 0 {
            let k = (hits.trailing_zeros() / 8) as usize;
            if chunk.get(k) == Some(&b'"') {
                return Some((j + k, false));
            }
            break;
        }
        j += 8;
        if j - i >= 16 {
            break;
        }
    }
    string_end_slow(b, j)
}

#[inline(never)]
fn string_end_slow(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = next_special(b, i);
        match *b.get(i)? {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i = escape_end(b, i + 1)?;
            }
            _ => return None, // a control byte
        }
    }
}

/// The end of the escape whose letter is at `i` (just after the backslash).
fn escape_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let hex = b.get(i + 1..i + 5)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(i + 5)
        }
        _ => None,
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// The high bit of each byte of `w` that is `"`, `\` or below 0x20. The
/// lowest set bit is exact (a borrow only ever flags bytes above a real hit),
/// which is all [`next_special`] uses.
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    // Flipping bit 1 maps `"` (0x22) to 0x20 and keeps control bytes below
    // 0x20, so one "below 0x21" test finds both.
    let quote_or_control = w ^ (ONES * 0x02);
    let quote_or_control = quote_or_control.wrapping_sub(ONES * 0x21) & !quote_or_control;
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (quote_or_control | backslash) & HIGHS
}

/// The index of the first `"`, `\` or control byte at or after `i`
/// (`b.len()` if there is none).
#[inline]
fn next_special(b: &[u8], mut i: usize) -> usize {
    let start = i;
    while let Some(chunk) = b.get(i..i + 16) {
        // Written so that it compiles to a few vector instructions (compare,
        // or, move mask) per 16 bytes; the exact byte is found below.
        let any = chunk.iter().fold(false, |any, &c| {
            any | (c == b'"') | (c == b'\\') | (c < 0x20)
        });
        if any {
            let (low, high) = chunk.split_at(8);
            let low = special_bytes(u64::from_le_bytes(low.try_into().expect("8 bytes")));
            if low != 0 {
                return i + (low.trailing_zeros() / 8) as usize;
            }
            let high = special_bytes(u64::from_le_bytes(high.try_into().expect("8 bytes")));
            return i + 8 + (high.trailing_zeros() / 8) as usize;
        }
        i += 16;
        if i - start >= SHORT_STRING {
            return next_special_long(b, i);
        }
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// [`next_special`] for a long string: `memchr` finds the next quote or
/// backslash in a block, then one vectorisable pass checks the bytes before
/// it for control bytes.
#[cold]
fn next_special_long(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        let block = &b[i..b.len().min(i + BLOCK)];
        let stop = memchr::memchr2(b'"', b'\\', block).unwrap_or(block.len());
        let before = &block[..stop];
        if before.iter().fold(u8::MAX, |m, &c| m.min(c)) < 0x20 {
            // Found before the quote: exactly where, byte by byte.
            return i + before.iter().position(|&c| c < 0x20).unwrap_or(stop);
        }
        if stop < block.len() {
            return i + stop;
        }
        i += block.len();
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_members() {
        let line = r#" {"jsonrpc":"2.0", "id" : 7,"method":"tools/call","params":{"name":"x","a":[1,-2.5e+3,true,false,null]},"other":{}} "#;
        let spans = scan_message(line).unwrap().envelope;
        assert_eq!(spans.jsonrpc, Some("\"2.0\""));
        assert_eq!(spans.id, Some("7"));
        assert_eq!(spans.method, Some("\"tools/call\""));
        assert_eq!(
            spans.params,
            Some(r#"{"name":"x","a":[1,-2.5e+3,true,false,null]}"#)
        );
        assert_eq!((spans.result, spans.error), (None, None));
    }

    #[test]
    fn leaves_everything_unusual_to_the_full_check() {
        for line in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"A":2}"#,
            r#"{"p":{"a":1,"A":2}}"#,
            r#"{"p":{"q":{"a":1,"b":{"a":1},"a":2}}}"#,
            r#"{"n\u0061me":1}"#,
            r#"{"ſ":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1}"#,
            r#"{"a":1} x"#,
            r#"{"a":"#,
            r#"[1]"#,
            r#"{"a" 1}"#,
            r#"{1:1}"#,
        ] {
            assert_eq!(scan_message(line), None, "{line}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(SCAN_DEPTH),
            "]".repeat(SCAN_DEPTH)
        );
        assert_eq!(scan_message(&deep), None);
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(90), "]".repeat(90));
        assert!(scan_message(&fine).is_some());
    }

    #[test]
    fn locates_the_tools_of_a_tools_list_result() {
        let line = r#"{"id":1,"result":{"x":[{"name":"no"}],"Tools": [ {"name":"a","d":{"name":1}} , 7,{"NAME":"b"},{"Name":"c","name":"d"},{"name":5},{} ],"y":2}}"#;
        let index = scan_message(line).unwrap().tools;
        assert_eq!(index.result_start, line.find(r#"{"x""#));
        let (start, end) = index.array.unwrap();
        assert_eq!(
            &line[start..end],
            &line[line.find("[ {").unwrap()..line.find(r#","y""#).unwrap()]
        );
        let tools: Vec<(&str, Option<&str>)> = index
            .tools
            .iter()
            .map(|t| (&line[t.start..t.end], t.name.map(|n| &line[n..n + 3])))
            .collect();
        assert_eq!(
            tools,
            [
                (r#"{"name":"a","d":{"name":1}}"#, Some("\"a\"")),
                ("7", None),
                (r#"{"NAME":"b"}"#, None),
                (r#"{"Name":"c","name":"d"}"#, None),
                (r#"{"name":5}"#, Some("5},")),
                ("{}", None),
            ]
        );
        for other in [
            r#"{"id":1,"result":{"tools":{}}}"#,
            r#"{"id":1,"result":[{"tools":[]}]}"#,
            r#"{"id":1,"Result":{"tools":[]}}"#,
            r#"{"id":1,"result":{"x":{"tools":[]}}}"#,
        ] {
            assert_eq!(scan_message(other).unwrap().tools.array, None, "{other}");
        }
    }

    #[test]
    fn checks_values_as_serde_json_does_when_it_skips_them() {
        // Like the previous fast path (serde_json skipping the value), no
        // range check on numbers and no pairing check on escaped
        // surrogates in values; the gateway never reads these as numbers
        // or text, and the server gets the bytes as they came.
        for line in [
            r#"{"a":1e400,"b":-0.0e-999}"#,
            r#"{"a":"\ud800 \uDC00x"}"#,
            "{\"a\":\"\u{7f} é 日本\"}",
        ] {
            assert!(scan_message(line).is_some(), "{line}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(line).is_ok());
        }
    }

    #[test]
    fn finds_repeats_in_large_objects_deep_down() {
        let mut text = String::from("{\"p\":{\"q\":{");
        for i in 0..100 {
            text.push_str(&format!("\"k{i}\":{{\"x\":1}},"));
        }
        let unique = format!("{text}\"K42\":0}}}}}}");
        assert!(scan_message(&unique).is_some());
        text.push_str("\"k42\":0}}}");
        assert_eq!(scan_message(&text), None);
    }

    #[test]
    fn finds_repeats_among_more_keys_than_fit_in_place() {
        // Nested objects keep every outer key open: 20 levels of 1–3 keys
        // overflow the in-place stack; a repeat must still be found at
        // every level, before and after the overflow.
        for repeat_at in 0..20 {
            let mut text = String::new();
            for level in 0..20 {
                text.push_str(&format!("{{\"a{level}\":1,\"b{level}\":2,\"c{level}\":"));
            }
            text.push('0');
            for level in (0..20).rev() {
                if level == repeat_at {
                    text.push_str(&format!(",\"a{level}\":3"));
                }
                text.push('}');
            }
            assert_eq!(scan_message(&text), None, "repeat at level {repeat_at}");
            let unique = text.replace(&format!(",\"a{repeat_at}\":3"), ",\"z\":3");
            assert!(scan_message(&unique).is_some(), "{unique}");
        }
    }

    #[test]
    fn compares_keys_of_every_length_exactly_and_near_the_envelope_by_case() {
        // Keys shorter than a word, of one and two words, and longer ones
        // (whose middle the key summary does not see), at the depths where
        // case counts (1 and 2) and below.
        for key in [
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghXjklmnopqrstuvwxyz",
        ] {
            let upper = key.to_ascii_uppercase();
            // Differs only in the middle: same first and last words.
            let middle = format!("{}Z{}", &key[..key.len() / 2], &key[key.len() / 2 + 1..]);
            for (open, close, case_counts) in [
                ("", "", true),
                (r#""p":{"#, "}", true),
                (r#""p":{"q":{"#, "}}", false),
            ] {
                let line = |other: &str| format!("{{{open}\"{key}\":1,\"{other}\":2{close}}}");
                assert_eq!(scan_message(&line(key)), None, "{key} repeated");
                assert_eq!(
                    scan_message(&line(&upper)).is_none(),
                    case_counts,
                    "{key} vs {upper}"
                );
                assert!(scan_message(&line(&middle)).is_some(), "{key} vs {middle}");
                let longer = format!("{key}x");
                assert!(scan_message(&line(&longer)).is_some(), "{key} vs {longer}");
            }
        }
        // Non-ASCII keys near the envelope go the full way, whatever
        // their length; deeper they are fine.
        for key in ["é", "abcdefgé", "abcdefghijklmnopé", "éabcdefghijklmnopq"] {
            assert_eq!(
                scan_message(&format!(r#"{{"p":{{"{key}":1}}}}"#)),
                None,
                "{key}"
            );
            assert!(scan_message(&format!(r#"{{"p":{{"q":{{"{key}":1}}}}}}"#)).is_some());
        }
    }

    #[test]
    fn reads_keys_that_end_near_the_end_of_the_line() {
        // Fewer than eight bytes after a key's quote: read byte by byte.
        for line in [
            r#"{"a":1}"#,
            r#"{"ab":{}}"#,
            r#"{"b":0,"a":1}"#,
            r#"{"x":{"y":1}}"#,
        ] {
            assert!(scan_message(line).is_some(), "{line}");
        }
        for line in [
            r#"{"a":0,"a":1}"#,
            r#"{"a":0,"A":1}"#,
            r#"{"a":{"b":0,"b":1}}"#,
            r#"{"a"#,
        ] {
            assert_eq!(scan_message(line), None, "{line}");
        }
    }

    #[test]
    fn reads_the_members_through_whitespace_everywhere() {
        let tight = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","n":[1,{"a":null}]}}}"#;
        let loose = " {\t\"jsonrpc\" :\r\n\"2.0\" , \"id\" : 1 ,\"method\":\"tools/call\" ,\n\"params\" : { \"name\" : \"echo\" , \"arguments\" : { \"text\" : \"hi\" , \"n\" : [ 1 , { \"a\" : null } ] } } } \n";
        let (tight, loose) = (scan_message(tight).unwrap(), scan_message(loose).unwrap());
        assert_eq!(loose.envelope.method, tight.envelope.method);
        assert_eq!(loose.call.unwrap().name, Some("\"echo\""));
        assert_eq!(
            loose.call.unwrap().arguments.map(|a| a.replace(' ', "")),
            tight.call.unwrap().arguments.map(str::to_owned)
        );
        assert_eq!(scan_message(r#"{"a":1 , "a" :2}"#), None);
        assert_eq!(scan_message(r#"{ "p" : { "k" : 1 , "K" : 2 } }"#), None);
    }

    #[test]
    fn finds_repeats_deeper_than_the_levels_kept_in_place() {
        // Objects nested past INLINE_DEPTH keep their key lists apart too,
        // on the way in and again on the way out.
        for levels in [INLINE_DEPTH - 1, INLINE_DEPTH, INLINE_DEPTH + 1, 40] {
            let open: String = (0..levels)
                .map(|l| format!("{{\"k{l}\":0,\"v\":"))
                .collect();
            let close = "}".repeat(levels);
            let line = format!("{open}1{close}");
            assert!(scan_message(&line).is_some(), "{levels}");
            // A repeat in the innermost object, and one after it closed.
            let inner = format!("{open}{{\"x\":1,\"x\":2}}{close}");
            assert_eq!(scan_message(&inner), None, "{levels}");
            let after = format!("{open}{{\"x\":1}},\"v\":2{close}");
            assert_eq!(scan_message(&after), None, "{levels}");
            let fine = format!("{open}{{\"x\":1}},\"w\":2{close}");
            assert!(scan_message(&fine).is_some(), "{levels}");
        }
    }

    #[test]
    fn finds_the_end_of_strings_of_any_length() {
        for len in [
            0,
            1,
            7,
            8,
            9,
            63,
            64,
            65,
            200,
            BLOCK - 1,
            BLOCK,
            BLOCK + 9,
            3 * BLOCK,
        ] {
            let body = "x".repeat(len);
            let text = format!("\"{body}\"");
            assert_eq!(
                string_end(text.as_bytes(), 1),
                Some((len + 1, false)),
                "{len}"
            );
            // A control byte anywhere is refused, however long the string.
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                let mut bad = text.clone().into_bytes();
                bad[1 + at] = b'\n';
                assert_eq!(string_end(&bad, 1), None, "{len} {at}");
            }
            let escaped = format!("\"{body}\\\"{body}\\u00e9\"");
            assert_eq!(
                string_end(escaped.as_bytes(), 1),
                Some((escaped.len() - 1, true))
            );
            assert_eq!(string_end(&text.as_bytes()[..text.len() - 1], 1), None);
        }
    }
}
