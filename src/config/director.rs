//! The director's configuration (`skein serve --config FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{ByteSize, ConfigError, Reader, layered};
use crate::geo::{Coord, NetOverride};
use crate::routing::sort::SortMethod;

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
    "peers.max_candidates",
    "peers.forward_delay",
    "limits.max_body",
    "limits.request_timeout",
    "limits.idle_timeout",
    "limits.max_concurrent",
    "limits.max_concurrent_ingest",
    "limits.max_concurrent_bulk",
    "limits.max_ingest_per_client",
    "health.enabled",
    "health.interval",
    "health.timeout",
    "health.concurrency",
    "health.path",
    "health.failures",
    "presence.enabled",
    "presence.single_origin",
    "presence.caches",
    "presence.timeout",
    "presence.fan_out",
    "presence.present_ttl",
    "presence.absent_ttl",
    "presence.capacity",
    "presence.max_in_flight",
    "routing.sort",
    "routing.geoip_db",
    "routing.geoip_optional",
    "routing.trusted_proxies",
    "routing.geoip_override",
    "routing.server_location",
    "routing.locate_interval",
    "routing.dns_refresh",
    "pelican.keys",
    "pelican.registry_url",
    "pelican.audiences",
    "pelican.key_ttl",
    "pelican.refresh_min_interval",
    "pelican.registry_timeout",
    "pelican.token_leeway",
    "log.level",
    "log.format",
    "log.access",
];

