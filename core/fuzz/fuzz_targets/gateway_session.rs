//! Arbitrary bytes become a whole gateway session (client and upstream
//! bytes, a simulated server, timeouts, exits); every output is checked
//! against the invariants in `core/tests/invariants/mod.rs`, the same code
//! the property tests and the corpus replay run.
#![no_main]

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    invariants::check_session(data);
});
