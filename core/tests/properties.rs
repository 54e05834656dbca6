//! Property tests: thousands of generated sessions, each checked against
//! the invariants in `invariants/mod.rs`. The generator is a small
//! deterministic PRNG, so a failure names a seed that reproduces it.

mod invariants;

/// xorshift64*: tiny, deterministic, good enough to spread test cases.
fn bytes_for(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[test]
fn generated_sessions_keep_every_invariant() {
    for seed in 0..3000u64 {
        let data = bytes_for(seed, 16 + (seed as usize % 240));
        let result = std::panic::catch_unwind(|| invariants::check_session(&data));
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} broke an invariant: {message}\ninput: {data:?}");
        }
    }
}
