//! The `Gateway` state machine: bytes and timestamps in, actions out.

use crate::audit::{
    AuditRecord, AuditSink, AuditSinkId, AuditWrite, EventType, PluginMetadata, Source,
};
use crate::config::{AuditingPlugin, Config, FileAuditingConfig, Limits, SecurityPlugin};
use crate::framing::{Frame, LineFramer};
use crate::json_scan::CallMembers;
use crate::json_walk::{skip_ws, string_end, value_end};
use crate::jsonrpc::{
    self, error_response, owned_method, parse_message, Message, Outcome, Rejection, RequestId,
    Shape,
};
use crate::output_queue::{Forwarded, OutputQueue, Peer};
use crate::policy::{CallDecision, SecurityPolicies, ToolAllowlist};
use crate::tools_filter::filter_tools_list;
use jiff::{SignedDuration, Timestamp};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

/// How long the upstream gets after its stdin is closed before SIGTERM, and
/// after SIGTERM before SIGKILL.
const SHUTDOWN_GRACE: SignedDuration = SignedDuration::from_secs(2);
/// How long to wait, once the upstream process has exited, for the last
/// bytes of its stdout (which a reader thread may still be delivering).
const EXIT_DRAIN: SignedDuration = SignedDuration::from_millis(500);

/// Something that happened, handed to [`Gateway::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes read from the client (any chunking).
    ClientBytes(&'a [u8]),
    /// The client closed its end (stdin EOF).
    ClientEof,
    /// The upstream server was started.
    UpstreamStarted {
        /// Its process id (for the audit trail).
        pid: u32,
    },
    /// The upstream could not be started; `reason` says why, for the user.
    UpstreamFailedToStart {
        /// Human-readable cause, e.g. `command not found: npx`.
        reason: &'a str,
    },
    /// Bytes read from the upstream's stdout (any chunking).
    UpstreamBytes(&'a [u8]),
    /// The upstream closed its stdout.
    UpstreamEof,
    /// The upstream process exited.
    UpstreamExited(ExitStatus),
    /// The runtime opened (or reopened) an audit file that already holds
    /// `existing_bytes`; the rotation plan counts from there.
    AuditFileOpened {
        /// Which sink.
        sink: AuditSinkId,
        /// The file's size when opened.
        existing_bytes: u64,
    },
    /// Writing (or reopening) an audit file failed. Feed this right after
    /// the failed [`Output::Audit`], before polling the next output: with a
    /// `critical` sink, the gateway then withholds the messages whose records
    /// were lost. The sink counts as broken until the runtime reports
    /// [`Input::AuditFileOpened`] again.
    AuditWriteFailed {
        /// Which sink.
        sink: AuditSinkId,
        /// What went wrong, for the logs and the client.
        reason: &'a str,
    },
    /// The deadline from [`Output::Wait`] has passed (early calls are harmless).
    Timeout,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A signal for the upstream's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSignal {
    /// Ask it to stop.
    Terminate,
    /// Make it stop.
    Kill,
}

/// What the runtime must do next, from [`Gateway::poll_output`].
///
/// Outputs must be carried out in the order they are returned: an audit
/// record always comes before the message it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes (whole lines) to the client.
    ToClient(Vec<u8>),
    /// Write these bytes (whole lines) to the upstream's stdin.
    ToUpstream(Vec<u8>),
    /// Append to an audit file (rotating first if asked). The records of one
    /// input share one write per file, ahead of the messages they describe
    /// (a record over 64 KiB gets a write of its own); if the write fails,
    /// report it with [`Input::AuditWriteFailed`] before the next poll.
    Audit(AuditWrite),
    /// Close the upstream's stdin: the polite way to ask an MCP server to stop.
    CloseUpstreamInput,
    /// Send a signal to the upstream's process group.
    SignalUpstream(UpstreamSignal),
    /// Flush the audit files, make sure the upstream's process group is gone
    /// and exit the process with this code.
    Exit(i32),
    /// Nothing more to do until new input or until this deadline passes
    /// (then send [`Input::Timeout`]). `None`: no deadline, just wait for I/O.
    Wait(Option<Timestamp>),
}

/// What to send instead of a forwarded message when its audit record could
/// not be written to a critical sink (fail closed: nothing unaudited passes).
#[derive(Debug, Clone)]
enum Fallback {
    /// A client request: answer it with an error and forget it.
    ClientRequest(RequestId),
    /// A server response: give the client an error instead.
    ServerResponse {
        id: RequestId,
        method: Cow<'static, str>,
        tool: Option<String>,
    },
    /// A server request: answer the server with an error and forget it.
    ServerRequest(RequestId),
    /// A client's answer to a server request: tell the server it failed.
    ClientResponse {
        id: RequestId,
        method: Cow<'static, str>,
    },
    /// A notification: drop it.
    Drop,
}

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Pending {
    method: Cow<'static, str>,
    tool: Option<String>,
    forwarded_at: Timestamp,
    /// The requester cancelled it; a response may still come, but the entry
    /// may be evicted to make room.
    cancelled: bool,
}

/// Ids of client requests that ended without their answer (timed out, or
/// cancelled and evicted to make room), with why, kept for a while: a late
/// answer is then recognised and dropped, and the id is not given to a new
/// request, whose answer that late one could otherwise pass for. Bounded.
#[derive(Debug, Default)]
struct RecentlyEnded {
    order: VecDeque<RequestId>,
    ids: BTreeMap<RequestId, &'static str>,
}

/// How many ended request ids are remembered.
const RECENTLY_ENDED_CAPACITY: usize = 1024;

impl RecentlyEnded {
    fn insert(&mut self, id: RequestId, why: &'static str) {
        if self.ids.insert(id.clone(), why).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENTLY_ENDED_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &RequestId) -> bool {
        self.ids.contains_key(id)
    }

    fn take(&mut self, id: &RequestId) -> Option<&'static str> {
        let why = self.ids.remove(id)?;
        self.order.retain(|x| x != id);
        Some(why)
    }
}

/// Where the upstream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UpstreamState {
    /// Not started yet, or running.
    Running,
    /// Its process exited, but its stdout is still open.
    ExitedDraining { status: ExitStatus },
    /// It closed its stdout; its exit status is probably on its way.
    ClosedAwaitingExit,
    /// No more messages can come from it. `status` is known once it exited.
    Gone {
        status: Option<ExitStatus>,
        reason: String,
    },
}

/// Where the shutdown sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Not shutting down.
    No,
    /// Upstream stdin closed; SIGTERM at the deadline.
    InputClosed,
    /// SIGTERM sent; SIGKILL at the deadline.
    Terminated,
    /// SIGKILL sent; exit at the deadline even if no exit is reported.
    Killed,
}

/// Counters for things that are logged rather than answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Lines from the upstream that were not valid JSON-RPC.
    pub upstream_invalid_lines: u64,
    /// Lines from the client that were rejected.
    pub client_invalid_lines: u64,
    /// Requests blocked by a security policy.
    pub blocked_requests: u64,
}

