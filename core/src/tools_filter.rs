//! Removing tools from a `tools/list` response without disturbing the rest.
//!
//! The response is rebuilt from the raw slices of the original line: every
//! member keeps its bytes and its order, and only rejected entries of
//! `result.tools` disappear. When nothing is removed the caller forwards the
//! original line untouched.
//!
//! The usual answer comes with a [`ToolsIndex`] from the parser's scan, and
//! is rebuilt from those spans without reading the tools again. A line the
//! scan left to the full check (escaped keys, say) comes without one and is
//! filtered by [`filter_parsed`], the serde-based original, with the same
//! result.

use crate::json_scan::{skip_ws, string_end, ToolsIndex};
use crate::jsonrpc::write_json_string;
use crate::strict_json::fold_eq;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The outcome of filtering one `tools/list` result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filtered<'a> {
    /// The rebuilt line (with trailing newline).
    pub line: Vec<u8>,
    /// Names of the removed tools, in list order (unnamed entries as `?`).
    pub removed: Vec<Cow<'a, str>>,
}

/// Filters `result.tools` of a response line, keeping the tools for which
/// `keep(name)` is true. Entries without a string `name` are removed (a
/// policy cannot judge them). Returns `None` when nothing was removed or the
/// result has no `tools` array. `index` is what the parser's scan found in
/// this line, if it read it.
pub(crate) fn filter_tools_list<'a>(
    line: &'a str,
    index: Option<&ToolsIndex>,
    keep: impl Fn(&str) -> bool,
) -> Option<Filtered<'a>> {
    match index {
        Some(index) => filter_indexed(line, index, keep),
        None => filter_parsed(line, keep),
    }
}

/// [`filter_tools_list`] from the scan's spans.
fn filter_indexed<'a>(
    line: &'a str,
    index: &ToolsIndex,
    keep: impl Fn(&str) -> bool,
) -> Option<Filtered<'a>> {
    let (result_start, (array_start, array_end)) = (index.result_start?, index.array?);
    let fits = |start: usize, end: usize| start <= end && end <= line.len();
    if !fits(result_start, array_start) || !fits(array_start, array_end) {
        // Not this line's index (never: the gateway passes the line it parsed).
        return filter_parsed(line, keep);
    }
    // Sized for the whole list, like `kept`: one allocation rather than
    // growing through every size (a policy often removes most of a list).
    let mut removed = Vec::with_capacity(index.tools.len());
    let mut kept = Vec::with_capacity(index.tools.len());
    for tool in &index.tools {
        if !fits(tool.start, tool.end) {
            return filter_parsed(line, keep);
        }
        match tool.name.and_then(|at| string_at(line, at)) {
            Some(name) if keep(&name) => kept.push(tool),
            Some(name) => removed.push(name),
            None => removed.push(Cow::Borrowed("?")),
        }
    }
    if removed.is_empty() {
        return None;
    }
    let bytes = line.as_bytes();
    let kept_len: usize = kept.iter().map(|t| t.end - t.start + 1).sum();
    let mut out = Vec::with_capacity(line.len().min(kept_len + 256) + 64);
    // The envelope, then `result`, member by member; the tools array
    // keeps only the kept tools.
    copy_object(bytes, skip_ws(bytes, 0), &mut out, |out, at| {
        if at != result_start {
            return None;
        }
        let end = copy_object(bytes, at, out, |out, at| {
            if at != array_start {
                return None;
            }
            out.push(b'[');
            for (i, tool) in kept.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&bytes[tool.start..tool.end]);
            }
            out.push(b']');
            Some(array_end)
        });
        Some(end)
    });
    out.push(b'\n');
    Some(Filtered { line: out, removed })
}

/// Re-emits the object starting at `at` as `{"key":value,...}` with no
/// whitespace between members (keys are known to have no escapes: the scan
/// leaves those to the full check); `replace(out, value_start)` may write a
/// member's value itself and return where the original value ends. Returns
/// where the object ends. The object is valid JSON (the scan checked it).
fn copy_object(
    b: &[u8],
    at: usize,
    out: &mut Vec<u8>,
    mut replace: impl FnMut(&mut Vec<u8>, usize) -> Option<usize>,
) -> usize {
    out.push(b'{');
    let mut i = skip_ws(b, at + 1);
    let mut first = true;
    while b.get(i) == Some(&b'"') {
        let key_end = string_end(b, i + 1).map_or(b.len(), |(end, _)| end + 1);
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b.get(i..key_end).unwrap_or_default());
        out.push(b':');
        let value = skip_ws(b, skip_ws(b, key_end) + 1);
        let end = match replace(out, value) {
            Some(end) => end,
            None => {
                let end = value_end(b, value);
                out.extend_from_slice(b.get(value..end).unwrap_or_default());
                end
            }
        };
        i = skip_ws(b, end);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        }
    }
    out.push(b'}');
    i + 1
}

