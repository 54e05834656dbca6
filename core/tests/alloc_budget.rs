//! Regression guard for the cost of the core's hot path: allocations and
//! allocated bytes per message, counted by a wrapping global allocator
//! while a fixed session is replayed through `Gateway`.
//!
//! Wall-clock benchmarks are noisy on shared machines; allocation counts
//! are not. They depend only on the inputs (fixed here, timestamps
//! included), the code and the locked dependency versions, never on timing
//! or on the machine, and nothing in the core feeds `HashMap` iteration
//! order or randomness into what it allocates. So this test is exact and
//! can run in the ordinary test command. It fails when the hot path gets
//! markedly more expensive (30% over the baseline); the wall-clock numbers
//! live in `gatekit-bench` (see the README's "Performance" section).
//! A 10 MiB echo has a memory budget too: the most bytes held at once and
//! what is still held afterwards, in multiples of the message size.
//!
//! Re-baselining, after making the hot path cheaper (or, with a reason in
//! the commit message, more expensive):
//!
//! ```text
//! cargo test -p gatekit-core --test alloc_budget -- --nocapture
//! ```
//!
//! prints the measured numbers; set each `BUDGET` below to about 1.3 × the
//! new measurement. Only allocations made on the test's own thread while a
//! phase runs are counted, so the test harness's threads do not interfere.

use gatekit_core::{AuditSinkId, Config, ExitStatus, Gateway, Input, Output};
use jiff::{SignedDuration, Timestamp};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Allocator that counts, on threads that asked for it, every allocation
/// (a `realloc` counts as one, with its new size) and the bytes requested.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed since counting started (freeing
    /// what was allocated before makes it go below zero).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// The highest `LIVE` seen.
    static PEAK: Cell<i64> = const { Cell::new(0) };
    /// Bytes a `realloc` may have had to move (the smaller of the old and
    /// new size): growing a buffer copies what it already held.
    static MOVED: Cell<u64> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            BYTES.with(|b| b.set(b.get() + bytes as u64));
        }
    });
}

/// Follows the live bytes: `grown` more are held (fewer if negative), and
/// a resize moved `moved` bytes.
fn note_live(grown: i64, moved: usize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + grown);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
            MOVED.with(|m| m.set(m.get() + moved as u64));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting only touches const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        note_live(layout.size() as i64, 0);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        note_live(layout.size() as i64, 0);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        note_live(
            new_size as i64 - layout.size() as i64,
            new_size.min(layout.size()),
        );
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_live(-(layout.size() as i64), 0);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes counted while `f` ran on this thread.
fn counted(f: impl FnOnce()) -> (u64, u64) {
    let memory = memory_of(f);
    (memory.allocations, memory.allocated)
}

/// What `f` asked of the allocator on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Memory {
    allocations: u64,
    /// Bytes allocated (a `realloc` counts its whole new size).
    allocated: u64,
    /// The most bytes held at once above what was held when `f` started.
    peak_live: u64,
    /// Bytes that growing buffers may have had to move.
    moved: u64,
    /// Bytes still held when `f` returned, above what was held before.
    retained: i64,
}

fn memory_of(f: impl FnOnce()) -> Memory {
    ALLOCATIONS.with(|n| n.set(0));
    BYTES.with(|b| b.set(0));
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    MOVED.with(|m| m.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    Memory {
        allocations: ALLOCATIONS.with(Cell::get),
        allocated: BYTES.with(Cell::get),
        peak_live: PEAK.with(Cell::get) as u64,
        moved: MOVED.with(Cell::get),
        retained: LIVE.with(Cell::get),
    }
}

/// The tutorial's policy: a json audit log and a tool allowlist.
fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "proxy": {"upstream": {"command": "server"}},
        "plugins": {
            "auditing": [{"policy": "file_auditing", "config": {
                "output_file": "logs/audit.log", "format": "json",
                "max_file_size_mb": 10, "backup_count": 5
            }}],
            "security": [{"policy": "tool_allowlist", "config": {
                "mode": "allowlist",
                "tools": ["echo", "read_file", "write_file", "list_directory", "search_files"],
                "block_message": "Tool access denied by security policy"
            }}]
        }
    }))
    .expect("valid config")
}

