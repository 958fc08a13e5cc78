//! Criterion benches of the hot paths: routing (alone, ordered by the probes' signals,
//! and with geo location + sort), with_ad, signature checks, codec; and the status page
//! of a large federation.

use std::hint::black_box;
use std::sync::Arc;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use skein::ad::StoredAd;
use skein::ad::{AdKey, Record, ServerKind};
use skein::config::DirectorConfig;
use skein::fixtures::{federation, federation_ad, key_for, namespace_path};
use skein::metrics::{Metrics, RouteClass};
use skein::probe::{Board, Outcome, PresenceCache, presence};
use skein::routing::signals::{Presence, ServerHealth, Signals};
use skein::routing::{Purpose, View};

const SERVERS: usize = 1_000;
const NAMESPACES: usize = 10_000;
const STARTED: u64 = 1_700_000_000_000;
const NOW: u64 = STARTED + 1_000;

fn loaded_view() -> (View, Vec<StoredAd>) {
    let servers = federation(SERVERS, NAMESPACES);
    let stored: Vec<StoredAd> = servers
        .iter()
        .map(|s| StoredAd::new(federation_ad(s, STARTED, 1), STARTED, 15 * 60 * 1000))
        .collect();
    (View::from_ads(stored.clone()), stored)
}

/// Object paths spread over every namespace, a few levels below the prefix.
fn paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ns = (i * 7919) % NAMESPACES;
            format!("{}/run{}/file{i}.dat", namespace_path(ns), i % 13)
        })
        .collect()
}

fn bench_route(c: &mut Criterion) {
    let (view, _) = loaded_view();
    let paths = paths(4096);
    let mut i = 0;
    c.bench_function("view_route_1k_servers_10k_ns", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(view.route(black_box(&paths[i]), Purpose::Read, NOW)).ok()
        })
    });
    // The same view holding 100 downtime records (about servers not in it): every
    // candidate of every redirect is then checked against them.
    let mut with_records = view.clone();
    for n in 0..100 {
        let record = Record {
            signer: "ops".into(),
            active: true,
            start: 0,
            end: u64::MAX,
            reason: String::new(),
        };
        let ad = record
            .into_ad(
                ServerKind::Downtime,
                &format!("elsewhere-{n}"),
                STARTED,
                u64::MAX,
            )
            .sign(&key_for("ops"));
        with_records = with_records.with_ad(Arc::new(StoredAd::new(ad, STARTED, u64::MAX)));
    }
    c.bench_function("view_route_1k_servers_10k_ns_100_records", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(with_records.route(black_box(&paths[i]), Purpose::Read, NOW)).ok()
        })
    });
    let metrics = Metrics::default();
    c.bench_function("metrics_request_observe", |b| {
        b.iter(|| {
            let class =
                RouteClass::of(&axum::http::Method::GET, black_box("/ligo/frames/file.dat"));
            metrics.request(class, black_box(Duration::from_micros(180)));
        })
    });
    c.bench_function("view_route_miss", |b| {
        b.iter(|| black_box(view.route(black_box("/nowhere/at/all"), Purpose::Read, NOW)).ok())
    });
}

/// The probes' read side as a director holds it: a full health board, presence answers.
struct Probed {
    board: Board,
    presence: PresenceCache,
}

impl Signals for Probed {
    fn health(&self, key: &AdKey) -> Option<ServerHealth> {
        self.board.health(key)
    }

    fn presence(&self, key: &AdKey, path: &str) -> Presence {
        self.presence.get(key, path)
    }
}

/// The redirect path's extra work with health probes on: route, then order by signals.
fn bench_route_ordered(c: &mut Criterion) {
    let (view, stored) = loaded_view();
    let Ok(config) = DirectorConfig::from_toml(
        "name = \"d\"\nadvertise_url = \"http://d\"\n[identity]\nkey = \"k\"\n[federation]\ntrust = \"t\"\n",
    ) else {
        return;
    };
    let signals = Probed {
        board: Board::default(),
        presence: PresenceCache::new(config.presence),
    };
    for (i, ad) in stored.iter().enumerate() {
        let outcome = if i % 10 == 0 {
            Outcome::failed(skein::probe::ProbeResult::Timeout, "no answer")
        } else {
            Outcome::ok(2.0)
        };
        signals.board.record(&ad.ad.key(), &outcome, "u", NOW, 1);
    }
    let paths = paths(4096);
    let mut i = 0;
    c.bench_function("view_route_ordered_by_health_1k_servers", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            let path = &paths[i];
            let mut route = view.route(black_box(path), Purpose::Read, NOW).ok()?;
            presence::order(&mut route, &signals, Some(path), Purpose::Read).ok()?;
            Some(black_box(route))
        })
    });
}

