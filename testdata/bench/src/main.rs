//! `gatekit-bench`: Gatekit's overhead, measured against a bare byte relay
//! and against no gateway at all, side by side in one run.
//!
//! ```text
//! cargo run --release -p gatekit-bench                 # full run (two to three minutes)
//! cargo run --release -p gatekit-bench -- --quick      # smoke run (about a minute)
//! cargo run --release -p gatekit-bench -- --help
//! ```
//!
//! Every round runs every scenario against every target, in an order that
//! rotates from round to round, so a slow moment of a shared machine lands
//! on all targets alike; the table shows the median over rounds, the
//! spread, and ratios to the relay and to direct computed round by round.
//! The small-message sequential scenarios run with client, gateway and
//! upstream pinned to one CPU: crossing CPUs adds tens of microseconds per
//! hop on the machines this runs on, which would drown what is measured.

mod core_replay;
mod report;
mod scenarios;
mod stats;
mod sys;
mod targets;
mod tools_list;

use report::{Check, Metric, Results};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use targets::{Env, Target};

const USAGE: &str = "\
gatekit-bench: measures Gatekit against a bare byte relay and a direct connection

usage: cargo run --release -p gatekit-bench -- [options]

  --quick             smoke run: 2 rounds, fewer calls, smaller large messages
  --rounds N          interleaved rounds (default 9; --quick 2)
  --json FILE         write results here (default target/bench/results.json)
  --scenarios LIST    comma-separated subset of: cold,latency,tools,pipelined,large,core
  --runtimes LIST     gatekit runtimes to include (default: std, and smol when
                      `gatekit --help` offers --runtime)
  --cpu N             the CPU for pinned scenarios (default: the last allowed one)
  --gatekit PATH      the gatekit binary (default: next to this one)
  --compare LABEL=PATH  also measure another gatekit binary (say, a branch's),
                      as targets gatekit-<runtime>@LABEL; repeatable
  --core-round-trips N   round trips of the core-only replay (default 10000; --quick 2000)
  --core-large N         1 MiB round trips of the core-only large replay (default 50)
  --core-tools N         `tools/list` round trips (500 tools) of the core-only replay
                         (default 200; --quick 50)
                         (both handy under `valgrind --tool=callgrind`)
  --no-build          do not run `cargo build` for gatekit and the bench binaries first
  --keep-scratch      keep the temporary configs, audit logs and stderr logs
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Cold,
    Latency,
    Tools,
    Pipelined,
    Large,
    Core,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Cold,
        Scenario::Latency,
        Scenario::Tools,
        Scenario::Pipelined,
        Scenario::Large,
        Scenario::Core,
    ];

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cold" => Scenario::Cold,
            "latency" => Scenario::Latency,
            "tools" => Scenario::Tools,
            "pipelined" => Scenario::Pipelined,
            "large" => Scenario::Large,
            "core" => Scenario::Core,
            _ => return None,
        })
    }

    /// Sequential small-message scenarios run pinned to one CPU.
    fn pinned(self) -> bool {
        matches!(
            self,
            Scenario::Cold | Scenario::Latency | Scenario::Tools | Scenario::Core
        )
    }
}

/// How much work each scenario does.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub cold_starts: usize,
    pub latency_calls: usize,
    pub latency_warmup: usize,
    pub latency_bytes: usize,
    pub tools_calls: usize,
    pub tools_warmup: usize,
    pub pipelined_messages: usize,
    pub pipelined_bytes: usize,
    pub in_flight: usize,
    /// (payload bytes, timed calls)
    pub large: Vec<(usize, usize)>,
    pub core_round_trips: usize,
    pub core_bytes: usize,
    pub core_large_round_trips: usize,
    pub core_large_bytes: usize,
    pub core_tools_round_trips: usize,
}

const MIB: usize = 1024 * 1024;

impl Plan {
    fn full() -> Self {
        Plan {
            quick: false,
            rounds: 9,
            cold_starts: 15,
            latency_calls: 3000,
            latency_warmup: 300,
            latency_bytes: 100,
            tools_calls: 300,
            tools_warmup: 30,
            pipelined_messages: 30_000,
            pipelined_bytes: 1024,
            in_flight: 64,
            large: vec![(MIB, 20), (10 * MIB, 5)],
            core_round_trips: 10_000,
            core_bytes: 1024,
            core_large_round_trips: 50,
            core_large_bytes: MIB,
            core_tools_round_trips: 200,
        }
    }

