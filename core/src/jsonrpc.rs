//! Strict JSON-RPC 2.0 envelope parsing and the gateway's own replies.
//!
//! Parsing keeps borrowed raw slices of the original line instead of building
//! a tree: the gateway forwards the exact bytes it checked, and reads only the
//! members it needs (`id`, `method`, the tool name) to decide.

use crate::audit::IdText;
use crate::json_scan::{CallMembers, EnvelopeSpans, ToolsIndex};
use crate::json_walk::{skip_ws, string_end, value_end};
use crate::strict_json::{check_strict, JsonProblem};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// JSON-RPC error code for unparseable JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code for a message that is JSON but not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// Error code the gateway uses when a security policy blocks a request.
pub const POLICY_BLOCKED: i64 = -32001;
/// Error code the gateway uses when the upstream server is gone.
pub const UPSTREAM_UNAVAILABLE: i64 = -32002;
/// Error code the gateway uses when the upstream answered with an invalid message.
pub const UPSTREAM_INVALID_RESPONSE: i64 = -32003;
/// Error code the gateway uses when a bound (line length, in-flight) is hit.
pub const LIMIT_EXCEEDED: i64 = -32004;
/// Error code the gateway uses when it cannot start (bad config, unwritable
/// audit log) and tells the client why.
pub const GATEWAY_NOT_STARTED: i64 = -32005;
/// Error code the gateway uses when a critical audit log cannot be written
/// and a message is withheld rather than passed unaudited.
pub const AUDIT_LOG_UNAVAILABLE: i64 = -32006;
/// Error code the gateway uses when the upstream did not answer in time
/// (`proxy.limits.request_timeout_ms`).
pub const REQUEST_TIMEOUT: i64 = -32007;

/// A JSON-RPC request id. MCP allows only strings and integers.
///
/// Ids are compared by value: `"a"` and `"\u0061"` are the same id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestId {
    /// An integer id (the full `i64`/`u64` range is accepted).
    Number(i128),
    /// A string id.
    String(String),
}

impl fmt::Display for RequestId {
    /// The form used in audit records, e.g. `123` or `abc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => f.write_str(s),
        }
    }
}

impl RequestId {
    /// Appends the id as JSON.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            RequestId::Number(n) => write_decimal(out, *n),
            RequestId::String(s) => write_json_string(out, s),
        }
    }

    /// The id as audit records show it ([`Display`](fmt::Display)):
    /// borrowed for a string id, digits held in place for a number.
    pub(crate) fn text(&self) -> IdText<'_> {
        match self {
            RequestId::String(s) => IdText::from(s.as_str()),
            RequestId::Number(n) => {
                let (digits, start) = decimal_digits(*n);
                IdText::Digits {
                    digits,
                    start: start as u8,
                }
            }
        }
    }

    pub(crate) fn from_raw(raw: &RawValue) -> Option<RequestId> {
        RequestId::from_text(raw.get())
    }

    /// [`from_raw`](Self::from_raw) for the text of a valid JSON value.
    pub(crate) fn from_text(text: &str) -> Option<RequestId> {
        if text.starts_with('"') {
            return json_str(text).map(|s| RequestId::String(s.into_owned()));
        }
        let digits = text.as_bytes();
        if (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
            // The usual id, and always in range: read without the 128-bit
            // parse.
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            return Some(RequestId::Number(i128::from(n)));
        }
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return text.parse::<i128>().ok().and_then(|n| {
                let in_range = n >= i128::from(i64::MIN) && n <= i128::from(u64::MAX);
                in_range.then_some(RequestId::Number(n))
            });
        }
        None
    }
}

/// Appends `n` in decimal, as `Display` writes it, without the formatting
/// machinery (ids, durations and codes go into every audit line).
pub(crate) fn write_decimal(out: &mut Vec<u8>, n: i128) {
    let (digits, start) = decimal_digits(n);
    out.extend_from_slice(&digits[start..]);
}