/// What geographic routing adds per redirect: locating the client (trusted
/// `X-Forwarded-For`, MaxMind lookup) and ordering the route's candidates with `adaptive`
/// over 1,000 located servers. Compare with `view_route_1k_servers_10k_ns`.
fn bench_geo(c: &mut Criterion) {
    use skein::fixtures::{bench_client, bench_geoip_db, server_coord};
    use skein::geo::{Coord, Geo, GeoDb};
    use skein::routing::signals::NoSignals;
    use skein::routing::sort::{self, SortInput, SortMethod};
    let (view, _) = loaded_view();
    let servers = federation(SERVERS, NAMESPACES);
    let located = servers
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            let (lat, lon) = server_coord(i);
            (name.clone(), Coord::new(lat, lon).expect("in range"))
        })
        .collect();
    let db =
        GeoDb::from_bytes(bench_geoip_db(), std::path::Path::new("bench.mmdb")).expect("bench db");
    let geo = Geo::new(
        Some(db),
        vec![],
        vec!["127.0.0.0/8".parse().expect("net")],
        located,
    );
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    // The `X-Forwarded-For` value of each client.
    let headers: Vec<String> = (0..64).map(|k| bench_client(k * 3).to_string()).collect();
    let paths = paths(4096);
    let mut i = 0;
    c.bench_function("geo_locate_client_xff_mmdb", |b| {
        b.iter(|| {
            i = (i + 1) % headers.len();
            black_box(
                geo.locate_client(Some(peer), std::iter::once(black_box(headers[i].as_str()))),
            )
        })
    });
    for method in [
        SortMethod::Affinity,
        SortMethod::Distance,
        SortMethod::Adaptive,
    ] {
        let name = format!("route_locate_sort_{}_1k_servers", method.as_str());
        c.bench_function(&name, |b| {
            b.iter(|| {
                i = (i + 1) % paths.len();
                let forwarded = std::iter::once(headers[i % headers.len()].as_str());
                let client = geo.locate_client(Some(peer), forwarded);
                let locations = geo.servers().load();
                let mut route = view.route(&paths[i], Purpose::Read, NOW).ok()?;
                let input = SortInput {
                    method,
                    client: client.location,
                    client_addr: client.address,
                    path: &paths[i],
                    signals: &NoSignals,
                    locations: &locations,
                    prefer_cached: false,
                    object_presence: true,
                };
                sort::order(&mut route.candidates, &input);
                black_box(Some(route))
            })
        });
    }
}

fn bench_with_ad(c: &mut Criterion) {
    let (view, stored) = loaded_view();
    // Replace a cache ad (60 namespaces) with a newer version, as an ingest does.
    let cache = stored
        .iter()
        .find(|s| s.ad.name == "cache-7")
        .cloned()
        .map(|mut s| {
            s.ad.generation += 1;
            Arc::new(s)
        });
    let Some(cache) = cache else { return };
    c.bench_function("view_with_ad_1k_servers_10k_ns", |b| {
        b.iter(|| black_box(view.with_ad(cache.clone())))
    });
}

fn bench_signatures(c: &mut Criterion) {
    let servers = federation(SERVERS, NAMESPACES);
    let Some(cache) = servers.iter().find(|s| s.0 == "cache-7") else {
        return;
    };
    let key = key_for(&cache.0);
    let signed = federation_ad(cache, STARTED, 1);
    let public = key.verifying_key();
    c.bench_function("ad_verify_60_ns", |b| {
        b.iter(|| black_box(signed.verify(&public)))
    });
    let ad = signed.ad.clone();
    c.bench_function("ad_sign_60_ns", |b| {
        b.iter(|| black_box(ad.clone().sign(&key)))
    });
    let json = serde_json::to_vec(&signed).unwrap_or_default();
    c.bench_function("ad_json_parse_60_ns", |b| {
        b.iter(|| black_box(serde_json::from_slice::<skein::ad::SignedAd>(&json).ok()))
    });
    c.bench_function("ad_json_from_json_60_ns", |b| {
        b.iter(|| black_box(skein::ad::SignedAd::from_json(&json).ok()))
    });
}

fn bench_codec(c: &mut Criterion) {
    let servers = federation(SERVERS, NAMESPACES);
    let Some(cache) = servers.iter().find(|s| s.0 == "cache-7") else {
        return;
    };
    let stored = StoredAd::new(federation_ad(cache, STARTED, 1), STARTED, 900_000);
    c.bench_function("codec_encode_stored_ad", |b| {
        b.iter(|| black_box(black_box(&stored).encode()))
    });
    let bytes = stored.encode();
    c.bench_function("codec_decode_stored_ad", |b| {
        b.iter(|| black_box(StoredAd::decode(black_box(&bytes)).ok()))
    });
    c.bench_function("codec_canonical_ad_bytes", |b| {
        b.iter(|| black_box(skein::ad::canonical_ad_bytes(black_box(&stored.ad))))
    });
}

