//! The pure part of test-upstream: the tool catalogue, `tools/list` paging and
//! the decision of what each request does. No I/O happens here; `main.rs`
//! carries out the returned [`Action`], so everything here is unit-testable.

use serde_json::{json, Value};

/// JSON-RPC error codes used by this server.
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// Protocol version answered when the client's `initialize` names none.
const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";

/// Line written to stdout by the `garbage` tool before its answer.
pub const GARBAGE_LINE: &str = "this is not json";

/// A JSON-RPC error: code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// What the I/O layer must do to answer one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer at once with this result or error.
    Reply(Result<Value, RpcError>),
    /// Exit the process with code 3 without answering.
    Crash,
    /// Sleep `ms` milliseconds, then answer "done".
    Slow { ms: u64 },
    /// Write [`GARBAGE_LINE`] to stdout, then answer "ok: garbage".
    Garbage,
    /// Send a progress and a log notification, then answer "ok: notify".
    Notify { token: Value },
    /// Send a server→client request, wait for its response, answer with it.
    AskClient { method: String, params: Value },
}

/// Server settings that influence answers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Config {
    /// Tools per `tools/list` page; `None` lists all tools on one page.
    pub page_size: Option<usize>,
}

/// Every tool: (name, description, input schema properties, required).
fn catalogue() -> Vec<(&'static str, &'static str, Value, &'static [&'static str])> {
    let path = json!({"path": {"type": "string"}});
    vec![
        (
            "echo",
            "Answers with the JSON of its arguments.",
            json!({}),
            &[],
        ),
        (
            "slow",
            "Waits `ms` milliseconds (default 500), then answers \"done\".",
            json!({"ms": {"type": "integer", "minimum": 0}}),
            &[],
        ),
        (
            "crash",
            "Exits the server with code 3 without answering.",
            json!({}),
            &[],
        ),
        (
            "garbage",
            "Writes a non-JSON line to stdout, then answers.",
            json!({}),
            &[],
        ),
        (
            "notify",
            "Sends a progress and a log notification, then answers.",
            json!({}),
            &[],
        ),
        (
            "ask_client",
            "Sends a request to the client (default sampling/createMessage) and answers with the client's response.",
            json!({"method": {"type": "string"}, "params": {"type": "object"}}),
            &[],
        ),
        ("read_file", "Pretends to read a file.", path.clone(), &["path"]),
        (
            "write_file",
            "Pretends to write a file.",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
            &["path"],
        ),
        (
            "list_directory",
            "Pretends to list a directory.",
            path.clone(),
            &["path"],
        ),
        ("delete_file", "Pretends to delete a file.", path, &["path"]),
    ]
}

/// The full tool list, in a fixed order.
pub fn tool_list() -> Vec<Value> {
    catalogue()
        .into_iter()
        .map(|(name, description, properties, required)| {
            let mut schema = json!({"type": "object", "properties": properties});
            if !required.is_empty() {
                schema["required"] = json!(required);
            }
            json!({"name": name, "description": description, "inputSchema": schema})
        })
        .collect()
}

/// One page of `items`: the page selected by `cursor` (`None` = first page,
/// otherwise "page-N", N counting from 1) and the cursor of the next page.
pub fn page<T: Clone>(
    items: &[T],
    page_size: Option<usize>,
    cursor: Option<&str>,
) -> Result<(Vec<T>, Option<String>), String> {
    let size = page_size.unwrap_or(items.len()).max(1);
    let number = match cursor {
        None => 1,
        Some(c) => c
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("invalid cursor {c:?}"))?,
    };
    let start = (number - 1)
        .checked_mul(size)
        .ok_or_else(|| "cursor out of range".to_string())?;
    if start > items.len() || (start == items.len() && number > 1) {
        return Err("cursor out of range".to_string());
    }
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| format!("page-{}", number + 1));
    Ok((items[start..end].to_vec(), next))
}

/// A successful `tools/call` result carrying one text block.
pub fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// The `tools/call` result for `ask_client`, given the client's response:
/// the JSON of its `result`, or of its `error` (then marked `isError`).
pub fn ask_client_result(response: &Value) -> Value {
    if let Some(result) = response.get("result") {
        text_result(&result.to_string())
    } else {
        let error = response.get("error").cloned().unwrap_or(Value::Null);
        json!({"content": [{"type": "text", "text": error.to_string()}], "isError": true})
    }
}

/// The progress notification sent by `notify`.
pub fn progress_notification(token: &Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": token, "progress": 1, "total": 1, "message": "notify tool working"}
    })
}

/// The log notification sent by `notify`.
pub fn log_notification() -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "logger": "test-upstream", "data": "notify tool called"}
    })
}

