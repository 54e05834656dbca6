//! System logs on stderr, in the shape the tutorial shows:
//! `[INFO] gatekit.main: Loading configuration from …`.
//!
//! Stdout belongs to JSON-RPC, so nothing here ever writes to it.

use std::io::Write;

/// Sets up `log` for the process: info by default, debug with `--verbose`
/// (every message in both directions). `GATEKIT_LOG` (env_logger syntax)
/// overrides both, e.g. `GATEKIT_LOG=gatekit.proxy.server=trace`.
pub fn init(verbose: bool) {
    let default = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(default)
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            writeln!(
                buf,
                "[{}] {}: {}",
                record.level(),
                record.target(),
                record.args()
            )
        });
    if let Ok(spec) = std::env::var("GATEKIT_LOG") {
        builder.parse_filters(&spec);
    }
    // A second init (tests) is harmless.
    let _ = builder.try_init();
}