/// A gateway, a fixed clock and a sink for its outputs.
struct Session {
    gateway: Gateway,
    now: Timestamp,
    written: usize,
}

impl Session {
    fn new() -> Self {
        let mut session = Session {
            gateway: Gateway::new(&config()),
            now: "2025-01-01T00:00:00Z".parse().expect("timestamp"),
            written: 0,
        };
        session.feed(Input::AuditFileOpened {
            sink: AuditSinkId(0),
            existing_bytes: 0,
        });
        session.feed(Input::UpstreamStarted { pid: 4242 });
        session.feed(Input::ClientBytes(
            b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"alloc-budget\",\"version\":\"1\"}}}\n",
        ));
        session.feed(Input::UpstreamBytes(
            b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"echo\",\"version\":\"1\"}}}\n",
        ));
        session.feed(Input::ClientBytes(
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n",
        ));
        session
    }

    /// One input, one millisecond after the last, and every output drained
    /// (and dropped: freeing is not counted).
    fn feed(&mut self, input: Input<'_>) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_millis(1))
            .expect("in range");
        self.gateway.handle_input(input, self.now);
        loop {
            match self.gateway.poll_output() {
                Output::ToClient(bytes) | Output::ToUpstream(bytes) => self.written += bytes.len(),
                Output::Audit(write) => self.written += write.bytes.len(),
                Output::Wait(_) | Output::Exit(_) => break,
                _ => {}
            }
        }
    }

    fn finish(&mut self) {
        self.feed(Input::ClientEof);
        self.feed(Input::UpstreamEof);
        self.feed(Input::UpstreamExited(ExitStatus::Code(0)));
        assert_eq!(self.gateway.in_flight(), 0);
    }
}

fn text(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

fn echo_call(id: u64, text: &str) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{text}\"}}}}}}\n").into_bytes()
}

fn echo_answer(id: u64, text: &str) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"isError\":false}}}}\n").into_bytes()
}

fn tools_list_answer(id: u64, tools: usize) -> Vec<u8> {
    let allowed = [
        "echo",
        "read_file",
        "write_file",
        "list_directory",
        "search_files",
    ];
    let list: Vec<String> = (0..tools)
        .map(|i| {
            let name = if i % (tools / allowed.len()) == 0 && i / (tools / allowed.len()) < 5 {
                allowed[i / (tools / allowed.len())].to_owned()
            } else {
                format!("tool_{i:03}")
            };
            format!("{{\"name\":\"{name}\",\"description\":\"Benchmark tool {name}.\",\"inputSchema\":{{\"type\":\"object\",\"properties\":{{\"text\":{{\"type\":\"string\"}}}}}}}}")
        })
        .collect();
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"tools\":[{}]}}}}\n",
        list.join(",")
    )
    .into_bytes()
}

/// What one phase cost per unit.
#[derive(Debug, Clone, Copy)]
struct Cost {
    allocations: f64,
    bytes: f64,
}

fn per(units: u64, (allocations, bytes): (u64, u64)) -> Cost {
    Cost {
        allocations: allocations as f64 / units as f64,
        bytes: bytes as f64 / units as f64,
    }
}