/// The sans-IO MCP gateway.
///
/// Feed it with [`handle_input`](Self::handle_input), then call
/// [`poll_output`](Self::poll_output) until it returns [`Output::Wait`].
#[derive(Debug)]
pub struct Gateway {
    limits: Limits,
    server_name: Option<String>,
    policies: SecurityPolicies,
    sinks: Vec<AuditSink>,
    client_framer: LineFramer,
    upstream_framer: LineFramer,
    /// Client requests forwarded to the upstream, by id.
    client_requests: BTreeMap<RequestId, Pending>,
    /// Upstream requests forwarded to the client, by id (a separate id space).
    server_requests: BTreeMap<RequestId, Pending>,
    upstream: UpstreamState,
    client_open: bool,
    shutdown: Shutdown,
    deadline: Option<Timestamp>,
    exit_code: Option<i32>,
    exited: bool,
    /// Set when the upstream failed to start: every request gets this reason.
    startup_failure: Option<String>,
    outputs: OutputQueue<Fallback>,
    stats: GatewayStats,
    /// Client requests that time out, by deadline (only with a request timeout).
    request_deadlines: std::collections::BTreeSet<(Timestamp, RequestId)>,
    /// Client requests that timed out, so a late answer is recognised.
    ended_unanswered: RecentlyEnded,
    /// Server requests answered with "the client has disconnected" (bounded).
    disconnected_replies: usize,
    /// Set when the upstream failed to start and a request was answered:
    /// exit with 1 once the current input is handled.
    exit_after_input: bool,
    /// `clientInfo.name` from `initialize`, for the audit trail.
    client_name: Option<String>,
    /// `serverInfo.name` from the `initialize` result, for the audit trail.
    server_info_name: Option<String>,
}

impl Gateway {
    /// Builds a gateway for `config`. Disabled plugins are left out.
    pub fn new(config: &Config) -> Self {
        let mut allowlists = Vec::new();
        for entry in config.plugins.security.iter().filter(|e| e.enabled) {
            match &entry.plugin {
                SecurityPlugin::ToolAllowlist(cfg) => allowlists.push(ToolAllowlist::new(cfg)),
            }
        }
        let sinks: Vec<AuditSink> = audit_sinks(config)
            .map(|(_, cfg)| AuditSink::new(cfg))
            .collect();
        let max = config.proxy.limits.max_message_bytes;
        let outputs = OutputQueue::new(sinks.len());
        Gateway {
            limits: config.proxy.limits,
            server_name: config.proxy.upstream.name.clone(),
            policies: SecurityPolicies::new(allowlists),
            sinks,
            client_framer: LineFramer::new(max),
            upstream_framer: LineFramer::new(max),
            client_requests: BTreeMap::new(),
            server_requests: BTreeMap::new(),
            upstream: UpstreamState::Running,
            client_open: true,
            shutdown: Shutdown::No,
            deadline: None,
            exit_code: None,
            exited: false,
            startup_failure: None,
            outputs,
            stats: GatewayStats::default(),
            disconnected_replies: 0,
            exit_after_input: false,
            client_name: None,
            server_info_name: None,
            request_deadlines: std::collections::BTreeSet::new(),
            ended_unanswered: RecentlyEnded::default(),
        }
    }

    /// Counters of rejected and blocked traffic.
    pub fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// Number of client requests waiting for the upstream.
    pub fn in_flight(&self) -> usize {
        self.client_requests.len()
    }

    /// Feeds one input. Call [`poll_output`](Self::poll_output) until it
    /// returns [`Output::Wait`] before the next input.
    pub fn handle_input(&mut self, input: Input<'_>, now: Timestamp) {
        if self.exited {
            return;
        }
        self.handle(input, now);
        if std::mem::take(&mut self.exit_after_input) {
            self.begin_exit(1);
        }
    }

    fn handle(&mut self, input: Input<'_>, now: Timestamp) {
        match input {
            Input::ClientBytes(bytes) => {
                if !self.client_open {
                    return;
                }
                // The framer is taken out while its frames are handled, so
                // they can borrow it instead of being copied.
                let mut framer = std::mem::take(&mut self.client_framer);
                framer.begin();
                while let Some(frame) = framer.next_frame_in(bytes) {
                    self.on_client_frame(frame, now);
                    if self.exited {
                        break;
                    }
                }
                self.client_framer = framer;
            }
            Input::ClientEof => self.on_client_eof(now),
            Input::UpstreamStarted { pid } => {
                let mut record = AuditRecord::new(now, EventType::UpstreamStarted, Source::Gateway);
                record.reason = Some(format!("upstream server started (pid {pid})").into());
                self.audit(record);
            }
            Input::UpstreamFailedToStart { reason } => {
                self.on_upstream_failed_to_start(reason, now)
            }
            Input::UpstreamBytes(bytes) => {
                if matches!(self.upstream, UpstreamState::Gone { .. }) {
                    return;
                }
                let mut framer = std::mem::take(&mut self.upstream_framer);
                framer.begin();
                while let Some(frame) = framer.next_frame_in(bytes) {
                    self.on_upstream_frame(frame, now);
                    if self.exited {
                        break;
                    }
                }
                self.upstream_framer = framer;
            }
            Input::UpstreamEof => self.on_upstream_eof(now),
            Input::UpstreamExited(status) => self.on_upstream_exited(status, now),
            Input::AuditFileOpened {
                sink,
                existing_bytes,
            } => {
                if let Some(s) = self.sinks.get_mut(sink.0) {
                    if s.opened(existing_bytes) {
                        log::info!(target: "gatekit.audit", "audit log {} is writable again", s.output_file());
                    }
                }
            }
            Input::AuditWriteFailed { sink, reason } => {
                self.on_audit_write_failed(sink, reason, now)
            }
            Input::Timeout => self.on_timeout(now),
        }
    }