    fn quick() -> Self {
        Plan {
            quick: true,
            rounds: 2,
            cold_starts: 3,
            latency_calls: 300,
            latency_warmup: 50,
            tools_calls: 30,
            tools_warmup: 5,
            pipelined_messages: 3000,
            large: vec![(256 * 1024, 4), (2 * MIB, 3)],
            core_round_trips: 2000,
            core_large_round_trips: 10,
            core_large_bytes: 256 * 1024,
            core_tools_round_trips: 50,
            ..Plan::full()
        }
    }
}

struct Options {
    plan: Plan,
    json: PathBuf,
    scenarios: Vec<Scenario>,
    runtimes: Option<Vec<String>>,
    cpu: Option<usize>,
    gatekit: Option<PathBuf>,
    compare: Vec<(String, PathBuf)>,
    build: bool,
    keep_scratch: bool,
}

fn parse_args(root: &Path) -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut rounds = None;
    let mut json = root.join("target").join("bench").join("results.json");
    let mut scenarios = Scenario::ALL.to_vec();
    let mut runtimes = None;
    let mut cpu = None;
    let mut gatekit = None;
    let mut compare = Vec::new();
    let mut build = true;
    let mut keep_scratch = false;
    let mut core_round_trips = None;
    let mut core_large = None;
    let mut core_tools = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                rounds = Some(
                    value("--rounds")?
                        .parse::<usize>()
                        .map_err(|e| format!("--rounds: {e}"))?
                        .max(1),
                )
            }
            "--json" => json = PathBuf::from(value("--json")?),
            "--scenarios" => {
                scenarios = value("--scenarios")?
                    .split(',')
                    .map(|s| Scenario::parse(s.trim()).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?;
                scenarios.sort();
                scenarios.dedup();
            }
            "--runtimes" => {
                runtimes = Some(
                    value("--runtimes")?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect(),
                )
            }
            "--cpu" => cpu = Some(value("--cpu")?.parse().map_err(|e| format!("--cpu: {e}"))?),
            "--gatekit" => gatekit = Some(PathBuf::from(value("--gatekit")?)),
            "--compare" => {
                let spec = value("--compare")?;
                let (label, path) = spec
                    .split_once('=')
                    .ok_or(format!("--compare takes LABEL=PATH, not {spec:?}"))?;
                compare.push((label.to_owned(), PathBuf::from(path)));
            }
            "--core-round-trips" => {
                core_round_trips = Some(
                    value("--core-round-trips")?
                        .parse::<usize>()
                        .map_err(|e| format!("--core-round-trips: {e}"))?,
                )
            }
            "--core-large" => {
                core_large = Some(
                    value("--core-large")?
                        .parse::<usize>()
                        .map_err(|e| format!("--core-large: {e}"))?,
                )
            }
            "--core-tools" => {
                core_tools = Some(
                    value("--core-tools")?
                        .parse::<usize>()
                        .map_err(|e| format!("--core-tools: {e}"))?,
                )
            }
            "--no-build" => build = false,
            "--keep-scratch" => keep_scratch = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    if let Some(rounds) = rounds {
        plan.rounds = rounds;
    }
    if let Some(n) = core_round_trips {
        plan.core_round_trips = n;
    }
    if let Some(n) = core_tools {
        plan.core_tools_round_trips = n;
    }
    if let Some(n) = core_large {
        plan.core_large_round_trips = n;
        plan.core_large_bytes = MIB;
    }
    Ok(Options {
        plan,
        json,
        scenarios,
        runtimes,
        cpu,
        gatekit,
        compare,
        build,
        keep_scratch,
    })
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let options = match parse_args(&root) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("gatekit-bench: {message}");
            std::process::exit(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("gatekit-bench: this is a debug build; run with `cargo run --release -p gatekit-bench` for meaningful numbers");
    }
    if options.build {
        build(&root);
    }
    let bin_dir = std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let gatekit = options
        .gatekit
        .clone()
        .unwrap_or_else(|| bin_dir.join("gatekit"));
    let runtimes = options
        .runtimes
        .clone()
        .unwrap_or_else(|| detect_runtimes(&gatekit));
    let scratch = std::env::temp_dir().join(format!("gatekit-bench-{}", std::process::id()));
    let env = match Env::new(&bin_dir, gatekit.clone(), scratch.clone()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("gatekit-bench: {e}");
            std::process::exit(1);
        }
    };
    let mut targets = vec![Target::direct(), Target::relay(), Target::line_relay()];
    if runtimes.iter().any(|r| r == "smol") {
        targets.push(Target::smol_relay());
    }
    for runtime in &runtimes {
        targets.push(Target::gatekit(runtime, true));
        targets.push(Target::gatekit(runtime, false));
    }
    for (label, path) in &options.compare {
        let offered = detect_runtimes(path);
        for runtime in offered.iter().filter(|r| runtimes.contains(r)) {
            targets.push(Target::gatekit_at(runtime, true, label, path));
            targets.push(Target::gatekit_at(runtime, false, label, path));
        }
    }

    let machine = sys::Machine::describe();
    let load_before = sys::loadavg();
    let allowed = sys::allowed_cpus();
    let cpu = options
        .cpu
        .unwrap_or_else(|| *allowed.last().expect("some CPU"));
    let gatekit_version = Command::new(&gatekit)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!(
        "gatekit-bench: {} rounds; targets: {}; pinned scenarios on CPU {cpu}; load average {:.2} {:.2} {:.2}",
        options.plan.rounds,
        targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        load_before[0],
        load_before[1],
        load_before[2]
    );

    let started = Instant::now();
    let mut results = Results::new(&targets);
    run_rounds(&options, &env, &targets, &allowed, cpu, &mut results);
    let load_after = sys::loadavg();

    let checks = report::checks(&results, &targets, &options.plan);
    let context = report::Context {
        machine,
        cpu_pinned: cpu,
        load_before,
        load_after,
        seconds: started.elapsed().as_secs_f64(),
        commit: sys::git_describe(&root),
        gatekit_version,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let table = report::table(&results, &checks, &context, &options.plan);
    println!("{table}");
    let json = report::json(&results, &checks, &context, &options.plan, &targets);
    if let Some(dir) = options.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&json).expect("json"),
    ) {
        Ok(()) => eprintln!(
            "gatekit-bench: results written to {}",
            options.json.display()
        ),
        Err(e) => eprintln!(
            "gatekit-bench: cannot write {}: {e}",
            options.json.display()
        ),
    }
    if options.keep_scratch {
        eprintln!("gatekit-bench: scratch files kept in {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if checks.iter().any(|c: &Check| !c.pass) {
        eprintln!("gatekit-bench: some targets were missed (FAIL lines above)");
    }
}

