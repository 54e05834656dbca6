//! The filesystem MCP server behind `gatekit demo`: a small stand-in for
//! `@modelcontextprotocol/server-filesystem`, built into the binary so the
//! demo needs neither Node nor network. It serves MCP on stdin/stdout and
//! touches nothing outside its root directory.
//!
//! Tools (named as in the real server): `read_file`, `write_file`,
//! `create_directory`, `list_directory`, `search_files` and `delete_file`.
//! `delete_file` is not in the tutorial's allowlist, so the demo can show the
//! gateway blocking it.

use serde_json::{json, Value};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Component, Path, PathBuf};

/// Protocol version answered when the client's `initialize` names none.
const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Serves MCP on stdin/stdout until stdin closes, confined to `root`.
pub fn run(root: &Path) -> io::Result<()> {
    let real_root = fs::canonicalize(root)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", root.display())))?;
    if !real_root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let reply = match std::str::from_utf8(&buf) {
            Ok(line) => handle_line(root, line),
            Err(_) => Some(error_reply(
                &Value::Null,
                PARSE_ERROR,
                "parse error: not UTF-8",
            )),
        };
        if let Some(reply) = reply {
            output.write_all(reply.as_bytes())?;
            output.write_all(b"\n")?;
            output.flush()?;
        }
    }
}

/// Answers one line of input: the reply line to write (without newline), or
/// `None` when the line needs no reply (blank line, notification, response).
fn handle_line(root: &Path, line: &str) -> Option<String> {
    if line.trim().is_empty() {
        return None;
    }
    let message: Value = match serde_json::from_str(line) {
        Ok(message) => message,
        Err(e) => {
            return Some(error_reply(
                &Value::Null,
                PARSE_ERROR,
                &format!("parse error: {e}"),
            ))
        }
    };
    let Some(object) = message.as_object() else {
        return Some(error_reply(
            &Value::Null,
            INVALID_REQUEST,
            "expected a JSON-RPC object",
        ));
    };
    let id = match object.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => {
            return Some(error_reply(
                &Value::Null,
                INVALID_REQUEST,
                "id must be a string or a number",
            ))
        }
    };
    let method = match object.get("method") {
        Some(Value::String(method)) => method.as_str(),
        // A response to a request this server never sends: nothing to do.
        None if id.is_some() && (object.contains_key("result") || object.contains_key("error")) => {
            return None
        }
        _ => {
            return Some(error_reply(
                id.unwrap_or(&Value::Null),
                INVALID_REQUEST,
                "method must be a string",
            ))
        }
    };
    // Notifications (no id) get no reply, whatever they are.
    let id = id?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error_reply(id, INVALID_REQUEST, "jsonrpc must be \"2.0\""));
    }
    let params = object.get("params").unwrap_or(&Value::Null);
    let result = match method {
        "initialize" => Ok(initialize_result(params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tool_list()})),
        "tools/call" => call_tool(root, params),
        _ => Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
        Err((code, message)) => error_reply(id, code, &message),
    })
}

fn error_reply(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

fn initialize_result(params: &Value) -> Value {
    let version = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "gatekit-demo-filesystem", "version": env!("CARGO_PKG_VERSION")}
    })
}

fn tool_list() -> Value {
    let string = json!({"type": "string"});
    let schema = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    json!([
        {
            "name": "read_file",
            "description": "Read the complete contents of a text file.",
            "inputSchema": schema(json!({"path": string}), &["path"])
        },
        {
            "name": "write_file",
            "description": "Create a new file or overwrite an existing file with the given content.",
            "inputSchema": schema(json!({"path": string, "content": string}), &["path", "content"])
        },
        {
            "name": "create_directory",
            "description": "Create a directory, including missing parent directories.",
            "inputSchema": schema(json!({"path": string}), &["path"])
        },
        {
            "name": "list_directory",
            "description": "List a directory's entries, marked [FILE] or [DIR].",
            "inputSchema": schema(json!({"path": string}), &["path"])
        },
        {
            "name": "search_files",
            "description": "Recursively find files and directories whose names contain the pattern (case-insensitive).",
            "inputSchema": schema(json!({"path": string, "pattern": string}), &["path", "pattern"])
        },
        {
            "name": "delete_file",
            "description": "Delete a file.",
            "inputSchema": schema(json!({"path": string}), &["path"])
        }
    ])
}

