//! `protocol = "pelican"`: this server's ad as a Pelican server sends it.
//!
//! The body is Pelican's `OriginAdvertise` (formerly `OriginAdvertiseV2`; caches send the
//! same struct) with Pelican's ordering fields: `startTime` (Unix seconds, fixed for the
//! process), `instanceID` (a UUID, fixed), `generationID` (+1 per ad), `expiry`, `now`.
//! Each POST carries `Authorization: Bearer <token>`, an ES256 JWT minted as Pelican's
//! `server_utils.GetAdvertisementTok` mints it: `iss` = this server's issuer URL, `aud` =
//! the WLCG audience of the director posted to (`scheme://host[:port]`, default port
//! dropped), `sub` = the data URL, `scope` = `pelican.advertise`, `kid` = the key's
//! thumbprint, a one-minute life, `wlcg.ver` 1.0 and a random `jti`.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::ad::{AdStatus, ServerKind};
use crate::config::ServiceConfig;
use crate::eckey::EcKey;
use crate::keys::KeyError;
use crate::pelican::wire::{
    Capabilities, Coordinate, GoTime, GoUrl, NamespaceAd, OriginAdvertise, ServerBaseAd,
    TokenIssuer,
};

/// The scope of an advertise token.
pub const ADVERTISE_SCOPE: &str = "pelican.advertise";
/// Life of an advertise token (Pelican: one minute).
pub const TOKEN_LIFETIME_SECS: i64 = 60;
/// The `version` sent: the Pelican release whose ad shape this follows, and Skein's.
pub const VERSION: &str = concat!("7.17.0+skein.", env!("CARGO_PKG_VERSION"));

/// Mints Pelican ads and advertise tokens for one process.
pub struct PelicanSigner {
    key: EcKey,
    encoding: EncodingKey,
    instance_id: String,
    start_time: i64,
    generation: AtomicU64,
}

impl std::fmt::Debug for PelicanSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PelicanSigner")
            .field("kid", &self.key.kid())
            .field("instance_id", &self.instance_id)
            .field("start_time", &self.start_time)
            .finish_non_exhaustive()
    }
}

impl PelicanSigner {
    /// A new instance starting at `now_ms`, signing with `key`.
    pub fn new(key: EcKey, now_ms: u64, path: &std::path::Path) -> Result<Self, KeyError> {
        let encoding = key
            .encoding_key()
            .ok_or_else(|| KeyError::Malformed(path.to_path_buf()))?;
        Ok(Self {
            key,
            encoding,
            instance_id: uuid::Uuid::new_v4().to_string(),
            start_time: (now_ms / 1000) as i64,
            generation: AtomicU64::new(0),
        })
    }

    /// The key id tokens carry.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The public JWKS of the signing key.
    pub fn public_jwks(&self) -> serde_json::Value {
        self.key.public_jwks()
    }

