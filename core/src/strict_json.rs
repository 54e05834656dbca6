//! Validation that serde_json does not do on its own: duplicate object keys.
//!
//! `serde_json` keeps the last of two equal keys, while other parsers keep the
//! first. A gateway that checks one value and forwards bytes in which the
//! server reads the other is bypassable, so any message with a repeated key
//! (at any depth, compared after unescaping) is rejected before anything else
//! looks at it. The walk allocates only for keys that contain escapes.
//!
//! [`check_strict`] is the full check and the reference: the usual message
//! is accepted by one faster pass in `json_scan`, and every other one comes
//! here, which says exactly what is wrong with it.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// Why a line is not acceptable JSON for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonProblem {
    /// Not valid UTF-8 at all.
    InvalidUtf8,
    /// Not JSON (syntax error, trailing characters, nesting too deep).
    Syntax(String),
    /// Valid JSON, but an object repeats a key.
    DuplicateKey(String),
    /// Valid JSON, but an envelope-level object has two keys that differ
    /// only in case (`name` and `Name`): servers whose JSON decoders match
    /// keys case-insensitively (Go's `encoding/json`, for one) would read the
    /// one the gateway did not check.
    CaseVariantKey(String),
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonProblem::InvalidUtf8 => f.write_str("message is not valid UTF-8"),
            JsonProblem::Syntax(detail) => write!(f, "message is not valid JSON: {detail}"),
            JsonProblem::DuplicateKey(key) => write!(f, "duplicate key {key:?} in message"),
            JsonProblem::CaseVariantKey(key) => write!(
                f,
                "key {key:?} differs from another key only in case; such keys are refused because servers may read either"
            ),
        }
    }
}

/// Checks that `text` is one JSON value with no repeated key in any object.
pub(crate) fn check_strict(text: &str) -> Result<(), JsonProblem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut duplicate = None;
    let walk = Walk {
        duplicate: &mut duplicate,
        depth: 0,
    };
    let result = walk.deserialize(&mut de).and_then(|()| de.end());
    if let Some(problem) = duplicate {
        return Err(problem);
    }
    result.map_err(|e| JsonProblem::Syntax(e.to_string()))
}

/// Seed that walks one value; records the first duplicate key it meets.
struct Walk<'s> {
    duplicate: &'s mut Option<JsonProblem>,
    /// 0 for the message itself, 1 for its members' values (`params`,
    /// `result`), and so on.
    depth: usize,
}

/// Objects this shallow are also checked for keys that differ only in
/// case: the envelope and `params`/`result`, where the gateway reads the
/// members it decides on.
const CASE_CHECK_DEPTH: usize = 1;