/// Runs a `tools/call`. Protocol problems (no name, unknown tool) are
/// JSON-RPC errors; problems with the call itself are tool error results.
fn call_tool(root: &Path, params: &Value) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((INVALID_PARAMS, "tools/call needs a string `name`".into()));
    };
    let empty = json!({});
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(arguments @ Value::Object(_)) => arguments,
        Some(_) => return Err((INVALID_PARAMS, "`arguments` must be an object".into())),
    };
    let outcome = match name {
        "read_file" => read_file(root, arguments),
        "write_file" => write_file(root, arguments),
        "create_directory" => create_directory(root, arguments),
        "list_directory" => list_directory(root, arguments),
        "search_files" => search_files(root, arguments),
        "delete_file" => delete_file(root, arguments),
        _ => return Err((INVALID_PARAMS, format!("unknown tool: {name}"))),
    };
    Ok(match outcome {
        Ok(text) => json!({"content": [{"type": "text", "text": text}]}),
        Err(message) => {
            json!({"content": [{"type": "text", "text": format!("Error: {message}")}], "isError": true})
        }
    })
}

fn string_argument<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, String> {
    arguments
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string argument `{name}`"))
}

/// The sandbox root, as given and as its real (canonical) path.
struct Sandbox {
    given: PathBuf,
    real: PathBuf,
}

impl Sandbox {
    fn open(root: &Path) -> Result<Sandbox, String> {
        let real = fs::canonicalize(root).map_err(|e| format!("cannot open the sandbox: {e}"))?;
        Ok(Sandbox {
            given: root.to_path_buf(),
            real,
        })
    }

    /// The real path for `requested`, which is relative to the root or an
    /// absolute path inside it. Refuses `..`, and any path whose existing
    /// part resolves (through symlinks) to somewhere outside the root.
    fn resolve(&self, requested: &str) -> Result<PathBuf, String> {
        let outside = || format!("access denied: {requested} is outside the sandbox");
        let requested_path = Path::new(requested);
        let relative = if requested_path.is_absolute() {
            requested_path
                .strip_prefix(&self.given)
                .or_else(|_| requested_path.strip_prefix(&self.real))
                .map_err(|_| outside())?
        } else {
            requested_path
        };
        let mut path = self.real.clone();
        for component in relative.components() {
            match component {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside())
                }
            }
        }
        // Canonicalize the deepest part that exists (a dangling symlink
        // counts as existing and fails here); the rest are plain names.
        let mut existing = path.as_path();
        let mut missing = Vec::new();
        while fs::symlink_metadata(existing).is_err() {
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name);
                    existing = parent;
                }
                _ => return Err(outside()),
            }
        }
        let mut resolved = fs::canonicalize(existing).map_err(|_| outside())?;
        if !resolved.starts_with(&self.real) {
            return Err(outside());
        }
        for name in missing.iter().rev() {
            resolved.push(name);
        }
        Ok(resolved)
    }

    /// Resolves the `path` argument.
    fn path_argument(&self, arguments: &Value) -> Result<PathBuf, String> {
        self.resolve(string_argument(arguments, "path")?)
    }
}

fn read_file(root: &Path, arguments: &Value) -> Result<String, String> {
    let path = Sandbox::open(root)?.path_argument(arguments)?;
    fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", shown(arguments)))
}

fn write_file(root: &Path, arguments: &Value) -> Result<String, String> {
    let path = Sandbox::open(root)?.path_argument(arguments)?;
    let content = string_argument(arguments, "content")?;
    fs::write(&path, content).map_err(|e| format!("cannot write {}: {e}", shown(arguments)))?;
    Ok(format!("Successfully wrote to {}", shown(arguments)))
}

fn create_directory(root: &Path, arguments: &Value) -> Result<String, String> {
    let path = Sandbox::open(root)?.path_argument(arguments)?;
    fs::create_dir_all(&path)
        .map_err(|e| format!("cannot create directory {}: {e}", shown(arguments)))?;
    Ok(format!(
        "Successfully created directory {}",
        shown(arguments)
    ))
}

