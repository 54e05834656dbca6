//! Walking the members of a JSON object without parsing their values: the
//! few places that only need to find a member's span use these (reading the
//! id out of the cut-off start of an over-long line; finding `name` and
//! `arguments` in a `tools/call`'s params without touching a large
//! argument).
//!
//! They never fail loudly: on anything unexpected (including text that is
//! cut off) they return `None`, and the caller falls back or gives up.

/// The index of the first byte at or after `i` that is not JSON whitespace.
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// For the string whose contents start at `i` (just after its opening
/// quote): the index of its closing quote, and whether it holds an escape.
/// `None` if it does not end within `b`.
pub(crate) fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some((i, escaped));
        }
        escaped = true;
        i += 2; // the backslash and the character it escapes
    }
}

/// The end (exclusive) of the value starting at `i`, if it ends within `b`:
/// a string or a nested object or array is walked to its closing byte; any
/// other value (number, literal) ends at the next `,`, `}` or whitespace,
/// which the member of an object it stands in always has after it.
pub(crate) fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => Some(string_end(b, i + 1)?.0 + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => j = string_end(b, j + 1)?.0,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let len = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))?;
            Some(i + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ends_of_values_and_strings() {
        let text = br#"{"a": "x\"y", "b": {"c": [1, "]"]}, "d": 12 }"#;
        let at = |needle: &[u8]| {
            text.windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let a = at(br#""x"#);
        assert_eq!(value_end(text, a), Some(a + 6));
        assert_eq!(string_end(text, a + 1), Some((a + 5, true)));
        let b = at(br#"{"c""#);
        assert_eq!(&text[b..value_end(text, b).unwrap()], br#"{"c": [1, "]"]}"#);
        let d = at(b"12");
        assert_eq!(&text[d..value_end(text, d).unwrap()], b"12");
        assert_eq!(skip_ws(b"  \t\nx", 0), 4);
    }

    #[test]
    fn text_that_is_cut_off_has_no_end() {
        assert_eq!(value_end(br#"{"a": [1, 2"#, 0), None);
        assert_eq!(value_end(br#""abc"#, 0), None);
        assert_eq!(value_end(b"123", 0), None);
        assert_eq!(string_end(br#"ab\"#, 0), None);
    }
}
