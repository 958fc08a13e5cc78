//! `skein check --config FILE`: every problem in a config and the files it names.

use std::path::Path;

use skein::preflight::{self, ConfigKind};

/// Prints what was checked (stdout) and every problem (stderr); fails on any problem.
pub fn check(config: &Path, kind: Option<ConfigKind>) -> anyhow::Result<()> {
    let report = preflight::check(config, kind);
    let kind = match report.kind {
        ConfigKind::Director => "director",
        ConfigKind::Service => "service",
    };
    for ok in &report.checked {
        println!("ok: {ok}");
    }
    if report.problems.is_empty() {
        println!("{}: a valid {kind} config", config.display());
        return Ok(());
    }
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    anyhow::bail!(
        "{}: {} problem{} in this {kind} config",
        config.display(),
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" }
    )
}