fn list_directory(root: &Path, arguments: &Value) -> Result<String, String> {
    let path = Sandbox::open(root)?.path_argument(arguments)?;
    let cannot = |e: io::Error| format!("cannot list {}: {e}", shown(arguments));
    let mut entries = Vec::new();
    for entry in fs::read_dir(&path).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        // Symlinks are not followed, as in the real server: they list as files.
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        entries.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
    }
    entries.sort();
    Ok(entries
        .iter()
        .map(|(name, is_dir)| format!("{} {name}", if *is_dir { "[DIR]" } else { "[FILE]" }))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn search_files(root: &Path, arguments: &Value) -> Result<String, String> {
    let sandbox = Sandbox::open(root)?;
    let start = sandbox.path_argument(arguments)?;
    let pattern = string_argument(arguments, "pattern")?.to_lowercase();
    if !start.is_dir() {
        return Err(format!("{} is not a directory", shown(arguments)));
    }
    let mut found = Vec::new();
    // An explicit stack, so deep trees cannot overflow the call stack;
    // symlinked directories are not entered, so the walk stays inside.
    let mut pending = vec![start];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .to_lowercase()
                .contains(&pattern)
            {
                if let Ok(relative) = path.strip_prefix(&sandbox.real) {
                    let parts: Vec<_> = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect();
                    found.push(parts.join("/"));
                }
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                pending.push(path);
            }
        }
    }
    if found.is_empty() {
        return Ok("No matches found".to_string());
    }
    found.sort();
    Ok(found.join("\n"))
}

fn delete_file(root: &Path, arguments: &Value) -> Result<String, String> {
    let path = Sandbox::open(root)?.path_argument(arguments)?;
    if path.is_dir() {
        return Err(format!(
            "{} is a directory; delete_file deletes files only",
            shown(arguments)
        ));
    }
    fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", shown(arguments)))?;
    Ok(format!("Successfully deleted {}", shown(arguments)))
}