    /// Returns the next action, or [`Output::Wait`] when there is none.
    pub fn poll_output(&mut self) -> Output {
        if let Some(queued) = self.outputs.pop() {
            return queued.output;
        }
        if self.exited {
            return Output::Wait(None);
        }
        let next_request = self.request_deadlines.first().map(|(t, _)| *t);
        Output::Wait(match (self.deadline, next_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    // ----- client side -----

    fn on_client_frame(&mut self, frame: Frame<'_>, now: Timestamp) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Overlong { prefix, total_len } => {
                let (id, shape) = jsonrpc::sniff(prefix);
                let reason = format!(
                    "message of {total_len} bytes exceeds the limit of {} bytes (proxy.limits.max_message_bytes)",
                    self.limits.max_message_bytes
                );
                let rejection = Rejection {
                    code: jsonrpc::LIMIT_EXCEEDED,
                    reason,
                    id,
                    method: None,
                    shape,
                };
                self.reject_client_line(rejection, now);
                return;
            }
        };
        // The handlers read the line (their audit records may borrow from
        // it); once they are done, it is passed on without being copied
        // where the framer allows.
        let pass = {
            let bytes = line.bytes();
            log::debug!(target: "gatekit.proxy.server", "client → gateway: {}", String::from_utf8_lossy(bytes));
            match parse_message(bytes) {
                Err(rejection) => {
                    self.reject_client_line(rejection, now);
                    None
                }
                Ok(Message::Request {
                    id,
                    method,
                    params,
                    call,
                }) => self.on_client_request(id, method, params, call, now),
                Ok(Message::Notification {
                    method,
                    params,
                    call,
                }) => self.on_client_notification(method, params, call, now),
                Ok(Message::Response { id, outcome, .. }) => {
                    self.on_client_response(id, outcome, now)
                }
            }
        };
        if let Some(fallback) = pass {
            self.outputs
                .push_forward(Peer::Upstream, Forwarded::Line(line), fallback);
        }
    }

    fn reject_client_line(&mut self, rejection: Rejection, now: Timestamp) {
        self.stats.client_invalid_lines += 1;
        self.protocol_error(
            Source::Client,
            rejection.id.as_ref(),
            rejection.method.as_deref().map(Cow::Borrowed),
            &rejection.reason,
            now,
        );
        match (rejection.shape, rejection.id) {
            (Shape::Request | Shape::Unknown, id) => {
                let reply = error_response(id.as_ref(), rejection.code, &rejection.reason, None);
                self.emit(Output::ToClient(reply));
            }
            // An invalid answer to a server request: its id belongs to the
            // server's id space, so the client is not answered; the server,
            // which waits for that answer, is told it failed.
            (Shape::Response, Some(id)) => {
                if let Some(pending) = self.server_requests.remove(&id) {
                    let reason =
                        format!("the client sent an invalid response: {}", rejection.reason);
                    let mut record = AuditRecord::new(now, EventType::Response, Source::Gateway);
                    record.method = Some(pending.method);
                    record.status = Some("error");
                    record.request_id = Some(id.text());
                    record.error_code = Some(rejection.code);
                    record.error_message = Some(reason.clone());
                    self.audit(record);
                    self.emit(Output::ToUpstream(error_response(
                        Some(&id),
                        rejection.code,
                        &reason,
                        None,
                    )));
                }
            }
            (Shape::Response, None) | (Shape::Notification, _) => {}
        }
    }

    /// Judges and audits a client request; returns the fallback to pass it
    /// on with, if it passes.
    fn on_client_request(
        &mut self,
        id: RequestId,
        method: Cow<'_, str>,
        params: Option<&RawValue>,
        call: Option<CallMembers<'_>>,
        now: Timestamp,
    ) -> Option<Fallback> {
        // The peers introduce themselves in the handshake (`initialize`
        // up to 2025-11-25, `server/discover` with `_meta` since 2026-07-28).
        if method == "initialize" || method == "server/discover" {
            if let Some(name) = params.and_then(|p| peer_name(p, "clientInfo")) {
                self.client_name = Some(name);
            }
        }
        // One parse of a tools/call's params gives both the tool and the
        // arguments to record.
        let (tool, recorded_params) = if method == "tools/call" {
            let (tool, arguments) = tool_call_params(params, call);
            (Some(tool), arguments)
        } else {
            (None, request_params(&method, params))
        };
        let mut record = AuditRecord::new(now, EventType::Request, Source::Client);
        record.method = Some(method.clone());
        record.request_id = Some(id.text());
        record.tool = tool.as_ref().and_then(|t| t.as_ref().ok().cloned());
        record.params = recorded_params;

        if let Some(reason) = self.unavailable_reason() {
            record.status = Some("ERROR");
            record.reason = Some(Cow::Borrowed(&reason));
            self.audit(record);
            self.reply_error(
                &id,
                &method,
                None,
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &reason,
                now,
            );
            if self.startup_failure.is_some() {
                // Exit once this input is handled, so every request that
                // came with it is answered too.
                self.exit_after_input = true;
            }
            return None;
        }
        if self.client_requests.len() >= self.limits.max_in_flight_requests {
            self.evict_cancelled_client_request();
        }
        let reused = if self.client_requests.contains_key(&id) {
            Some(format!(
                "request id {id} is already in flight; ids must be unique"
            ))
        } else if self.ended_unanswered.contains(&id) {
            Some(format!(
                "request id {id} belongs to a request that ended without its answer, which may still arrive; use a new id"
            ))
        } else {
            None
        };
        if let Some(reason) = reused {
            self.stats.client_invalid_lines += 1;
            self.protocol_error(Source::Client, Some(&id), Some(method), &reason, now);
            self.emit(Output::ToClient(error_response(
                Some(&id),
                jsonrpc::INVALID_REQUEST,
                &reason,
                None,
            )));
            return None;
        }
        if self.client_requests.len() >= self.limits.max_in_flight_requests {
            let reason = format!(
                "too many requests in flight (limit {}, proxy.limits.max_in_flight_requests)",
                self.limits.max_in_flight_requests
            );
            record.status = Some("ERROR");
            record.reason = Some(Cow::Borrowed(&reason));
            self.audit(record);
            self.reply_error(&id, &method, None, jsonrpc::LIMIT_EXCEEDED, &reason, now);
            return None;
        }
        if let Some(tool) = &tool {
            if !self.policies.is_empty() {
                match self
                    .policies
                    .decide_call(tool.as_deref().map_err(|e| e.as_str()))
                {
                    CallDecision::Allowed { checks, plugin } => {
                        record.plugin = plugin;
                        record.reason = Some(Cow::Borrowed("Request approved"));
                        record.security_checks = checks;
                    }
                    CallDecision::Blocked {
                        plugin,
                        reason,
                        block_message,
                        metadata,
                        checks,
                    } => {
                        self.stats.blocked_requests += 1;
                        record.status = Some("BLOCKED");
                        record.plugin = Some(plugin);
                        record.reason = Some(Cow::Borrowed(&reason));
                        record.security_checks = checks;
                        let mut block = record.clone();
                        block.event_type = EventType::SecurityBlock;
                        block.plugin_metadata = Some(metadata);
                        block.params = None;
                        self.audit(record);
                        self.audit(block);
                        self.reply_error(
                            &id,
                            &method,
                            tool.as_deref().ok(),
                            jsonrpc::POLICY_BLOCKED,
                            &block_message,
                            now,
                        );
                        return None;
                    }
                }
            }
        }
        record.status = Some("ALLOWED");
        self.audit(record);
        let pending = Pending {
            method: owned_method(&method),
            tool: tool.and_then(Result::ok).map(Cow::into_owned),
            forwarded_at: now,
            cancelled: false,
        };
        if let Some(timeout) = self.limits.request_timeout_ms {
            let deadline = after(
                now,
                SignedDuration::from_millis(i64::try_from(timeout).unwrap_or(i64::MAX)),
            );
            self.request_deadlines.insert((deadline, id.clone()));
        }
        self.client_requests.insert(id.clone(), pending);
        Some(Fallback::ClientRequest(id))
    }

    /// Audits a client notification (judging a `tools/call` sent as one);
    /// returns the fallback to pass it on with, if it passes.
    fn on_client_notification(
        &mut self,
        method: Cow<'_, str>,
        params: Option<&RawValue>,
        call: Option<CallMembers<'_>>,
        now: Timestamp,
    ) -> Option<Fallback> {
        let mut record = AuditRecord::new(now, EventType::Notification, Source::Client);
        if method == "tools/call" && !self.policies.is_empty() {
            // Not a valid MCP message, but a server might still run it: judge
            // it like a request. It has no id, so a block cannot be answered.
            let tool = tool_name(params, call);
            if let CallDecision::Blocked {
                plugin,
                reason,
                metadata,
                checks,
                ..
            } = self
                .policies
                .decide_call(tool.as_deref().map_err(|e| e.as_str()))
            {
                self.stats.blocked_requests += 1;
                let mut block = AuditRecord::new(now, EventType::SecurityBlock, Source::Client);
                block.method = Some(method);
                block.tool = tool.ok();
                block.status = Some("BLOCKED");
                block.plugin = Some(plugin);
                block.reason = Some(Cow::Owned(reason));
                block.plugin_metadata = Some(metadata);
                block.security_checks = checks;
                self.audit(block);
                return None;
            }
            record.tool = tool.ok();
        }
        if self.unavailable_reason().is_some() {
            return None;
        }
        if method == "notifications/cancelled" {
            if let Some(id) = cancelled_request_id(params) {
                if let Some(pending) = self.client_requests.get_mut(&id) {
                    pending.cancelled = true;
                }
                record.request_id = Some(id.text().into_owned());
            }
        }
        record.method = Some(method);
        self.audit(record);
        Some(Fallback::Drop)
    }

    /// Audits the client's answer to a server request; returns the fallback
    /// to pass it on with, if it passes.
    fn on_client_response(
        &mut self,
        id: RequestId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Option<Fallback> {
        let Some(pending) = self.server_requests.remove(&id) else {
            self.stats.client_invalid_lines += 1;
            let reason = format!("response to unknown request id {id}; dropped");
            self.protocol_error(Source::Client, Some(&id), None, &reason, now);
            return None;
        };
        let record = self.response_record(now, Source::Client, &id, &pending, &outcome);
        self.audit(record);
        if self.unavailable_reason().is_some() {
            return None;
        }
        Some(Fallback::ClientResponse {
            id,
            method: pending.method,
        })
    }

    fn on_client_eof(&mut self, now: Timestamp) {
        if !self.client_open {
            return;
        }
        self.client_open = false;
        let mut framer = std::mem::take(&mut self.client_framer);
        if let Some(frame) = framer.finish() {
            self.client_open = true; // still handle the last, unterminated line
            self.on_client_frame(frame, now);
            self.client_open = false;
        }
        self.client_framer = framer;
        if self.startup_failure.is_some() {
            self.begin_exit(1);
            return;
        }
        match self.upstream {
            UpstreamState::Gone {
                status: Some(_), ..
            } => self.begin_exit(0),
            _ => {
                self.exit_code.get_or_insert(0);
                self.start_shutdown(now);
            }
        }
    }

    // ----- upstream side -----

    fn on_upstream_frame(&mut self, frame: Frame<'_>, now: Timestamp) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Overlong { prefix, total_len } => {
                self.stats.upstream_invalid_lines += 1;
                let (id, shape) = jsonrpc::sniff(prefix);
                let reason = format!(
                    "upstream message of {total_len} bytes exceeds the limit of {} bytes (proxy.limits.max_message_bytes)",
                    self.limits.max_message_bytes
                );
                log::warn!(target: "gatekit.proxy.server", "{reason}; dropped");
                self.protocol_error(Source::Server, id.as_ref(), None, &reason, now);
                // Only a response answers a client request; an over-long
                // server request with the same id is not about it.
                if let (Some(id), Shape::Response) = (id, shape) {
                    self.fail_client_request(&id, jsonrpc::LIMIT_EXCEEDED, &reason, now);
                }
                return;
            }
        };
        // As on the client side: handlers read the line, then it is passed
        // on (or what replaces it).
        let pass = {
            let bytes = line.bytes();
            log::debug!(target: "gatekit.proxy.server", "upstream → gateway: {}", String::from_utf8_lossy(bytes));
            match parse_message(bytes) {
                Err(rejection) => {
                    self.reject_upstream_line(rejection, bytes, now);
                    None
                }
                Ok(Message::Request {
                    id, method, params, ..
                }) => self
                    .on_server_request(id, method, params, now)
                    .map(|fallback| (fallback, None)),
                Ok(Message::Notification { method, params, .. }) => {
                    self.on_server_notification(method, params, now);
                    Some((Fallback::Drop, None))
                }
                Ok(Message::Response {
                    id,
                    outcome,
                    result,
                    tools,
                    line: text,
                }) => self.on_server_response(text, id, result, tools, outcome, now),
            }
        };
        if let Some((fallback, replacement)) = pass {
            let forwarded = match replacement {
                Some(made) => Forwarded::Made(made),
                None => Forwarded::Line(line),
            };
            self.outputs.push_forward(Peer::Client, forwarded, fallback);
        }
    }

