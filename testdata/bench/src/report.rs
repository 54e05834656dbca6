//! Collected numbers, the target checks, the printed table and the JSON.

use crate::stats::{median, paired_ratios, Summary};
use crate::sys::Machine;
use crate::targets::{Kind, Target};
use crate::Plan;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured quantity; every target gets one value per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    ColdStart,
    LatencyP50,
    LatencyP99,
    ToolsList,
    Pipelined,
    PipelinedRss,
    /// `plan.large[i]`: its rate (`true`) or the peak RSS (`false`).
    Large(usize, bool),
    CoreMessages,
    CoreMib,
    CoreLargeMib,
    CoreToolsList,
}

impl Metric {
    pub fn key(self, plan: &Plan) -> String {
        match self {
            Metric::ColdStart => "cold_start_ms".into(),
            Metric::LatencyP50 => "latency_p50_us".into(),
            Metric::LatencyP99 => "latency_p99_us".into(),
            Metric::ToolsList => "tools_list_p50_us".into(),
            Metric::Pipelined => "pipelined_msgs_per_s".into(),
            Metric::PipelinedRss => "pipelined_peak_rss_mib".into(),
            Metric::Large(i, true) => format!("echo_{}_mib_per_s", size(plan.large[i].0)),
            Metric::Large(i, false) => format!("echo_{}_peak_rss_mib", size(plan.large[i].0)),
            Metric::CoreMessages => "core_msgs_per_s".into(),
            Metric::CoreMib => "core_mib_per_s".into(),
            Metric::CoreLargeMib => format!("core_{}_mib_per_s", size(plan.core_large_bytes)),
            Metric::CoreToolsList => "core_tools_list_us".into(),
        }
    }

    pub fn title(self, plan: &Plan) -> String {
        match self {
            Metric::ColdStart => "cold start: spawn → `initialize` answer".into(),
            Metric::LatencyP50 => {
                format!("round trip p50, {} B echo, sequential", plan.latency_bytes)
            }
            Metric::LatencyP99 => {
                format!("round trip p99, {} B echo, sequential", plan.latency_bytes)
            }
            Metric::ToolsList => "`tools/list`, 500 tools (gatekit: filtered to 5), p50".into(),
            Metric::Pipelined => format!(
                "pipelined {} echo, {} in flight",
                size(plan.pipelined_bytes),
                plan.in_flight
            ),
            Metric::PipelinedRss => format!(
                "peak RSS of the spawned process, pipelined {} load",
                size(plan.pipelined_bytes)
            ),
            Metric::Large(i, true) => format!("{} echo, sequential", size(plan.large[i].0)),
            Metric::Large(i, false) => format!(
                "peak RSS of the spawned process, {} echo",
                size(plan.large[i].0)
            ),
            Metric::CoreMessages => format!(
                "core only: {} × {} echo round trips through `Gateway`",
                plan.core_round_trips,
                size(plan.core_bytes)
            ),
            Metric::CoreMib => format!(
                "core only: the same, bytes fed ({} echo)",
                size(plan.core_bytes)
            ),
            Metric::CoreLargeMib => format!(
                "core only: {} × {} echo round trips, bytes fed",
                plan.core_large_round_trips,
                size(plan.core_large_bytes)
            ),
            Metric::CoreToolsList => format!(
                "core only: {} × `tools/list` of 500 tools filtered to 5, per round trip",
                plan.core_tools_round_trips
            ),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::ColdStart => "ms",
            Metric::LatencyP50 | Metric::LatencyP99 | Metric::ToolsList | Metric::CoreToolsList => {
                "µs"
            }
            Metric::Pipelined | Metric::CoreMessages => "msg/s",
            Metric::PipelinedRss | Metric::Large(_, false) => "MiB",
            Metric::Large(_, true) | Metric::CoreMib | Metric::CoreLargeMib => "MiB/s",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Pipelined
                | Metric::Large(_, true)
                | Metric::CoreMessages
                | Metric::CoreMib
                | Metric::CoreLargeMib
        )
    }
}

