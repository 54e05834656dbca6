//! The `tools/list` answer of the benchmark's echo server, shared by the
//! server (`bin/bench-echo.rs`) and the core-only replay, so both measure
//! the very same bytes.

/// Tools the benchmark configs allow (the echo lists them among the rest).
pub const ALLOWED_TOOLS: [&str; 5] = [
    "echo",
    "read_file",
    "write_file",
    "list_directory",
    "search_files",
];

/// The `result` of `tools/list`: the five tools the benchmark configs allow,
/// spread over the list, and `tool_NNN` fillers, each with a description
/// and an input schema like real servers send (about 200 bytes a tool).
pub fn tools_list_result(count: usize) -> Vec<u8> {
    let spacing = (count / ALLOWED_TOOLS.len()).max(1);
    let mut out = Vec::with_capacity(count * 220 + 32);
    out.extend_from_slice(b"{\"tools\":[");
    let mut allowed = ALLOWED_TOOLS.iter();
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        let name = match (i % spacing == 0).then(|| allowed.next()).flatten() {
            Some(name) => (*name).to_owned(),
            None => format!("tool_{i:03}"),
        };
        out.extend_from_slice(
            format!(
                "{{\"name\":\"{name}\",\"description\":\"Benchmark tool {name}: echoes the text it is given, for measuring gateway overhead.\",\"inputSchema\":{{\"type\":\"object\",\"properties\":{{\"text\":{{\"type\":\"string\"}}}},\"required\":[\"text\"]}}}}"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"]}");
    out
}