/// Each phase's cost, measured on a fresh session after a warm-up.
fn measure() -> [(&'static str, Cost, Cost); 4] {
    // 1000 `tools/call` round trips of a 100-byte echo: the hot path.
    const ROUND_TRIPS: u64 = 1000;
    let small = text(100);
    let calls: Vec<(Vec<u8>, Vec<u8>)> = (1..=ROUND_TRIPS + 10)
        .map(|id| (echo_call(id, &small), echo_answer(id, &small)))
        .collect();
    let mut session = Session::new();
    for (call, answer) in &calls[..10] {
        session.feed(Input::ClientBytes(call));
        session.feed(Input::UpstreamBytes(answer));
    }
    let round_trip = per(
        ROUND_TRIPS,
        counted(|| {
            for (call, answer) in &calls[10..] {
                session.feed(Input::ClientBytes(call));
                session.feed(Input::UpstreamBytes(answer));
            }
        }),
    );
    session.finish();

    // The same calls 64 to a chunk, both ways, as a runtime reads them from
    // a busy client: per round trip, the records of a chunk join one write.
    const IN_FLIGHT: usize = 64;
    let mut session = Session::new();
    let chunks: Vec<(Vec<u8>, Vec<u8>)> = calls[10..]
        .chunks(IN_FLIGHT)
        .map(|batch| {
            let requests = batch.iter().flat_map(|(call, _)| call.clone()).collect();
            let answers = batch
                .iter()
                .flat_map(|(_, answer)| answer.clone())
                .collect();
            (requests, answers)
        })
        .collect();
    let pipelined = per(
        ROUND_TRIPS,
        counted(|| {
            for (requests, answers) in &chunks {
                session.feed(Input::ClientBytes(requests));
                session.feed(Input::UpstreamBytes(answers));
            }
        }),
    );
    session.finish();

    // `tools/list` of 500 tools, filtered to 5.
    const LISTS: u64 = 20;
    let mut session = Session::new();
    let lists: Vec<(Vec<u8>, Vec<u8>)> = (1..=LISTS + 1)
        .map(|id| {
            (
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/list\"}}\n")
                    .into_bytes(),
                tools_list_answer(id, 500),
            )
        })
        .collect();
    session.feed(Input::ClientBytes(&lists[0].0));
    session.feed(Input::UpstreamBytes(&lists[0].1));
    let tools_list = per(
        LISTS,
        counted(|| {
            for (call, answer) in &lists[1..] {
                session.feed(Input::ClientBytes(call));
                session.feed(Input::UpstreamBytes(answer));
            }
        }),
    );
    session.finish();

    // A 1 MiB echo in 64 KiB chunks, as a runtime reads it: bytes per
    // payload byte show how often a large payload is copied.
    const LARGE: usize = 1024 * 1024;
    let big = text(LARGE);
    let (call, answer) = (echo_call(1, &big), echo_answer(1, &big));
    let mut session = Session::new();
    let large = counted(|| {
        for chunk in call.chunks(64 * 1024) {
            session.feed(Input::ClientBytes(chunk));
        }
        for chunk in answer.chunks(64 * 1024) {
            session.feed(Input::UpstreamBytes(chunk));
        }
    });
    let large = Cost {
        allocations: large.0 as f64,
        bytes: large.1 as f64 / LARGE as f64,
    };
    session.finish();
    assert!(session.written > 2 * LARGE, "the echo went through");

    [
        (
            "tools/call round trip (100 B echo)",
            round_trip,
            BUDGET_ROUND_TRIP,
        ),
        (
            "the same, 64 calls to a chunk (per round trip)",
            pipelined,
            BUDGET_PIPELINED,
        ),
        (
            "tools/list, 500 tools filtered to 5",
            tools_list,
            BUDGET_TOOLS_LIST,
        ),
        (
            "1 MiB echo round trip (bytes per payload byte)",
            large,
            BUDGET_LARGE,
        ),
    ]
}

/// Budgets, about 1.3 × the numbers measured when they were set. Units:
/// per round trip, per `tools/list` answer, and for the 1 MiB echo
/// allocations per round trip and bytes per payload byte (a `realloc`
/// counts its whole new size, so growing a buffer shows too).
/// Measured when set: 5 allocations, 1,529 bytes (audit records borrow
/// their fields and hold numeric ids in place; what is left is the two
/// forwarded lines, the two audit lines and the tool name kept with the
/// request in flight).
const BUDGET_ROUND_TRIP: Cost = Cost {
    allocations: 7.0,
    bytes: 2_000.0,
};
/// Measured when set: 1.76 allocations, 3,060 bytes per round trip (the
/// records of a chunk are formatted straight into one write per sink, and
/// its forwarded messages copied into one buffer per peer, grown by
/// doubling; what is left is the tool name kept with each request, the
/// growth of those buffers and of the joined forwards' lists of
/// fallbacks).
const BUDGET_PIPELINED: Cost = Cost {
    allocations: 2.3,
    bytes: 4_000.0,
};
/// Measured when set: 21 allocations, 66,648 bytes (the removed names are
/// written to the audit line from the answer's text; most of the bytes are
/// the scan's index of the 500 tools, grown by doubling, and the filter's
/// lists of kept and removed tools).
const BUDGET_TOOLS_LIST: Cost = Cost {
    allocations: 28.0,
    bytes: 87_000.0,
};
/// Measured when set: 15 allocations, 8.9 bytes per payload byte.
const BUDGET_LARGE: Cost = Cost {
    allocations: 20.0,
    bytes: 11.6,
};

