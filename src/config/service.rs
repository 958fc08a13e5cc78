//! The service side's configuration (`skein advertise`, `skein origin`, `skein cache`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ByteSize, ConfigError, Reader, layered};
use crate::ad::ServerKind;

const DEFAULTS: &str = r#"
directors = []
interval = "60s"
lifetime = "15m"
protocol = "skein"
max_upload = "1GiB"
token_audiences = []
"#;

const KNOWN_KEYS: &[&str] = &[
    "name",
    "kind",
    "data_url",
    "web_url",
    "key",
    "federation",
    "directors",
    "interval",
    "lifetime",
    "namespace",
    "listen",
    "export",
    "cache_dir",
    "ca_bundle",
    "protocol",
    "issuer_url",
    "registry_prefix",
    "max_upload",
    "token_audiences",
    "location.lat",
    "location.lon",
];

/// One `[[namespace]]` a service serves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Prefix, e.g. `/test`.
    pub path: String,
    /// Readable.
    #[serde(default = "yes")]
    pub reads: bool,
    /// Readable without a token.
    #[serde(default)]
    pub public_reads: bool,
    /// Writable.
    #[serde(default)]
    pub writes: bool,
    /// Listable.
    #[serde(default)]
    pub listings: bool,
    /// Further token issuer URLs, advertised and accepted (keys found through each
    /// issuer's OpenID configuration).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// The token issuer whose tokens grant access (advertised as the namespace's issuer).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The issuer's public keys, a JWKS file.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// The issuer's public keys, a JWKS URL (without `jwks` or `jwks_url`, found through
    /// `<issuer>/.well-known/openid-configuration`).
    #[serde(default)]
    pub jwks_url: Option<String>,
}

impl NamespaceConfig {
    /// Every issuer URL of this namespace: `issuer` first, then `issuers`.
    pub fn all_issuers(&self) -> impl Iterator<Item = &String> {
        self.issuer.iter().chain(self.issuers.iter())
    }

    /// The capabilities advertised for this namespace (public reads imply reads; clients
    /// may always read from the origin directly).
    pub fn capabilities(&self) -> crate::ad::Capabilities {
        crate::ad::Capabilities {
            public_reads: self.public_reads,
            reads: self.reads || self.public_reads,
            writes: self.writes,
            listings: self.listings,
            direct_reads: true,
        }
    }

    /// True if some request needs a token here (non-public reads or writes).
    pub fn needs_tokens(&self) -> bool {
        self.writes || (self.reads && !self.public_reads)
    }
}

/// How a service advertises itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Skein's own ads, Ed25519-signed (`key` from `skein keygen`).
    Skein,
    /// Pelican's `OriginAdvertiseV2` with an ES256 advertise token (`key` from
    /// `skein keygen --kind ec`).
    Pelican,
}

fn yes() -> bool {
    true
}

/// A service's configuration.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Unique server name (as in the trust file).
    pub name: String,
    /// Origin or cache.
    pub kind: ServerKind,
    /// Where clients fetch objects.
    pub data_url: String,
    /// Web URL.
    pub web_url: String,
    /// Private key file.
    pub key: PathBuf,
    /// Discovery URL (a director or a federation metadata server).
    pub federation: Option<String>,
    /// Static director list (discouraged).
    pub directors: Vec<String>,
    /// Re-advertise period.
    pub interval: Duration,
    /// Ad lifetime.
    pub lifetime: Duration,
    /// Namespaces served.
    pub namespaces: Vec<NamespaceConfig>,
    /// Listen address (`skein origin` / `skein cache`).
    pub listen: Option<SocketAddr>,
    /// Directory served (`skein origin`).
    pub export: Option<PathBuf>,
    /// Cache directory (`skein cache`).
    pub cache_dir: Option<PathBuf>,
    /// Extra CA certificates (PEM) for HTTPS to directors.
    pub ca_bundle: Option<PathBuf>,
    /// How ads are sent.
    pub protocol: Protocol,
    /// This server's token issuer URL (`protocol = "pelican"`; default `web_url`).
    pub issuer_url: String,
    /// Pelican registry prefix (`protocol = "pelican"`; default `/origins/<host:port>` or
    /// `/caches/<name>`).
    pub registry_prefix: Option<String>,
    /// Largest upload `skein origin` accepts (413 beyond).
    pub max_upload: u64,
    /// Token audiences accepted besides `data_url`, `web_url` and the WLCG "any".
    pub token_audiences: Vec<String>,
    /// `[location]`: where this server is, declared in its ads (directors use it unless
    /// their own `[[routing.server_location]]` names the server).
    pub location: Option<crate::coord::Coord>,
}