    /// The next ad (a new `generationID`).
    pub fn ad(&self, config: &ServiceConfig, status: AdStatus, now_ms: u64) -> OriginAdvertise {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let expiry = now_ms + config.lifetime.as_millis() as u64;
        let namespaces: Vec<NamespaceAd> = config
            .namespaces
            .iter()
            .map(|ns| NamespaceAd {
                caps: wire_caps(&ns.capabilities()),
                path: ns.path.clone(),
                issuer: ns
                    .all_issuers()
                    .map(|url| TokenIssuer {
                        base_paths: vec![ns.path.clone()],
                        restricted_paths: vec![],
                        issuer_url: GoUrl::parse(url),
                    })
                    .collect(),
                ..NamespaceAd::default()
            })
            .collect();
        let origin = config.kind == ServerKind::Origin;
        // Pelican's server-wide capabilities: what any namespace allows (none for a cache).
        let caps = if origin {
            config.namespaces.iter().map(|ns| ns.capabilities()).fold(
                wire_caps(&Default::default()),
                |all, c| Capabilities {
                    public_reads: all.public_reads || c.public_reads,
                    reads: all.reads || c.reads,
                    writes: all.writes || c.writes,
                    listings: all.listings || c.listings,
                    ..all
                },
            )
        } else {
            Capabilities::default()
        };
        let issuer = if origin {
            vec![TokenIssuer {
                base_paths: namespaces.iter().map(|ns| ns.path.clone()).collect(),
                restricted_paths: vec![],
                issuer_url: GoUrl::parse(&config.issuer_url),
            }]
        } else {
            vec![]
        };
        OriginAdvertise {
            server_base_ad: ServerBaseAd {
                name: config.name.clone(),
                start_time: self.start_time,
                instance_id: self.instance_id.clone(),
                generation_id: generation,
                version: VERSION.to_string(),
                expiration: GoTime::from_unix_millis(expiry as i64),
            },
            server_id: config.name.clone(),
            registry_prefix: registry_prefix(config),
            data_url: config.data_url.clone(),
            web_url: config.web_url.clone(),
            coordinate: config.location.map(|at| Coordinate {
                lat: at.lat,
                long: at.lon,
                // What Pelican sends for its `GeoLocation` setting.
                source: "declared".into(),
                ..Coordinate::default()
            }),
            caps,
            namespaces,
            issuer,
            storage_type: if origin {
                "posix".into()
            } else {
                String::new()
            },
            // Skein's origins take no director test uploads.
            disable_director_test: true,
            now: GoTime::from_unix_millis(now_ms as i64),
            status: match status {
                AdStatus::Ok => "ok",
                AdStatus::ShuttingDown => "shutting down",
            }
            .to_string(),
            ..OriginAdvertise::default()
        }
    }

    /// An advertise token for posting to `director`.
    pub fn token(&self, config: &ServiceConfig, director: &str, now_ms: u64) -> Option<String> {
        let now = (now_ms / 1000) as i64;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key.kid().to_string());
        let claims = json!({
            "iss": config.issuer_url,
            "sub": config.data_url,
            "aud": wlcg_audience(director)?,
            "scope": ADVERTISE_SCOPE,
            "wlcg.ver": "1.0",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECS,
            "jti": URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding).ok()
    }
}

/// Skein's capabilities as Pelican writes them (`Copies`: Skein origins do no
/// third-party copies).
fn wire_caps(c: &crate::ad::Capabilities) -> Capabilities {
    Capabilities {
        public_reads: c.public_reads,
        reads: c.reads,
        writes: c.writes,
        listings: c.listings,
        direct_reads: true,
        copies: false,
    }
}

