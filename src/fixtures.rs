//! Ready-made ads, keys and trust entries for tests, fuzzing and benchmarks.

use uuid::Uuid;

use crate::ad::{Ad, AdStatus, Capabilities, InstanceId, NamespaceAd, ServerKind, SigningKey};
use crate::clock::UnixMillis;
use crate::trust::{Trust, TrustedServer};

/// A deterministic key for a server name (tests only: never for real servers).
pub fn key_for(name: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in name.bytes().enumerate() {
        seed[i % 32] = seed[i % 32].wrapping_mul(31).wrapping_add(b);
    }
    seed[31] ^= name.len() as u8;
    SigningKey::from_bytes(&seed)
}

/// A public, readable namespace.
pub fn public_namespace(path: &str) -> NamespaceAd {
    NamespaceAd {
        path: path.to_string(),
        caps: Capabilities {
            public_reads: true,
            reads: true,
            writes: false,
            listings: true,
            direct_reads: true,
        },
        issuers: vec![],
        generation: vec![],
    }
}

/// An ad for `name` of `kind` serving `namespaces`, from a fixed instance.
pub fn ad(
    name: &str,
    kind: ServerKind,
    namespaces: &[&str],
    started_at: UnixMillis,
    generation: u64,
) -> Ad {
    Ad {
        name: name.to_string(),
        kind,
        data_url: format!("http://{name}.example:8443"),
        web_url: format!("http://{name}.example:8443"),
        namespaces: namespaces.iter().map(|p| public_namespace(p)).collect(),
        status: AdStatus::Ok,
        instance_id: InstanceId {
            started_at,
            uuid: Uuid::from_u64_pair(started_at, name.len() as u64),
        },
        generation,
        expires_at: started_at + 15 * 60 * 1000 + generation,
        version: "test".into(),
        record: None,
        location: None,
    }
}

/// A trust file that trusts each (name, kind, namespaces) with [`key_for`] keys.
pub fn trust(servers: &[(&str, ServerKind, &[&str])]) -> Trust {
    let mut trust = Trust::default();
    for (name, kind, namespaces) in servers {
        trust.insert(
            *name,
            TrustedServer {
                kind: *kind,
                key: key_for(name).verifying_key(),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            },
        );
    }
    trust
}

/// One server of a synthetic federation: name, kind and the namespaces it serves.
pub type FederationServer = (String, ServerKind, Vec<String>);

/// The `i`-th namespace of a synthetic federation (`/vo<i/100>/ns<i>`).
pub fn namespace_path(i: usize) -> String {
    format!("/vo{}/ns{i}", i / 100)
}

/// A synthetic federation for benchmarks: half the servers are origins splitting
/// `namespaces` between them; each cache serves the namespaces of three origins, so every
/// namespace has one origin and about three caches.
pub fn federation(servers: usize, namespaces: usize) -> Vec<FederationServer> {
    let origins = (servers / 2).max(1);
    let caches = servers - origins;
    let per_origin = namespaces.div_ceil(origins);
    let of_origin = |o: usize| -> Vec<String> {
        (o * per_origin..((o + 1) * per_origin).min(namespaces))
            .map(namespace_path)
            .collect()
    };
    let mut out: Vec<FederationServer> = (0..origins)
        .map(|o| (format!("origin-{o}"), ServerKind::Origin, of_origin(o)))
        .collect();
    out.extend((0..caches).map(|c| {
        let namespaces = (0..3.min(origins))
            .flat_map(|k| of_origin((c + k) % origins))
            .collect();
        (format!("cache-{c}"), ServerKind::Cache, namespaces)
    }));
    out
}

/// Trust for a synthetic federation (plus `directors`), with [`key_for`] keys.
pub fn federation_trust(servers: &[FederationServer], directors: &[String]) -> Trust {
    let mut trust = Trust::default();
    for (name, kind, namespaces) in servers {
        trust.insert(
            name.as_str(),
            TrustedServer {
                kind: *kind,
                key: key_for(name).verifying_key(),
                namespaces: namespaces.clone(),
            },
        );
    }
    for name in directors {
        trust.insert(
            name.as_str(),
            TrustedServer {
                kind: ServerKind::Director,
                key: key_for(name).verifying_key(),
                namespaces: vec![],
            },
        );
    }
    trust
}

/// A signed ad for one server of a synthetic federation.
pub fn federation_ad(
    server: &FederationServer,
    started_at: UnixMillis,
    generation: u64,
) -> crate::ad::SignedAd {
    let (name, kind, namespaces) = server;
    let paths: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    ad(name, *kind, &paths, started_at, generation).sign(&key_for(name))
}