/// The end (exclusive) of the valid JSON value at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    let after_string = |j: usize| string_end(b, j + 1).map_or(b.len(), |(end, _)| end + 1);
    match b.get(i) {
        Some(b'"') => after_string(i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = after_string(j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => b
            .get(i..)
            .and_then(|rest| {
                rest.iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
            })
            .map_or(b.len(), |n| i + n),
    }
}

/// The string at `at` with its escapes resolved, if the value there is a
/// string: borrowed from the line when it has none.
fn string_at(line: &str, at: usize) -> Option<Cow<'_, str>> {
    let bytes = line.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let (end, escaped) = string_end(bytes, at + 1)?;
    if escaped {
        serde_json::from_str(line.get(at..=end)?)
            .ok()
            .map(Cow::Owned)
    } else {
        line.get(at + 1..end).map(Cow::Borrowed)
    }
}

/// [`filter_tools_list`] for a line the scan did not read: serde finds the
/// members and the tools.
fn filter_parsed(line: &str, keep: impl Fn(&str) -> bool) -> Option<Filtered<'static>> {
    let members = ordered_members(line)?;
    let result = members.iter().find(|(k, _)| k == "result")?.1;
    let result_members = ordered_members(result.get())?;
    // Matched as a case-insensitive decoder would match it, so a `Tools`
    // array cannot slip past the filter to such a client.
    let (tools_key, tools_raw) = result_members.iter().find(|(k, _)| fold_eq(k, "tools"))?;
    let (tools_key, tools_raw) = (tools_key.as_str(), *tools_raw);
    let tools: Vec<&RawValue> = serde_json::from_str(tools_raw.get()).ok()?;
    let mut removed = Vec::new();
    let mut kept = Vec::with_capacity(tools.len());
    for tool in tools {
        match tool_name(tool) {
            Some(name) if keep(&name) => kept.push(tool),
            Some(name) => removed.push(Cow::Owned(name)),
            None => removed.push(Cow::Borrowed("?")),
        }
    }
    if removed.is_empty() {
        return None;
    }
    let mut tools_json = Vec::with_capacity(tools_raw.get().len());
    tools_json.push(b'[');
    for (i, tool) in kept.iter().enumerate() {
        if i > 0 {
            tools_json.push(b',');
        }
        tools_json.extend_from_slice(tool.get().as_bytes());
    }
    tools_json.push(b']');
    let result_json = rebuild(&result_members, tools_key, &tools_json);
    let mut line = rebuild(&members, "result", &result_json);
    line.push(b'\n');
    Some(Filtered { line, removed })
}

/// The tool's name, if exactly one member is `name` in any case (a tool
/// with `name` and `Name` could be listed under either).
fn tool_name(tool: &RawValue) -> Option<String> {
    let members = ordered_members(tool.get())?;
    let mut names = members.iter().filter(|(k, _)| fold_eq(k, "name"));
    let (key, name) = names.next()?;
    if names.next().is_some() || key != "name" {
        return None;
    }
    crate::jsonrpc::json_string(name)
}

/// Re-emits an object from its members, replacing the value of `key`.
fn rebuild(members: &[(String, &RawValue)], key: &str, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replacement.len() + 64 * members.len());
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, k);
        out.push(b':');
        if k == key {
            out.extend_from_slice(replacement);
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    out
}