/// `1 KiB`, `10 MiB`, `100 B`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Every value of every metric, by target, in round order.
pub struct Results {
    order: Vec<Metric>,
    values: BTreeMap<Metric, BTreeMap<String, Vec<f64>>>,
    targets: Vec<String>,
}

impl Results {
    pub fn new(targets: &[Target]) -> Self {
        Results {
            order: Vec::new(),
            values: BTreeMap::new(),
            targets: targets.iter().map(|t| t.name.clone()).collect(),
        }
    }

    pub fn record(&mut self, metric: Metric, target: &str, value: f64) {
        if !self.values.contains_key(&metric) {
            self.order.push(metric);
        }
        self.values
            .entry(metric)
            .or_default()
            .entry(target.to_owned())
            .or_default()
            .push(value);
    }

    pub fn series(&self, metric: Metric, target: &str) -> &[f64] {
        self.values
            .get(&metric)
            .and_then(|m| m.get(target))
            .map_or(&[], Vec::as_slice)
    }

    fn rows(&self, metric: Metric) -> Vec<String> {
        let Some(by_target) = self.values.get(&metric) else {
            return Vec::new();
        };
        let mut rows: Vec<String> = self
            .targets
            .iter()
            .filter(|t| by_target.contains_key(*t))
            .cloned()
            .collect();
        rows.extend(
            by_target
                .keys()
                .filter(|t| !self.targets.contains(t))
                .cloned(),
        );
        rows
    }

    /// Median of per-round ratios `target / reference`, if both were measured.
    fn ratio(&self, metric: Metric, target: &str, reference: &str) -> Option<f64> {
        let a = self.series(metric, target);
        let b = self.series(metric, reference);
        if a.is_empty() || b.is_empty() {
            return None;
        }
        Some(median(&paired_ratios(a, b)))
    }
}

/// One line of the targets, judged for one gatekit runtime.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub measured: f64,
    pub limit: f64,
    /// `<=` or `>=`.
    pub op: &'static str,
    pub detail: String,
    pub pass: bool,
}

impl Check {
    fn new(
        name: String,
        target: &str,
        measured: f64,
        op: &'static str,
        limit: f64,
        detail: String,
    ) -> Self {
        let pass = match op {
            "<=" => measured <= limit,
            _ => measured >= limit,
        };
        Check {
            name,
            target: target.to_owned(),
            measured,
            limit,
            op,
            detail,
            pass,
        }
    }
}

/// The p50 latency `target` adds to a direct connection, as a ratio to what
/// `reference` adds (the median of per-round ratios), and the two medians
/// of what they add, in µs.
fn added_latency(results: &Results, target: &str, reference: &str) -> (f64, f64, f64) {
    let g = results.series(Metric::LatencyP50, target);
    let d = results.series(Metric::LatencyP50, "direct");
    let r = results.series(Metric::LatencyP50, reference);
    let ratios: Vec<f64> = (0..g.len().min(d.len()).min(r.len()))
        .map(|i| (g[i] - d[i]) / (r[i] - d[i]))
        .collect();
    let added_g = median(&g.iter().zip(d).map(|(g, d)| g - d).collect::<Vec<_>>());
    let added_r = median(&r.iter().zip(d).map(|(r, d)| r - d).collect::<Vec<_>>());
    (median(&ratios), added_g, added_r)
}

