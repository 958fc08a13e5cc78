//! `skein check`: validates a director or service config and every file it names (trust
//! file, keys, TLS certificate and key, CA bundle) without starting anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ad::ServerKind;
use crate::client::error_chain as chain;
use crate::config::{DirectorConfig, ServiceConfig};
use crate::trust::Trust;

/// Which kind of config a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    /// `skein serve`.
    Director,
    /// `skein advertise`, `skein origin`, `skein cache`.
    Service,
}

impl ConfigKind {
    /// A service config names its `kind` (origin or cache); a director config does not.
    pub fn detect(text: &str) -> Self {
        let names_kind = match text.parse::<toml::Table>() {
            Ok(table) => table.contains_key("kind"),
            Err(_) => text.lines().any(|l| {
                l.trim_start()
                    .strip_prefix("kind")
                    .is_some_and(|r| r.trim_start().starts_with('='))
            }),
        };
        if names_kind {
            Self::Service
        } else {
            Self::Director
        }
    }
}

/// What `skein check` found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The kind the file was checked as.
    pub kind: ConfigKind,
    /// Every problem, one sentence each; empty when the config is good.
    pub problems: Vec<String>,
    /// What was checked and found good.
    pub checked: Vec<String>,
}

impl Report {
    fn new(kind: ConfigKind) -> Self {
        Self {
            kind,
            problems: Vec::new(),
            checked: Vec::new(),
        }
    }

    fn outcome(&mut self, what: String, result: Result<(), String>) {
        match result {
            Ok(()) => self.checked.push(what),
            Err(problem) => self.problems.push(problem),
        }
    }
}

/// Checks the config at `path` (as `kind`, or detected from its content).
pub fn check(path: &Path, kind: Option<ConfigKind>) -> Report {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let mut report = Report::new(kind.unwrap_or(ConfigKind::Director));
            report
                .problems
                .push(format!("config file {}: {e}", path.display()));
            return report;
        }
    };
    let kind = kind.unwrap_or_else(|| ConfigKind::detect(&text));
    let mut report = Report::new(kind);
    let loaded = match kind {
        ConfigKind::Director => DirectorConfig::load(Some(path))
            .map(|config| check_director(path, &config, &mut report)),
        ConfigKind::Service => {
            ServiceConfig::load(Some(path)).map(|config| check_service(path, &config, &mut report))
        }
    };
    if let Err(error) = loaded {
        report.problems.extend(error.problems);
    }
    report
}

fn check_director(path: &Path, config: &DirectorConfig, report: &mut Report) {
    report.checked.push(format!(
        "config {} (director {:?}, listening on {})",
        path.display(),
        config.name,
        config.listen
    ));
    let key = crate::keys::load(&config.identity.key);
    report.outcome(
        format!("identity.key {}", config.identity.key.display()),
        key.as_ref()
            .map(|_| ())
            .map_err(|e| format!("identity.key: {}", chain(e))),
    );
    let trust_path = &config.federation.trust;
    report.outcome(
        format!(
            "federation.trust {} is not writable by others",
            trust_path.display()
        ),
        not_world_writable("federation.trust", trust_path),
    );
    match Trust::load(trust_path) {
        Ok(trust) => {
            report.checked.push(format!(
                "federation.trust {} ({} servers)",
                trust_path.display(),
                trust.len()
            ));
            report.outcome(
                format!(
                    "the trust file lists {:?} as a director with this key",
                    config.name
                ),
                lists_director(&trust, &config.name, key.ok().as_ref()),
            );
        }
        Err(e) => report
            .problems
            .push(format!("federation.trust: {}", chain(&e))),
    }
    if let Some(tls) = &config.tls {
        report.outcome(
            format!(
                "tls.cert {} and tls.key {}",
                tls.cert.display(),
                tls.key.display()
            ),
            crate::http::serve::load_tls(&tls.cert, &tls.key)
                .map(|_| ())
                .map_err(|e| format!("tls: {}", chain(&e))),
        );
    }
    if let Some(bundle) = &config.federation.ca_bundle {
        report.outcome(
            format!("federation.ca_bundle {}", bundle.display()),
            ca_bundle("federation.ca_bundle", bundle),
        );
    }
    report.outcome(
        format!("data_dir {}", config.data_dir.display()),
        directory_or_creatable("data_dir", &config.data_dir),
    );
}

fn check_service(path: &Path, config: &ServiceConfig, report: &mut Report) {
    report.checked.push(format!(
        "config {} ({} {:?}, {} namespaces)",
        path.display(),
        config.kind,
        config.name,
        config.namespaces.len()
    ));
    report.outcome(
        format!("key {}", config.key.display()),
        crate::keys::load(&config.key)
            .map(|_| ())
            .map_err(|e| format!("key: {}", chain(&e))),
    );
    if let Some(bundle) = &config.ca_bundle {
        report.outcome(
            format!("ca_bundle {}", bundle.display()),
            ca_bundle("ca_bundle", bundle),
        );
    }
    if let Some(export) = &config.export {
        report.outcome(
            format!("export {}", export.display()),
            if export.is_dir() {
                Ok(())
            } else {
                Err(format!("export: {} is not a directory", export.display()))
            },
        );
    }
    if let Some(dir) = &config.cache_dir {
        report.outcome(
            format!("cache_dir {}", dir.display()),
            directory_or_creatable("cache_dir", dir),
        );
    }
}

fn lists_director(
    trust: &Trust,
    name: &str,
    key: Option<&crate::ad::SigningKey>,
) -> Result<(), String> {
    let entry = trust.get(name).ok_or_else(|| {
        format!("federation.trust: no [[server]] named {name:?}: add this director (kind = \"director\") with the public key `skein keygen` printed")
    })?;
    if entry.kind != ServerKind::Director {
        return Err(format!(
            "federation.trust: {name:?} is listed as {}, not as a director",
            entry.kind
        ));
    }
    if let Some(key) = key {
        if key.verifying_key() != entry.key {
            return Err(format!(
                "federation.trust: the public key listed for {name:?} is not identity.key's (its public key is {})",
                crate::ad::encode_public_key(&key.verifying_key())
            ));
        }
    }
    Ok(())
}

fn not_world_writable(key: &str, path: &Path) -> Result<(), String> {
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(()); // unreadable: reported when it is loaded
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{key}: {} is writable by other users (mode {mode:o}): anyone who can write it decides who may advertise; run `chmod go-w {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn ca_bundle(key: &str, path: &Path) -> Result<(), String> {
    crate::client::Client::new(Duration::from_secs(1), Some(path))
        .map(|_| ())
        .map_err(|e| format!("{key}: {}", chain(&e)))
}

/// A directory, or a path whose nearest existing ancestor is a directory (created at start).
fn directory_or_creatable(key: &str, path: &Path) -> Result<(), String> {
    let mut at: PathBuf = path.to_path_buf();
    loop {
        if at.exists() {
            return if at.is_dir() {
                Ok(())
            } else {
                Err(format!("{key}: {} is not a directory", at.display()))
            };
        }
        if !at.pop() || at.as_os_str().is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_detected_from_the_content() {
        assert_eq!(
            ConfigKind::detect("name = \"o\"\nkind = \"origin\"\n"),
            ConfigKind::Service
        );
        assert_eq!(
            ConfigKind::detect("name = \"d\"\n[identity]\nkind_of = 1\n"),
            ConfigKind::Director
        );
        assert_eq!(
            ConfigKind::detect("kind = \"cache\"\n[broken\n"),
            ConfigKind::Service
        );
    }
}