/// The members of a JSON object in source order, values as raw slices.
fn ordered_members(text: &str) -> Option<Vec<(String, &RawValue)>> {
    struct MembersVisitor;
    impl<'de> Visitor<'de> for MembersVisitor {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: &'de RawValue = map.next_value()?;
                members.push((key, value));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(MembersVisitor).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file","description":"r"},{"name":"delete_file"},{"description":"nameless"}],"nextCursor":"p2"},"extra":true}"#;

    /// Filters `line` both ways, from the scan's index and with serde, and
    /// checks they agree.
    fn filter_tools_list<'a>(line: &'a str, keep: impl Fn(&str) -> bool) -> Option<Filtered<'a>> {
        let parsed = filter_parsed(line, &keep);
        let Some(scanned) = crate::json_scan::scan_message(line) else {
            return parsed;
        };
        let indexed = filter_indexed(line, &scanned.tools, &keep);
        assert_eq!(indexed, parsed, "{line}");
        indexed
    }

    #[test]
    fn removes_rejected_tools_and_keeps_everything_else_in_place() {
        let filtered = filter_tools_list(LIST, |n| n == "read_file").unwrap();
        assert_eq!(filtered.removed, vec!["delete_file", "?"]);
        assert_eq!(
            std::str::from_utf8(&filtered.line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[{\"name\":\"read_file\",\"description\":\"r\"}],\"nextCursor\":\"p2\"},\"extra\":true}\n"
        );
    }

    #[test]
    fn nothing_removed_means_no_rewrite() {
        let all = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a"}]}}"#;
        assert_eq!(filter_tools_list(all, |_| true), None);
        assert_eq!(
            filter_tools_list(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, |_| false),
            None
        );
    }

    #[test]
    fn case_variant_keys_cannot_hide_tools() {
        // A `Tools` array is filtered like `tools`.
        let upper = r#"{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"rm"},{"name":"ok"}]}}"#;
        let filtered = filter_tools_list(upper, |n| n == "ok").unwrap();
        assert_eq!(filtered.removed, vec!["rm"]);
        // A tool named through `Name`, or through both spellings, is removed.
        let tricky = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"Name":"ok"},{"name":"ok","NAME":"rm"},{"name":"ok"}]}}"#;
        let filtered = filter_tools_list(tricky, |n| n == "ok").unwrap();
        assert_eq!(filtered.removed, vec!["?", "?"]);
    }

    #[test]
    fn escaped_names_are_decoded_before_the_check() {
        let line = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"del\u0065te_file"}]}}"#;
        let filtered = filter_tools_list(line, |n| n != "delete_file").unwrap();
        assert_eq!(filtered.removed, vec!["delete_file"]);
    }

    #[test]
    fn the_indexed_filter_agrees_with_the_parsed_one_on_random_lists() {
        struct Lcg(u64);
        impl Lcg {
            fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                from[((self.0 >> 33) % from.len() as u64) as usize]
            }
        }
        let mut r = Lcg(7);
        let (mut indexed, mut filtered) = (0, 0);
        for _ in 0..20_000 {
            let mut tools = Vec::new();
            for _ in 0..r.pick(&["0", "1", "2", "5"]).parse::<usize>().unwrap() {
                let tool = match r.pick(&["plain", "plain", "odd", "nested", "scalar"]) {
                    "plain" => format!(
                        r#"{{"name":"{}","description":"d \" {{ ] x"}}"#,
                        r.pick(&["ok", "rm", "del\\u0065te", "ok2", "é"])
                    ),
                    "odd" => r
                        .pick(&[
                            r#"{"Name":"ok"}"#,
                            r#"{"name":"ok","NAME":"rm"}"#,
                            r#"{"name":7}"#,
                            r#"{"name":null,"x":1}"#,
                            r#"{"n\u0061me":"ok"}"#,
                            r#"{"name":"\ud800"}"#,
                            "{}",
                        ])
                        .to_owned(),
                    "nested" => {
                        r#"{"x":{"name":"rm"},"name" : "ok" ,"y":[{"name":"rm"}]}"#.to_owned()
                    }
                    _ => r.pick(&["1", "\"ok\"", "[]", "null"]).to_owned(),
                };
                tools.push(tool);
            }
            let sep = r.pick(&[",", " , ", ",\n"]);
            let key = r.pick(&["tools", "Tools", "TOOLS", "tool", "too\\u006cs"]);
            let before = r.pick(&[
                "",
                r#""_meta":{"tools":[1]},"#,
                r#""a" : [1, {"b":"}"}] , "#,
            ]);
            let after = r.pick(&[
                "",
                r#","nextCursor":"p2""#,
                r#", "z":{"tools":[{"name":"rm"}]}"#,
            ]);
            let top = r.pick(&["", r#""extra":true,"#, r#""res\u0075lt2":{},"#]);
            let line = format!(
                r#"{{"jsonrpc":"2.0",{top}"id":3, "result" : {{{before}"{key}":[{}]{after}}}}}"#,
                tools.join(sep)
            );
            if crate::json_scan::scan_message(&line).is_some() {
                indexed += 1;
            }
            if filter_tools_list(&line, |n| n.starts_with("ok")).is_some() {
                filtered += 1;
            }
        }
        assert!(indexed > 5_000 && filtered > 5_000, "{indexed} {filtered}");
    }
}
