//! Logging setup: structured `tracing` to stderr as text (ANSI colour only on a
//! terminal) or JSON lines, with a filter that a reload can change.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

/// Changes the log filter of the installed subscriber.
#[derive(Clone)]
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it wins over `log.level`, at start and on reload.
    pinned_by_env: bool,
}

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Not a valid `tracing` filter directive.
    #[error("log.level {level:?} is not a valid filter: {message}")]
    BadFilter {
        /// The filter as given.
        level: String,
        /// The parser's complaint.
        message: String,
    },
    /// The subscriber is gone.
    #[error("log filter could not be changed: {0}")]
    Reload(String),
}

fn parse_filter(level: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(level).map_err(|e| TelemetryError::BadFilter {
        level: level.to_string(),
        message: e.to_string(),
    })
}

impl LogControl {
    /// Puts `level` (e.g. `info,skein::replication=debug`) in force, unless `RUST_LOG`
    /// pins the filter.
    pub fn set_level(&self, level: &str) -> Result<(), TelemetryError> {
        if self.pinned_by_env {
            return Ok(());
        }
        let filter = parse_filter(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| TelemetryError::Reload(e.to_string()))
    }
}

/// Installs the global subscriber (call once, from `main`): `RUST_LOG` if set, else
/// `level`; `format` text or JSON lines. A bad `level` falls back to `info`.
pub fn init_with(level: &str, format: LogFormat) -> LogControl {
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned_by_env = from_env.is_some();
    let filter = from_env
        .or_else(|| parse_filter(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    LogControl {
        filter: handle,
        pinned_by_env,
    }
}

/// Installs a text subscriber at `default_level` (client commands).
pub fn init(default_level: &str) {
    init_with(default_level, LogFormat::Text);
}