fn run_rounds(
    options: &Options,
    env: &Env,
    targets: &[Target],
    allowed: &[usize],
    cpu: usize,
    results: &mut Results,
) {
    let plan = &options.plan;
    let core_steps = options.scenarios.contains(&Scenario::Core).then(|| {
        (
            core_replay::session(plan.core_round_trips, plan.core_bytes),
            core_replay::session(plan.core_large_round_trips, plan.core_large_bytes),
            core_replay::tools_list_session(plan.core_tools_round_trips),
        )
    });
    for round in 0..plan.rounds {
        let round_start = Instant::now();
        let mut order: Vec<&Target> = targets.iter().collect();
        order.rotate_left(round % targets.len());
        for &scenario in &options.scenarios {
            let affinity = if scenario.pinned() {
                vec![cpu]
            } else {
                allowed.to_vec()
            };
            if let Err(e) = sys::set_affinity(&affinity) {
                eprintln!("gatekit-bench: cannot set CPU affinity {affinity:?}: {e}");
            }
            match scenario {
                Scenario::Core => {
                    let (small, large, tools) = core_steps.as_ref().expect("built");
                    for audit in [true, false] {
                        let name = core_target(audit);
                        let config = core_replay::config(audit);
                        let r = core_replay::replay(&config, small);
                        results.record(Metric::CoreMessages, name, r.messages_per_s());
                        results.record(Metric::CoreMib, name, r.mib_per_s());
                        let r = core_replay::replay(&config, large);
                        results.record(Metric::CoreLargeMib, name, r.mib_per_s());
                        let r = core_replay::replay(&config, tools);
                        results.record(Metric::CoreToolsList, name, r.us_per_round_trip());
                    }
                }
                _ => {
                    for target in &order {
                        run_one(scenario, plan, env, target, results);
                    }
                }
            }
        }
        let _ = sys::set_affinity(allowed);
        eprintln!(
            "gatekit-bench: round {}/{} done in {:.1} s (load {:.2})",
            round + 1,
            plan.rounds,
            round_start.elapsed().as_secs_f64(),
            sys::loadavg()[0]
        );
    }
}