    fn reject_upstream_line(&mut self, rejection: Rejection, line: &[u8], now: Timestamp) {
        self.stats.upstream_invalid_lines += 1;
        log::warn!(
            target: "gatekit.proxy.server",
            "ignoring invalid line from the upstream server ({}): {}",
            rejection.reason,
            truncate_for_log(line)
        );
        self.protocol_error(
            Source::Server,
            rejection.id.as_ref(),
            rejection.method.map(Cow::Owned),
            &rejection.reason,
            now,
        );
        if let (Some(id), Shape::Response) = (rejection.id, rejection.shape) {
            let reason = format!(
                "the upstream server sent an invalid response: {}",
                rejection.reason
            );
            self.fail_client_request(&id, jsonrpc::UPSTREAM_INVALID_RESPONSE, &reason, now);
        }
    }

    /// Audits a server notification, which is then passed on.
    fn on_server_notification(
        &mut self,
        method: Cow<'_, str>,
        params: Option<&RawValue>,
        now: Timestamp,
    ) {
        let mut record = AuditRecord::new(now, EventType::Notification, Source::Server);
        if method == "notifications/cancelled" {
            if let Some(id) = cancelled_request_id(params) {
                if let Some(pending) = self.server_requests.get_mut(&id) {
                    pending.cancelled = true;
                }
                record.request_id = Some(id.text().into_owned());
            }
        }
        record.method = Some(method);
        self.audit(record);
    }

