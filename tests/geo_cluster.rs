//! Geographic routing across a cluster: three real directors, one GeoIP database, the
//! client set by a trusted proxy's `X-Forwarded-For` from loopback. Every director must
//! give the same order, and that order must be the geography computed by hand.

mod common;

use std::time::Duration;

use common::*;
use skein::ad::ServerKind;
use skein::config::DirectorConfig;
use skein::director::{Director, Options, StartError};
use skein::fixtures;
use skein::geo::mmdb::city_db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// From Madison (43.07, -89.40), great-circle km by hand: San Diego 2677, London 6371,
/// Moscow 7952, (0,0) 9959, Daejeon 10431, McMurdo 14989.
const BY_HAND: [&str; 6] = [
    "cache-san-diego",
    "cache-london",
    "cache-moscow",
    "cache-null-island",
    "cache-daejeon",
    "cache-mcmurdo",
];

/// The database: Madison's campus network, and San Diego's (where one cache's data URL
/// points, so the location worker finds it through the database).
fn write_db(dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = city_db(&[
        ("128.104.0.0/16".parse().unwrap(), 43.07, -89.40),
        ("132.239.0.0/16".parse().unwrap(), 32.72, -117.16),
    ]);
    let path = dir.join("GeoLite2-City.mmdb");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn routing(db: &std::path::Path) -> String {
    format!(
        r#"
[routing]
sort = "adaptive"
geoip_db = {db:?}
trusted_proxies = ["127.0.0.0/8", "::1"]
locate_interval = "100ms"
[[routing.server_location]]
name = "cache-london"
lat = 51.51
lon = -0.13
[[routing.server_location]]
name = "cache-moscow"
lat = 55.76
lon = 37.62
[[routing.server_location]]
name = "cache-daejeon"
lat = 36.35
lon = 127.38
[[routing.server_location]]
name = "cache-mcmurdo"
lat = -77.85
lon = 166.67
[[routing.server_location]]
name = "cache-null-island"
lat = 0.0
lon = 0.0
"#
    )
}

fn geo_ad(name: &str, started: u64) -> skein::ad::SignedAd {
    let mut ad = fixtures::ad(name, ServerKind::Cache, &["/geo"], started, 1);
    ad.expires_at = started + 600_000;
    if name == "cache-san-diego" {
        // Unroutable in tests, but its address is in the database's San Diego network.
        ad.data_url = "http://132.239.1.1:8443".into();
    }
    ad.sign(&fixtures::key_for(name))
}

async fn explain(director: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{director}{path}?explain"))
        .header("x-forwarded-for", "198.51.100.1, 128.104.1.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn order(json: &serde_json::Value) -> Vec<String> {
    json["order"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_directors_send_a_madison_client_by_geography_in_the_same_order() {
    let dbs = tempfile::tempdir().unwrap();
    let db = write_db(dbs.path());
    let tuning = Tuning {
        extra: routing(&db),
        ..Tuning::default()
    };
    let cluster = Cluster::start(3, tuning, |i| (0..3).filter(|j| *j != i).collect()).await;
    let started = now_ms();
    for name in GEO_CACHES {
        let status = client()
            .register(cluster.handle(0).url(), &geo_ad(name, started))
            .await
            .unwrap();
        assert_eq!(status.status, "accepted", "{name}");
    }
    let urls: Vec<String> = cluster.running().map(|d| d.url().to_string()).collect();
    eventually(WAIT, "every director orders /geo by geography", || {
        let urls = urls.clone();
        async move {
            for url in &urls {
                if order(&explain(url, "/geo/object").await) != BY_HAND {
                    return false;
                }
            }
            true
        }
    })
    .await;
    // The explanation says how the client and each server were located.
    let json = explain(&urls[1], "/geo/object").await;
    assert_eq!(
        json["client"]["address"], "128.104.1.1",
        "right-most untrusted hop"
    );
    assert_eq!(json["client"]["address_from"], "trusted_xff");
    assert_eq!(json["client"]["located_by"], "database");
    assert_eq!(json["sort"], "adaptive");
    let first = &json["candidates"][0];
    assert_eq!(first["location"]["located_by"], "address");
    assert_eq!(first["location"]["address"], "132.239.1.1");
    assert_eq!(first["distance_km"].as_f64().unwrap().round(), 2677.0);
    assert_eq!(json["candidates"][1]["location"]["located_by"], "config");
    // A plain redirect follows the same order, Link capped at six.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for url in &urls {
        let response = no_follow
            .get(format!("{url}/geo/object"))
            .header("x-forwarded-for", "128.104.1.1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307);
        assert_eq!(
            response.headers()["location"],
            "http://132.239.1.1:8443/geo/object"
        );
        let link = response.headers()["link"].to_str().unwrap().to_string();
        let pos: Vec<usize> = BY_HAND[1..]
            .iter()
            .map(|n| link.find(&format!("{n}.example")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{link}");
    }
    // Without the trusted header the client is the loopback peer: not located, so
    // adaptive weighs only each director's own health view (load and probe EWMA). The
    // directors learned of the servers at different times (forwarding waits
    // `peers.forward_delay`), so their probe histories differ at first; once every
    // director has seen the same (failing) probes, they give the same order.
    let unlocated_orders = || {
        let urls = urls.clone();
        async move {
            let mut orders = Vec::new();
            for url in &urls {
                let json: serde_json::Value = reqwest::get(format!("{url}/geo/object?explain"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(json["client"]["located_by"], "not_public");
                orders.push(order(&json));
            }
            orders
        }
    };
    eventually(
        WAIT,
        "every director gives an unlocated client the same order",
        || {
            let orders = unlocated_orders();
            async move {
                let orders = orders.await;
                orders.len() == 3 && orders.windows(2).all(|w| w[0] == w[1])
            }
        },
    )
    .await;
    cluster.shutdown().await;
}

fn config(dir: &std::path::Path, extra: &str) -> DirectorConfig {
    DirectorConfig::from_toml(&format!(
        "name = \"director-0\"\nlisten = \"127.0.0.1:0\"\nadvertise_url = \"http://127.0.0.1:1\"\n\
         data_dir = {:?}\n[identity]\nkey = \"unused\"\n[federation]\ntrust = \"unused\"\n{extra}",
        dir.join("data")
    ))
    .unwrap()
}

async fn start(config: DirectorConfig) -> Result<skein::director::DirectorHandle, StartError> {
    let options = Options {
        trust: Some(trust(1)),
        key: Some(fixtures::key_for("director-0")),
        ..Options::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Director::start_with(config, options, listener, CancellationToken::new()).await
}

#[tokio::test]
async fn a_missing_or_malformed_database_refuses_the_start_unless_optional() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"this is not a MaxMind DB").unwrap();
    let missing = dir.path().join("missing.mmdb");
    for path in [&garbage, &missing] {
        let extra = format!("[routing]\ngeoip_db = {path:?}\n");
        let error = match start(config(dir.path(), &extra)).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with {}", path.display()),
        };
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
    let extra = format!("[routing]\ngeoip_db = {garbage:?}\ngeoip_optional = true\n");
    let handle = start(config(dir.path(), &extra)).await.unwrap();
    assert!(!handle.state().geo.has_db());
    assert_eq!(
        handle.state().geo.sort(),
        skein::routing::sort::SortMethod::Affinity
    );
    handle.shutdown().await;
}

fn candidate<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["candidates"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// A config reload puts new routing in force without a restart: the GeoIP database (read
/// again from its file), trusted proxies, server locations and the sort; servers are
/// located again at once, by this director's config over the ad's own location over the
/// data URL's address. A damaged database file is refused and the one in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_puts_new_routing_in_force_and_a_bad_database_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db(dir.path());
    let plain = "[routing]\nlocate_interval = \"100ms\"\n";
    let handle = start(config(dir.path(), plain)).await.unwrap();
    let url = format!("http://{}", handle.addr());
    let started = now_ms();
    let declared = |name: &str, lat: f64, lon: f64| {
        let mut ad = fixtures::ad(name, ServerKind::Cache, &["/geo"], started, 1);
        ad.expires_at = started + 600_000;
        ad.location = skein::coord::Coord::new(lat, lon);
        ad.sign(&fixtures::key_for(name))
    };
    let ads = [
        geo_ad("cache-san-diego", started),
        declared("cache-london", 51.51, -0.13),
        // Declared wrongly; this director's config will place it.
        declared("cache-moscow", 0.0, 0.0),
    ];
    for ad in &ads {
        let status = client().register(&url, ad).await.unwrap();
        assert_eq!(status.status, "accepted", "{}", ad.ad.name);
    }
    // Before: no database, no trusted proxy; the ads' own locations are used already.
    eventually(WAIT, "declared locations are used", || {
        let url = url.clone();
        async move {
            let json = explain(&url, "/geo/object").await;
            candidate(&json, "cache-london")["location"]["located_by"] == "ad"
        }
    })
    .await;
    let json = explain(&url, "/geo/object").await;
    assert_eq!(json["client"]["located_by"], "not_public");
    assert_eq!(json["sort"], "affinity");
    assert!(candidate(&json, "cache-san-diego")["location"].is_null());
    let full = format!(
        "[routing]\nlocate_interval = \"100ms\"\nsort = \"distance\"\ngeoip_db = {db:?}\n\
         trusted_proxies = [\"127.0.0.0/8\"]\n\
         [[routing.server_location]]\nname = \"cache-moscow\"\nlat = 55.76\nlon = 37.62\n"
    );
    let reload = handle.reload_config(config(dir.path(), &full)).await;
    assert!(
        reload.needs_restart.is_empty(),
        "{:?}",
        reload.needs_restart
    );
    let report = reload.routing.unwrap();
    assert!(report.db.unwrap().contains("GeoLite2-City.mmdb"));
    eventually(
        WAIT,
        "the reloaded routing orders /geo by geography",
        || {
            let url = url.clone();
            async move {
                let json = explain(&url, "/geo/object").await;
                order(&json) == ["cache-san-diego", "cache-london", "cache-moscow"]
            }
        },
    )
    .await;
    let json = explain(&url, "/geo/object").await;
    assert_eq!(json["client"]["located_by"], "database");
    assert_eq!(json["sort"], "distance");
    let by = |name: &str| candidate(&json, name)["location"]["located_by"].clone();
    assert_eq!(by("cache-san-diego"), "address");
    assert_eq!(by("cache-london"), "ad");
    assert_eq!(by("cache-moscow"), "config");
    assert_eq!(candidate(&json, "cache-moscow")["location"]["lat"], 55.76);
    // The server list says the same.
    let servers: serde_json::Value = reqwest::get(format!("{url}/api/v1.0/director/servers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cache-london")
        .unwrap();
    assert_eq!(listed["location"]["located_by"], "ad");
    assert_eq!(listed["location"]["lat"], 51.51);
    // A damaged file: refused, named, and the database in force keeps locating.
    std::fs::write(&db, b"not a MaxMind DB").unwrap();
    let reload = handle.reload_config(config(dir.path(), &full)).await;
    let error = reload.routing.unwrap_err().to_string();
    assert!(error.contains(&db.display().to_string()), "{error}");
    let json = explain(&url, "/geo/object").await;
    assert_eq!(json["client"]["located_by"], "database");
    assert_eq!(order(&json)[0], "cache-san-diego");
    handle.shutdown().await;
}