pub fn core_target(audit: bool) -> &'static str {
    if audit {
        "core"
    } else {
        "core-noaudit"
    }
}

fn run_one(scenario: Scenario, plan: &Plan, env: &Env, target: &Target, results: &mut Results) {
    let name = target.name.as_str();
    let failed = |what: &str, e: std::io::Error| {
        eprintln!("gatekit-bench: {what} against {name} failed: {e}");
    };
    match scenario {
        Scenario::Cold => {
            let mut samples = Vec::with_capacity(plan.cold_starts);
            for _ in 0..plan.cold_starts {
                match scenarios::cold_start(env, target) {
                    Ok(ms) => samples.push(ms),
                    Err(e) => failed("cold start", e),
                }
            }
            results.record(Metric::ColdStart, name, stats::median(&samples));
        }
        Scenario::Latency => match scenarios::latency(
            env,
            target,
            plan.latency_calls,
            plan.latency_warmup,
            plan.latency_bytes,
        ) {
            Ok(samples) => {
                let (p50, p99) = scenarios::p50_p99(&samples);
                results.record(Metric::LatencyP50, name, p50);
                results.record(Metric::LatencyP99, name, p99);
            }
            Err(e) => {
                failed("latency", e);
                results.record(Metric::LatencyP50, name, f64::NAN);
                results.record(Metric::LatencyP99, name, f64::NAN);
            }
        },
        Scenario::Tools => {
            match scenarios::tools_list(env, target, plan.tools_calls, plan.tools_warmup) {
                Ok(samples) => {
                    results.record(Metric::ToolsList, name, stats::median(&samples));
                }
                Err(e) => {
                    failed("tools/list", e);
                    results.record(Metric::ToolsList, name, f64::NAN);
                }
            }
        }
        Scenario::Pipelined => match scenarios::pipelined(
            env,
            target,
            plan.pipelined_messages,
            plan.in_flight,
            plan.pipelined_bytes,
        ) {
            Ok(t) => {
                results.record(Metric::Pipelined, name, t.rate);
                results.record(Metric::PipelinedRss, name, t.peak_rss_mib);
            }
            Err(e) => {
                failed("pipelined", e);
                results.record(Metric::Pipelined, name, f64::NAN);
                results.record(Metric::PipelinedRss, name, f64::NAN);
            }
        },
        Scenario::Large => {
            for (i, &(bytes, calls)) in plan.large.iter().enumerate() {
                let (rate, rss) = (Metric::Large(i, true), Metric::Large(i, false));
                match scenarios::large(env, target, bytes, calls) {
                    Ok(t) => {
                        results.record(rate, name, t.rate);
                        results.record(rss, name, t.peak_rss_mib);
                    }
                    Err(e) => {
                        failed("large messages", e);
                        results.record(rate, name, f64::NAN);
                        results.record(rss, name, f64::NAN);
                    }
                }
            }
        }
        Scenario::Core => unreachable!("run in-process"),
    }
}

/// Builds gatekit and the bench binaries with the profile this harness was
/// built with, so the harness never measures a stale binary.
fn build(root: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "-p", "gatekit", "-p", "gatekit-bench", "--bins"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!("gatekit-bench: building gatekit and the bench binaries…");
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("gatekit-bench: the build failed ({status})");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("gatekit-bench: cannot run cargo: {e} (build first and pass --no-build)");
            std::process::exit(1);
        }
    }
}

/// The runtimes this gatekit binary offers.
fn detect_runtimes(gatekit: &Path) -> Vec<String> {
    let help = Command::new(gatekit).arg("--help").output();
    let offers_smol = help.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains("--runtime")
            || String::from_utf8_lossy(&o.stderr).contains("--runtime")
    });
    if offers_smol {
        vec!["std".into(), "smol".into()]
    } else {
        vec!["std".into()]
    }
}
