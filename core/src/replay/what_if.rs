//! What-if: one capture replayed under an OLD and a NEW config, and the
//! decisions that differ.
//!
//! Both replays feed the same client messages in the same order, so the
//! n-th message of one is the n-th of the other. For each client request
//! (and notification) the comparison notes whether the gateway forwarded it,
//! blocked it (and why) or refused it for another reason; for each
//! `tools/list` request, the tool names the client received.
//!
//! A replay can only approximate a decision that changes, because the
//! server's side of the capture is what the server said to the requests the
//! *recording* gateway forwarded (OLD should be the config the capture was
//! recorded with):
//! - a request OLD did not forward but NEW would has no recorded answer: the
//!   NEW replay leaves it unanswered, and the report says so rather than
//!   invent an answer;
//! - a request OLD forwarded but NEW blocks still has its recorded answer,
//!   which NEW drops as a response to an unknown id (a `PROTOCOL_ERROR` in
//!   NEW's audit trail that is an artefact of the replay);
//! - a `tools/list` OLD did not forward has no recorded page to filter.

use super::{play, Action, Chunking, Entry, Observer};
use crate::audit::AuditSinkId;
use crate::capture::RecordedInput;
use crate::config::{
    AuditFormat, AuditMode, AuditingPlugin, Config, CsvConfig, FileAuditingConfig, FileSizeMb,
    PluginEntry,
};
use crate::gateway::{audit_sinks, Input};
use jiff::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The result of [`what_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatIf {
    /// Client requests and notifications compared.
    pub messages_compared: usize,
    /// The ones decided differently, in order of arrival.
    pub changes: Vec<DecisionChange>,
    /// `tools/list` requests compared.
    pub tools_lists_compared: usize,
    /// The ones whose outcome differs, in order of arrival.
    pub tools_list_changes: Vec<ToolsListChange>,
    /// Tools the client would see under NEW and does not under OLD, over
    /// every `tools/list` page both replays received.
    pub tools_appear: BTreeSet<String>,
    /// Tools the client sees under OLD and would not under NEW.
    pub tools_vanish: BTreeSet<String>,
}

/// A client message decided differently under the two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionChange {
    /// When it arrived.
    pub at: Timestamp,
    /// Its JSON-RPC id as JSON text (`4`, `"abc"`); `None` for a notification.
    pub id: Option<String>,
    /// Its method.
    pub method: String,
    /// The tool, for `tools/call`.
    pub tool: Option<String>,
    /// Under the OLD config.
    pub old: Decision,
    /// Under the NEW config.
    pub new: Decision,
    /// When OLD forwarded it: when the server's recorded answer arrived, if
    /// the capture holds one.
    pub recorded_answer: Option<Timestamp>,
}

/// What the gateway did with one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Passed on to the server.
    Forwarded,
    /// Stopped by a security policy, with its reason.
    Blocked(String),
    /// Not passed on for another reason (invalid, a limit, the server gone,
    /// the audit log broken), with the reason.
    Refused(String),
    /// The replayed gateway had exited before the message arrived.
    NotReached,
}

/// A `tools/list` request whose outcome differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolsListChange {
    /// When the request arrived.
    pub at: Timestamp,
    /// Its id as JSON text.
    pub id: String,
    /// Under the OLD config.
    pub old: ListOutcome,
    /// Under the NEW config.
    pub new: ListOutcome,
}

/// What the client got for one `tools/list` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOutcome {
    /// A page listing these tools, in order.
    Tools(Vec<String>),
    /// An error response, with its message.
    Error(String),
    /// Forwarded, but the capture holds no answer to it.
    Unanswered,
    /// Not forwarded.
    NotForwarded,
}

/// Replays `inputs` under `old` and under `new` and compares what each
/// decided. See the module documentation for what the comparison can only
/// approximate; [`WhatIf::render`] says it for each change.
pub fn what_if(inputs: &[(Timestamp, RecordedInput)], old: &Config, new: &Config) -> WhatIf {
    let old = observe(inputs, old);
    let new = observe(inputs, new);
    let count = old.len().max(new.len());
    let mut result = WhatIf {
        messages_compared: count,
        changes: Vec::new(),
        tools_lists_compared: 0,
        tools_list_changes: Vec::new(),
        tools_appear: BTreeSet::new(),
        tools_vanish: BTreeSet::new(),
    };
    let mut old_tools = BTreeSet::new();
    let mut new_tools = BTreeSet::new();
    for i in 0..count {
        let (o, n) = (old.get(i), new.get(i));
        let Some(message) = o.or(n) else { continue };
        let old_decision = o.map_or(Decision::NotReached, Observed::decision);
        let new_decision = n.map_or(Decision::NotReached, Observed::decision);
        if old_decision != new_decision {
            result.changes.push(DecisionChange {
                at: message.at,
                id: message.id.clone(),
                method: message.method.clone(),
                tool: message.tool.clone(),
                old: old_decision,
                new: new_decision,
                recorded_answer: o.and_then(|o| o.answer.as_ref().map(|a| a.at)),
            });
        }
        if message.method != "tools/list" {
            continue;
        }
        let Some(id) = &message.id else { continue };
        result.tools_lists_compared += 1;
        let old_list = o.map_or(ListOutcome::NotForwarded, Observed::list_outcome);
        let new_list = n.map_or(ListOutcome::NotForwarded, Observed::list_outcome);
        if let (ListOutcome::Tools(a), ListOutcome::Tools(b)) = (&old_list, &new_list) {
            old_tools.extend(a.iter().cloned());
            new_tools.extend(b.iter().cloned());
        }
        if old_list != new_list {
            result.tools_list_changes.push(ToolsListChange {
                at: message.at,
                id: id.clone(),
                old: old_list,
                new: new_list,
            });
        }
    }
    result.tools_appear = new_tools.difference(&old_tools).cloned().collect();
    result.tools_vanish = old_tools.difference(&new_tools).cloned().collect();
    result
}

impl WhatIf {
    /// Whether NEW decides anything differently: a request's fate or the
    /// tools a `tools/list` shows.
    pub fn changes_anything(&self) -> bool {
        !self.changes.is_empty() || !self.tools_list_changes.is_empty()
    }

    /// The comparison as text, naming the configs OLD and NEW, with the
    /// approximations spelled out where they apply.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.changes_anything() {
            let _ = writeln!(
                out,
                "No client message would be decided differently under NEW ({} compared), and every tools/list response ({} compared) lists the same tools.",
                self.messages_compared, self.tools_lists_compared
            );
            return out;
        }
        if self.changes.is_empty() {
            let _ = writeln!(
                out,
                "No client message would be decided differently under NEW ({} compared).",
                self.messages_compared
            );
        } else {
            let _ = writeln!(
                out,
                "{} of {} client messages would be decided differently under NEW.",
                self.changes.len(),
                self.messages_compared
            );
        }
        let mut replayed_traffic_note = false;
        for change in &self.changes {
            out.push('\n');
            let _ = write!(out, "{:.9}  ", change.at);
            match &change.id {
                Some(id) => {
                    let _ = write!(out, "id {id}  ");
                }
                None => out.push_str("notification  "),
            }
            out.push_str(&change.method);
            if let Some(tool) = &change.tool {
                let _ = write!(out, " {tool}");
            }
            out.push('\n');
            let _ = writeln!(out, "    OLD: {}", describe(&change.old));
            let _ = writeln!(out, "    NEW: {}", describe(&change.new));
            let note = match (&change.old, &change.new) {
                (_, Decision::NotReached) => Some("approximate: the gateway replayed under NEW had exited before this message arrived.".to_owned()),
                (Decision::NotReached, _) => Some("approximate: the gateway replayed under OLD had exited before this message arrived.".to_owned()),
                (_, Decision::Forwarded) if change.id.is_some() => Some(
                    "no recorded answer: OLD did not forward this request, so the capture holds no answer from the server; replayed under NEW it stays unanswered.".to_owned(),
                ),
                (Decision::Forwarded, _) if change.id.is_some() => {
                    replayed_traffic_note = true;
                    Some(match change.recorded_answer {
                        Some(at) => format!(
                            "approximate: the server's recorded answer ({at:.9}) still arrives under NEW, which drops it as a response to an unknown id; that PROTOCOL_ERROR is an artefact of the replay, not a new protocol error."
                        ),
                        None => "the capture holds no answer to it either.".to_owned(),
                    })
                }
                (Decision::Forwarded, _) => {
                    replayed_traffic_note = true;
                    Some("a notification has no answer, so none is dropped.".to_owned())
                }
                (_, Decision::Forwarded) => {
                    Some("a notification has no answer, so the replay misses none.".to_owned())
                }
                _ => None,
            };
            if let Some(note) = note {
                let _ = writeln!(out, "    {note}");
            }
        }
        if replayed_traffic_note {
            out.push('\n');
            out.push_str("Messages the server sent because of what NEW would stop (progress, log messages, requests to the client) are still replayed as recorded.\n");
        }
        if !self.tools_list_changes.is_empty() {
            let _ = writeln!(
                out,
                "\n{} of {} tools/list responses would differ under NEW.",
                self.tools_list_changes.len(),
                self.tools_lists_compared
            );
            for change in &self.tools_list_changes {
                let _ = writeln!(out, "\n{:.9}  id {}  tools/list", change.at, change.id);
                match (&change.old, &change.new) {
                    (ListOutcome::Tools(old), ListOutcome::Tools(new)) => {
                        let gone: Vec<&str> = old
                            .iter()
                            .filter(|t| !new.contains(t))
                            .map(String::as_str)
                            .collect();
                        let added: Vec<&str> = new
                            .iter()
                            .filter(|t| !old.contains(t))
                            .map(String::as_str)
                            .collect();
                        if !gone.is_empty() {
                            let _ = writeln!(out, "    vanish: {}", gone.join(", "));
                        }
                        if !added.is_empty() {
                            let _ = writeln!(out, "    appear: {}", added.join(", "));
                        }
                        if gone.is_empty() && added.is_empty() {
                            out.push_str("    the same tools in another order\n");
                        }
                    }
                    (old, new) => {
                        let _ = writeln!(out, "    OLD: {}", describe_list(old));
                        let _ = writeln!(out, "    NEW: {}", describe_list(new));
                        if matches!(old, ListOutcome::NotForwarded)
                            && matches!(new, ListOutcome::Unanswered)
                        {
                            out.push_str("    no recorded page: OLD did not forward this tools/list, so the capture holds no page to filter under NEW.\n");
                        }
                    }
                }
            }
        }
        if !self.tools_appear.is_empty() || !self.tools_vanish.is_empty() {
            out.push('\n');
        }
        if !self.tools_appear.is_empty() {
            let _ = writeln!(
                out,
                "Tools the client would see under NEW but not under OLD: {}",
                join(&self.tools_appear)
            );
        }
        if !self.tools_vanish.is_empty() {
            let _ = writeln!(
                out,
                "Tools the client sees under OLD but would not under NEW: {}",
                join(&self.tools_vanish)
            );
        }
        out
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Forwarded => "forwarded".to_owned(),
        Decision::Blocked(reason) => format!("blocked ({reason})"),
        Decision::Refused(reason) => format!("refused ({reason})"),
        Decision::NotReached => "not reached (the gateway had exited)".to_owned(),
    }
}

fn describe_list(outcome: &ListOutcome) -> String {
    match outcome {
        ListOutcome::Tools(names) => format!("{} tools: {}", names.len(), names.join(", ")),
        ListOutcome::Error(message) => format!("error ({message})"),
        ListOutcome::Unanswered => "forwarded, no recorded answer".to_owned(),
        ListOutcome::NotForwarded => "not forwarded".to_owned(),
    }
}

/// A client message as one replay saw it.
#[derive(Debug, Clone)]
struct Observed {
    at: Timestamp,
    id: Option<String>,
    method: String,
    tool: Option<String>,
    forwarded: bool,
    blocked: Option<String>,
    refused: Option<String>,
    answer: Option<Answer>,
}

/// The first response the client received to a forwarded request.
#[derive(Debug, Clone)]
struct Answer {
    at: Timestamp,
    /// For `tools/list`: the tool names, or the error message.
    page: Option<Result<Vec<String>, String>>,
}

impl Observed {
    fn decision(&self) -> Decision {
        if let Some(reason) = &self.blocked {
            Decision::Blocked(reason.clone())
        } else if self.forwarded {
            Decision::Forwarded
        } else {
            Decision::Refused(
                self.refused
                    .clone()
                    .unwrap_or_else(|| "not forwarded".to_owned()),
            )
        }
    }

    fn list_outcome(&self) -> ListOutcome {
        if !self.forwarded {
            return ListOutcome::NotForwarded;
        }
        match self.answer.as_ref().and_then(|a| a.page.clone()) {
            Some(Ok(names)) => ListOutcome::Tools(names),
            Some(Err(message)) => ListOutcome::Error(message),
            None => ListOutcome::Unanswered,
        }
    }
}

/// Replays `inputs` one message per chunk under `config` with an extra
/// audit sink (json, every event) to read the decisions from.
fn observe(inputs: &[(Timestamp, RecordedInput)], config: &Config) -> Vec<Observed> {
    let mut config = config.clone();
    let sink = AuditSinkId(audit_sinks(&config).count());
    config.plugins.auditing.push(PluginEntry {
        enabled: true,
        plugin: AuditingPlugin::FileAuditing(FileAuditingConfig {
            output_file: String::new(),
            format: AuditFormat::Json,
            mode: AuditMode::All,
            max_file_size_mb: FileSizeMb(1024.0 * 1024.0),
            backup_count: 0,
            critical: false,
            csv_config: CsvConfig::default(),
        }),
    });
    let mut decisions = Decisions {
        sink,
        messages: Vec::new(),
        current: None,
        tail_pending: false,
        from_upstream: false,
        awaiting: BTreeMap::new(),
    };
    play(&config, inputs, Chunking::WholeLines, &mut decisions);
    decisions.messages
}

/// The observer that learns each decision from one message-per-chunk replay.
struct Decisions {
    /// The extra sink's id.
    sink: AuditSinkId,
    messages: Vec<Observed>,
    /// The message being fed, if the current input is a client message.
    current: Option<usize>,
    /// The last client bytes had no newline: the gateway reads them at EOF.
    tail_pending: bool,
    /// The current input came from the upstream.
    from_upstream: bool,
    /// Forwarded requests waiting for their answer, by id.
    awaiting: BTreeMap<String, usize>,
}

impl Observer for Decisions {
    fn fed(&mut self, at: Timestamp, input: &Input<'_>) {
        match input {
            Input::ClientBytes(line) => {
                self.tail_pending = !line.ends_with(b"\n");
                self.from_upstream = false;
                self.current = read_message(at, line).map(|message| {
                    self.messages.push(message);
                    self.messages.len() - 1
                });
            }
            Input::ClientEof if self.tail_pending => self.tail_pending = false,
            other => {
                self.current = None;
                self.tail_pending = false;
                self.from_upstream = matches!(other, Input::UpstreamBytes(_));
            }
        }
    }

    fn acted(&mut self, entry: &Entry) {
        match &entry.action {
            Action::Audit(write) if write.sink == self.sink => {
                let Some(message) = self.current.map(|i| &mut self.messages[i]) else {
                    return;
                };
                // One write may hold several records (one per line).
                for line in write.bytes.split(|&b| b == b'\n') {
                    let Ok(record) = serde_json::from_slice::<Value>(line) else {
                        continue;
                    };
                    let field = |name: &str| record.get(name).and_then(Value::as_str);
                    let reason = field("reason").unwrap_or("no reason given").to_owned();
                    match (field("event_type"), field("source"), field("status")) {
                        (Some("REQUEST"), Some("client"), Some("BLOCKED"))
                        | (Some("SECURITY_BLOCK"), _, _) => message.blocked = Some(reason),
                        (Some("REQUEST"), Some("client"), Some("ERROR"))
                        | (Some("PROTOCOL_ERROR"), Some("client"), _) => {
                            message.refused.get_or_insert(reason);
                        }
                        _ => {}
                    }
                }
            }
            Action::ToUpstream(_) => {
                if let Some(i) = self.current {
                    let message = &mut self.messages[i];
                    message.forwarded = true;
                    if let Some(id) = &message.id {
                        self.awaiting.insert(id.clone(), i);
                    }
                }
            }
            Action::ToClient(bytes) => {
                let Ok(reply) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                if reply.get("result").is_none() && reply.get("error").is_none() {
                    return;
                }
                let Some(id) = reply.get("id").map(Value::to_string) else {
                    return;
                };
                if let Some(i) = self.current {
                    // A reply in the message's own step was made by the gateway.
                    let message = &mut self.messages[i];
                    if message.id.as_ref() == Some(&id) && !message.forwarded {
                        if let Some(text) = reply.pointer("/error/message").and_then(Value::as_str)
                        {
                            message.refused.get_or_insert_with(|| text.to_owned());
                        }
                    }
                    return;
                }
                let Some(i) = self.awaiting.remove(&id) else {
                    return;
                };
                if !self.from_upstream {
                    // The gateway answered for a server that never did.
                    return;
                }
                let message = &mut self.messages[i];
                let page = (message.method == "tools/list").then(|| tools_page(&reply));
                message.answer = Some(Answer { at: entry.at, page });
            }
            _ => {}
        }
    }
}

/// A client line that is a request or a notification, as JSON; `None` for
/// responses and for lines that are not JSON objects.
fn read_message(at: Timestamp, line: &[u8]) -> Option<Observed> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let method = value.get("method")?.as_str()?.to_owned();
    let tool = (method == "tools/call")
        .then(|| value.pointer("/params/name").and_then(Value::as_str))
        .flatten()
        .map(str::to_owned);
    Some(Observed {
        at,
        id: value.get("id").map(Value::to_string),
        method,
        tool,
        forwarded: false,
        blocked: None,
        refused: None,
        answer: None,
    })
}

/// The tool names of a `tools/list` reply, or its error message.
fn tools_page(reply: &Value) -> Result<Vec<String>, String> {
    if let Some(tools) = reply.pointer("/result/tools").and_then(Value::as_array) {
        return Ok(tools
            .iter()
            .map(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect());
    }
    Err(reply
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no tools in the result")
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, session};
    use super::*;

    #[test]
    fn same_config_changes_nothing() {
        let config = config(&["read_file"]);
        let result = what_if(&session(), &config, &config);
        assert!(!result.changes_anything(), "{}", result.render());
        assert_eq!(result.messages_compared, 4);
        assert_eq!(result.tools_lists_compared, 1);
        assert!(result.render().starts_with("No client message"));
    }

    #[test]
    fn names_exactly_the_requests_whose_fate_changes() {
        let old = config(&["read_file"]);
        let new = config(&["delete_file"]);
        let result = what_if(&session(), &old, &new);
        let changed: Vec<(Option<&str>, &Decision, &Decision)> = result
            .changes
            .iter()
            .map(|c| (c.id.as_deref(), &c.old, &c.new))
            .collect();
        assert_eq!(
            changed,
            [
                (
                    Some("2"),
                    &Decision::Forwarded,
                    &Decision::Blocked("Tool 'read_file' is not in allowlist".into())
                ),
                (
                    Some("3"),
                    &Decision::Blocked("Tool 'delete_file' is not in allowlist".into()),
                    &Decision::Forwarded
                ),
            ]
        );
        assert_eq!(
            result.tools_appear,
            BTreeSet::from(["delete_file".to_owned()])
        );
        assert_eq!(
            result.tools_vanish,
            BTreeSet::from(["read_file".to_owned()])
        );
        let text = result.render();
        assert!(
            text.contains("no recorded answer: OLD did not forward"),
            "{text}"
        );
        assert!(
            text.contains("drops it as a response to an unknown id"),
            "{text}"
        );
        assert!(
            text.contains("    vanish: read_file\n    appear: delete_file"),
            "{text}"
        );
    }
}
