//! A verified Pelican ad in Skein's model: fields, place in the total order, expiry.
//!
//! Order (`crate::ad::order`): Pelican's `ServerBaseAd.After` compares `startTime`
//! (Unix seconds), then `instanceID` (hex UUID, as text), then `generationID`. Skein's
//! [`AdVersion`] compares start time, UUID bytes, generation, so the mapping is direct:
//! `started_at = startTime * 1000`, `uuid = instanceID` (a hex UUID's byte order is its
//! text order; any other text is hashed, still total and the same on every director),
//! `generation = generationID`. A restarted server (later `startTime`) wins; a delayed
//! copy (lower `generationID`) never overwrites a fresher one.
//!
//! Fallback, for ads lacking any of the three (servers before Pelican 7.9 send zeros):
//! `started_at = 0`, `uuid` = a hash of the server's name, `generation` = the ad's `now`
//! in milliseconds (the server's send time), else the token's `iat`. Such ads order by
//! the server's own clock; any ad carrying the real fields outranks them.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::wire::{self, OriginAdvertise, ServerBaseAd};
use crate::ad::{
    Ad, AdStatus, AdVersion, Capabilities, InstanceId, NamespaceAd, ServerKind, TokenGeneration,
    TokenIssuer,
};
use crate::clock::UnixMillis;
use crate::coord::Coord;

/// Pelican's `Server.AdLifetime` default: an ad without an expiry lives this long.
pub const DEFAULT_AD_LIFETIME_MS: u64 = 15 * 60 * 1000;

/// Whether an ad carries Pelican's ordering fields.
pub fn has_order_fields(base: &ServerBaseAd) -> bool {
    base.start_time > 0 && !base.instance_id.is_empty() && base.generation_id > 0
}

/// The ad's place in Skein's total order (see the module doc).
pub fn version(ad: &OriginAdvertise, token_issued_at: UnixMillis) -> AdVersion {
    let base = &ad.server_base_ad;
    if has_order_fields(base) {
        AdVersion {
            started_at: (base.start_time as u64).saturating_mul(1000),
            uuid: instance_uuid(&base.instance_id),
            generation: base.generation_id,
        }
    } else {
        AdVersion {
            started_at: 0,
            uuid: hashed_uuid("skein-pelican-legacy", &base.name),
            generation: ad.now.unix_millis().map_or(token_issued_at, |ms| ms as u64),
        }
    }
}

/// A Pelican instance ID as a UUID: parsed when it is one, else hashed.
pub fn instance_uuid(instance_id: &str) -> Uuid {
    Uuid::try_parse(&instance_id.to_ascii_lowercase())
        .unwrap_or_else(|_| hashed_uuid("skein-pelican-instance", instance_id))
}