/// `n` in decimal, right-aligned in a buffer: the digits are
/// `buffer[start..]`.
pub(crate) fn decimal_digits(n: i128) -> ([u8; 40], usize) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    // Ids and durations fit in 64 bits, whose division is a machine
    // instruction; 128-bit division is a library call.
    let mut rest = n.unsigned_abs();
    while rest > u128::from(u64::MAX) {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut rest = rest as u64;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    (digits, at)
}

/// Outcome carried by a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Error {
        code: Option<i64>,
        message: Option<String>,
    },
}

/// A parsed, classified message that borrows the line it came from.
#[derive(Debug)]
pub(crate) enum Message<'a> {
    Request {
        id: RequestId,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
        /// `params.name` and `params.arguments`, when the fast scan read
        /// the line and `params` is an object.
        call: Option<CallMembers<'a>>,
    },
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
        call: Option<CallMembers<'a>>,
    },
    Response {
        id: RequestId,
        outcome: Outcome,
        result: Option<&'a RawValue>,
        /// Where `result.tools` is, when the fast scan read the line (for
        /// filtering a `tools/list` answer without reading it again).
        tools: Option<ToolsIndex>,
        /// The whole line, already checked to be UTF-8, so the filter need
        /// not check it again.
        line: &'a str,
    },
}

/// Why a line was refused, with what the gateway needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// -32700 or -32600.
    pub code: i64,
    /// Human-readable reason, used in the error reply and the audit record.
    pub reason: String,
    /// The id, when it could still be read (so the reply can carry it).
    pub id: Option<RequestId>,
    /// The method, when it could be read.
    pub method: Option<String>,
    /// What the line meant to be, which decides who (if anyone) is answered.
    pub shape: Shape,
}

/// What a line meant to be, judged from the members it has, even when it
/// is invalid. It decides who is answered: an invalid request gets an
/// error reply, an invalid response must not get one (its id belongs to the
/// other direction's id space), a notification gets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Has a method and an id, or an id and neither result nor error.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has `result` or `error` and no method.
    Response,
    /// Cannot tell (not JSON, a batch, not an object, nothing readable).
    Unknown,
}

impl Shape {
    fn of(has_method: bool, has_id: bool, has_outcome: bool) -> Shape {
        match (has_method, has_id, has_outcome) {
            (true, true, _) => Shape::Request,
            (true, false, _) => Shape::Notification,
            (false, _, true) => Shape::Response,
            (false, true, false) => Shape::Request,
            (false, false, false) => Shape::Unknown,
        }
    }

    /// Whether the sender waits for an error reply from the gateway.
    pub(crate) fn expects_reply(self) -> bool {
        matches!(self, Shape::Request | Shape::Unknown)
    }
}

impl Rejection {
    fn parse(reason: String) -> Self {
        Rejection {
            code: PARSE_ERROR,
            reason,
            id: None,
            method: None,
            shape: Shape::Unknown,
        }
    }
}

/// The top-level members the gateway reads. Anything else is kept in the
/// raw bytes and forwarded untouched.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    error: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// The members' texts, as the validating scan gives them.
    fn spans(&self) -> EnvelopeSpans<'a> {
        EnvelopeSpans {
            jsonrpc: self.jsonrpc.map(RawValue::get),
            id: self.id.map(RawValue::get),
            method: self.method.map(RawValue::get),
            params: self.params.map(RawValue::get),
            result: self.result.map(RawValue::get),
            error: self.error.map(RawValue::get),
        }
    }
}

/// A `&RawValue` for `json`, one complete JSON value already validated,
/// without scanning it again (a 10 MiB `params` is not read a second time).
///
/// serde_json has no public borrowed constructor, but its `&RawValue`
/// deserializes from any deserializer that offers the value as a map with
/// one entry, keyed by the token serde_json's own deserializers use, whose
/// value is the borrowed text. [`RawText`] is that deserializer. Should a
/// serde_json release change the token, this falls back to parsing `json`
/// (correct, only slower), and the test
/// `borrowed_raw_values_are_not_parsed_again` fails to say so.
fn borrowed_raw(json: &str) -> &RawValue {
    match <&RawValue>::deserialize(RawText(json)) {
        Ok(raw) => raw,
        Err(_) => serde_json::from_str(json).unwrap_or_else(|_| {
            // `json` was validated; should it still not parse, a `null`
            // keeps the member present (never reached).
            serde_json::from_str("null").expect("null is JSON")
        }),
    }
}