/// Decides how to answer a request (`method`, `params`; `params` is `Null`
/// when absent).
pub fn handle_request(config: &Config, method: &str, params: &Value) -> Action {
    match method {
        "initialize" => {
            let version = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_PROTOCOL_VERSION);
            Action::Reply(Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "test-upstream", "version": "1.0.0"},
                "instructions": "test server"
            })))
        }
        "ping" => Action::Reply(Ok(json!({}))),
        "tools/list" => Action::Reply(list_tools(config, params)),
        "tools/call" => call_tool(params),
        _ => Action::Reply(Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        ))),
    }
}

fn list_tools(config: &Config, params: &Value) -> Result<Value, RpcError> {
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err(RpcError::new(INVALID_PARAMS, "cursor must be a string")),
    };
    let (tools, next) = page(&tool_list(), config.page_size, cursor)
        .map_err(|e| RpcError::new(INVALID_PARAMS, e))?;
    let mut result = json!({"tools": tools});
    if let Some(next) = next {
        result["nextCursor"] = json!(next);
    }
    Ok(result)
}

fn call_tool(params: &Value) -> Action {
    let invalid = |message: String| Action::Reply(Err(RpcError::new(INVALID_PARAMS, message)));
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return invalid("tools/call needs a string `name`".to_string());
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => return invalid("`arguments` must be an object".to_string()),
    };
    match name {
        "echo" => Action::Reply(Ok(text_result(&arguments.to_string()))),
        "slow" => match arguments.get("ms") {
            None | Some(Value::Null) => Action::Slow { ms: 500 },
            Some(ms) => match ms.as_u64() {
                Some(ms) => Action::Slow { ms },
                None => invalid("`ms` must be a non-negative integer".to_string()),
            },
        },
        "crash" => Action::Crash,
        "garbage" => Action::Garbage,
        "notify" => Action::Notify {
            token: params
                .get("_meta")
                .and_then(|m| m.get("progressToken"))
                .filter(|t| t.is_string() || t.is_number())
                .cloned()
                .unwrap_or_else(|| json!("t")),
        },
        "ask_client" => {
            let method = match arguments.get("method") {
                None | Some(Value::Null) => "sampling/createMessage",
                Some(Value::String(m)) => m.as_str(),
                Some(_) => return invalid("`method` must be a string".to_string()),
            };
            let params = match arguments.get("params") {
                Some(p) if !p.is_null() => p.clone(),
                _ if method == "sampling/createMessage" => json!({
                    "messages": [{"role": "user", "content": {"type": "text", "text": "hello from test-upstream"}}],
                    "maxTokens": 16
                }),
                _ => json!({}),
            };
            Action::AskClient {
                method: method.to_string(),
                params,
            }
        }
        "read_file" | "write_file" | "list_directory" | "delete_file" => {
            Action::Reply(Ok(text_result(&format!("ok: {name}"))))
        }
        _ => invalid(format!("unknown tool: {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tools: &[Value]) -> Vec<&str> {
        tools.iter().filter_map(|t| t["name"].as_str()).collect()
    }

    #[test]
    fn catalogue_has_every_tool_with_an_object_schema() {
        let tools = tool_list();
        assert_eq!(
            names(&tools),
            [
                "echo",
                "slow",
                "crash",
                "garbage",
                "notify",
                "ask_client",
                "read_file",
                "write_file",
                "list_directory",
                "delete_file"
            ]
        );
        for tool in &tools {
            assert_eq!(tool["inputSchema"]["type"], "object");
            assert!(tool["description"].is_string());
        }
    }

    #[test]
    fn paging_walks_all_items_once() {
        let items: Vec<u32> = (0..10).collect();
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (page_items, next) = page(&items, Some(4), cursor.as_deref()).unwrap();
            seen.extend(page_items);
            pages += 1;
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert_eq!(pages, 3);
        assert_eq!(
            page(&items, Some(4), None).unwrap().1.as_deref(),
            Some("page-2")
        );
        assert_eq!(page(&items, Some(5), Some("page-2")).unwrap().1, None);
    }

    #[test]
    fn paging_without_size_is_one_page_and_rejects_bad_cursors() {
        let items: Vec<u32> = (0..3).collect();
        assert_eq!(page(&items, None, None).unwrap(), (items.clone(), None));
        assert_eq!(page(&items, None, Some("page-1")).unwrap().0, items);
        for bad in ["page-0", "page-x", "2", "", "page-99999999999999999999"] {
            assert!(page(&items, Some(2), Some(bad)).is_err(), "{bad}");
        }
        assert!(page(&items, Some(2), Some("page-2")).is_ok());
        assert!(page(&items, Some(2), Some("page-3")).is_err());
        assert!(page(&items, None, Some("page-2")).is_err());
        let empty: Vec<u32> = Vec::new();
        assert_eq!(page(&empty, Some(2), None).unwrap(), (vec![], None));
    }

    #[test]
    fn tools_list_pages_and_cursor_errors() {
        let config = Config { page_size: Some(4) };
        let Action::Reply(Ok(first)) = handle_request(&config, "tools/list", &Value::Null) else {
            panic!("expected a result");
        };
        assert_eq!(first["tools"].as_array().unwrap().len(), 4);
        assert_eq!(first["nextCursor"], "page-2");
        let Action::Reply(Ok(last)) =
            handle_request(&config, "tools/list", &json!({"cursor": "page-3"}))
        else {
            panic!("expected a result");
        };
        assert_eq!(
            names(last["tools"].as_array().unwrap()),
            ["list_directory", "delete_file"]
        );
        assert!(last.get("nextCursor").is_none());
        let bad = handle_request(&config, "tools/list", &json!({"cursor": 7}));
        assert!(matches!(
            bad,
            Action::Reply(Err(RpcError {
                code: INVALID_PARAMS,
                ..
            }))
        ));
    }

    #[test]
    fn initialize_echoes_version_and_unknown_things_fail() {
        let config = Config::default();
        let Action::Reply(Ok(init)) = handle_request(
            &config,
            "initialize",
            &json!({"protocolVersion": "2024-11-05", "capabilities": {}}),
        ) else {
            panic!("expected a result");
        };
        assert_eq!(init["protocolVersion"], "2024-11-05");
        assert_eq!(init["serverInfo"]["name"], "test-upstream");
        assert_eq!(init["capabilities"]["tools"]["listChanged"], true);
        assert!(matches!(
            handle_request(&config, "resources/list", &Value::Null),
            Action::Reply(Err(RpcError {
                code: METHOD_NOT_FOUND,
                ..
            }))
        ));
        assert!(matches!(
            handle_request(&config, "tools/call", &json!({"name": "nope"})),
            Action::Reply(Err(RpcError {
                code: INVALID_PARAMS,
                ..
            }))
        ));
        assert!(matches!(
            handle_request(&config, "tools/call", &json!({"arguments": {}})),
            Action::Reply(Err(RpcError {
                code: INVALID_PARAMS,
                ..
            }))
        ));
    }

    #[test]
    fn tool_calls_map_to_actions() {
        let config = Config::default();
        let call = |name: &str, args: Value| {
            handle_request(
                &config,
                "tools/call",
                &json!({"name": name, "arguments": args}),
            )
        };
        assert_eq!(
            call("echo", json!({"a": 1})),
            Action::Reply(Ok(text_result(r#"{"a":1}"#)))
        );
        assert_eq!(call("slow", json!({})), Action::Slow { ms: 500 });
        assert_eq!(call("slow", json!({"ms": 20})), Action::Slow { ms: 20 });
        assert!(matches!(
            call("slow", json!({"ms": -1})),
            Action::Reply(Err(_))
        ));
        assert_eq!(call("crash", json!({})), Action::Crash);
        assert_eq!(call("garbage", json!({})), Action::Garbage);
        assert_eq!(
            call("notify", json!({})),
            Action::Notify { token: json!("t") }
        );
        assert_eq!(
            handle_request(
                &config,
                "tools/call",
                &json!({"name": "notify", "_meta": {"progressToken": 42}})
            ),
            Action::Notify { token: json!(42) }
        );
        let Action::AskClient { method, params } = call("ask_client", json!({})) else {
            panic!("expected AskClient");
        };
        assert_eq!(method, "sampling/createMessage");
        assert!(params["messages"].is_array());
        assert_eq!(
            call("ask_client", json!({"method": "roots/list"})),
            Action::AskClient {
                method: "roots/list".into(),
                params: json!({})
            }
        );
        assert_eq!(
            call("delete_file", json!({"path": "x"})),
            Action::Reply(Ok(text_result("ok: delete_file")))
        );
    }

    #[test]
    fn ask_client_result_reports_result_or_error() {
        let ok = ask_client_result(&json!({"jsonrpc": "2.0", "id": "srv-1", "result": {"x": 1}}));
        assert_eq!(ok, text_result(r#"{"x":1}"#));
        let err =
            ask_client_result(&json!({"id": "srv-1", "error": {"code": -1, "message": "no"}}));
        assert_eq!(err["isError"], true);
        assert_eq!(err["content"][0]["text"], r#"{"code":-1,"message":"no"}"#);
    }
}