    /// Audits a server request; returns the fallback to pass it on with,
    /// if it passes.
    fn on_server_request(
        &mut self,
        id: RequestId,
        method: Cow<'_, str>,
        params: Option<&RawValue>,
        now: Timestamp,
    ) -> Option<Fallback> {
        if self.server_requests.get(&id).is_some_and(|p| p.cancelled)
            || self.server_requests.len() >= self.limits.max_in_flight_requests
        {
            let evict = if self.server_requests.get(&id).is_some_and(|p| p.cancelled) {
                Some(id.clone())
            } else {
                first_cancelled(&self.server_requests)
            };
            if let Some(old) = evict {
                self.server_requests.remove(&old);
            }
        }
        let problem = if self.server_requests.contains_key(&id) {
            Some(format!(
                "request id {id} is already in flight; ids must be unique"
            ))
        } else if self.server_requests.len() >= self.limits.max_in_flight_requests {
            Some(format!(
                "too many server requests in flight (limit {})",
                self.limits.max_in_flight_requests
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            // Logged, counted and audited, not answered: a server that
            // misbehaves this way may not read its stdin either, and answers
            // would pile up (and could start an error storm).
            self.stats.upstream_invalid_lines += 1;
            log::warn!(target: "gatekit.proxy.server", "dropped a request from the upstream server: {reason}");
            self.protocol_error(Source::Server, Some(&id), Some(method), &reason, now);
            return None;
        }
        let mut record = AuditRecord::new(now, EventType::Request, Source::Server);
        record.method = Some(method.clone());
        record.request_id = Some(id.text());
        record.status = Some("ALLOWED");
        record.params = request_params(&method, params);
        self.audit(record);
        if !self.client_open {
            // Nobody can answer: tell the server rather than leave it
            // waiting, a bounded number of times (the gateway is shutting
            // down; a server flooding requests gets silence after that).
            if self.disconnected_replies < self.limits.max_in_flight_requests {
                self.disconnected_replies += 1;
                let reason = "the client has disconnected";
                self.emit(Output::ToUpstream(error_response(
                    Some(&id),
                    jsonrpc::UPSTREAM_UNAVAILABLE,
                    reason,
                    None,
                )));
            }
            return None;
        }
        self.server_requests.insert(
            id.clone(),
            Pending {
                method: owned_method(&method),
                tool: None,
                forwarded_at: now,
                cancelled: false,
            },
        );
        Some(Fallback::ServerRequest(id))
    }

    /// Audits a server response (filtering a `tools/list`); returns the
    /// fallback to pass it on with and, if it was changed, what to pass on
    /// instead of the line.
    fn on_server_response(
        &mut self,
        line: &str,
        id: RequestId,
        result: Option<&RawValue>,
        tools: Option<crate::json_scan::ToolsIndex>,
        outcome: Outcome,
        now: Timestamp,
    ) -> Option<(Fallback, Option<Vec<u8>>)> {
        let Some(pending) = self.take_client_request(&id) else {
            if let Some(why) = self.ended_unanswered.take(&id) {
                let mut record = AuditRecord::new(now, EventType::Response, Source::Server);
                record.request_id = Some(id.text());
                record.status = Some("dropped");
                record.reason =
                    Some(format!("the answer came after the request {why}; dropped").into());
                self.audit(record);
                return None;
            }
            self.stats.upstream_invalid_lines += 1;
            let reason = format!("response to unknown request id {id}; dropped");
            log::warn!(target: "gatekit.proxy.server", "upstream sent a {reason}");
            self.protocol_error(Source::Server, Some(&id), None, &reason, now);
            return None;
        };
        if pending.method == "initialize" || pending.method == "server/discover" {
            if let Some(name) = result.and_then(|r| peer_name(r, "serverInfo")) {
                self.server_info_name = Some(name);
            }
        }
        let mut forwarded: Option<Vec<u8>> = None;
        if pending.method == "tools/list"
            && outcome == Outcome::Success
            && !self.policies.is_empty()
        {
            if let Some(filtered) = filter_tools_list(line, tools.as_ref(), |name| {
                self.policies.permits_tool(name)
            }) {
                let mut record = AuditRecord::new(now, EventType::ToolsFiltered, Source::Server);
                record.method = Some(pending.method.clone());
                record.request_id = Some(id.text());
                record.plugin = Some(crate::policy::TOOL_ALLOWLIST);
                record.reason = Some(Cow::Owned(format!(
                    "Filtered {} tools from response",
                    filtered.removed.len()
                )));
                record.plugin_metadata = Some(PluginMetadata::FilteredTools(filtered.removed));
                self.audit(record);
                forwarded = Some(filtered.line);
            }
        }
        let record = self.response_record(now, Source::Server, &id, &pending, &outcome);
        self.audit(record);
        // Also after client EOF: a client that closed its input may still
        // read the answers to what it asked.
        let fallback = Fallback::ServerResponse {
            id,
            method: pending.method,
            tool: pending.tool,
        };
        Some((fallback, forwarded))
    }

    fn on_upstream_failed_to_start(&mut self, reason: &str, now: Timestamp) {
        let message = format!("Gatekit could not start the upstream MCP server: {reason}");
        log::error!(target: "gatekit.proxy.server", "{message}");
        let mut record = AuditRecord::new(now, EventType::UpstreamExited, Source::Gateway);
        record.status = Some("error");
        record.reason = Some(Cow::Borrowed(&message));
        self.audit(record);
        self.upstream = UpstreamState::Gone {
            status: None,
            reason: message.clone(),
        };
        self.startup_failure = Some(message);
        if !self.client_open {
            self.begin_exit(1);
        }
    }

    fn on_upstream_eof(&mut self, now: Timestamp) {
        let mut framer = std::mem::take(&mut self.upstream_framer);
        if let Some(frame) = framer.finish() {
            self.on_upstream_frame(frame, now);
        }
        self.upstream_framer = framer;
        match self.upstream.clone() {
            UpstreamState::Running => {
                // Usually the process is exiting; wait briefly for its status
                // so pending requests learn how it ended.
                self.upstream = UpstreamState::ClosedAwaitingExit;
                self.deadline = Some(after(now, EXIT_DRAIN));
            }
            UpstreamState::ClosedAwaitingExit => {}
            UpstreamState::ExitedDraining { status } => {
                self.upstream_gone(
                    Some(status),
                    &format!("the upstream server exited ({status})"),
                    now,
                );
                self.finish_after_exit();
            }
            UpstreamState::Gone { .. } => {}
        }
    }

    fn on_upstream_exited(&mut self, status: ExitStatus, now: Timestamp) {
        match self.upstream.clone() {
            UpstreamState::Running => {
                // Its last bytes may still be on their way from the reader.
                self.upstream = UpstreamState::ExitedDraining { status };
                self.deadline = Some(after(now, EXIT_DRAIN));
            }
            UpstreamState::ClosedAwaitingExit => {
                self.upstream_gone(
                    Some(status),
                    &format!("the upstream server exited ({status})"),
                    now,
                );
                self.finish_after_exit();
            }
            UpstreamState::Gone {
                status: None,
                reason,
            } => {
                self.upstream = UpstreamState::Gone {
                    status: Some(status),
                    reason,
                };
                self.audit_upstream_exit(status, now);
                self.finish_after_exit();
            }
            UpstreamState::ExitedDraining { .. }
            | UpstreamState::Gone {
                status: Some(_), ..
            } => {}
        }
    }

    /// The upstream process has exited and its output is drained.
    fn finish_after_exit(&mut self) {
        if self.startup_failure.is_some() {
            return;
        }
        if self.client_open {
            // The server went away under a connected client.
            self.begin_exit(1);
        } else {
            self.begin_exit(self.exit_code.unwrap_or(0));
        }
    }

    fn audit_upstream_exit(&mut self, status: ExitStatus, now: Timestamp) {
        let mut record = AuditRecord::new(now, EventType::UpstreamExited, Source::Gateway);
        record.status = Some(if status == ExitStatus::Code(0) {
            "success"
        } else {
            "error"
        });
        record.reason = Some(format!("the upstream server exited ({status})").into());
        self.audit(record);
    }

    /// No more messages can come from the upstream: answer everything that
    /// waits for it.
    fn upstream_gone(&mut self, status: Option<ExitStatus>, reason: &str, now: Timestamp) {
        self.upstream = UpstreamState::Gone {
            status,
            reason: reason.to_owned(),
        };
        if self.client_open {
            log::error!(target: "gatekit.proxy.server", "{reason}");
        }
        if let Some(status) = status {
            self.audit_upstream_exit(status, now);
        }
        self.request_deadlines.clear();
        let pending: Vec<(RequestId, Pending)> = std::mem::take(&mut self.client_requests)
            .into_iter()
            .collect();
        for (id, p) in pending {
            let message = format!("{reason} before answering this request");
            self.reply_error(
                &id,
                &p.method,
                p.tool.as_deref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &message,
                now,
            );
        }
        self.server_requests.clear();
    }

    // ----- timers and shutdown -----

    fn on_timeout(&mut self, now: Timestamp) {
        self.expire_requests(now);
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        if self.upstream == UpstreamState::ClosedAwaitingExit {
            self.upstream_gone(None, "the upstream server closed its output", now);
            if self.shutdown == Shutdown::No {
                // The process may still run: stop it.
                self.start_shutdown(now);
            } else {
                // Shutting down already: keep escalating.
                self.deadline = Some(after(now, SHUTDOWN_GRACE));
            }
            return;
        }
        if let UpstreamState::ExitedDraining { status } = self.upstream {
            self.upstream_gone(
                Some(status),
                &format!("the upstream server exited ({status})"),
                now,
            );
            self.finish_after_exit();
            return;
        }
        match self.shutdown {
            Shutdown::No => {}
            Shutdown::InputClosed => {
                log::info!(target: "gatekit.proxy.server", "upstream still running after stdin closed; sending SIGTERM");
                self.emit(Output::SignalUpstream(UpstreamSignal::Terminate));
                self.shutdown = Shutdown::Terminated;
                self.deadline = Some(after(now, SHUTDOWN_GRACE));
            }
            Shutdown::Terminated => {
                log::warn!(target: "gatekit.proxy.server", "upstream ignored SIGTERM; sending SIGKILL");
                self.emit(Output::SignalUpstream(UpstreamSignal::Kill));
                self.shutdown = Shutdown::Killed;
                self.deadline = Some(after(now, SHUTDOWN_GRACE));
            }
            Shutdown::Killed => {
                log::error!(target: "gatekit.proxy.server", "upstream did not exit after SIGKILL; exiting anyway");
                let code = if self.client_open {
                    1
                } else {
                    self.exit_code.unwrap_or(0)
                };
                self.begin_exit(code);
            }
        }
    }

    fn start_shutdown(&mut self, now: Timestamp) {
        if self.shutdown != Shutdown::No {
            return;
        }
        if let UpstreamState::Gone {
            status: Some(_), ..
        } = self.upstream
        {
            return;
        }
        self.emit(Output::CloseUpstreamInput);
        self.shutdown = Shutdown::InputClosed;
        if !matches!(
            self.upstream,
            UpstreamState::ExitedDraining { .. } | UpstreamState::ClosedAwaitingExit
        ) {
            self.deadline = Some(after(now, SHUTDOWN_GRACE));
        }
    }

    fn begin_exit(&mut self, code: i32) {
        if self.exited {
            return;
        }
        self.exited = true;
        self.deadline = None;
        self.emit(Output::Exit(code));
    }

    // ----- helpers -----

    fn unavailable_reason(&self) -> Option<String> {
        if let Some(reason) = &self.startup_failure {
            return Some(reason.clone());
        }
        match &self.upstream {
            UpstreamState::Gone { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    fn fail_client_request(&mut self, id: &RequestId, code: i64, reason: &str, now: Timestamp) {
        if let Some(p) = self.take_client_request(id) {
            let mut record = self.response_record(
                now,
                Source::Gateway,
                id,
                &p,
                &Outcome::Error {
                    code: Some(code),
                    message: Some(reason.to_owned()),
                },
            );
            record.reason = Some(Cow::Borrowed(reason));
            self.audit(record);
            self.send_to_client(error_response(Some(id), code, reason, None));
        }
    }

    /// Answers a client request with an error made by the gateway, and audits
    /// that response.
    fn reply_error(
        &mut self,
        id: &RequestId,
        method: &str,
        tool: Option<&str>,
        code: i64,
        message: &str,
        now: Timestamp,
    ) {
        let mut record = AuditRecord::new(now, EventType::Response, Source::Gateway);
        record.method = Some(Cow::Borrowed(method));
        record.tool = tool.map(Cow::Borrowed);
        record.status = Some("error");
        record.request_id = Some(id.text());
        record.error_code = Some(code);
        record.error_message = Some(message.to_owned());
        self.audit(record);
        self.send_to_client(error_response(Some(id), code, message, None));
    }

    fn response_record<'r>(
        &self,
        now: Timestamp,
        source: Source,
        id: &'r RequestId,
        pending: &'r Pending,
        outcome: &Outcome,
    ) -> AuditRecord<'r> {
        let mut record = AuditRecord::new(now, EventType::Response, source);
        record.method = Some(Cow::Borrowed(&pending.method));
        record.tool = pending.tool.as_deref().map(Cow::Borrowed);
        record.request_id = Some(id.text());
        record.duration_ms = Some(millis_between(pending.forwarded_at, now));
        match outcome {
            Outcome::Success => record.status = Some("success"),
            Outcome::Error { code, message } => {
                record.status = Some("error");
                record.error_code = *code;
                record.error_message = message.clone();
            }
        }
        record
    }

    fn protocol_error(
        &mut self,
        source: Source,
        id: Option<&RequestId>,
        method: Option<Cow<'_, str>>,
        reason: &str,
        now: Timestamp,
    ) {
        let mut record = AuditRecord::new(now, EventType::ProtocolError, source);
        record.request_id = id.map(RequestId::text);
        record.method = method;
        record.status = Some("error");
        record.reason = Some(Cow::Borrowed(reason));
        self.audit(record);
    }

    /// Hands `record`, with the upstream's configured name and the
    /// sender's own name, to every sink that wants it. The names are
    /// borrowed from the gateway here, where the record is written, rather
    /// than copied into it where it is made.
    fn audit(&mut self, record: AuditRecord) {
        let Gateway {
            sinks,
            outputs,
            server_name,
            client_name,
            server_info_name,
            ..
        } = self;
        let source_name = match record.source {
            Source::Client => client_name.as_deref(),
            Source::Server => server_info_name.as_deref(),
            Source::Gateway => None,
        };
        let record = AuditRecord {
            server_name: server_name.as_deref(),
            source_name,
            ..record
        };
        for (i, sink) in sinks.iter_mut().enumerate() {
            if sink.wants(&record) {
                let size_hint = sink.line_size_hint(&record);
                outputs.push_audit_with(AuditSinkId(i), size_hint, |out| sink.append(&record, out));
            }
        }
    }

    /// Removes a client request from the in-flight table (and its deadline).
    fn take_client_request(&mut self, id: &RequestId) -> Option<Pending> {
        let pending = self.client_requests.remove(id)?;
        if let Some(timeout) = self.limits.request_timeout_ms {
            let deadline = after(
                pending.forwarded_at,
                SignedDuration::from_millis(i64::try_from(timeout).unwrap_or(i64::MAX)),
            );
            self.request_deadlines.remove(&(deadline, id.clone()));
        }
        Some(pending)
    }

    /// Makes room in a full in-flight table by dropping the oldest cancelled
    /// request, whose answer nobody waits for.
    fn evict_cancelled_client_request(&mut self) {
        if let Some(id) = first_cancelled(&self.client_requests) {
            self.take_client_request(&id);
            self.ended_unanswered.insert(id, "was cancelled");
        }
    }

    /// Answers every client request whose timeout has passed, and tells the
    /// server to stop working on it.
    fn expire_requests(&mut self, now: Timestamp) {
        while let Some((deadline, id)) = self.request_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.request_deadlines.pop_first();
            let Some(pending) = self.client_requests.remove(&id) else {
                continue;
            };
            let timeout = self.limits.request_timeout_ms.unwrap_or_default();
            let reason = format!("no answer from the upstream server within {timeout} ms (proxy.limits.request_timeout_ms)");
            let mut record = AuditRecord::new(now, EventType::Timeout, Source::Gateway);
            record.method = Some(pending.method.clone());
            record.tool = pending.tool.as_deref().map(Cow::Borrowed);
            record.request_id = Some(id.text());
            record.status = Some("error");
            record.duration_ms = Some(millis_between(pending.forwarded_at, now));
            record.reason = Some(Cow::Borrowed(&reason));
            self.audit(record);
            self.ended_unanswered.insert(id.clone(), "timed out");
            self.reply_error(
                &id,
                &pending.method,
                pending.tool.as_deref(),
                jsonrpc::REQUEST_TIMEOUT,
                &reason,
                now,
            );
            if self.unavailable_reason().is_none() {
                let mut cancel = Vec::with_capacity(128);
                cancel.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":");
                id.write_json(&mut cancel);
                cancel.extend_from_slice(b",\"reason\":");
                jsonrpc::write_json_string(&mut cancel, &reason);
                cancel.extend_from_slice(b"}}\n");
                self.emit(Output::ToUpstream(cancel));
            }
        }
    }

    /// Queues an output that carries no peer data (a gateway reply, a signal).
    ///
    /// Forwarded messages are queued with `OutputQueue::push_forward`, each
    /// just after its audit record, with the fallback that goes out instead
    /// if writing that record fails (reported with
    /// [`Input::AuditWriteFailed`] before the message is polled). A sink
    /// that failed earlier is not judged in advance: the write of this
    /// message's record is what tells whether it works again.
    fn emit(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// The reason a critical audit sink cannot be written, if one cannot.
    fn audit_failure(&self) -> Option<String> {
        self.sinks
            .iter()
            .find_map(|s| s.critical_failure().map(str::to_owned))
    }

    fn on_audit_write_failed(&mut self, sink: AuditSinkId, reason: &str, now: Timestamp) {
        let Some(s) = self.sinks.get_mut(sink.0) else {
            return;
        };
        let critical = s.is_critical();
        if s.failed(reason) {
            if critical {
                log::error!(
                    target: "gatekit.audit",
                    "{reason}; the audit log is critical, so requests are refused until it can be written again"
                );
            } else {
                log::warn!(
                    target: "gatekit.audit",
                    "{reason}; the audit log is not critical, so messages keep passing without it"
                );
            }
        }
        if !critical {
            return;
        }
        // Messages queued after their (now lost) records must not pass.
        let queued = self.outputs.take_all();
        for entry in queued {
            if !entry.fallbacks.are_forwards() {
                self.outputs.push(entry.output);
                continue;
            }
            // Every message of a joined forward, in order.
            for fallback in entry.fallbacks {
                if let Some(replacement) = self.fall_back(fallback, now) {
                    self.emit(replacement);
                }
            }
        }
    }

    /// What replaces a forward that cannot be audited; the replacement
    /// reply is audited like any reply the gateway makes (the broken sink
    /// will fail to take it, the others record it).
    fn fall_back(&mut self, fallback: Fallback, now: Timestamp) -> Option<Output> {
        let message = format!(
            "Gatekit cannot write its audit log ({}), and the log is critical, so this message was not passed on",
            self.audit_failure().unwrap_or_default()
        );
        let code = jsonrpc::AUDIT_LOG_UNAVAILABLE;
        // (to the client?, id, method, tool) of the reply that replaces it.
        let (to_client, id, method, tool) = match fallback {
            Fallback::Drop => return None,
            Fallback::ClientRequest(id) => {
                let pending = self.take_client_request(&id);
                let (method, tool) = pending.map_or((None, None), |p| (Some(p.method), p.tool));
                (true, id, method, tool)
            }
            Fallback::ServerResponse { id, method, tool } => (true, id, Some(method), tool),
            Fallback::ServerRequest(id) => {
                let method = self.server_requests.remove(&id).map(|p| p.method);
                (false, id, method, None)
            }
            Fallback::ClientResponse { id, method } => (false, id, Some(method), None),
        };
        let mut record = AuditRecord::new(now, EventType::Response, Source::Gateway);
        record.method = method;
        record.tool = tool.map(Cow::Owned);
        record.status = Some("error");
        record.request_id = Some(id.text());
        record.error_code = Some(code);
        record.error_message = Some(message.clone());
        self.audit(record);
        let reply = error_response(Some(&id), code, &message, None);
        Some(if to_client {
            Output::ToClient(reply)
        } else {
            Output::ToUpstream(reply)
        })
    }

    fn send_to_client(&mut self, bytes: Vec<u8>) {
        self.emit(Output::ToClient(bytes));
    }
}

/// The enabled `file_auditing` sinks of `config`, with the ids the gateway
/// uses for them in [`Output::Audit`].
pub fn audit_sinks(config: &Config) -> impl Iterator<Item = (AuditSinkId, &FileAuditingConfig)> {
    config
        .plugins
        .auditing
        .iter()
        .filter(|e| e.enabled)
        .map(|e| match &e.plugin {
            AuditingPlugin::FileAuditing(cfg) => cfg,
        })
        .enumerate()
        .map(|(i, cfg)| (AuditSinkId(i), cfg))
}

/// The members of `tools/call` params the gateway reads.
#[derive(serde::Deserialize)]
struct CallParams<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// Reads the tool name of a `tools/call`, or says why it cannot.
fn tool_name<'a>(
    params: Option<&'a RawValue>,
    scanned: Option<CallMembers<'a>>,
) -> Result<Cow<'a, str>, String> {
    tool_call_params(params, scanned).0
}

