//! Security policies: which tools may be called, and which may be listed.
//!
//! One predicate, [`ToolAllowlist::permits`], decides both, so a tool is
//! listed exactly when it is callable. Names are compared as decoded JSON
//! strings, byte for byte: no case folding, no Unicode normalisation.

use crate::audit::PluginMetadata;
use crate::config::{ListMode, ToolAllowlistConfig};
use std::borrow::Cow;
use std::cmp::Ordering;

/// The `tool_allowlist` plugin.
#[derive(Debug, Clone)]
pub(crate) struct ToolAllowlist {
    mode: ListMode,
    /// The configured names, sorted by length first (see [`by_length`]) and
    /// without repeats: a `tools/list` answer asks about every tool it
    /// lists, and most names differ from the listed ones in length, which
    /// settles a comparison without reading a byte.
    tools: Vec<Box<str>>,
    /// Bit n set when a configured name is n bytes long (bit 63: 63 or
    /// more): a name of any other length is not listed, without a search.
    lengths: u64,
    block_message: String,
}

/// The bit of [`ToolAllowlist::lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Name the plugin reports in audit records.
pub(crate) const TOOL_ALLOWLIST: &str = "tool_allowlist";

impl ToolAllowlist {
    pub(crate) fn new(config: &ToolAllowlistConfig) -> Self {
        let mut tools: Vec<Box<str>> = config.tools.iter().map(|t| t.as_str().into()).collect();
        tools.sort_unstable_by(|a, b| by_length(a, b));
        tools.dedup();
        ToolAllowlist {
            mode: config.mode,
            lengths: tools.iter().fold(0, |bits, t| bits | length_bit(t.len())),
            tools,
            block_message: config.block_message.clone(),
        }
    }

    /// Whether `tool` may be listed and called.
    pub(crate) fn permits(&self, tool: &str) -> bool {
        let listed = self.lengths & length_bit(tool.len()) != 0
            && self
                .tools
                .binary_search_by(|listed| by_length(listed, tool))
                .is_ok();
        match self.mode {
            ListMode::Allowlist => listed,
            ListMode::Blocklist => !listed,
        }
    }

    fn denial_reason(&self, tool: &str) -> String {
        match self.mode {
            ListMode::Allowlist => format!("Tool '{tool}' is not in allowlist"),
            ListMode::Blocklist => format!("Tool '{tool}' is in blocklist"),
        }
    }
}