/// Pelican's registry prefix for this server: `registry_prefix` if set, else
/// `/origins/<host[:port] of web_url>` for an origin, `/caches/<name>` for a cache.
pub fn registry_prefix(config: &ServiceConfig) -> String {
    if let Some(prefix) = &config.registry_prefix {
        return prefix.clone();
    }
    match config.kind {
        ServerKind::Cache => format!("/caches/{}", config.name),
        _ => {
            let host = reqwest::Url::parse(&config.web_url)
                .ok()
                .map(|u| match (u.host_str(), u.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            format!("/origins/{host}")
        }
    }
}

/// The WLCG audience of a URL as Pelican computes it (`token.GetWLCGAudience`):
/// `scheme://host[:port]`, the port dropped when it is the scheme's default.
pub fn wlcg_audience(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    // `Url::port` is already None for the scheme's default port.
    Some(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(kind: &str) -> ServiceConfig {
        ServiceConfig::from_toml(&format!(
            r#"name = "p-1"
kind = "{kind}"
protocol = "pelican"
data_url = "http://origin.test:9001"
issuer_url = "https://origin.test:9001"
key = "unused.pem"
directors = ["http://d.test:8444"]
lifetime = "2m"
[[namespace]]
path = "/p"
public_reads = true
issuer = "https://issuer.test"
"#
        ))
        .unwrap()
    }

    /// `[location]` goes out as Pelican's declared `coordinate`, and a director reading
    /// the Pelican ad takes it as the ad's location.
    #[test]
    fn a_declared_location_travels_as_pelicans_coordinate() {
        let mut config = service("cache");
        let signer =
            PelicanSigner::new(EcKey::generate(), 1_800_000_000_000, "k".as_ref()).unwrap();
        let plain = signer.ad(&config, AdStatus::Ok, 1_800_000_000_500);
        assert!(plain.coordinate.is_none());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(
            json.get("coordinate").is_none(),
            "omitted as Pelican omits it"
        );
        config.location = crate::coord::Coord::new(52.37, 4.9);
        let ad = signer.ad(&config, AdStatus::Ok, 1_800_000_000_600);
        let json = serde_json::to_value(&ad).unwrap();
        assert_eq!(json["coordinate"]["Lat"], 52.37);
        assert_eq!(json["coordinate"]["Long"], 4.9);
        assert_eq!(json["coordinate"]["Source"], "declared");
        let received: OriginAdvertise = serde_json::from_value(json).unwrap();
        let skein = crate::pelican::convert::to_ad(&received, ServerKind::Cache, 1, 1);
        assert_eq!(skein.location, crate::coord::Coord::new(52.37, 4.9));
        let plain = crate::pelican::convert::to_ad(&plain, ServerKind::Cache, 1, 1);
        assert_eq!(plain.location, None);
    }

    #[test]
    fn audiences_are_pelicans() {
        assert_eq!(
            wlcg_audience("http://d.test:8444/x").unwrap(),
            "http://d.test:8444"
        );
        assert_eq!(
            wlcg_audience("https://d.test:443/").unwrap(),
            "https://d.test"
        );
        assert_eq!(wlcg_audience("http://d.test:80").unwrap(), "http://d.test");
        assert_eq!(
            wlcg_audience("https://d.test:80").unwrap(),
            "https://d.test:80"
        );
        assert!(wlcg_audience("not a url").is_none());
    }

    #[test]
    fn ads_order_and_tokens_verify() {
        let config = service("origin");
        let signer =
            PelicanSigner::new(EcKey::generate(), 1_800_000_000_123, "k".as_ref()).unwrap();
        let first = signer.ad(&config, AdStatus::Ok, 1_800_000_000_500);
        let second = signer.ad(&config, AdStatus::ShuttingDown, 1_800_000_001_000);
        assert_eq!(first.server_base_ad.start_time, 1_800_000_000);
        assert_eq!(
            first.server_base_ad.instance_id,
            second.server_base_ad.instance_id
        );
        assert_eq!(
            second.server_base_ad.generation_id,
            first.server_base_ad.generation_id + 1
        );
        assert_eq!(second.status, "shutting down");
        assert_eq!(first.registry_prefix, "/origins/origin.test:9001");
        assert_eq!(
            first.server_base_ad.expiration.unix_millis(),
            Some(1_800_000_120_500)
        );
        assert_eq!(
            first.namespaces[0].issuer[0].issuer_url.to_url_string(),
            "https://issuer.test"
        );
        assert_eq!(
            first.issuer[0].issuer_url.to_url_string(),
            "https://origin.test:9001"
        );
        let json = serde_json::to_value(&first).unwrap();
        for key in [
            "startTime",
            "instanceID",
            "generationID",
            "expiry",
            "now",
            "data-url",
            "namespaces",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }

        let token = signer
            .token(&config, "http://d.test:8444/", 1_800_000_000_000)
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(signer.kid()));
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], "http://d.test:8444");
        assert_eq!(claims["iss"], "https://origin.test:9001");
        assert_eq!(claims["scope"], ADVERTISE_SCOPE);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            60
        );

        let cache = signer.ad(&service("cache"), AdStatus::Ok, 1_800_000_000_500);
        assert_eq!(cache.registry_prefix, "/caches/p-1");
        assert!(cache.issuer.is_empty());
    }
}
