//! The director's configuration (`skein serve --config FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ByteSize, ConfigError, Reader, layered};

const DEFAULTS: &str = include_str!("../../config/defaults.toml");

const KNOWN_KEYS: &[&str] = &[
    "name",
    "listen",
    "advertise_url",
    "data_dir",
    "tls.cert",
    "tls.key",
    "identity.key",
    "federation.discovery_url",
    "federation.directors",
    "federation.trust",
    "federation.ca_bundle",
    "federation.trust_poll_interval",
    "ads.max_lifetime",
    "ads.prune_interval",
    "ads.max_clock_skew",
    "peers.poll_interval",
    "peers.forward_timeout",
    "peers.announce_interval",
    "peers.forget_after",
    "limits.max_body",
    "limits.request_timeout",
    "limits.max_concurrent",
    "log.level",
    "log.format",
    "log.access",
];

/// Everything a director needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorConfig {
    /// Unique in the federation; the trust file must list it as a director.
    pub name: String,
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// The URL peers, services and clients use for this director.
    pub advertise_url: String,
    /// Where sled lives.
    pub data_dir: PathBuf,
    /// Serve HTTPS with this certificate (plain HTTP without it).
    pub tls: Option<TlsConfig>,
    /// This director's signing key.
    pub identity: IdentityConfig,
    /// How to find the rest of the federation.
    pub federation: FederationConfig,
    /// Ad lifetime handling.
    pub ads: AdsConfig,
    /// Peer discovery and forwarding.
    pub peers: PeersConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colour only when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,skein::replication=debug`
    /// (`RUST_LOG`, when set, wins). Changes live on SIGHUP.
    pub level: String,
    /// `text` or `json` (fixed at start).
    pub format: LogFormat,
    /// One line per request (method, path class, status, duration). Changes live.
    pub access: bool,
}

/// `[tls]`: the listener's certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Ed25519 private key file (as written by `skein keygen`).
    pub key: PathBuf,
}

/// `[federation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// Serves `/.well-known/pelican-configuration` (optional).
    pub discovery_url: Option<String>,
    /// Static list of directors (discouraged).
    pub directors: Vec<String>,
    /// Trust file path.
    pub trust: PathBuf,
    /// Extra CA certificates (PEM) trusted by this director's HTTPS clients.
    pub ca_bundle: Option<PathBuf>,
    /// How often the trust file is checked for changes (it is also re-read on SIGHUP).
    pub trust_poll_interval: Duration,
}

/// `[ads]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsConfig {
    /// An ad expires at min(its own expiry, receipt + this).
    pub max_lifetime: Duration,
    /// Longest sleep of the expiry worker.
    pub prune_interval: Duration,
    /// How far in the future an ad's start time may lie before it is refused.
    pub max_clock_skew: Duration,
}

/// `[peers]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersConfig {
    /// How often to ask known directors for their lists (and exchange digests).
    pub poll_interval: Duration,
    /// Timeout of one forward (and of other peer requests).
    pub forward_timeout: Duration,
    /// How often this director re-sends its own ad.
    pub announce_interval: Duration,
    /// A learned peer unreachable this long is forgotten (seeds never are).
    pub forget_after: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    pub max_body: u64,
    /// Longest a request (headers and body) may take.
    pub request_timeout: Duration,
    /// Requests handled at once; more are shed with 503.
    pub max_concurrent: usize,
}

impl DirectorConfig {
    /// Loads defaults, then `file`, then the environment, and validates everything.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // `SKEIN_CA_BUNDLE` is the CLI's `--ca-bundle`; a director's bundle is
        // `federation.ca_bundle` (`SKEIN_FEDERATION__CA_BUNDLE`), so the former is not a key.
        Self::from_figment(layered(DEFAULTS, file, &["ca_bundle"])?)
    }

    /// Loads from TOML text layered over the defaults (tests, embedding).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        use figment::providers::{Format, Toml};
        Self::from_figment(figment::Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(text)))
    }

    fn from_figment(figment: figment::Figment) -> Result<Self, ConfigError> {
        let mut r = Reader::new(figment, KNOWN_KEYS);
        let name: Option<String> = r.required("name");
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            r.problem("name: must not be empty".into());
        }
        let listen = r
            .required::<String>("listen")
            .and_then(|text| match text.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    r.problem(format!(
                        "listen: {text:?} is not an address like 0.0.0.0:8444"
                    ));
                    None
                }
            });
        let advertise = r.required("advertise_url");
        let advertise_url = r.url("advertise_url", advertise);
        let data_dir = r.required("data_dir");
        let tls = match (
            r.optional::<PathBuf>("tls.cert"),
            r.optional::<PathBuf>("tls.key"),
        ) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => {
                r.problem("tls: both tls.cert and tls.key are needed".into());
                None
            }
        };
        let identity_key = r.required("identity.key");
        let discovery = r.optional("federation.discovery_url");
        let discovery_url = r.url("federation.discovery_url", discovery);
        let listed: Vec<String> = r.required("federation.directors").unwrap_or_default();
        let directors = listed
            .into_iter()
            .filter_map(|u| r.url("federation.directors", Some(u)))
            .collect();
        let trust = r.required("federation.trust");
        let ca_bundle = r.optional("federation.ca_bundle");
        let trust_poll_interval = r.duration("federation.trust_poll_interval");
        let log_level: Option<String> = r.required::<String>("log.level").and_then(|level| {
            match tracing_subscriber::EnvFilter::try_new(&level) {
                Ok(_) => Some(level),
                Err(e) => {
                    r.problem(format!("log.level: {level:?} is not a log filter ({e})"));
                    None
                }
            }
        });
        let log_format = r
            .required::<String>("log.format")
            .and_then(|text| match text.as_str() {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                other => {
                    r.problem(format!("log.format: {other:?} is not \"text\" or \"json\""));
                    None
                }
            });
        let log_access: Option<bool> = r.required("log.access");
        let ads = (
            r.duration("ads.max_lifetime"),
            r.duration("ads.prune_interval"),
            r.duration("ads.max_clock_skew"),
        );
        let peers = (
            r.duration("peers.poll_interval"),
            r.duration("peers.forward_timeout"),
            r.duration("peers.announce_interval"),
            r.duration("peers.forget_after"),
        );
        let max_body: Option<ByteSize> = r.required("limits.max_body");
        let request_timeout = r.duration("limits.request_timeout");
        let max_concurrent: Option<usize> = r.required("limits.max_concurrent");
        if max_concurrent == Some(0) {
            r.problem("limits.max_concurrent: must be at least 1".into());
        }
        let config = (|| {
            Some(DirectorConfig {
                name: name?,
                listen: listen?,
                advertise_url: advertise_url?,
                data_dir: data_dir?,
                tls,
                identity: IdentityConfig { key: identity_key? },
                federation: FederationConfig {
                    discovery_url,
                    directors,
                    trust: trust?,
                    ca_bundle,
                    trust_poll_interval: trust_poll_interval?,
                },
                ads: AdsConfig {
                    max_lifetime: ads.0?,
                    prune_interval: ads.1?,
                    max_clock_skew: ads.2?,
                },
                peers: PeersConfig {
                    poll_interval: peers.0?,
                    forward_timeout: peers.1?,
                    announce_interval: peers.2?,
                    forget_after: peers.3?,
                },
                limits: LimitsConfig {
                    max_body: max_body?.0,
                    request_timeout: request_timeout?,
                    max_concurrent: max_concurrent?,
                },
                log: LogConfig {
                    level: log_level?,
                    format: log_format?,
                    access: log_access?,
                },
            })
        })();
        r.finish(config)
    }
}