/// What the floors below Gatekit cost by themselves, measured as the
/// targets measure Gatekit: `line-relay` (holding each whole message, as a
/// gateway that checks messages must) and `relay-smol` (the smol runtime's
/// way of moving bytes) against the byte relay, and the smol runtime
/// against its own floor. A target a floor already misses cannot be met by
/// anything built on it.
pub fn floors(results: &Results, plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    for floor in ["line-relay", "relay-smol"] {
        let mut parts = Vec::new();
        if !results.series(Metric::LatencyP50, floor).is_empty() {
            let (ratio, added, _) = added_latency(results, floor, "relay");
            parts.push(format!(
                "adds {added:.1} µs to a round trip, {} × the relay's",
                num(ratio)
            ));
        }
        if let Some(ratio) = results.ratio(Metric::Pipelined, floor, "relay") {
            parts.push(format!("pipelined {} × the relay's", num(ratio)));
        }
        if let Some(last) = plan.large.len().checked_sub(1) {
            if let Some(ratio) = results.ratio(Metric::Large(last, true), floor, "relay") {
                parts.push(format!(
                    "{} echo {} × the relay's",
                    size(plan.large[last].0),
                    num(ratio)
                ));
            }
        }
        if !parts.is_empty() {
            lines.push(format!("{floor}: {}", parts.join("; ")));
        }
    }
    if !results.series(Metric::LatencyP50, "relay-smol").is_empty() {
        for t in results.rows(Metric::LatencyP50) {
            if t.starts_with("gatekit-smol") && !t.contains("noaudit") {
                let (ratio, added, floor) = added_latency(results, &t, "relay-smol");
                lines.push(format!(
                    "{t} against relay-smol: adds {added:.1} µs, {} × the {floor:.1} µs relay-smol adds",
                    num(ratio)
                ));
            }
        }
    }
    lines
}

/// The targets, for every gatekit target with json audit and the
/// allowlist on. Ratios are medians of per-round ratios; memory limits are
/// judged on the worst round.
pub fn checks(results: &Results, targets: &[Target], plan: &Plan) -> Vec<Check> {
    let mut checks = Vec::new();
    let has = |metric: Metric| results.values.contains_key(&metric);
    for target in targets {
        let Kind::Gatekit { audit: true, .. } = &target.kind else {
            continue;
        };
        let t = target.name.as_str();
        if has(Metric::LatencyP50) {
            let (ratio, added_g, added_r) = added_latency(results, t, "relay");
            checks.push(Check::new(
                "added p50 latency ≤ 1.5 × the relay's".into(),
                t,
                ratio,
                "<=",
                1.5,
                format!("gatekit adds {added_g:.1} µs, the relay {added_r:.1} µs"),
            ));
        }
        if has(Metric::Pipelined) {
            let ratio = results
                .ratio(Metric::Pipelined, t, "relay")
                .unwrap_or(f64::NAN);
            checks.push(Check::new(
                "pipelined throughput ≥ 0.8 × the relay's".into(),
                t,
                ratio,
                ">=",
                0.8,
                format!(
                    "{:.0} vs {:.0} msg/s",
                    median(results.series(Metric::Pipelined, t)),
                    median(results.series(Metric::Pipelined, "relay"))
                ),
            ));
        }
        if has(Metric::Large(0, true)) {
            let last = plan.large.len() - 1;
            let bytes = plan.large[last].0;
            let rate = Metric::Large(last, true);
            let ratio = results.ratio(rate, t, "relay").unwrap_or(f64::NAN);
            checks.push(Check::new(
                format!("{} echo ≥ 0.8 × the relay's MiB/s", size(bytes)),
                t,
                ratio,
                ">=",
                0.8,
                format!(
                    "{:.0} vs {:.0} MiB/s",
                    median(results.series(rate, t)),
                    median(results.series(rate, "relay"))
                ),
            ));
            let rss = results.series(Metric::Large(last, false), t);
            let limit = 3.0 * bytes as f64 / (1024.0 * 1024.0) + 8.0;
            checks.push(Check::new(
                format!("peak RSS during {} echo ≤ 3 × size + 8 MiB", size(bytes)),
                t,
                worst(rss),
                "<=",
                limit,
                format!("MiB, worst of {} rounds", rss.len()),
            ));
        }
        if has(Metric::ColdStart) {
            let g = results.series(Metric::ColdStart, t);
            let d = results.series(Metric::ColdStart, "direct");
            let added = median(&g.iter().zip(d).map(|(g, d)| g - d).collect::<Vec<_>>());
            checks.push(Check::new(
                "cold start ≤ direct + 3 ms".into(),
                t,
                added,
                "<=",
                3.0,
                format!("ms added; {:.2} vs {:.2} ms", median(g), median(d)),
            ));
        }
        if has(Metric::PipelinedRss) {
            let rss = results.series(Metric::PipelinedRss, t);
            checks.push(Check::new(
                format!(
                    "peak RSS under {} pipelined load ≤ 8 MiB",
                    size(plan.pipelined_bytes)
                ),
                t,
                worst(rss),
                "<=",
                8.0,
                format!("MiB, worst of {} rounds", rss.len()),
            ));
        }
        if has(Metric::ToolsList) {
            let ratio = results
                .ratio(Metric::ToolsList, t, "direct")
                .unwrap_or(f64::NAN);
            checks.push(Check::new(
                "`tools/list` 500 → 5 within 2 × direct".into(),
                t,
                ratio,
                "<=",
                2.0,
                format!(
                    "{:.0} vs {:.0} µs",
                    median(results.series(Metric::ToolsList, t)),
                    median(results.series(Metric::ToolsList, "direct"))
                ),
            ));
        }
    }
    checks
}