/// serde_json's private name for a raw value in the serde data model.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// A deserializer that hands `&RawValue` its text (see [`borrowed_raw`]).
struct RawText<'a>(&'a str);

impl<'de> serde::Deserializer<'de> for RawText<'de> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only a raw value reads this"))
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if name != RAW_VALUE_TOKEN {
            return Err(serde::de::Error::custom("only a raw value reads this"));
        }
        visitor.visit_map(RawTextMap(Some(self.0)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct RawTextMap<'a>(Option<&'a str>);

impl<'de> serde::de::MapAccess<'de> for RawTextMap<'de> {
    type Error = serde::de::value::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        if self.0.is_none() {
            return Ok(None);
        }
        let token = serde::de::value::BorrowedStrDeserializer::new(RAW_VALUE_TOKEN);
        seed.deserialize(token).map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let text = self.0.take().unwrap_or("null");
        seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(text))
    }
}

/// `Option<&RawValue>` would turn an explicit `null` into `None`; the gateway
/// must tell `"id": null` apart from a missing id.
fn raw_including_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    code: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_including_null")]
    message: Option<&'a RawValue>,
}

/// Parses one line strictly and classifies it.
pub(crate) fn parse_message(line: &[u8]) -> Result<Message<'_>, Rejection> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Rejection::parse(JsonProblem::InvalidUtf8.to_string()))?;
    let first = text.trim_start().as_bytes().first().copied();
    // Fast path for the usual case, a valid object with plain keys: one
    // validating pass checks the syntax and the keys and finds the envelope.
    // Anything unusual takes the full strict check below, unchanged.
    if first == Some(b'{') {
        if let Some(scanned) = crate::json_scan::scan_message(text) {
            return classify(text, scanned.envelope, Some(scanned.tools), scanned.call);
        }
    }
    if let Err(problem) = check_strict(text) {
        let mut rejection = Rejection::parse(problem.to_string());
        if let JsonProblem::DuplicateKey(_) | JsonProblem::CaseVariantKey(_) = problem {
            // Valid JSON with a repeated key: an invalid request, not a parse error.
            rejection.code = INVALID_REQUEST;
            if let Ok(env) = serde_json::from_str::<Envelope<'_>>(text) {
                rejection.id = env.id.and_then(RequestId::from_raw);
                rejection.method = env.method.and_then(json_string);
                rejection.shape = Shape::of(
                    env.method.is_some(),
                    env.id.is_some(),
                    env.result.is_some() || env.error.is_some(),
                );
            }
        }
        return Err(rejection);
    }
    match first {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(Rejection {
                code: INVALID_REQUEST,
                reason: "batches are not supported: send one JSON-RPC message per line".into(),
                id: None,
                method: None,
                shape: Shape::Unknown,
            })
        }
        _ => {
            return Err(Rejection {
                code: INVALID_REQUEST,
                reason: "message must be a JSON object".into(),
                id: None,
                method: None,
                shape: Shape::Unknown,
            })
        }
    }
    let env: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| Rejection::parse(format!("message is not valid JSON: {e}")))?;
    classify(text, env.spans(), None, None)
}

