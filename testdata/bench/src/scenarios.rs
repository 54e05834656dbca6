//! One run of one scenario against one target. Each run starts a fresh
//! target process, so peak-RSS readings belong to that scenario alone.

use crate::stats::quantile;
use crate::targets::{expect_result, Env, Session, Target, INITIALIZE};
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Time limit of one session; only a hung target comes near it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

/// ASCII payload of `len` bytes that needs no JSON escaping.
pub fn payload(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    (0..len)
        .map(|i| ALPHABET[(i * 7 + i / 63) % ALPHABET.len()] as char)
        .collect()
}

/// A `tools/call` of the echo tool with `text` as its argument.
pub fn echo_request(id: u64, text: &str) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{text}\"}}}}}}\n"
    )
    .into_bytes()
}

/// The echo's exact answer to [`echo_request`], for checking lengths.
pub fn echo_response_len(id: u64, text_len: usize) -> usize {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"\"}}],\"isError\":false}}}}\n"
    )
    .len()
        + text_len
}

fn check_echo(line: &[u8], id: u64, text_len: usize) -> io::Result<()> {
    expect_result(line, id)?;
    let want = echo_response_len(id, text_len);
    if line.len() != want {
        return Err(io::Error::other(format!(
            "answer to id {id} has {} bytes, expected {want}",
            line.len()
        )));
    }
    Ok(())
}

/// Spawn → `initialize` answer, in milliseconds.
pub fn cold_start(env: &Env, target: &Target) -> io::Result<f64> {
    let mut line = Vec::with_capacity(1024);
    let start = Instant::now();
    let mut session = env.spawn(target, SESSION_TIMEOUT)?;
    session.call(INITIALIZE, &mut line)?;
    let elapsed = start.elapsed();
    expect_result(&line, 0)?;
    session.finish()?;
    Ok(ms(elapsed))
}

/// Round-trip times of sequential 100-byte echoes, in microseconds.
pub fn latency(
    env: &Env,
    target: &Target,
    calls: usize,
    warmup: usize,
    text_len: usize,
) -> io::Result<Vec<f64>> {
    let text = payload(text_len);
    let requests: Vec<Vec<u8>> = (1..=(warmup + calls) as u64)
        .map(|id| echo_request(id, &text))
        .collect();
    let mut session = started(env, target)?;
    let mut line = Vec::with_capacity(4096);
    let mut samples = Vec::with_capacity(calls);
    for (i, request) in requests.iter().enumerate() {
        let start = Instant::now();
        session.call(request, &mut line)?;
        let elapsed = start.elapsed();
        check_echo(&line, i as u64 + 1, text_len)?;
        if i >= warmup {
            samples.push(us(elapsed));
        }
    }
    session.finish()?;
    Ok(samples)
}

/// Round-trip times of `tools/list` (500 tools upstream), in microseconds.
pub fn tools_list(env: &Env, target: &Target, calls: usize, warmup: usize) -> io::Result<Vec<f64>> {
    let mut session = started(env, target)?;
    let mut line = Vec::with_capacity(256 * 1024);
    let mut samples = Vec::with_capacity(calls);
    for i in 0..warmup + calls {
        let id = i as u64 + 1;
        let request = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/list\",\"params\":{{}}}}\n"
        );
        let start = Instant::now();
        session.call(request.as_bytes(), &mut line)?;
        let elapsed = start.elapsed();
        expect_result(&line, id)?;
        if i == 0 {
            let listed = count(&line, b"{\"name\":\"");
            let expected = if target.filters_tools() {
                crate::targets::ALLOWED_TOOLS.len()
            } else {
                crate::targets::TOOLS
            };
            if listed != expected {
                return Err(io::Error::other(format!(
                    "{}: tools/list listed {listed} tools, expected {expected}",
                    target.name
                )));
            }
        }
        if i >= warmup {
            samples.push(us(elapsed));
        }
    }
    session.finish()?;
    Ok(samples)
}

/// What a throughput run measured.
pub struct Throughput {
    /// Messages (round trips) per second, or payload MiB per second.
    pub rate: f64,
    /// Peak RSS of the spawned process at the end, MiB.
    pub peak_rss_mib: f64,
}

/// `messages` echoes of `text_len` bytes with up to `in_flight` requests
/// outstanding: a writer thread sends while the reader (this thread)
/// collects answers, which must come back in order.
pub fn pipelined(
    env: &Env,
    target: &Target,
    messages: usize,
    in_flight: usize,
    text_len: usize,
) -> io::Result<Throughput> {
    let text = payload(text_len);
    let requests: Vec<Vec<u8>> = (1..=messages as u64)
        .map(|id| echo_request(id, &text))
        .collect();
    let mut session = started(env, target)?;
    let mut stdin = session.take_stdin();
    let (tokens_tx, tokens) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        tokens_tx.send(()).expect("room for the initial tokens");
    }
    let start = Instant::now();
    let writer = thread::spawn(move || -> io::Result<_> {
        for request in &requests {
            if tokens.recv().is_err() {
                break; // the reader stopped
            }
            stdin.write_all(request)?;
        }
        Ok(stdin)
    });
    let mut line = Vec::with_capacity(4096);
    let mut result = Ok(());
    for id in 1..=messages as u64 {
        if let Err(e) = session.recv(&mut line) {
            result = Err(e);
            break;
        }
        let _ = tokens_tx.try_send(());
        if let Err(e) = check_echo(&line, id, text_len) {
            result = Err(e);
            break;
        }
    }
    let elapsed = start.elapsed();
    drop(tokens_tx);
    let stdin = writer.join().expect("writer thread")?;
    result?;
    session.give_back_stdin(stdin);
    let peak = session.peak_rss_kib();
    session.finish()?;
    Ok(Throughput {
        rate: messages as f64 / elapsed.as_secs_f64(),
        peak_rss_mib: mib_of_kib(peak),
    })
}

/// `calls` sequential echoes of a `text_len`-byte payload; the rate is
/// payload MiB per second of round trip (each MiB crosses every pipe twice).
pub fn large(env: &Env, target: &Target, text_len: usize, calls: usize) -> io::Result<Throughput> {
    // One request buffer; the id has a fixed width and is patched in place.
    const FIRST_ID: u64 = 1_000_000;
    let mut request = echo_request(FIRST_ID, &payload(text_len));
    let id_at = request
        .windows(7)
        .position(|w| w == b"1000000")
        .expect("id in request");
    let mut session = started(env, target)?;
    let mut line = Vec::with_capacity(text_len + 1024);
    let mut total = Duration::ZERO;
    for i in 0..=calls as u64 {
        let id = FIRST_ID + i;
        request[id_at..id_at + 7].copy_from_slice(id.to_string().as_bytes());
        let start = Instant::now();
        session.call(&request, &mut line)?;
        let elapsed = start.elapsed();
        check_echo(&line, id, text_len)?;
        if i > 0 {
            total += elapsed; // the first call is a warm-up
        }
    }
    let peak = session.peak_rss_kib();
    session.finish()?;
    Ok(Throughput {
        rate: (text_len * calls) as f64 / (1024.0 * 1024.0) / total.as_secs_f64(),
        peak_rss_mib: mib_of_kib(peak),
    })
}

fn started(env: &Env, target: &Target) -> io::Result<Session> {
    let mut session = env.spawn(target, SESSION_TIMEOUT)?;
    session.initialize()?;
    Ok(session)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// p50 and p99 of samples.
pub fn p50_p99(samples: &[f64]) -> (f64, f64) {
    (quantile(samples, 0.5), quantile(samples, 0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib_of_kib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}