/// The `path` argument as the client wrote it, for messages.
fn shown(arguments: &Value) -> &str {
    arguments.get("path").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "gatekit-demo-server-test-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ));
            fs::create_dir_all(dir.join("root/projects")).unwrap();
            fs::write(dir.join("root/readme.txt"), "Hello from the sandbox!\n").unwrap();
            fs::write(dir.join("root/projects/Info.txt"), "Project info\n").unwrap();
            fs::write(dir.join("secret.txt"), "outside\n").unwrap();
            TempDir(dir)
        }

        fn root(&self) -> PathBuf {
            self.0.join("root")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn request(root: &Path, method: &str, params: Value) -> Value {
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let reply = handle_line(root, &line.to_string()).expect("a reply");
        serde_json::from_str(&reply).expect("the reply is JSON")
    }

    /// Calls a tool; returns (text, is_error).
    fn call(root: &Path, tool: &str, arguments: Value) -> (String, bool) {
        let reply = request(
            root,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        );
        let result = &reply["result"];
        let text = result["content"][0]["text"].as_str().expect("text content");
        (text.to_string(), result["isError"] == json!(true))
    }

    #[test]
    fn paths_resolve_inside_the_root_only() {
        let dir = TempDir::new();
        let sandbox = Sandbox::open(&dir.root()).unwrap();
        let real = fs::canonicalize(dir.root()).unwrap();
        assert_eq!(
            sandbox.resolve("readme.txt").unwrap(),
            real.join("readme.txt")
        );
        assert_eq!(sandbox.resolve("").unwrap(), real);
        assert_eq!(
            sandbox.resolve("./projects/").unwrap(),
            real.join("projects")
        );
        assert_eq!(
            sandbox.resolve("new/deeper/file").unwrap(),
            real.join("new/deeper/file")
        );
        let absolute = dir.root().join("readme.txt");
        assert_eq!(
            sandbox.resolve(absolute.to_str().unwrap()).unwrap(),
            real.join("readme.txt")
        );
        let real_absolute = real.join("projects");
        assert!(sandbox.resolve(real_absolute.to_str().unwrap()).is_ok());
        let outside = dir.0.join("secret.txt");
        for bad in [
            "../secret.txt",
            "projects/../../secret.txt",
            "projects/../readme.txt",
            "..",
            "/",
            "/etc/passwd",
            outside.to_str().unwrap(),
        ] {
            let error = sandbox.resolve(bad).unwrap_err();
            assert!(error.contains("outside the sandbox"), "{bad}: {error}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_leading_outside_are_refused() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new();
        let root = dir.root();
        symlink(&dir.0, root.join("escape")).unwrap();
        symlink(dir.0.join("secret.txt"), root.join("secret-link")).unwrap();
        symlink(dir.0.join("not-there.txt"), root.join("dangling")).unwrap();
        symlink(root.join("readme.txt"), root.join("inner-link")).unwrap();

        let (text, is_error) = call(&root, "read_file", json!({"path": "escape/secret.txt"}));
        assert!(is_error && text.starts_with("Error: "), "{text}");
        let (_, is_error) = call(&root, "read_file", json!({"path": "secret-link"}));
        assert!(is_error);
        let (_, is_error) = call(
            &root,
            "write_file",
            json!({"path": "escape/new.txt", "content": "x"}),
        );
        assert!(is_error);
        assert!(!dir.0.join("new.txt").exists());
        let (_, is_error) = call(
            &root,
            "write_file",
            json!({"path": "dangling", "content": "x"}),
        );
        assert!(is_error);
        assert!(!dir.0.join("not-there.txt").exists());
        let (_, is_error) = call(&root, "create_directory", json!({"path": "escape/made"}));
        assert!(is_error);
        assert!(!dir.0.join("made").exists());
        let (_, is_error) = call(&root, "delete_file", json!({"path": "secret-link"}));
        assert!(is_error);
        assert!(dir.0.join("secret.txt").exists());
        let (text, is_error) = call(&root, "read_file", json!({"path": "inner-link"}));
        assert_eq!(
            (text.as_str(), is_error),
            ("Hello from the sandbox!\n", false)
        );
        // The search neither follows the symlinked directory nor reports outside names.
        let (text, _) = call(
            &root,
            "search_files",
            json!({"path": "", "pattern": "secret"}),
        );
        assert_eq!(text, "secret-link");
    }

    #[test]
    fn read_and_write_files() {
        let dir = TempDir::new();
        let root = dir.root();
        let (text, is_error) = call(&root, "read_file", json!({"path": "readme.txt"}));
        assert_eq!(
            (text.as_str(), is_error),
            ("Hello from the sandbox!\n", false)
        );
        let absolute = root.join("audit-test.txt");
        let (text, is_error) = call(
            &root,
            "write_file",
            json!({"path": absolute.to_str().unwrap(), "content": "Testing audit logging!"}),
        );
        assert!(!is_error, "{text}");
        assert!(text.starts_with("Successfully wrote to"));
        assert_eq!(
            fs::read_to_string(&absolute).unwrap(),
            "Testing audit logging!"
        );
        let (_, is_error) = call(&root, "read_file", json!({"path": "missing.txt"}));
        assert!(is_error);
        let (_, is_error) = call(&root, "read_file", json!({"path": "projects"}));
        assert!(is_error);
        let (text, is_error) = call(&root, "write_file", json!({"path": "x.txt"}));
        assert!(is_error && text.contains("content"), "{text}");
        let (text, is_error) = call(&root, "read_file", json!({"path": 5}));
        assert!(is_error && text.contains("path"), "{text}");
    }

    #[test]
    fn create_and_list_directories() {
        let dir = TempDir::new();
        let root = dir.root();
        let (text, is_error) = call(&root, "create_directory", json!({"path": "a/b"}));
        assert!(!is_error, "{text}");
        assert!(root.join("a/b").is_dir());
        let (text, is_error) = call(&root, "list_directory", json!({"path": "."}));
        assert!(!is_error);
        assert_eq!(text, "[DIR] a\n[DIR] projects\n[FILE] readme.txt");
        let (text, _) = call(&root, "list_directory", json!({"path": "projects"}));
        assert_eq!(text, "[FILE] Info.txt");
        let (_, is_error) = call(&root, "list_directory", json!({"path": "readme.txt"}));
        assert!(is_error);
    }

    #[test]
    fn search_is_recursive_and_case_insensitive() {
        let dir = TempDir::new();
        let root = dir.root();
        fs::write(root.join("info-top.md"), "").unwrap();
        let (text, is_error) = call(
            &root,
            "search_files",
            json!({"path": "", "pattern": "INFO"}),
        );
        assert!(!is_error);
        assert_eq!(text, "info-top.md\nprojects/Info.txt");
        let (text, _) = call(
            &root,
            "search_files",
            json!({"path": "projects", "pattern": "info"}),
        );
        assert_eq!(text, "projects/Info.txt");
        let (text, _) = call(&root, "search_files", json!({"path": "", "pattern": "zzz"}));
        assert_eq!(text, "No matches found");
        let (_, is_error) = call(&root, "search_files", json!({"path": ""}));
        assert!(is_error);
        let (_, is_error) = call(&root, "search_files", json!({"path": "..", "pattern": "s"}));
        assert!(is_error);
    }

    #[test]
    fn delete_files_but_not_directories() {
        let dir = TempDir::new();
        let root = dir.root();
        let (text, is_error) = call(&root, "delete_file", json!({"path": "readme.txt"}));
        assert!(!is_error, "{text}");
        assert!(!root.join("readme.txt").exists());
        let (_, is_error) = call(&root, "delete_file", json!({"path": "projects"}));
        assert!(is_error);
        assert!(root.join("projects").is_dir());
        let (_, is_error) = call(&root, "delete_file", json!({"path": "../secret.txt"}));
        assert!(is_error);
        assert!(dir.0.join("secret.txt").exists());
    }

    #[test]
    fn protocol_methods() {
        let dir = TempDir::new();
        let root = dir.root();
        let init = request(
            &root,
            "initialize",
            json!({"protocolVersion": "2025-03-26"}),
        );
        assert_eq!(init["id"], 1);
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(
            init["result"]["serverInfo"]["name"],
            "gatekit-demo-filesystem"
        );
        assert_eq!(init["result"]["capabilities"], json!({"tools": {}}));
        assert_eq!(request(&root, "ping", Value::Null)["result"], json!({}));
        let list = request(&root, "tools/list", json!({}));
        let names: Vec<&str> = list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "read_file",
                "write_file",
                "create_directory",
                "list_directory",
                "search_files",
                "delete_file"
            ]
        );
        for tool in list["result"]["tools"].as_array().unwrap() {
            assert_eq!(tool["inputSchema"]["type"], "object");
        }
        assert_eq!(
            request(&root, "resources/list", json!({}))["error"]["code"],
            METHOD_NOT_FOUND
        );
        let unknown = request(
            &root,
            "tools/call",
            json!({"name": "rm_rf", "arguments": {}}),
        );
        assert_eq!(unknown["error"]["code"], INVALID_PARAMS);
        let no_name = request(&root, "tools/call", json!({}));
        assert_eq!(no_name["error"]["code"], INVALID_PARAMS);
        let bad_arguments = request(
            &root,
            "tools/call",
            json!({"name": "read_file", "arguments": [1]}),
        );
        assert_eq!(bad_arguments["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn bad_input_gets_errors_or_silence_never_a_panic() {
        let dir = TempDir::new();
        let root = dir.root();
        let code = |line: &str| -> Value {
            let reply: Value =
                serde_json::from_str(&handle_line(&root, line).expect("a reply")).unwrap();
            reply["error"]["code"].clone()
        };
        assert_eq!(code("not json"), PARSE_ERROR);
        assert_eq!(code("{\"jsonrpc\":\"2.0\",\"id\":1"), PARSE_ERROR);
        assert_eq!(code("[]"), INVALID_REQUEST);
        assert_eq!(
            code("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]"),
            INVALID_REQUEST
        );
        assert_eq!(code("42"), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            INVALID_REQUEST
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","method":7}"#), INVALID_REQUEST);
        assert_eq!(code("{}"), INVALID_REQUEST);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}"#),
            INVALID_PARAMS
        );
        assert_eq!(handle_line(&root, ""), None);
        assert_eq!(handle_line(&root, "  \r"), None);
        assert_eq!(
            handle_line(
                &root,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
            ),
            None
        );
        assert_eq!(
            handle_line(
                &root,
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file"}}"#
            ),
            None
        );
        assert_eq!(
            handle_line(&root, r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            None
        );
        let ping: Value = serde_json::from_str(
            &handle_line(&root, r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(ping, json!({"jsonrpc": "2.0", "id": "a", "result": {}}));
    }
}