/// The oldest cancelled request of an in-flight table, if any.
fn first_cancelled(table: &BTreeMap<RequestId, Pending>) -> Option<RequestId> {
    table
        .iter()
        .filter(|(_, p)| p.cancelled)
        .min_by_key(|(_, p)| p.forwarded_at)
        .map(|(id, _)| id.clone())
}

/// A `tools/call`'s tool name (or why it cannot be read) and its
/// `arguments` as raw JSON text, from one parse of `params` (none when the
/// message's scan already found both: `scanned`). The arguments are
/// borrowed, not copied: they can be most of a large message.
fn tool_call_params<'a>(
    params: Option<&'a RawValue>,
    scanned: Option<CallMembers<'a>>,
) -> (Result<Cow<'a, str>, String>, Option<&'a str>) {
    let Some(params) = params else {
        return (Err("no params".to_owned()), None);
    };
    if !params.get().starts_with('{') {
        return (Err("params is not an object".to_owned()), None);
    }
    let members = match scanned {
        // serde reads a null member as absent, as the walk does.
        Some(found) => {
            let present = |v: Option<&'a str>| v.filter(|v| *v != "null");
            Some((present(found.name), present(found.arguments)))
        }
        None => call_members(params.get()),
    };
    let (name, arguments) = match members {
        Some(members) => members,
        None => match serde_json::from_str::<CallParams<'_>>(params.get()) {
            Ok(parsed) => (
                parsed.name.map(RawValue::get),
                parsed.arguments.map(RawValue::get),
            ),
            Err(e) => return (Err(format!("params unreadable: {e}")), None),
        },
    };
    let tool = match name {
        None => Err("params.name is missing".to_owned()),
        Some(name) => string_value(name).ok_or_else(|| "params.name is not a string".to_owned()),
    };
    (tool, arguments)
}