/// The status page with 1,000 servers and 10,000 namespaces: gathering the rows from the
/// view and rendering the HTML (what one `GET /` costs the director, peers aside).
fn bench_status_page(c: &mut Criterion) {
    use skein::http::status::{DirectorStatus, StatusView, render, server_rows};
    let (view, _) = loaded_view();
    let signals = skein::routing::signals::NoSignals;
    let status = |servers| StatusView {
        now: NOW,
        director: DirectorStatus {
            name: "director-a".into(),
            url: "http://director-a:8444".into(),
            version: "bench",
            started_at: STARTED,
            instance: String::new(),
            ready: true,
            not_ready: None,
            store_path: "/var/lib/skein".into(),
            schema_version: 1,
            ads_held: SERVERS,
            directors_known: 3,
            forward_backlog: 0,
        },
        servers,
        peers: Vec::new(),
    };
    c.bench_function("status_rows_1k_servers_10k_ns", |b| {
        b.iter(|| black_box(server_rows(&view, &signals)))
    });
    let page = status(server_rows(&view, &signals));
    c.bench_function("status_render_1k_servers_10k_ns", |b| {
        b.iter(|| black_box(render(&page)))
    });
    println!(
        "status page with {SERVERS} servers: {} bytes of HTML",
        render(&page).len()
    );
}

/// Verifying one Pelican advertise token (ES256, as Pelican servers sign them): header
/// checks, signature, claims; the per-ad cost of taking in a Pelican ad.
fn bench_pelican_token(c: &mut Criterion) {
    use base64::Engine;
    use skein::pelican::jwks::KeySet;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"{}","y":"{}"}}]}}"#,
        b64.encode(&raw[1..33]),
        b64.encode(&raw[33..65])
    );
    let set = KeySet::parse(jwks.as_bytes()).unwrap();
    let skein::pelican::jwks::KidLookup::Found(public) = set.lookup("k1") else {
        panic!("key k1");
    };
    let now_s = STARTED / 1000;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "iss": "https://origin.example:8444", "sub": "https://origin.example:8443",
        "aud": ["https://director.example:8444"], "iat": now_s, "nbf": now_s,
        "exp": now_s + 60, "jti": "x", "scope": "pelican.advertise", "wlcg.ver": "1.0"
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let audiences = vec!["https://director.example:8444".to_string()];
    c.bench_function("pelican_verify_advertise_token_es256", |b| {
        b.iter(|| {
            let header = skein::pelican::token::inspect(black_box(&token)).unwrap();
            black_box(
                skein::pelican::token::verify(
                    &token,
                    &header,
                    &public.key,
                    &audiences,
                    STARTED,
                    60,
                )
                .unwrap(),
            )
        })
    });
}

/// `skein origin`'s check of one bearer token for a protected read (ES256 signature,
/// claims, scope), its issuer's keys already loaded: the per-request cost of tokens.
fn bench_origin_token(c: &mut Criterion) {
    use skein::scitokens::{Action, Authorizer, WLCG_ANY_AUDIENCE};
    let dir = tempfile::tempdir().unwrap();
    let key = skein::eckey::EcKey::generate();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, key.public_jwks().to_string()).unwrap();
    let config = skein::config::ServiceConfig::from_toml(&format!(
        "name = \"o\"\nkind = \"origin\"\ndata_url = \"http://o.test\"\nkey = \"k\"\n\
         directors = [\"http://d.test\"]\n[[namespace]]\npath = \"/ns\"\n\
         issuer = \"https://issuer.test\"\njwks = \"{}\"\n",
        jwks.display()
    ))
    .unwrap();
    let authz = Authorizer::new(&config).unwrap();
    let token = skein::fixtures::access_token(
        &key,
        "https://issuer.test",
        "storage.read:/a storage.create:/b",
        WLCG_ANY_AUDIENCE,
        -60,
        3600,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("origin_token_check_es256", |b| {
        b.iter(|| {
            runtime
                .block_on(authz.check("/ns", "/ns/a/file", Some(black_box(&token)), Action::Read))
                .unwrap()
        })
    });
}

criterion_group!(
    benches,
    bench_route,
    bench_route_ordered,
    bench_geo,
    bench_with_ad,
    bench_signatures,
    bench_codec,
    bench_status_page,
    bench_pelican_token,
    bench_origin_token
);
criterion_main!(benches);