/// Where the `i`-th synthetic server is: spread over the inhabited latitudes, deterministic.
pub fn server_coord(i: usize) -> (f64, f64) {
    let lat = ((i * 37) % 120) as f64 - 55.0 + 0.5;
    let lon = ((i * 97) % 360) as f64 - 180.0 + 0.25;
    (lat, lon)
}

/// Number of client networks in [`bench_geoip_db`].
pub const BENCH_CLIENT_NETWORKS: usize = 256;

/// A client address in the `k`-th network of [`bench_geoip_db`].
pub fn bench_client(k: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(20, (k % BENCH_CLIENT_NETWORKS) as u8, 1, 1).into()
}

/// A GeoIP database (MaxMind format) placing `20.k.0.0/16` around the globe.
pub fn bench_geoip_db() -> Vec<u8> {
    let entries: Vec<(ipnet::IpNet, f64, f64)> = (0..BENCH_CLIENT_NETWORKS)
        .map(|k| {
            let (lat, lon) = server_coord(k * 7 + 3);
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(20, k as u8, 0, 0), 16)
                .map(ipnet::IpNet::V4)
                .unwrap_or_default();
            (net, lat, lon)
        })
        .collect();
    crate::geo::mmdb::city_db(&entries)
}

/// `[routing]` TOML for benchmarks: `adaptive`, the database at `db`, loopback trusted
/// (the load generator sets `X-Forwarded-For`), every server of `servers` located.
pub fn bench_routing_toml(servers: &[FederationServer], db: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "[routing]\nsort = \"adaptive\"\ngeoip_db = {:?}\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        db.display().to_string()
    );
    for (i, (name, _, _)) in servers.iter().enumerate() {
        let (lat, lon) = server_coord(i);
        let _ = write!(
            out,
            "[[routing.server_location]]\nname = {name:?}\nlat = {lat}\nlon = {lon}\n"
        );
    }
    out
}

/// A routing candidate for `name` of `kind`, backed by a fixture ad (tests of ordering).
/// A candidate borrows its ad from a view; a fixture's ad is leaked to live as long as
/// the test.
pub fn candidate(name: &str, kind: ServerKind) -> crate::routing::Candidate<'static> {
    candidate_at(name, kind, None)
}

/// Like [`candidate`], with the ad's data URL replaced (a test server's, say).
pub fn candidate_at(
    name: &str,
    kind: ServerKind,
    data_url: Option<&str>,
) -> crate::routing::Candidate<'static> {
    let now = 1_700_000_000_000;
    let mut unsigned = ad(name, kind, &["/ns"], now - 10, 1);
    if let Some(url) = data_url {
        unsigned.data_url = url.to_string();
    }
    let signed = unsigned.sign(&key_for(name));
    crate::routing::Candidate::new(leaked(crate::ad::StoredAd::new(signed, now - 5, 900_000)))
}

/// A route for `/ns` through `candidates`, whose namespace is `namespace` (tests of
/// ordering and presence; its namespace's ad is leaked, as [`candidate`]'s).
pub fn route_in(
    namespace: NamespaceAd,
    candidates: Vec<crate::routing::Candidate<'static>>,
) -> crate::routing::Route<'static> {
    let now = 1_700_000_000_000;
    let mut holder = ad("ns-holder", ServerKind::Origin, &[], now - 10, 1);
    holder.namespaces = vec![namespace];
    let signed = holder.sign(&key_for("ns-holder"));
    let stored = leaked(crate::ad::StoredAd::new(signed, now - 5, 900_000));
    crate::routing::Route::new("/ns", stored, 0, candidates, None)
        .expect("the holder's only namespace")
}

/// `stored`, living to the end of the process (fixtures of borrowed routes).
pub fn leaked(stored: crate::ad::StoredAd) -> &'static crate::ad::StoredAd {
    Box::leak(Box::new(stored))
}

/// A WLCG-style access token signed ES256 by `key` (with its `kid`): `iss`, `aud`,
/// `scope`, and `nbf`/`exp` in seconds relative to now (tests and benches).
pub fn access_token(
    key: &crate::eckey::EcKey,
    iss: &str,
    scope: &str,
    aud: &str,
    nbf: i64,
    exp: i64,
) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid().to_string());
    let claims = serde_json::json!({
        "iss": iss, "sub": "tester", "aud": aud, "scope": scope, "wlcg.ver": "1.0",
        "iat": now, "nbf": now + nbf, "exp": now + exp, "jti": Uuid::new_v4().to_string(),
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding_key()?).ok()
}