/// `name` and `arguments` of a `tools/call`'s params object, as the raw text
/// of their values, from a walk over its members that skips the insides of
/// strings with `memchr`: a 10 MiB argument is passed over, not parsed.
/// `params` is valid JSON (the message was checked). `None` when the walk
/// cannot be sure it reads the object as serde would (a key with an
/// escape, a repeated member, anything unexpected): the serde parse then
/// decides, and words any error.
fn call_members(params: &str) -> Option<(Option<&str>, Option<&str>)> {
    let b = params.as_bytes();
    let (mut name, mut arguments) = (None, None);
    let mut seen = [false; 2];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some((None, None));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(b, i + 1)?;
        if escaped {
            return None; // serde compares keys after unescaping them
        }
        let key = &b[i + 1..end];
        i = skip_ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        i = value_end(b, start)?;
        let value = params.get(start..i)?;
        let (slot, seen) = match key {
            b"name" => (&mut name, &mut seen[0]),
            b"arguments" => (&mut arguments, &mut seen[1]),
            _ => (&mut None, &mut false),
        };
        if std::mem::replace(seen, true) {
            return None; // repeated: serde's error says so
        }
        *slot = (value != "null").then_some(value); // serde reads null as absent
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_ws(b, i + 1) == b.len()).then_some((name, arguments))
}

