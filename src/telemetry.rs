//! Logging setup: structured `tracing` to stderr, filtered by `RUST_LOG` (default info).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (call once, from `main`).
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