/// A key's character as a case-insensitive JSON decoder would match it.
/// Only the folds that reach ASCII letters matter, since every key the
/// gateway reads is ASCII: ASCII case, `ſ` (long s) and `K` (Kelvin sign).
fn fold_char(c: char) -> char {
    match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

fn fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

/// Whether a case-insensitive decoder would take `a` and `b` for one key.
pub(crate) fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// An object key as the parser hands it over: borrowed when it had no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Objects with more keys than this switch from a linear scan to a set.
const LINEAR_SCAN_KEYS: usize = 16;

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Walk {
                duplicate: &mut *self.duplicate,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The first keys live on the stack: most objects allocate nothing.
        let mut few: [Option<Cow<'de, str>>; LINEAR_SCAN_KEYS] = [const { None }; LINEAR_SCAN_KEYS];
        let mut few_len = 0;
        let mut many: BTreeSet<Cow<'de, str>> = BTreeSet::new();
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut seen_folded: BTreeSet<String> = BTreeSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let repeated = if many.is_empty() && few_len < LINEAR_SCAN_KEYS {
                if few[..few_len].iter().any(|k| k.as_ref() == Some(&key)) {
                    true
                } else {
                    few[few_len] = Some(key.clone());
                    few_len += 1;
                    false
                }
            } else {
                if many.is_empty() {
                    many.extend(few.iter_mut().filter_map(Option::take));
                }
                !many.insert(key.clone())
            };
            if repeated {
                *self.duplicate = Some(JsonProblem::DuplicateKey(key.into_owned()));
                return Err(de::Error::custom("duplicate key"));
            }
            if self.depth <= CASE_CHECK_DEPTH {
                // Envelope-level objects are small: a linear scan that does
                // not allocate; a large one switches to a set of folded keys
                // so a peer cannot make the check quadratic. (Exact repeats
                // were refused above.)
                let collides = if seen_folded.is_empty() && seen.len() < LINEAR_SCAN_KEYS {
                    let collides = seen.iter().any(|other| fold_eq(other, &key));
                    seen.push(key.clone());
                    collides
                } else {
                    if seen_folded.is_empty() {
                        seen_folded.extend(seen.drain(..).map(|k| fold(&k)));
                    }
                    !seen_folded.insert(fold(&key))
                };
                if collides {
                    *self.duplicate = Some(JsonProblem::CaseVariantKey(key.into_owned()));
                    return Err(de::Error::custom("case-variant key"));
                }
            }
            map.next_value_seed(Walk {
                duplicate: &mut *self.duplicate,
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        assert_eq!(
            check_strict(r#"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#),
            Ok(())
        );
        assert_eq!(check_strict("[1,2,3]"), Ok(()));
        assert_eq!(check_strict("  \"x\" "), Ok(()));
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert_eq!(
            check_strict(r#"{"name":"a","name":"b"}"#),
            Err(JsonProblem::DuplicateKey("name".into()))
        );
        assert_eq!(
            check_strict(r#"{"p":{"q":[{"x":1,"y":2,"x":3}]}}"#),
            Err(JsonProblem::DuplicateKey("x".into()))
        );
    }

    #[test]
    fn compares_keys_after_unescaping() {
        assert_eq!(
            check_strict(r#"{"name":"a","n\u0061me":"b"}"#),
            Err(JsonProblem::DuplicateKey("name".into()))
        );
        // Deep down, case differs: two different keys (refused near the
        // envelope, see below).
        assert_eq!(check_strict(r#"[[{"name":"a","Name":"b"}]]"#), Ok(()));
    }

    #[test]
    fn rejects_keys_differing_only_in_case_where_the_gateway_reads() {
        for text in [
            r#"{"method":"ping","Method":"tools/call"}"#,
            r#"{"params":{"name":"a","Name":"b"}}"#,
            r#"{"params":{"name":"a"},"param\u017f":{"name":"b"}}"#,
            r#"{"params":{"\u212Aey":1,"key":2}}"#,
        ] {
            assert!(
                matches!(check_strict(text), Err(JsonProblem::CaseVariantKey(_))),
                "{text}"
            );
        }
        // Deeper down (tool arguments) case variants are the tool's business.
        assert_eq!(
            check_strict(r#"{"params":{"arguments":{"path":"a","Path":"b"}}}"#),
            Ok(())
        );
    }

    #[test]
    fn finds_case_variants_in_large_envelope_objects() {
        let mut text = String::from("{\"params\":{");
        for i in 0..100 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"K42\":0}}");
        assert_eq!(
            check_strict(&text),
            Err(JsonProblem::CaseVariantKey("K42".into()))
        );
    }

    #[test]
    fn finds_duplicates_in_large_objects() {
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k42\":0}");
        assert_eq!(
            check_strict(&text),
            Err(JsonProblem::DuplicateKey("k42".into()))
        );
    }

    #[test]
    fn rejects_syntax_errors_trailing_data_and_deep_nesting() {
        assert!(matches!(check_strict("{"), Err(JsonProblem::Syntax(_))));
        assert!(matches!(check_strict("{} {}"), Err(JsonProblem::Syntax(_))));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(check_strict(&deep), Err(JsonProblem::Syntax(_))));
    }
}

#[cfg(test)]
mod differential_random {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn value(r: &mut Lcg, depth: usize, out: &mut String) {
        const KEYS: [&str; 9] = [
            "a",
            "A",
            "b",
            "B",
            "name",
            "Name",
            "n\\u0061me",
            "params",
            "\\u017Fx",
        ];
        match if depth > 4 { r.next(3) } else { r.next(6) } {
            0 => out.push('1'),
            1 => out.push_str("\"s\\\"{,}:[\""),
            2 => out.push_str("null"),
            3 | 4 => {
                out.push('{');
                for i in 0..r.next(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(KEYS[r.next(KEYS.len() as u64) as usize]);
                    out.push_str("\":");
                    value(r, depth + 1, out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..r.next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    value(r, depth + 1, out);
                }
                out.push(']');
            }
        }
    }

    /// One random edit that often breaks the syntax.
    fn mutate(r: &mut Lcg, text: &mut String) {
        const BITS: [&str; 16] = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "1", "-", "e", ".", "n", "\u{1}",
            "\\u00",
        ];
        let mut at = r.next(text.len() as u64 + 1) as usize;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        match r.next(3) {
            0 => text.insert_str(at, BITS[r.next(BITS.len() as u64) as usize]),
            1 if at < text.len() => {
                text.remove(at);
            }
            _ => text.truncate(at),
        }
    }

    #[test]
    fn fast_scan_agrees_with_the_full_check_on_random_json() {
        let mut r = Lcg(42);
        let (mut fast, mut refused) = (0, 0);
        for round in 0..200_000 {
            let mut text = String::from("{\"jsonrpc\":\"2.0\",\"x\":");
            value(&mut r, 0, &mut text);
            text.push('}');
            if round % 2 == 1 {
                mutate(&mut r, &mut text);
            }
            let strict = check_strict(&text);
            if strict.is_err() {
                refused += 1;
            }
            let scanned = crate::json_scan::scan_message(&text);
            // Exactly what the previous fast path (a serde parse of the
            // envelope and the key scan below) accepted.
            assert_eq!(
                scanned.is_some(),
                previous_fast_path(&text),
                "the scan and the previous fast path disagree on {text}"
            );
            if scanned.is_some() {
                fast += 1;
                assert_eq!(strict, Ok(()), "fast path accepted {text}");
            }
        }
        eprintln!("{fast} fast, {refused} refused by the full check");
    }

    /// The fast path before `json_scan`: serde_json skipped the value (the
    /// envelope's members are raw values) and [`scan_keys`] found no key
    /// to worry about. Kept as the reference the scan must agree with.
    fn previous_fast_path(text: &str) -> bool {
        text.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
            && scan_keys(text) == KeyScan::Unique
    }

    /// What the fast duplicate-key scan found.
    #[derive(Debug, PartialEq, Eq)]
    enum KeyScan {
        /// No object repeats a key.
        Unique,
        /// Something the scan leaves to [`check_strict`]: a repeated key, a key
        /// with an escape, or deep nesting. The caller runs the full check,
        /// which reports exactly what it always did.
        Unsure,
    }

    /// Nesting beyond this is left to [`check_strict`] (serde_json stops at 128).
    const SCAN_DEPTH: usize = 100;

    /// Looks for repeated keys in `text`, which must already be known to be
    /// valid JSON (serde_json parsed it). Strings are skipped with `memchr`,
    /// so this costs a fraction of a parse; it allocates only for objects
    /// nested deeper than a few levels or with more than 16 keys.
    fn scan_keys(text: &str) -> KeyScan {
        struct Open<'a> {
            object: bool,
            keys_start: usize,
            set: Option<BTreeSet<&'a str>>,
        }
        let bytes = text.as_bytes();
        let mut stack: Vec<Open<'_>> = Vec::with_capacity(8);
        let mut keys: Vec<&str> = Vec::with_capacity(32);
        let mut expect_key = false;
        let mut i = 0;
        while i < bytes.len() {
            let depth = stack.len();
            match bytes[i] {
                b'"' => {
                    let start = i + 1;
                    let mut j = start;
                    let mut escaped = false;
                    loop {
                        let Some(k) = memchr::memchr2(b'"', b'\\', &bytes[j..]) else {
                            return KeyScan::Unsure; // not valid JSON after all
                        };
                        if bytes[j + k] == b'\\' {
                            escaped = true;
                            j += k + 2;
                        } else {
                            j += k;
                            break;
                        }
                    }
                    if expect_key {
                        if escaped {
                            return KeyScan::Unsure;
                        }
                        let key = &text[start..j];
                        let Some(open) = stack.last_mut() else {
                            return KeyScan::Unsure;
                        };
                        match &mut open.set {
                            Some(set) => {
                                if !set.insert(key) {
                                    return KeyScan::Unsure;
                                }
                            }
                            None => {
                                if keys[open.keys_start..].contains(&key) {
                                    return KeyScan::Unsure;
                                }
                                // The envelope and params/result also refuse
                                // keys equal but for ASCII case (see
                                // CASE_CHECK_DEPTH); non-ASCII keys (ſ, K) and
                                // big objects there go the full way.
                                if depth <= CASE_CHECK_DEPTH + 1 {
                                    let mine = &keys[open.keys_start..];
                                    if !key.is_ascii()
                                        || mine.len() >= LINEAR_SCAN_KEYS
                                        || mine.iter().any(|k| k.eq_ignore_ascii_case(key))
                                    {
                                        return KeyScan::Unsure;
                                    }
                                }
                                keys.push(key);
                                if keys.len() - open.keys_start > LINEAR_SCAN_KEYS {
                                    open.set = Some(keys.drain(open.keys_start..).collect());
                                }
                            }
                        }
                        expect_key = false;
                    }
                    i = j + 1;
                }
                b'{' | b'[' => {
                    if stack.len() >= SCAN_DEPTH {
                        return KeyScan::Unsure;
                    }
                    let object = bytes[i] == b'{';
                    stack.push(Open {
                        object,
                        keys_start: keys.len(),
                        set: None,
                    });
                    expect_key = object;
                    i += 1;
                }
                b'}' | b']' => {
                    if let Some(open) = stack.pop() {
                        keys.truncate(open.keys_start);
                    }
                    expect_key = false;
                    i += 1;
                }
                b',' => {
                    expect_key = stack.last().is_some_and(|o| o.object);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        KeyScan::Unique
    }
}