/// Orders names by length, then byte by byte: a total order in which
/// equal names, and only they, compare equal.
fn by_length(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A decision on one `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallDecision {
    /// Every policy allowed it. `checks` lists `plugin:ALLOWED` per policy.
    Allowed {
        checks: Checks,
        plugin: Option<&'static str>,
    },
    /// A policy blocked it (or could not decide, which blocks too).
    Blocked {
        plugin: &'static str,
        reason: String,
        block_message: String,
        metadata: PluginMetadata<'static>,
        checks: Checks,
    },
}

/// The `plugin:DECISION` list of a decision, in policy order: a fixed list
/// for the usual single policy, so deciding an allowed call allocates
/// nothing.
pub(crate) type Checks = Cow<'static, [&'static str]>;

/// A check that let the call through.
const ALLOWED_CHECK: &str = "tool_allowlist:ALLOWED";
/// The check that stopped it.
const BLOCKED_CHECK: &str = "tool_allowlist:BLOCKED";

/// `checks` followed by `last`: borrowed while the list is that one check.
fn with_check(checks: Checks, last: &'static str) -> Checks {
    if checks.is_empty() {
        return Cow::Borrowed(match last {
            ALLOWED_CHECK => &[ALLOWED_CHECK],
            _ => &[BLOCKED_CHECK],
        });
    }
    let mut checks = checks.into_owned();
    checks.push(last);
    Cow::Owned(checks)
}

/// All configured security policies, applied in configuration order.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecurityPolicies {
    allowlists: Vec<ToolAllowlist>,
}

impl SecurityPolicies {
    pub(crate) fn new(allowlists: Vec<ToolAllowlist>) -> Self {
        SecurityPolicies { allowlists }
    }

    /// True when no policy is configured: the gateway is a pure recorder and
    /// passes even malformed calls to the server unchanged.
    pub(crate) fn is_empty(&self) -> bool {
        self.allowlists.is_empty()
    }

    /// Whether every policy lets `tool` be listed and called.
    pub(crate) fn permits_tool(&self, tool: &str) -> bool {
        self.allowlists.iter().all(|p| p.permits(tool))
    }

    /// Decides a `tools/call` whose tool name was read as `tool`, or could
    /// not be read (`Err(why)`): a call the policy cannot judge is blocked.
    pub(crate) fn decide_call(&self, tool: Result<&str, &str>) -> CallDecision {
        let mut checks: Checks = Cow::Borrowed(&[]);
        for policy in &self.allowlists {
            let reason = match tool {
                Ok(name) if policy.permits(name) => {
                    checks = with_check(checks, ALLOWED_CHECK);
                    continue;
                }
                Ok(name) => policy.denial_reason(name),
                Err(why) => format!("Cannot determine the tool name ({why}); blocked because the policy cannot decide"),
            };
            checks = with_check(checks, BLOCKED_CHECK);
            return CallDecision::Blocked {
                plugin: TOOL_ALLOWLIST,
                reason,
                block_message: policy.block_message.clone(),
                metadata: PluginMetadata::Mode(policy.mode.as_str()),
                checks,
            };
        }
        let plugin = (!self.allowlists.is_empty()).then_some(TOOL_ALLOWLIST);
        CallDecision::Allowed { checks, plugin }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist(mode: ListMode, tools: &[&str]) -> ToolAllowlist {
        ToolAllowlist::new(&ToolAllowlistConfig {
            mode,
            tools: tools.iter().map(|t| t.to_string()).collect(),
            block_message: "no".into(),
        })
    }

    #[test]
    fn allowlist_and_blocklist_modes() {
        let allow = allowlist(ListMode::Allowlist, &["read_file"]);
        assert!(allow.permits("read_file"));
        assert!(!allow.permits("delete_file"));
        let block = allowlist(ListMode::Blocklist, &["delete_file"]);
        assert!(block.permits("read_file"));
        assert!(!block.permits("delete_file"));
    }

    #[test]
    fn every_listed_name_is_found_whatever_its_length() {
        let long = "x".repeat(70);
        let longer = "x".repeat(80);
        let names = [
            "b",
            "a",
            "ab",
            "ba",
            "read_file",
            "echo",
            "",
            "read_filf",
            "a",
            "zz",
            "ü",
            "echo",
            &long,
        ];
        let allow = allowlist(ListMode::Allowlist, &names);
        for name in names {
            assert!(allow.permits(name), "{name:?}");
        }
        for name in [
            "c",
            "aa",
            "read_fild",
            "ech",
            "echoo",
            "ü ",
            "u",
            &longer,
            &long[1..],
        ] {
            assert!(!allow.permits(name), "{name:?}");
        }
    }

    #[test]
    fn names_compare_exactly() {
        let allow = allowlist(ListMode::Allowlist, &["read_file"]);
        for trick in [
            "Read_file",
            "READ_FILE",
            "read_file ",
            " read_file",
            "read\u{017f}file",
            "read_ﬁle",
            "",
        ] {
            assert!(!allow.permits(trick), "{trick:?}");
        }
        let block = allowlist(ListMode::Blocklist, &["delete_file"]);
        // In blocklist mode a different spelling is a different tool: the
        // server will not find it, and the name compared is the name forwarded.
        assert!(block.permits("Delete_file"));
    }

    #[test]
    fn undecidable_calls_are_blocked_and_every_policy_must_allow() {
        let policies = SecurityPolicies::new(vec![
            allowlist(ListMode::Allowlist, &["a", "b"]),
            allowlist(ListMode::Blocklist, &["b"]),
        ]);
        assert!(
            matches!(policies.decide_call(Ok("a")), CallDecision::Allowed { ref checks, .. } if checks.len() == 2)
        );
        match policies.decide_call(Ok("b")) {
            CallDecision::Blocked { reason, checks, .. } => {
                assert_eq!(reason, "Tool 'b' is in blocklist");
                assert_eq!(
                    *checks,
                    ["tool_allowlist:ALLOWED", "tool_allowlist:BLOCKED"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policies.decide_call(Err("missing name")),
            CallDecision::Blocked { .. }
        ));
        assert!(!policies.permits_tool("b"));
    }

    #[test]
    fn the_fixed_checks_name_the_plugin() {
        assert_eq!(ALLOWED_CHECK, format!("{TOOL_ALLOWLIST}:ALLOWED"));
        assert_eq!(BLOCKED_CHECK, format!("{TOOL_ALLOWLIST}:BLOCKED"));
        let one = SecurityPolicies::new(vec![allowlist(ListMode::Allowlist, &["a"])]);
        match one.decide_call(Ok("a")) {
            CallDecision::Allowed { checks, .. } => assert_eq!(*checks, [ALLOWED_CHECK]),
            other => panic!("{other:?}"),
        }
        match one.decide_call(Ok("b")) {
            CallDecision::Blocked { checks, .. } => assert_eq!(*checks, [BLOCKED_CHECK]),
            other => panic!("{other:?}"),
        }
    }
}