#[test]
fn the_hot_path_stays_within_its_allocation_budget() {
    let phases = measure();
    let mut report = String::new();
    let mut over = false;
    for (name, cost, budget) in phases {
        let fits = cost.allocations <= budget.allocations && cost.bytes <= budget.bytes;
        over |= !fits;
        report.push_str(&format!(
            "  {name}: {:.2} allocations (budget {:.2}), {:.2} bytes (budget {:.2}){}\n",
            cost.allocations,
            budget.allocations,
            cost.bytes,
            budget.bytes,
            if fits { "" } else { "  <-- over budget" }
        ));
    }
    println!("measured:\n{report}");
    assert!(
        !over,
        "the core's hot path allocates more than its budget:\n{report}\
         If the increase is intended, re-baseline as the comment at the top of core/tests/alloc_budget.rs says."
    );
}

#[test]
fn the_count_is_deterministic() {
    let a = measure();
    let b = measure();
    for ((name, x, _), (_, y, _)) in a.iter().zip(&b) {
        assert_eq!(
            (x.allocations, x.bytes),
            (y.allocations, y.bytes),
            "{name} differs between two identical replays"
        );
    }
}

/// Budgets of the 10 MiB echo, in multiples of the message size: the most
/// bytes held at once (the line being gathered, in a buffer that grows by
/// doubling, and its audit line, which holds the arguments: measured when
/// set, 2.6), and what is still held once the round trip is over
/// (measured when set: nothing).
const BUDGET_LARGE_PEAK: f64 = 3.0;
const BUDGET_LARGE_RETAINED: f64 = 0.05;

/// A 10 MiB echo, read in 64 KiB chunks as the std runtime reads them,
/// must not make the gateway hold many copies of it at once, nor keep
/// buffers of its size once it has passed.
#[test]
fn a_large_message_is_held_few_times() {
    const LARGE: usize = 10 * 1024 * 1024;
    let big = text(LARGE);
    let (call, answer) = (echo_call(1, &big), echo_answer(1, &big));
    drop(big);
    let mut session = Session::new();
    let round_trip = memory_of(|| {
        for chunk in call.chunks(64 * 1024) {
            session.feed(Input::ClientBytes(chunk));
        }
        for chunk in answer.chunks(64 * 1024) {
            session.feed(Input::UpstreamBytes(chunk));
        }
    });
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "10 MiB echo round trip: peak {:.1} MiB live, {:.1} MiB allocated, {:.1} MiB moved by growing buffers, {} allocations, {:.1} MiB still held after",
        mib(round_trip.peak_live),
        mib(round_trip.allocated),
        mib(round_trip.moved),
        round_trip.allocations,
        round_trip.retained as f64 / (1024.0 * 1024.0),
    );
    println!(
        "  ({} bytes peak, {} bytes still held)",
        round_trip.peak_live, round_trip.retained
    );
    assert!(session.written > 2 * LARGE, "the echo went through");
    session.finish();
    let peak = round_trip.peak_live as f64 / LARGE as f64;
    let retained = round_trip.retained as f64 / LARGE as f64;
    assert!(
        peak <= BUDGET_LARGE_PEAK,
        "a 10 MiB round trip held {peak:.2} × its size at once (budget {BUDGET_LARGE_PEAK})"
    );
    assert!(
        retained <= BUDGET_LARGE_RETAINED,
        "after a 10 MiB round trip the gateway still holds {retained:.2} × its size (budget {BUDGET_LARGE_RETAINED})"
    );
}
