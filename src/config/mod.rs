//! Configuration: figment layers (embedded defaults, the TOML file, `SKEIN_` env with
//! `__` for nesting), read key by key so that every problem is reported at once.

mod director;
mod service;

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use director::{
    AdsConfig, DirectorConfig, FederationConfig, HealthConfig, IdentityConfig, LimitsConfig,
    LogConfig, LogFormat, PeersConfig, PelicanConfig, PresenceConfig, RoutingConfig, TlsConfig,
};
pub use service::{NamespaceConfig, Protocol, ServiceConfig};

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Layers defaults, an optional file and the environment (less the `ignore_env` keys).
fn layered(
    defaults: &str,
    file: Option<&Path>,
    ignore_env: &[&str],
) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Toml::string(defaults));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError {
                problems: vec![format!("config file {} does not exist", path.display())],
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    Ok(figment.merge(Env::prefixed("SKEIN_").split("__").ignore(ignore_env)))
}

/// Reads keys one at a time, collecting problems instead of stopping at the first.
struct Reader {
    figment: Figment,
    problems: Vec<String>,
    /// The sources could not be read at all (a TOML syntax error): that one problem
    /// is reported, not one per key.
    unreadable: bool,
}

impl Reader {
    fn new(figment: Figment, known: &[&str]) -> Self {
        let mut reader = Self {
            figment,
            problems: Vec::new(),
            unreadable: false,
        };
        match reader.figment.extract::<Dict>() {
            Ok(dict) => reader.check_unknown(&dict, "", known),
            Err(e) => {
                reader.problems.push(e.to_string());
                reader.unreadable = true;
            }
        }
        reader
    }

    /// Where a value came from, when that was not a file: `SKEIN_ADS__TYPO`.
    fn env_origin(&self, path: &str, value: &Value) -> Option<String> {
        let metadata = self.figment.get_metadata(value.tag())?;
        metadata
            .name
            .contains("environment")
            .then(|| format!("SKEIN_{}", path.to_uppercase().replace('.', "__")))
    }

    fn check_unknown(&mut self, dict: &Dict, prefix: &str, known: &[&str]) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if known.contains(&path.as_str()) {
                continue;
            }
            let is_section = known.iter().any(|k| k.starts_with(&format!("{path}.")));
            match value {
                Value::Dict(_, inner) if is_section => self.check_unknown(inner, &path, known),
                _ => {
                    let problem = match self.env_origin(&path, value) {
                        Some(var) => format!(
                            "{path}: unknown key (from the environment variable {var}; unset it or fix its name)"
                        ),
                        None => format!("{path}: unknown key"),
                    };
                    self.problems.push(problem);
                }
            }
        }
    }

    /// A required key.
    fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if self.unreadable {
            return None;
        }
        match self.figment.extract_inner::<T>(key) {
            Ok(v) => Some(v),
            Err(e) if e.missing() => {
                self.problems.push(format!("{key}: missing (required)"));
                None
            }
            Err(e) => {
                self.problems.push(format!("{key}: {}", e.kind));
                None
            }
        }
    }

    /// An optional key.
    fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if self.unreadable {
            return None;
        }
        match self.figment.extract_inner::<T>(key) {
            Ok(v) => Some(v),
            Err(e) if e.missing() => None,
            Err(e) => {
                self.problems.push(format!("{key}: {}", e.kind));
                None
            }
        }
    }

    /// A required number no smaller than `min`.
    fn at_least<T>(&mut self, key: &str, min: T) -> Option<T>
    where
        T: DeserializeOwned + PartialOrd + std::fmt::Display,
    {
        let value: T = self.required(key)?;
        if value < min {
            self.problems.push(format!("{key}: must be at least {min}"));
            return None;
        }
        Some(value)
    }

    /// A duration like `30s` or `15m`, required and positive.
    fn duration(&mut self, key: &str) -> Option<Duration> {
        let text: String = self.required(key)?;
        self.parse_duration(key, &text, false)
    }

    /// A duration that may be zero (`"0s"` turns the feature it times off).
    fn duration_or_zero(&mut self, key: &str) -> Option<Duration> {
        let text: String = self.required(key)?;
        self.parse_duration(key, &text, true)
    }

    fn parse_duration(&mut self, key: &str, text: &str, zero_ok: bool) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) if zero_ok || !d.is_zero() => Some(d),
            Ok(_) => {
                self.problems
                    .push(format!("{key}: must be greater than zero"));
                None
            }
            Err(e) => {
                self.problems.push(format!(
                    "{key}: {text:?} is not a duration like \"30s\" ({e})"
                ));
                None
            }
        }
    }

    /// An http(s) URL, stored without a trailing slash.
    fn url(&mut self, key: &str, value: Option<String>) -> Option<String> {
        let value = value?;
        match check_url(&value) {
            Ok(url) => Some(url),
            Err(why) => {
                self.problems.push(format!("{key}: {why}"));
                None
            }
        }
    }

    /// A coordinate from `lat` and `lon` read at `key`: finite and in range, else a
    /// problem that names the key.
    fn coordinate(&mut self, key: &str, lat: f64, lon: f64) -> Option<crate::coord::Coord> {
        let coord = crate::coord::Coord::new(lat, lon);
        if coord.is_none() {
            self.problem(format!(
                "{key}: lat {lat} / lon {lon} is not a coordinate (lat -90 to 90, lon -180 to 180)"
            ));
        }
        coord
    }

    fn problem(&mut self, text: String) {
        if !self.unreadable {
            self.problems.push(text);
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(ConfigError {
                problems: if self.problems.is_empty() {
                    vec!["configuration incomplete".into()]
                } else {
                    self.problems
                },
            }),
        }
    }
}

/// Checks that `value` is an absolute http(s) URL; returns it without a trailing slash.
pub fn check_url(value: &str) -> Result<String, String> {
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{value:?} contains whitespace or control characters"
        ));
    }
    let parsed = reqwest::Url::parse(value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{value:?} must be an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{value:?} has no host"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// A byte size like `1MiB`, `512KiB` or `1048576`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Value")]
pub struct ByteSize(pub u64);

impl TryFrom<Value> for ByteSize {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        // TOML integers arrive signed.
        if let Some(n) = value.to_num().and_then(|n| n.to_u128()) {
            return u64::try_from(n).map(ByteSize).map_err(|e| e.to_string());
        }
        if let Some(n) = value.to_num().and_then(|n| n.to_i128()) {
            return u64::try_from(n)
                .map(ByteSize)
                .map_err(|_| format!("{n} is not a size (negative?)"));
        }
        let text = value.into_string().ok_or("expected a size like \"1MiB\"")?;
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"1MiB\""))?;
        let scale = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        Ok(ByteSize(n * scale))
    }
}

#[cfg(test)]
mod tests;
