//! Removing tools from a `tools/list` response without disturbing the rest.
//!
//! The response is rebuilt from the raw slices of the original line: every
//! member keeps its bytes and its order, and only rejected entries of
//! `result.tools` disappear. When nothing is removed the caller forwards the
//! original line untouched.

use crate::jsonrpc::write_json_string;
use crate::strict_json::fold_eq;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The outcome of filtering one `tools/list` result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filtered {
    /// The rebuilt line (with trailing newline).
    pub line: Vec<u8>,
    /// Names of the removed tools, in list order (unnamed entries as `?`).
    pub removed: Vec<String>,
}

/// Filters `result.tools` of a response line, keeping the tools for which
/// `keep(name)` is true. Entries without a string `name` are removed (a
/// policy cannot judge them). Returns `None` when nothing was removed or the
/// result has no `tools` array.
pub(crate) fn filter_tools_list(line: &str, keep: impl Fn(&str) -> bool) -> Option<Filtered> {
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
            Some(name) => removed.push(name),
            None => removed.push("?".to_owned()),
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
}
