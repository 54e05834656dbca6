//! The sans-IO core of Gatekit, an MCP gateway.
//!
//! A [`Gateway`] is a pure state machine. It never reads a clock, touches a
//! file, spawns a process or blocks: the host feeds it what happened, with
//! the time it happened, and carries out what it asks for. That is what lets
//! the same core run under blocking threads, under an async executor, inside
//! a custom host, and in a replay of a recorded session, with identical
//! results.
//!
//! # The driving loop
//!
//! 1. Build a [`Gateway`] from a [`Config`].
//! 2. Feed one [`Input`] with the current time: bytes from the client or the
//!    upstream, an EOF, the upstream's exit, or [`Input::Timeout`].
//! 3. Call [`Gateway::poll_output`] until it returns [`Output::Wait`], and
//!    carry out each [`Output`] in order (audit records come before the
//!    message they describe, so writing them in order keeps that promise).
//! 4. Wait for I/O, or until the deadline in `Output::Wait`, then go to 2.
//! 5. Stop after carrying out [`Output::Exit`].
//!
//! Two rules keep a host correct. Drain to [`Output::Wait`] after every
//! input, because the deadline it returns may have moved. And when an
//! [`Output::Audit`] cannot be written, report it with
//! [`Input::AuditWriteFailed`] *before* polling the next output: the message
//! that record described is still queued, and a critical audit log must be
//! able to withhold it.
//!
//! `examples/embedded_host.rs` is a complete host that drives a gateway over
//! in-memory streams with an in-process server and a fake clock — no
//! runtime, no threads — and a test runs it.
//!
//! # Modules
//!
//! - [`config`]: the configuration, in the tutorial's YAML shape (any serde
//!   format works; the CLI reads YAML).
//! - [`audit`]: audit records, their four formats, modes and rotation.
//! - [`capture`] and [`replay`]: recording what a gateway was fed, and
//!   replaying it to the same outputs, with what-if comparison of policies.
//! - [`jsonrpc`]: request ids, the gateway's error codes, and the reply a
//!   host sends when it cannot start at all.
//!
//! ```
//! use gatekit_core::{Config, Gateway, Input, Output};
//!
//! let yaml_as_json = r#"{"proxy": {"upstream": {"command": "my-server"}}}"#;
//! let config: Config = serde_json::from_str(yaml_as_json).unwrap();
//! let mut gateway = Gateway::new(&config);
//! let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
//!
//! gateway.handle_input(Input::ClientBytes(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n"), now);
//! let mut to_upstream = Vec::new();
//! loop {
//!     match gateway.poll_output() {
//!         Output::ToUpstream(bytes) => to_upstream.extend(bytes),
//!         Output::Wait(_) => break,
//!         _ => {}
//!     }
//! }
//! assert_eq!(to_upstream, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod capture;
pub mod config;
mod framing;
mod gateway;
mod json_scan;
mod json_walk;
pub mod jsonrpc;
mod output_queue;
mod policy;
pub mod replay;
mod rotation;
mod strict_json;
mod tools_filter;

pub use audit::{AuditRecord, AuditSinkId, AuditWrite, EventType, IdText, PluginMetadata, Source};
pub use config::Config;
pub use gateway::{audit_sinks, ExitStatus, Gateway, GatewayStats, Input, Output, UpstreamSignal};