/// Classifies the envelope of `line`, given as the text of each member:
/// `jsonrpc`, `id` and `method` are read from their text, and only the
/// members handed on (`params`, `result`, `error`) become `&RawValue`s.
fn classify<'a>(
    line: &'a str,
    env: EnvelopeSpans<'a>,
    tools: Option<ToolsIndex>,
    call: Option<CallMembers<'a>>,
) -> Result<Message<'a>, Rejection> {
    let method = env.method.map(|text| json_str(text).ok_or(text));
    let id = env.id.map(|text| RequestId::from_text(text).ok_or(text));
    let shape = Shape::of(
        env.method.is_some(),
        env.id.is_some(),
        env.result.is_some() || env.error.is_some(),
    );
    // Copies for a refusal; a borrowed method is only copied if refused.
    let readable_id = id.clone().and_then(Result::ok);
    let readable_method = method.clone().and_then(Result::ok);
    let invalid = |reason: &str| Rejection {
        code: INVALID_REQUEST,
        reason: reason.to_owned(),
        id: readable_id.clone(),
        method: readable_method.clone().map(Cow::into_owned),
        shape,
    };
    if env.jsonrpc.and_then(json_str).as_deref() != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    if let Some(Err(_)) = &id {
        return Err(invalid("\"id\" must be a string or an integer"));
    }
    let id = id.map(|r| r.expect("checked just above"));
    match (method, id) {
        (Some(Err(_)), _) => Err(invalid("\"method\" must be a string")),
        (Some(Ok(method)), id) => {
            if env.result.is_some() || env.error.is_some() {
                return Err(invalid("a request cannot carry \"result\" or \"error\""));
            }
            if let Some(params) = env.params {
                let kind = params.as_bytes().first();
                if !matches!(kind, Some(b'{') | Some(b'[')) {
                    return Err(invalid("\"params\" must be an object or an array"));
                }
            }
            Ok(match id {
                Some(id) => Message::Request {
                    id,
                    method,
                    params: env.params.map(borrowed_raw),
                    call,
                },
                None => Message::Notification {
                    method,
                    params: env.params.map(borrowed_raw),
                    call,
                },
            })
        }
        (None, Some(id)) => {
            let outcome = match (env.result, env.error) {
                (Some(_), None) => Outcome::Success,
                (None, Some(error)) => parse_error_object(borrowed_raw(error)),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "a response cannot carry both \"result\" and \"error\"",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "a request needs \"method\"; a response needs \"result\" or \"error\"",
                    ))
                }
            };
            Ok(Message::Response {
                id,
                outcome,
                result: env.result.map(borrowed_raw),
                tools,
                line,
            })
        }
        (None, None) => Err(invalid("message has neither \"method\" nor \"id\"")),
    }
}

fn parse_error_object(raw: &RawValue) -> Outcome {
    match serde_json::from_str::<ErrorObject<'_>>(raw.get()) {
        Ok(obj) => Outcome::Error {
            code: obj.code.and_then(|c| c.get().parse::<i64>().ok()),
            message: obj.message.and_then(json_string),
        },
        Err(_) => Outcome::Error {
            code: None,
            message: None,
        },
    }
}

/// Methods a gateway sees all the time, kept by the in-flight tables
/// without a copy (see [`owned_method`]).
const COMMON_METHODS: [&str; 16] = [
    "tools/call",
    "tools/list",
    "ping",
    "initialize",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "server/discover",
    "resources/subscribe",
];

/// `method` as the in-flight tables keep it, until the response: one of
/// the common methods is borrowed from a fixed list, any other is copied.
pub(crate) fn owned_method(method: &str) -> Cow<'static, str> {
    match COMMON_METHODS.iter().find(|m| **m == method) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(method.to_owned()),
    }
}

/// Decodes a raw JSON value if it is a string (escapes resolved).
pub(crate) fn json_string(raw: &RawValue) -> Option<String> {
    json_str(raw.get()).map(Cow::into_owned)
}

/// [`json_string`] for the text of a valid JSON value, borrowed from it
/// when the string has no escapes (the text is valid JSON, so what lies
/// between the quotes is then the string itself): methods, names and ids
/// nearly always.
fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str(text).ok().map(Cow::Owned)
}