/// The largest value, NaN (a failed round) counting as the worst.
fn worst(values: &[f64]) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    values.iter().copied().fold(f64::MIN, f64::max)
}

/// Where and how the run happened.
pub struct Context {
    pub machine: Machine,
    pub cpu_pinned: usize,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub seconds: f64,
    pub commit: String,
    pub gatekit_version: String,
    pub command: String,
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    match r {
        Some(r) if !r.is_nan() => format!("{r:.2}×"),
        _ => "–".into(),
    }
}

/// The printed report: context, every metric for every target, the checks.
/// Markdown, so it can be pasted into the README as it is.
pub fn table(results: &Results, checks: &[Check], context: &Context, plan: &Plan) -> String {
    let mut out = String::new();
    let m = &context.machine;
    let _ = writeln!(
        out,
        "Machine: {} CPUs online ({} allowed), {}, Linux {}, {} MiB RAM; {}.",
        m.cpus_online,
        m.cpus_allowed.len(),
        m.cpu_model,
        m.kernel,
        m.memory_mib,
        m.rustc
    );
    let _ = writeln!(
        out,
        "Load average (1/5/15 min): {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} after. Gatekit {} at {}. {} rounds{} in {:.0} s.",
        context.load_before[0],
        context.load_before[1],
        context.load_before[2],
        context.load_after[0],
        context.load_after[1],
        context.load_after[2],
        context.gatekit_version.trim_start_matches("gatekit "),
        context.commit,
        plan.rounds,
        if plan.quick { " (--quick)" } else { "" },
        context.seconds
    );
    let _ = writeln!(
        out,
        "Median over rounds, spread min–max; × relay and × direct are medians of per-round ratios. Cold start, latency, tools/list and core ran pinned to CPU {}.",
        context.cpu_pinned
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | target | median | spread (min–max) | × relay | × direct |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
    for &metric in &results.order {
        let title = format!(
            "{} ({}, {} is better)",
            metric.title(plan),
            metric.unit(),
            if metric.higher_is_better() {
                "higher"
            } else {
                "lower"
            }
        );
        for (i, target) in results.rows(metric).iter().enumerate() {
            let s = Summary::of(results.series(metric, target));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}–{} | {} | {} |",
                if i == 0 { title.as_str() } else { "" },
                target,
                num(s.median),
                num(s.min),
                num(s.max),
                ratio_cell(results.ratio(metric, target, "relay")),
                ratio_cell(results.ratio(metric, target, "direct")),
            );
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| target (json audit + allowlist on) | gatekit | measured | limit | |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|---|");
        for c in checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} {} | {} |",
                c.name,
                c.target.trim_start_matches("gatekit-"),
                num(c.measured),
                c.detail,
                c.op.replace("<=", "≤").replace(">=", "≥"),
                num(c.limit),
                if c.pass { "PASS" } else { "**FAIL**" }
            );
        }
    }
    let floors = floors(results, plan);
    if !floors.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "What the floors cost by themselves, measured as the targets are:"
        );
        for line in floors {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

/// Everything, for machines: context, plan, per-round values, summaries,
/// ratios and checks.
pub fn json(
    results: &Results,
    checks: &[Check],
    context: &Context,
    plan: &Plan,
    targets: &[Target],
) -> Value {
    let metrics: Vec<Value> = results
        .order
        .iter()
        .map(|&metric| {
            let mut by_target = serde_json::Map::new();
            for target in results.rows(metric) {
                let values = results.series(metric, &target);
                let s = Summary::of(values);
                by_target.insert(
                    target.clone(),
                    json!({
                        "rounds": values,
                        "median": s.median,
                        "min": s.min,
                        "max": s.max,
                        "p25": s.p25,
                        "p75": s.p75,
                        "vs_relay": results.ratio(metric, &target, "relay"),
                        "vs_direct": results.ratio(metric, &target, "direct"),
                    }),
                );
            }
            json!({
                "key": metric.key(plan),
                "title": metric.title(plan),
                "unit": metric.unit(),
                "better": if metric.higher_is_better() { "higher" } else { "lower" },
                "targets": by_target,
            })
        })
        .collect();
    let m = &context.machine;
    json!({
        "schema": "gatekit-bench/1",
        "command": context.command,
        "commit": context.commit,
        "gatekit_version": context.gatekit_version,
        "machine": {
            "cpus_online": m.cpus_online,
            "cpus_allowed": m.cpus_allowed,
            "cpu_model": m.cpu_model,
            "kernel": m.kernel,
            "memory_mib": m.memory_mib,
            "rustc": m.rustc,
        },
        "loadavg_before": context.load_before,
        "loadavg_after": context.load_after,
        "cpu_pinned": context.cpu_pinned,
        "seconds": context.seconds,
        "plan": serde_json::to_value(plan).expect("plan"),
        "targets": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "metrics": metrics,
        "checks": checks.iter().map(|c| json!({
            "check": c.name,
            "target": c.target,
            "measured": c.measured,
            "op": c.op,
            "limit": c.limit,
            "detail": c.detail,
            "pass": c.pass,
        })).collect::<Vec<_>>(),
        "floors": floors(results, plan),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            large: vec![(1024, 1), (10 * 1024 * 1024, 1)],
            ..Plan::quick()
        }
    }

    #[test]
    fn floors_are_measured_as_the_targets_are_and_only_when_run() {
        let targets = [Target::direct(), Target::relay(), Target::smol_relay()];
        let mut results = Results::new(&targets);
        assert!(floors(&results, &plan()).is_empty(), "nothing measured yet");
        // Two rounds: direct 3 µs, relay 9 µs (adds 6), relay-smol 12 µs
        // (adds 9: 1.5 ×), gatekit-smol 21 µs (adds 18: 2 × relay-smol's).
        for _ in 0..2 {
            for (target, value) in [
                ("direct", 3.0),
                ("relay", 9.0),
                ("relay-smol", 12.0),
                ("gatekit-smol", 21.0),
                ("gatekit-smol-noaudit", 15.0),
            ] {
                results.record(Metric::LatencyP50, target, value);
            }
            results.record(Metric::Large(1, true), "relay", 800.0);
            results.record(Metric::Large(1, true), "relay-smol", 400.0);
        }
        assert_eq!(
            floors(&results, &plan()),
            [
                "relay-smol: adds 9.0 µs to a round trip, 1.50 × the relay's; 10 MiB echo 0.50 × the relay's",
                "gatekit-smol against relay-smol: adds 18.0 µs, 2.00 × the 9.0 µs relay-smol adds",
            ]
        );
    }
}