/// Everything a director needs to run.
#[derive(Debug, Clone, PartialEq)]
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
    /// Health probes of origins and caches.
    pub health: HealthConfig,
    /// Object-presence checks before redirecting.
    pub presence: PresenceConfig,
    /// Where clients go: sort method, GeoIP, proxies, overrides.
    pub routing: RoutingConfig,
    /// Pelican servers' own advertisements.
    pub pelican: PelicanConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[pelican]`: taking in Pelican servers' own (token-signed) advertisements.
#[derive(Debug, Clone, PartialEq)]
pub struct PelicanConfig {
    /// Ask the federation registry for keys no `[[pelican]]` trust entry gives.
    pub use_registry: bool,
    /// The registry's URL (default: the discovery document's
    /// `namespace_registration_endpoint`).
    pub registry_url: Option<String>,
    /// More URLs whose WLCG audience a token may name (besides every director's
    /// advertise URL and the discovery URL).
    pub audiences: Vec<String>,
    /// How long registry keys are fresh.
    pub key_ttl: Duration,
    /// Least time between two registry fetches of a prefix for an unknown `kid`.
    pub refresh_min_interval: Duration,
    /// Timeout of one registry request.
    pub registry_timeout: Duration,
    /// Clock leeway for token `exp`, `nbf` and `iat`.
    pub token_leeway: Duration,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// The sort method; `None`: `distance` with a GeoIP database, else `affinity`.
    pub sort: Option<SortMethod>,
    /// MaxMind DB (GeoLite2-City / GeoIP2-City format).
    pub geoip_db: Option<PathBuf>,
    /// Start without the database when it cannot be read (instead of refusing).
    pub geoip_optional: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `[[routing.geoip_override]]`: fixed locations of client networks.
    pub geoip_overrides: Vec<NetOverride>,
    /// `[[routing.server_location]]`: fixed locations of servers, by name.
    pub server_locations: Vec<(String, Coord)>,
    /// How often the server-location worker looks for changed ads.
    pub locate_interval: Duration,
    /// How often server host names are resolved again.
    pub dns_refresh: Duration,
}

#[derive(Deserialize)]
struct OverrideEntry {
    network: String,
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct ServerLocationEntry {
    name: String,
    lat: f64,
    lon: f64,
}

/// A CIDR network, or one address as a host network.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a network like \"192.0.2.0/24\" or an address"))
}

impl Reader {
    fn routing(&mut self) -> Option<RoutingConfig> {
        let sort = self
            .optional::<String>("routing.sort")
            .and_then(|text| match text.parse::<SortMethod>() {
                Ok(m) => Some(Some(m)),
                Err(why) => {
                    self.problem(format!("routing.sort: {why}"));
                    None
                }
            })
            .unwrap_or(None);
        let geoip_db = self.optional::<PathBuf>("routing.geoip_db");
        let geoip_optional = self.optional("routing.geoip_optional").unwrap_or(false);
        let proxies: Vec<String> = self.optional("routing.trusted_proxies").unwrap_or_default();
        let mut trusted_proxies = Vec::new();
        for text in proxies {
            match parse_network(&text) {
                Ok(net) => trusted_proxies.push(net),
                Err(why) => self.problem(format!("routing.trusted_proxies: {why}")),
            }
        }
        let overrides: Vec<OverrideEntry> =
            self.optional("routing.geoip_override").unwrap_or_default();
        let mut geoip_overrides = Vec::new();
        for (i, o) in overrides.into_iter().enumerate() {
            let network = parse_network(&o.network)
                .map_err(|why| self.problem(format!("routing.geoip_override[{i}].network: {why}")))
                .ok();
            let coord = self.coordinate(&format!("routing.geoip_override[{i}]"), o.lat, o.lon);
            if let (Some(network), Some(coord)) = (network, coord) {
                geoip_overrides.push(NetOverride { network, coord });
            }
        }
        let servers: Vec<ServerLocationEntry> =
            self.optional("routing.server_location").unwrap_or_default();
        let mut server_locations = Vec::new();
        for (i, s) in servers.into_iter().enumerate() {
            let key = format!("routing.server_location[{i}]");
            match self.coordinate(&key, s.lat, s.lon) {
                Some(coord) if !s.name.trim().is_empty() => server_locations.push((s.name, coord)),
                Some(_) => self.problem(format!("{key}.name: must not be empty")),
                None => {}
            }
        }
        let locate_interval = self.duration("routing.locate_interval");
        let dns_refresh = self.duration("routing.dns_refresh");
        Some(RoutingConfig {
            sort,
            geoip_db,
            geoip_optional,
            trusted_proxies,
            geoip_overrides,
            server_locations,
            locate_interval: locate_interval?,
            dns_refresh: dns_refresh?,
        })
    }
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
    /// Most unverified candidate URLs held at once (from discovery and peers' lists).
    pub max_candidates: usize,
    /// How long an accepted ad waits before it is offered to peers (by version; the
    /// full ad goes only to peers that lack it). Zero sends every ad in full at once.
    pub forward_delay: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    pub max_body: u64,
    /// Longest a request (headers and body) may take.
    pub request_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after this long.
    pub idle_timeout: Duration,
    /// Client requests (redirects) handled at once; more are shed with 503.
    pub max_concurrent: usize,
    /// Requests with bodies (registrations, forwards, fetches) handled at once.
    pub max_concurrent_ingest: usize,
    /// Listings, digests, metrics and status pages handled at once.
    pub max_concurrent_bulk: usize,
    /// Requests with bodies in flight from one client address; more get 429.
    pub max_ingest_per_client: usize,
}

/// `[health]`: probes of every origin and cache in the view (see `src/probe/`).
///
/// Each server is probed at most once per `interval` (its first probe at a random offset
/// within one interval, later ones `interval` plus up to 10% jitter after the last start),
/// so N servers cost at most N probes per interval, N / interval per second on average,
/// and never more than `concurrency` at once.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Probe at all (off: every server's health is unknown and ranking ignores it).
    pub enabled: bool,
    /// Time between two probes of one server.
    pub interval: Duration,
    /// A probe not answered within this fails.
    pub timeout: Duration,
    /// Probes in flight at once, over all servers.
    pub concurrency: usize,
    /// Path probed on each server's data URL (`HEAD`).
    pub path: String,
    /// Consecutive failed probes after which a server is down (one success brings it back).
    pub failures: u32,
}

/// `[presence]`: `HEAD` the object at candidate servers before redirecting, when it matters.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceConfig {
    /// Check at all.
    pub enabled: bool,
    /// Also check when a namespace has a single origin (off: assume it has every object).
    pub single_origin: bool,
    /// Check caches for requests with `?prefercached`.
    pub caches: bool,
    /// Longest wait for one server's answer (the redirect waits for the slowest).
    pub timeout: Duration,
    /// Servers asked at once for one request.
    pub fan_out: usize,
    /// How long a "present" answer is reused.
    pub present_ttl: Duration,
    /// How long an "absent" answer is reused.
    pub absent_ttl: Duration,
    /// Most (object, server) answers kept.
    pub capacity: usize,
    /// Most `HEAD`s in flight over all requests; beyond it a request is not checked
    /// (routed on what is known), so a burst of redirects cannot flood the servers.
    pub max_in_flight: usize,
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
            r.required::<usize>("peers.max_candidates"),
            r.duration_or_zero("peers.forward_delay"),
        );
        let max_body: Option<ByteSize> = r.required("limits.max_body");
        let request_timeout = r.duration("limits.request_timeout");
        let idle_timeout = r.duration("limits.idle_timeout");
        let mut budget = |key: &str| {
            let value: Option<usize> = r.required(key);
            if value == Some(0) {
                r.problem(format!("{key}: must be at least 1"));
            }
            value
        };
        let max_concurrent = budget("limits.max_concurrent");
        let max_concurrent_ingest = budget("limits.max_concurrent_ingest");
        let max_concurrent_bulk = budget("limits.max_concurrent_bulk");
        let max_ingest_per_client = budget("limits.max_ingest_per_client");
        let health = (
            r.required::<bool>("health.enabled"),
            r.duration("health.interval"),
            r.duration("health.timeout"),
            r.at_least::<usize>("health.concurrency", 1),
            r.required::<String>("health.path"),
            r.at_least::<u32>("health.failures", 1),
        );
        if let Some(path) = &health.4 {
            if !path.starts_with('/') {
                r.problem(format!("health.path: {path:?} must start with /"));
            }
        }
        let presence = (
            r.required::<bool>("presence.enabled"),
            r.required::<bool>("presence.single_origin"),
            r.required::<bool>("presence.caches"),
            r.duration("presence.timeout"),
            r.at_least::<usize>("presence.fan_out", 1),
            r.duration("presence.present_ttl"),
            r.duration("presence.absent_ttl"),
            r.at_least::<usize>("presence.capacity", 1),
            r.at_least::<usize>("presence.max_in_flight", 1),
        );
        let routing = r.routing();
        let keys_mode: Option<String> = r.required("pelican.keys");
        let use_registry = match keys_mode.as_deref() {
            Some("registry") => Some(true),
            Some("trust-file") => Some(false),
            Some(other) => {
                r.problem(format!(
                    "pelican.keys: {other:?} is neither \"trust-file\" nor \"registry\""
                ));
                None
            }
            None => None,
        };
        let registry = r.optional("pelican.registry_url");
        let registry_url = r.url("pelican.registry_url", registry);
        let audiences_listed: Vec<String> = r.required("pelican.audiences").unwrap_or_default();
        let audiences = audiences_listed
            .into_iter()
            .filter_map(|u| r.url("pelican.audiences", Some(u)))
            .collect();
        let pelican = (
            r.duration("pelican.key_ttl"),
            r.duration("pelican.refresh_min_interval"),
            r.duration("pelican.registry_timeout"),
            r.duration("pelican.token_leeway"),
        );
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
                    max_candidates: peers.4?,
                    forward_delay: peers.5?,
                },
                limits: LimitsConfig {
                    max_body: max_body?.0,
                    request_timeout: request_timeout?,
                    idle_timeout: idle_timeout?,
                    max_concurrent: max_concurrent?,
                    max_concurrent_ingest: max_concurrent_ingest?,
                    max_concurrent_bulk: max_concurrent_bulk?,
                    max_ingest_per_client: max_ingest_per_client?,
                },
                health: HealthConfig {
                    enabled: health.0?,
                    interval: health.1?,
                    timeout: health.2?,
                    concurrency: health.3?,
                    path: health.4?,
                    failures: health.5?,
                },
                presence: PresenceConfig {
                    enabled: presence.0?,
                    single_origin: presence.1?,
                    caches: presence.2?,
                    timeout: presence.3?,
                    fan_out: presence.4?,
                    present_ttl: presence.5?,
                    absent_ttl: presence.6?,
                    capacity: presence.7?,
                    max_in_flight: presence.8?,
                },
                routing: routing?,
                pelican: PelicanConfig {
                    use_registry: use_registry?,
                    registry_url,
                    audiences,
                    key_ttl: pelican.0?,
                    refresh_min_interval: pelican.1?,
                    registry_timeout: pelican.2?,
                    token_leeway: pelican.3?,
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