/// The bytes serde_json escapes in a string: control bytes, `"` and `\`.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = true;
        c += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `s` as a JSON string literal, exactly as serde_json writes it.
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes only these bytes; a string without them (names,
    // methods, ids: nearly every one) is copied as it is. A long string is
    // checked without an early exit, which compiles to a few vector
    // instructions per 16 bytes; a short one (most audit fields) byte by
    // byte, which costs less than setting those up.
    let plain = if s.len() <= 32 {
        !s.bytes().any(|c| ESCAPED[usize::from(c)])
    } else {
        !s.bytes().fold(false, |any, c| {
            any | (c < 0x20) | (c == b'"') | (c == b'\\')
        })
    };
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Serialising a &str into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
}

/// Builds a complete error response line (with trailing newline).
pub(crate) fn error_response(
    id: Option<&RequestId>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + message.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    match id {
        Some(id) => id.write_json(&mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json_string(&mut out, message);
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        serde_json::to_writer(&mut out, data).expect("writing a Value to a Vec cannot fail");
    }
    out.extend_from_slice(b"}}\n");
    out
}

/// The error reply for one client line, when the gateway cannot serve
/// anything (it failed to start): requests (and invalid lines that expect an
/// answer) get `message`; notifications and responses get nothing.
pub fn startup_failure_reply(line: &[u8], message: &str) -> Option<Vec<u8>> {
    match parse_message(line) {
        Ok(Message::Request { id, .. }) => Some(error_response(
            Some(&id),
            GATEWAY_NOT_STARTED,
            message,
            None,
        )),
        Ok(_) => None,
        Err(rejection) if rejection.shape.expects_reply() => Some(error_response(
            rejection.id.as_ref(),
            GATEWAY_NOT_STARTED,
            message,
            None,
        )),
        Err(_) => None,
    }
}

/// Finds the request id in the first bytes of a line that was too long to
/// keep, so the gateway can still answer that request. Scans only the
/// top-level members that fit in `prefix`; returns `None` when the id is not
/// among them.
pub(crate) fn sniff(prefix: &[u8]) -> (Option<RequestId>, Shape) {
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or_default(),
    };
    let (mut id, mut has_id, mut has_method, mut has_outcome) = (None, false, false, false);
    let bytes = text.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) == Some(&b'{') {
        i += 1;
        // Stops at the first member whose value does not fit in the prefix
        // (its key still counts: `"result":{…cut off` is a response).
        while let Some((key, value, next)) = next_member(text, i) {
            match key.as_str() {
                "id" => {
                    has_id = true;
                    id = value
                        .and_then(|v| serde_json::from_str::<&RawValue>(v).ok())
                        .and_then(RequestId::from_raw);
                }
                "method" => has_method = true,
                "result" | "error" => has_outcome = true,
                _ => {}
            }
            match (value, next) {
                (Some(_), Some(next)) => i = next,
                _ => break,
            }
        }
    }
    (id, Shape::of(has_method, has_id, has_outcome))
}