fn hashed_uuid(domain: &str, text: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// When the ad expires, in this director's time. Like Pelican's director, a server
/// whose clock is off has its lifetime (`expiry - now`) moved onto the director's
/// clock; without an expiry the ad lives [`DEFAULT_AD_LIFETIME_MS`].
pub fn expires_at(ad: &OriginAdvertise, received_at: UnixMillis) -> UnixMillis {
    let expiry = ad.server_base_ad.expiration.unix_millis();
    match (expiry, ad.now.unix_millis()) {
        (Some(expiry), Some(sent)) if expiry > sent => {
            received_at.saturating_add((expiry - sent) as u64)
        }
        (Some(expiry), None) => expiry as u64,
        _ => received_at.saturating_add(DEFAULT_AD_LIFETIME_MS),
    }
}

/// Pelican's path clean-up: no trailing slash (`server_utils.RemoveTrailingSlash`).
fn trim_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

fn caps(c: &wire::Capabilities) -> Capabilities {
    Capabilities {
        public_reads: c.public_reads,
        reads: c.reads,
        writes: c.writes,
        listings: c.listings,
        direct_reads: c.direct_reads,
    }
}

fn issuers(list: &[wire::TokenIssuer]) -> Vec<TokenIssuer> {
    list.iter()
        .map(|i| TokenIssuer {
            issuer_url: i.issuer_url.to_url_string(),
            base_paths: i.base_paths.clone(),
        })
        .collect()
}

/// The ad's namespaces in Skein's model. A namespace without issuers of its own gets
/// the ad-level issuers whose base paths cover it (origins list them once, at the top).
pub fn namespaces(ad: &OriginAdvertise) -> Vec<NamespaceAd> {
    ad.namespaces
        .iter()
        .map(|ns| {
            let path = trim_path(&ns.path);
            let mut own = issuers(&ns.issuer);
            if own.is_empty() {
                own = issuers(&ad.issuer)
                    .into_iter()
                    .filter(|i| {
                        i.base_paths
                            .iter()
                            .any(|b| crate::paths::is_under_prefix(&path, b))
                    })
                    .collect();
            }
            NamespaceAd {
                path,
                caps: caps(&ns.caps),
                issuers: own,
                generation: ns
                    .generation
                    .iter()
                    .map(|g| TokenGeneration {
                        strategy: g.strategy.clone(),
                        max_scope_depth: g.max_scope_depth,
                        issuer: g.credential_issuer.to_url_string(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The Skein ad for a verified Pelican ad.
pub fn to_ad(
    pelican: &OriginAdvertise,
    kind: ServerKind,
    received_at: UnixMillis,
    token_issued_at: UnixMillis,
) -> Ad {
    let version = version(pelican, token_issued_at);
    let status = if pelican.status.eq_ignore_ascii_case("shutting down") {
        AdStatus::ShuttingDown
    } else {
        AdStatus::Ok
    };
    Ad {
        name: pelican.server_base_ad.name.trim().to_owned(),
        kind,
        data_url: pelican.data_url.clone(),
        web_url: pelican.web_url.clone(),
        namespaces: namespaces(pelican),
        status,
        instance_id: InstanceId {
            started_at: version.started_at,
            uuid: version.uuid,
        },
        generation: version.generation,
        expires_at: expires_at(pelican, received_at),
        version: pelican.server_base_ad.version.chars().take(64).collect(),
        record: None,
        // Declared by the server (Pelican's `GeoLocation`); checked like any ad's.
        location: pelican.coordinate.as_ref().map(|c| Coord {
            lat: c.lat,
            lon: c.long,
        }),
    }
}

/// Pelican's own `ServerBaseAd.After`, for the property tests: `Some(true)` if `a` is
/// after `b`, `None` when Pelican cannot tell.
#[cfg(test)]
fn pelican_after(a: &ServerBaseAd, b: &ServerBaseAd) -> Option<bool> {
    if a.name != b.name || !has_order_fields(a) || !has_order_fields(b) {
        return None;
    }
    Some(
        (a.start_time, a.instance_id.as_str(), a.generation_id)
            > (b.start_time, b.instance_id.as_str(), b.generation_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{is_newer, merge};
    use proptest::prelude::*;

    fn ad(start: i64, instance: &str, generation: u64, now_ms: Option<i64>) -> OriginAdvertise {
        let mut ad = OriginAdvertise {
            server_base_ad: ServerBaseAd {
                name: "origin.example.org".into(),
                start_time: start,
                instance_id: instance.into(),
                generation_id: generation,
                ..ServerBaseAd::default()
            },
            ..OriginAdvertise::default()
        };
        if let Some(ms) = now_ms {
            ad.now = wire::GoTime::from_unix_millis(ms);
        }
        ad
    }

    fn instance() -> impl Strategy<Value = String> {
        // Hex UUIDs as Pelican writes them, from a small pool so ties are common.
        (0u8..3).prop_map(|b| format!("{b:02x}").repeat(16))
    }

    fn pelican_ad() -> impl Strategy<Value = OriginAdvertise> {
        (0i64..4, instance(), 0u64..4, proptest::option::of(0i64..4))
            .prop_map(|(s, i, g, now)| ad(s * 1000, &i, g, now.map(|n| n * 1_000 + 1)))
    }

    proptest! {
        #[test]
        fn agrees_with_pelicans_after(a in pelican_ad(), b in pelican_ad()) {
            if let Some(after) = pelican_after(&a.server_base_ad, &b.server_base_ad) {
                prop_assert_eq!(version(&a, 0) > version(&b, 0), after);
            }
        }

        #[test]
        fn order_stays_total_and_merge_commutes(a in pelican_ad(), b in pelican_ad(), c in pelican_ad(), iat in 0u64..3) {
            let (va, vb, vc) = (version(&a, iat), version(&b, iat), version(&c, iat));
            prop_assert_eq!(va.cmp(&vb), vb.cmp(&va).reverse());
            if va <= vb && vb <= vc { prop_assert!(va <= vc); }
            prop_assert_eq!(merge(va, vb), merge(vb, va));
            prop_assert_eq!(merge(va, va), va);
        }

        #[test]
        fn a_delayed_copy_never_overwrites(start in 1i64..1000, generation in 2u64..1000, back in 1u64..2) {
            let fresh = version(&ad(start, &"ab".repeat(16), generation, None), 0);
            let delayed = version(&ad(start, &"ab".repeat(16), generation - back, None), 0);
            prop_assert!(!is_newer(delayed, Some(fresh)));
            prop_assert!(is_newer(fresh, Some(delayed)));
        }

        #[test]
        fn a_restarted_server_wins(start in 1i64..1000, g_old in 1u64..u64::MAX, g_new in 1u64..10) {
            let old = version(&ad(start, &"ff".repeat(16), g_old, None), 0);
            let new = version(&ad(start + 1, &"00".repeat(16), g_new, None), 0);
            prop_assert!(is_newer(new, Some(old)));
        }

        #[test]
        fn legacy_ads_order_by_send_time(t1 in 1i64..1_000_000, dt in 1i64..1_000_000) {
            let earlier = version(&ad(0, "", 0, Some(t1)), 0);
            let later = version(&ad(0, "", 0, Some(t1 + dt)), 0);
            prop_assert!(is_newer(later, Some(earlier)));
            let complete = version(&ad(1, &"01".repeat(16), 1, None), 0);
            prop_assert!(is_newer(complete, Some(later)));
        }
    }

    #[test]
    fn legacy_without_now_uses_token_iat() {
        let a = version(&ad(0, "", 0, None), 5_000);
        let b = version(&ad(0, "", 0, None), 6_000);
        assert!(b > a);
    }

    #[test]
    fn expiry_moves_onto_the_directors_clock() {
        let mut pelican = ad(1, "x", 1, Some(1_000_000));
        pelican.server_base_ad.expiration = wire::GoTime::from_unix_millis(1_000_000 + 900_000);
        // The server's clock is 10 minutes behind: its lifetime is kept, not its expiry.
        assert_eq!(expires_at(&pelican, 1_600_000), 1_600_000 + 900_000);
        let bare = ad(1, "x", 1, None);
        assert_eq!(expires_at(&bare, 10), 10 + DEFAULT_AD_LIFETIME_MS);
    }

    #[test]
    fn namespaces_inherit_top_level_issuers() {
        let text = r#"{"name":"o","data-url":"https://o:8443",
            "namespaces":[{"path":"/data/","Caps":{"Read":true}},{"path":"/other","Caps":{}}],
            "token-issuer":[{"base-paths":["/data"],"issuer":{"Scheme":"https","Host":"o:8444"}}]}"#;
        let pelican: OriginAdvertise = serde_json::from_str(text).unwrap();
        let ns = namespaces(&pelican);
        assert_eq!(ns[0].path, "/data");
        assert_eq!(ns[0].issuers[0].issuer_url, "https://o:8444");
        assert!(ns[0].caps.reads);
        assert!(ns[1].issuers.is_empty());
    }
}