/// The text of a JSON string value, or `None` if `raw` is not a string.
fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(plain) if !plain.contains(['\\', '"']) => Some(Cow::Borrowed(plain)),
        _ if raw.starts_with('"') => serde_json::from_str(raw).ok().map(Cow::Owned),
        _ => None,
    }
}

/// The `requestId` of a `notifications/cancelled`.
fn cancelled_request_id(params: Option<&RawValue>) -> Option<RequestId> {
    #[derive(serde::Deserialize)]
    struct CancelParams<'a> {
        #[serde(borrow, rename = "requestId")]
        request_id: Option<&'a RawValue>,
    }
    let params: CancelParams<'_> = serde_json::from_str(params?.get()).ok()?;
    RequestId::from_raw(params.request_id?)
}

/// `params.<field>.name` (`clientInfo` / `serverInfo`), if it is a string.
/// In 2026-07-28 sessions the client's info travels in
/// `params._meta["io.modelcontextprotocol/clientInfo"]` instead.
fn peer_name(object: &RawValue, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(object.get()).ok()?;
    let info = value.get(field).or_else(|| {
        value
            .get("_meta")?
            .get(format!("io.modelcontextprotocol/{field}").as_str())
    })?;
    Some(info.get("name")?.as_str()?.to_owned())
}

/// The parameters recorded for a request: a tool's `arguments` for
/// `tools/call`, otherwise the whole `params` (borrowed, like
/// [`tool_call_params`]).
fn request_params<'a>(method: &str, params: Option<&'a RawValue>) -> Option<&'a str> {
    let params = params?;
    if method == "tools/call" {
        return tool_call_params(Some(params), None).1;
    }
    Some(params.get())
}

fn truncate_for_log(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]).into_owned();
    if line.len() > MAX {
        format!("{text}…")
    } else {
        text
    }
}

/// `now + duration`, saturating at the end of time rather than wrapping to
/// a deadline that has already passed.
fn after(now: Timestamp, duration: SignedDuration) -> Timestamp {
    now.checked_add(duration).unwrap_or(Timestamp::MAX)
}

fn millis_between(start: Timestamp, end: Timestamp) -> u64 {
    let ms = end.duration_since(start).as_millis();
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tool_call_params` as it was before the member walk: serde alone.
    fn by_serde(params: &RawValue) -> (Result<String, String>, Option<&str>) {
        if !params.get().starts_with('{') {
            return (Err("params is not an object".to_owned()), None);
        }
        let parsed: CallParams<'_> = match serde_json::from_str(params.get()) {
            Ok(parsed) => parsed,
            Err(e) => return (Err(format!("params unreadable: {e}")), None),
        };
        let tool = match parsed.name {
            None => Err("params.name is missing".to_owned()),
            Some(name) => {
                jsonrpc::json_string(name).ok_or_else(|| "params.name is not a string".to_owned())
            }
        };
        (tool, parsed.arguments.map(RawValue::get))
    }

    #[test]
    fn the_member_walk_reads_params_as_serde_does() {
        let members = [
            r#""name":"echo""#,
            r#""name" : "a\u0062\"c""#,
            r#""name":null"#,
            r#""name":17"#,
            r#""name":{"name":"inner"}"#,
            r#""n\u0061me":"escaped key""#,
            r#""Name":"case""#,
            r#""arguments":{"text":"a\"b\\c}]","n":[1,{"x":"}"}],"e":{}}"#,
            r#""arguments" :	[ 1 , 2.5e3 , true , null ] "#,
            r#""arguments":null"#,
            r#""arguments":"\\""#,
            r#""arguments":-0.5"#,
            r#""other":{"name":"not me","arguments":1}"#,
        ];
        let (mut checked, mut scanned) = (0, 0);
        for a in 0..members.len() {
            for b in 0..members.len() {
                for text in [
                    "{}".to_owned(),
                    format!("{{{}}}", members[a]),
                    format!(" {{ {} , {} }} ", members[a], members[b]),
                    format!("{{{},{},{}}}", members[b], members[a], members[b]),
                ] {
                    let Ok(raw) = serde_json::from_str::<&RawValue>(&text) else {
                        continue;
                    };
                    let (tool, arguments) = tool_call_params(Some(raw), None);
                    assert_eq!(
                        (tool.map(Cow::into_owned), arguments),
                        by_serde(raw),
                        "{text}"
                    );
                    checked += 1;
                    // The members the message's scan found, when it
                    // accepts the message, read the same.
                    let message = format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{text}}}"#
                    );
                    // (A message the strict check refuses has no reading.)
                    let Ok(Message::Request { params, call, .. }) =
                        parse_message(message.as_bytes())
                    else {
                        continue;
                    };
                    if call.is_some() {
                        let (tool, arguments) = tool_call_params(params, call);
                        let (serde_tool, serde_arguments) = by_serde(raw);
                        assert_eq!(tool.map(Cow::into_owned), serde_tool, "{message}");
                        assert_eq!(
                            arguments.map(str::trim),
                            serde_arguments.map(str::trim),
                            "{message}"
                        );
                        scanned += 1;
                    }
                }
            }
        }
        assert!(checked > 400, "{checked}");
        assert!(scanned > 100, "{scanned}");
    }

    #[test]
    fn the_member_walk_never_panics_on_broken_text() {
        for text in [
            "{",
            "{\"",
            "{\"name\"",
            "{\"name\":",
            "{\"name\":\"x",
            "{\"a\":\"\\",
            "{\"name\":\"x\",}",
            "{\"name\" \"x\"}",
            "{]",
            "{\"a\":[}",
            "{\"a\":}}}",
            "{\"a\":1 2}",
        ] {
            let _ = call_members(text);
        }
    }
}