impl ServiceConfig {
    /// Loads defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(layered(DEFAULTS, file, &[])?)
    }

    /// Loads from TOML text (tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        use figment::providers::{Format, Toml};
        Self::from_figment(figment::Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(text)))
    }

    fn from_figment(figment: figment::Figment) -> Result<Self, ConfigError> {
        let mut r = Reader::new(figment, KNOWN_KEYS);
        let name: Option<String> = r.required("name");
        let kind = r
            .required::<String>("kind")
            .and_then(|k| match k.parse::<ServerKind>() {
                Ok(ServerKind::Director) | Err(_) => {
                    r.problem(format!("kind: {k:?} must be origin or cache"));
                    None
                }
                Ok(kind) => Some(kind),
            });
        let data = r.required("data_url");
        let data_url = r.url("data_url", data);
        let web = r.optional("web_url");
        let web_url = r.url("web_url", web);
        let key = r.required("key");
        let fed = r.optional("federation");
        let federation = r.url("federation", fed);
        let listed: Vec<String> = r.required("directors").unwrap_or_default();
        let directors: Vec<String> = listed
            .into_iter()
            .filter_map(|u| r.url("directors", Some(u)))
            .collect();
        if federation.is_none() && directors.is_empty() {
            r.problem("federation: set federation (a discovery URL) or directors".into());
        }
        let interval = r.duration("interval");
        let lifetime = r.duration("lifetime");
        let namespaces: Vec<NamespaceConfig> = r.optional("namespace").unwrap_or_default();
        for ns in &namespaces {
            if !crate::paths::is_valid_namespace(&ns.path) {
                r.problem(format!(
                    "namespace.path: {:?} must be an absolute path without '.', '..', '//' or a trailing /",
                    ns.path
                ));
            }
            for url in ns.all_issuers().chain(ns.jwks_url.iter()) {
                if let Err(e) = super::check_url(url) {
                    r.problem(format!("namespace {}: {e}", ns.path));
                }
            }
            if ns.jwks.is_some() && ns.jwks_url.is_some() {
                r.problem(format!(
                    "namespace {}: set jwks (a file) or jwks_url, not both",
                    ns.path
                ));
            }
            if ns.issuer.is_none() && (ns.jwks.is_some() || ns.jwks_url.is_some()) {
                r.problem(format!(
                    "namespace {}: jwks and jwks_url are the keys of `issuer`, which is missing",
                    ns.path
                ));
            }
        }
        let protocol = r
            .required::<String>("protocol")
            .and_then(|p| match p.as_str() {
                "skein" => Some(Protocol::Skein),
                "pelican" => Some(Protocol::Pelican),
                _ => {
                    r.problem(format!("protocol: {p:?} must be skein or pelican"));
                    None
                }
            });
        let issuer = r.optional("issuer_url");
        let issuer_url = r.url("issuer_url", issuer);
        let registry_prefix: Option<String> = r.optional("registry_prefix");
        if let Some(prefix) = &registry_prefix {
            if !(prefix.starts_with("/origins/") || prefix.starts_with("/caches/")) {
                r.problem(format!(
                    "registry_prefix: {prefix:?} must start with /origins/ or /caches/"
                ));
            }
        }
        let max_upload: Option<ByteSize> = r.required("max_upload");
        let audiences: Vec<String> = r.required("token_audiences").unwrap_or_default();
        let listen = r
            .optional::<String>("listen")
            .and_then(|text| match text.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    r.problem(format!(
                        "listen: {text:?} is not an address like 0.0.0.0:9001"
                    ));
                    None
                }
            });
        let export = r.optional("export");
        let cache_dir = r.optional("cache_dir");
        let ca_bundle = r.optional("ca_bundle");
        let location = match (r.optional("location.lat"), r.optional("location.lon")) {
            (None, None) => None,
            (Some(lat), Some(lon)) => r.coordinate("location", lat, lon),
            _ => {
                r.problem("location: set both lat and lon".into());
                None
            }
        };
        let config = (|| {
            let data_url = data_url?;
            Some(ServiceConfig {
                issuer_url: issuer_url
                    .unwrap_or_else(|| web_url.clone().unwrap_or_else(|| data_url.clone())),
                protocol: protocol?,
                max_upload: max_upload?.0,
                registry_prefix,
                token_audiences: audiences,
                name: name?,
                kind: kind?,
                web_url: web_url.unwrap_or_else(|| data_url.clone()),
                data_url,
                key: key?,
                federation,
                directors,
                interval: interval?,
                lifetime: lifetime?,
                namespaces,
                listen,
                export,
                cache_dir,
                ca_bundle,
                location,
            })
        })();
        r.finish(config)
    }
}