/// The member starting at `i`: its key, its raw value text if the value
/// ends within `text`, and where the next member starts if there is one.
fn next_member(text: &str, i: usize) -> Option<(String, Option<&str>, Option<usize>)> {
    let bytes = text.as_bytes();
    let i = skip_ws(bytes, i);
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let key_end = string_end(bytes, i + 1)?.0 + 1;
    let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
    let i = skip_ws(bytes, key_end);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    let start = skip_ws(bytes, i + 1);
    let Some(end) = value_end(bytes, start) else {
        return Some((key, None, None));
    };
    let after = skip_ws(bytes, end);
    let next = (bytes.get(after) == Some(&b',')).then_some(after + 1);
    Some((key, Some(&text[start..end]), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_read_alike_on_both_paths() {
        let id = RequestId::from_text;
        for n in [
            0u64,
            7,
            10,
            999_999_999_999_999_999,
            1_000_000_000_000_000_000,
            u64::MAX,
        ] {
            let text = n.to_string();
            assert_eq!(id(&text), Some(RequestId::Number(i128::from(n))), "{text}");
        }
        assert_eq!(id("-5"), Some(RequestId::Number(-5)));
        assert_eq!(
            id("-9223372036854775808"),
            Some(RequestId::Number(i128::from(i64::MIN)))
        );
        assert_eq!(id("18446744073709551616"), None);
        assert_eq!(id("-9223372036854775809"), None);
        assert_eq!(id("1.5"), None);
    }

    #[test]
    fn strings_either_side_of_the_short_check_are_written_alike() {
        // Every length around the short/long switch, with each kind of
        // byte that needs escaping at the start, middle and end.
        for len in [0usize, 1, 2, 31, 32, 33, 64] {
            for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é', ' '] {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut s: Vec<char> = std::iter::repeat_n('a', len).collect();
                    if len > 0 {
                        s[at] = special;
                    }
                    let s: String = s.into_iter().collect();
                    let mut ours = Vec::new();
                    write_json_string(&mut ours, &s);
                    let theirs = serde_json::to_string(&s).expect("a string");
                    assert_eq!(String::from_utf8(ours).expect("UTF-8"), theirs, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn ids_read_as_display_writes_them() {
        let edges = [
            0,
            7,
            -1,
            10,
            -10,
            1234567890,
            i128::from(i64::MIN),
            i128::from(u64::MAX),
            i128::from(u64::MAX) + 1,
            i128::MAX,
            i128::MIN,
        ];
        for n in edges {
            let id = RequestId::Number(n);
            assert_eq!(*id.text(), id.to_string());
        }
        let id = RequestId::String("a\"b".into());
        assert!(matches!(id.text(), IdText::Text(Cow::Borrowed("a\"b"))));
    }

    #[test]
    fn strings_are_borrowed_unless_they_have_escapes() {
        assert!(matches!(
            json_str(r#""tools/call""#),
            Some(Cow::Borrowed("tools/call"))
        ));
        assert!(matches!(json_str(r#""""#), Some(Cow::Borrowed(""))));
        assert_eq!(json_str(r#""a\u0062\"c""#).as_deref(), Some("ab\"c"));
        assert_eq!(json_str("17"), None);
        assert!(matches!(owned_method("tools/call"), Cow::Borrowed(_)));
        assert_eq!(owned_method("x/y"), "x/y");
    }

    fn rejected(line: &str) -> Rejection {
        parse_message(line.as_bytes()).expect_err("must be rejected")
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        match parse_message(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
        )
        .unwrap()
        {
            Message::Request {
                id, method, params, ..
            } => {
                assert_eq!(id, RequestId::Number(7));
                assert_eq!(method, "tools/call");
                assert_eq!(params.unwrap().get(), r#"{"name":"x"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification { .. }
        ));
        assert!(matches!(
            parse_message(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
            Message::Response {
                outcome: Outcome::Success,
                ..
            }
        ));
        match parse_message(
            br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"nope"}}"#,
        )
        .unwrap()
        {
            Message::Response { outcome, .. } => assert_eq!(
                outcome,
                Outcome::Error {
                    code: Some(-32601),
                    message: Some("nope".into())
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_errors_are_32700() {
        assert_eq!(rejected("{not json").code, PARSE_ERROR);
        let bad_utf8 =
            parse_message(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}").unwrap_err();
        assert_eq!(bad_utf8.code, PARSE_ERROR);
        assert_eq!(bad_utf8.reason, "message is not valid UTF-8");
    }

    #[test]
    fn batches_and_non_objects_are_32600() {
        let batch = rejected(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call"}]"#);
        assert_eq!(batch.code, INVALID_REQUEST);
        assert!(batch.reason.contains("batch"));
        assert_eq!(rejected("42").code, INVALID_REQUEST);
        assert_eq!(rejected("\"str\"").code, INVALID_REQUEST);
    }

    #[test]
    fn invalid_requests_keep_their_readable_id() {
        let no_method = rejected(r#"{"jsonrpc":"2.0","id":5}"#);
        assert_eq!(no_method.code, INVALID_REQUEST);
        assert_eq!(no_method.id, Some(RequestId::Number(5)));
        let dup = rejected(
            r#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":"a","name":"b"}}"#,
        );
        assert_eq!(dup.code, INVALID_REQUEST);
        assert_eq!(dup.id, Some(RequestId::String("q".into())));
        assert!(dup.reason.contains("duplicate key \"name\""));
        assert_eq!(
            rejected(r#"{"id":1,"method":"x"}"#).reason,
            "\"jsonrpc\" must be \"2.0\""
        );
    }

    #[test]
    fn ids_must_be_strings_or_integers() {
        for bad in [r#"1.5"#, r#"null"#, r#"{}"#, r#"[1]"#, r#"true"#, "1e3"] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{bad},"method":"ping"}}"#);
            let r = rejected(&line);
            assert_eq!(r.code, INVALID_REQUEST, "{bad}");
            assert!(r.shape.expects_reply());
        }
        let escaped = parse_message(br#"{"jsonrpc":"2.0","id":"\u0061","method":"ping"}"#).unwrap();
        assert!(matches!(escaped, Message::Request { id: RequestId::String(s), .. } if s == "a"));
        let big = parse_message(br#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#)
            .unwrap();
        assert!(
            matches!(big, Message::Request { id: RequestId::Number(n), .. } if n == i128::from(u64::MAX))
        );
    }

    #[test]
    fn error_response_shape() {
        let line = error_response(
            Some(&RequestId::String("x\"y".into())),
            POLICY_BLOCKED,
            "denied",
            None,
        );
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":\"x\\\"y\",\"error\":{\"code\":-32001,\"message\":\"denied\"}}\n"
        );
        assert_eq!(
            error_response(None, PARSE_ERROR, "bad", None),
            b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"bad\"}}\n"
                .to_vec()
        );
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "é 日本 \u{7f}",
            "a\"b",
            "a\\b",
            "tab\t",
            "\u{0}\u{1f}",
            "x\u{2028}y",
            "0123456789abcdef0123456789abcdef\"",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn borrowed_raw_values_are_not_parsed_again() {
        // Not JSON: had it been parsed, this would have failed.
        let raw = <&RawValue>::deserialize(RawText("{not parsed"));
        assert_eq!(raw.map(RawValue::get).ok(), Some("{not parsed"));
        assert_eq!(borrowed_raw("[1, 2]").get(), "[1, 2]");
    }

    #[test]
    fn the_fast_path_reads_what_the_full_parse_reads() {
        let line = r#" {"jsonrpc" : "2.0","id":"x","method":"tools/call","params":{"name":"a","arguments":{"t":"\"}"}}} "#;
        let fast = crate::json_scan::scan_message(line).map(|s| s.envelope);
        let full: Envelope<'_> = serde_json::from_str(line).unwrap();
        assert_eq!(fast, Some(full.spans()));
    }

    #[test]
    fn sniffs_what_a_truncated_line_was() {
        assert_eq!(
            sniff(br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"content":"xxxx"#),
            (Some(RequestId::Number(42)), Shape::Request)
        );
        assert_eq!(
            sniff(br#"{"jsonrpc":"2.0","id":"s1","result":{"content":"xxxx"#),
            (Some(RequestId::String("s1".into())), Shape::Response)
        );
        assert_eq!(
            sniff(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"#),
            (None, Shape::Notification)
        );
        assert_eq!(sniff(b"garbage"), (None, Shape::Unknown));
    }

    #[test]
    fn sniffs_the_id_wherever_it_is_in_the_prefix() {
        assert_eq!(
            sniff(br#"{"method":"x","params":{"a":[1,{"b":"}"}]},"id":"s"}"#),
            (Some(RequestId::String("s".into())), Shape::Request)
        );
        assert_eq!(
            sniff(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"content":"xx"#).0,
            None
        );
    }
}
