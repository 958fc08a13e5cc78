//! Unit tests: distances, the MMDB writer and reader, overrides, client addresses.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::mmdb::{MmdbWriter, city_db};
use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 128.104.0.0/16 in Madison, 81.2.69.0/24 in London, 2001:4860::/32 in Mountain View,
/// 128.104.7.0/24 (inside Madison's) without a location.
fn test_db() -> GeoDb {
    let mut w = MmdbWriter::default();
    w.insert_city(net("128.104.0.0/16"), 43.07, -89.40);
    w.insert_without_location(net("128.104.7.0/24"));
    w.insert_city(net("81.2.69.0/24"), 51.51, -0.13);
    w.insert_city(net("2001:4860::/32"), 37.39, -122.08);
    GeoDb::from_bytes(w.to_bytes(), Path::new("test.mmdb")).unwrap()
}

fn coord(lat: f64, lon: f64) -> Coord {
    Coord::new(lat, lon).unwrap()
}

#[test]
fn great_circle_distances() {
    let madison = coord(43.07, -89.40);
    assert_eq!(madison.distance_km(&madison), 0.0);
    // By hand: Madison-London 6371 km, Madison-(0,0) 9959 km.
    assert_eq!(madison.distance_km(&coord(51.51, -0.13)).round(), 6371.0);
    assert_eq!(madison.distance_km(&coord(0.0, 0.0)).round(), 9959.0);
    // Antipodes: half the circumference.
    let far = coord(0.0, 0.0).distance_km(&coord(0.0, 180.0));
    assert!((far - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    assert!(Coord::new(91.0, 0.0).is_none());
    assert!(Coord::new(0.0, f64::NAN).is_none());
}

#[test]
fn the_written_database_reads_back() {
    let db = test_db();
    assert_eq!(db.lookup(ip("128.104.1.2")), Some(coord(43.07, -89.40)));
    assert_eq!(db.lookup(ip("81.2.69.160")), Some(coord(51.51, -0.13)));
    assert_eq!(
        db.lookup(ip("2001:4860::8888")),
        Some(coord(37.39, -122.08))
    );
    // A record without a location, and an address not in the database.
    assert_eq!(db.lookup(ip("128.104.7.9")), None);
    assert_eq!(db.lookup(ip("8.8.8.8")), None);
    assert!(db.describe().contains("GeoLite2-City"));
}

#[test]
fn malformed_or_missing_files_are_refused_with_path_and_reason() {
    let bad = GeoDb::from_bytes(b"not a database".to_vec(), Path::new("/etc/bad.mmdb"));
    let message = bad.unwrap_err().to_string();
    assert!(message.contains("/etc/bad.mmdb"), "{message}");
    assert!(message.contains("not a usable MaxMind DB"), "{message}");
    let missing = GeoDb::open(Path::new("/nonexistent/city.mmdb")).unwrap_err();
    let message = missing.to_string();
    assert!(message.contains("/nonexistent/city.mmdb"), "{message}");
    // Truncated: the metadata is cut off.
    let bytes = city_db(&[(net("128.104.0.0/16"), 43.07, -89.40)]);
    let cut = GeoDb::from_bytes(bytes[..bytes.len() - 40].to_vec(), Path::new("cut.mmdb"));
    assert!(cut.is_err());
}

fn geo(overrides: &[(&str, f64, f64)], proxies: &[&str]) -> Geo {
    Geo::new(
        Some(test_db()),
        overrides
            .iter()
            .map(|(n, lat, lon)| NetOverride {
                network: net(n),
                coord: coord(*lat, *lon),
            })
            .collect(),
        proxies.iter().map(|p| net(p)).collect(),
        vec![],
    )
}

#[test]
fn overrides_come_first_most_specific_wins() {
    let g = geo(
        &[
            ("128.104.0.0/16", 10.0, 10.0),
            ("128.104.5.0/24", 20.0, 20.0),
            ("10.1.0.0/16", 1.0, 1.0),
        ],
        &[],
    );
    assert_eq!(
        g.locate_ip(ip("128.104.5.1")),
        (Some(coord(20.0, 20.0)), LocatedBy::Override)
    );
    assert_eq!(
        g.locate_ip(ip("128.104.9.1")),
        (Some(coord(10.0, 10.0)), LocatedBy::Override)
    );
    // A private network can be placed by an override, never by the database.
    assert_eq!(
        g.locate_ip(ip("10.1.2.3")),
        (Some(coord(1.0, 1.0)), LocatedBy::Override)
    );
    assert_eq!(g.locate_ip(ip("81.2.69.1")).1, LocatedBy::Database);
    assert_eq!(g.locate_ip(ip("8.8.8.8")), (None, LocatedBy::NotInDatabase));
}

#[test]
fn private_loopback_and_mapped_addresses_never_panic() {
    let g = geo(&[], &[]);
    for private in [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "0.0.0.0",
        "::",
    ] {
        assert_eq!(
            g.locate_ip(ip(private)),
            (None, LocatedBy::NotPublic),
            "{private}"
        );
    }
    // IPv4-mapped IPv6 is looked up as IPv4.
    assert_eq!(g.locate_ip(ip("::ffff:81.2.69.1")).1, LocatedBy::Database);
    assert_eq!(g.locate_ip(ip("::ffff:127.0.0.1")).1, LocatedBy::NotPublic);
    let none = Geo::default();
    assert_eq!(
        none.locate_ip(ip("81.2.69.1")),
        (None, LocatedBy::NoDatabase)
    );
}

/// `X-Forwarded-For` values, in the order sent.
fn xff<'a>(values: &'a [&'a str]) -> impl DoubleEndedIterator<Item = &'a str> {
    values.iter().copied()
}

fn peer(s: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip(s), 40000))
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let g = geo(&[], &["127.0.0.0/8", "10.0.0.0/8"]);
    // From an untrusted peer: the header is ignored.
    let c = g.locate_client(peer("81.2.69.5"), xff(&["128.104.1.1"]));
    assert_eq!(c.address, Some(ip("81.2.69.5")));
    assert_eq!(c.address_from, AddrSource::Socket);
    assert_eq!(c.located_by, LocatedBy::Database);
    // From a trusted one: the right-most untrusted hop, past other trusted proxies.
    let c = g.locate_client(
        peer("127.0.0.1"),
        xff(&["6.6.6.6, 128.104.1.1", "10.2.3.4"]),
    );
    assert_eq!(c.address, Some(ip("128.104.1.1")));
    assert_eq!(c.address_from, AddrSource::TrustedXff);
    assert_eq!(c.location, Some(coord(43.07, -89.40)));
    // Ports and brackets are allowed; a malformed hop stops the walk.
    let c = g.locate_client(peer("127.0.0.1"), xff(&["[2001:4860::1]:443"]));
    assert_eq!(c.address, Some(ip("2001:4860::1")));
    let c = g.locate_client(peer("127.0.0.1"), xff(&["128.104.1.1, garbage"]));
    assert_eq!(c.address, Some(ip("127.0.0.1")));
    assert_eq!(c.located_by, LocatedBy::NotPublic);
    // A trusted proxy without the header: the proxy itself.
    let c = g.locate_client(peer("10.9.9.9"), xff(&[]));
    assert_eq!(c.address, Some(ip("10.9.9.9")));
    // An IPv4-mapped peer counts as its IPv4 address for trust.
    let c = g.locate_client(peer("::ffff:127.0.0.1"), xff(&["81.2.69.9"]));
    assert_eq!(c.address, Some(ip("81.2.69.9")));
    // No proxies configured: never read.
    let plain = geo(&[], &[]);
    let c = plain.locate_client(peer("127.0.0.1"), xff(&["81.2.69.9"]));
    assert_eq!(c.address, Some(ip("127.0.0.1")));
    // No peer at all.
    assert_eq!(
        plain.locate_client(None, xff(&[])).located_by,
        LocatedBy::NoAddress
    );
}

#[test]
fn a_reload_swaps_the_database() {
    let g = Geo::default();
    assert!(!g.has_db());
    g.swap_db(Some(test_db()));
    assert_eq!(g.locate_ip(ip("81.2.69.1")).1, LocatedBy::Database);
}

#[tokio::test]
async fn server_locations_come_from_config_then_the_host_address() {
    use crate::ad::ServerKind;
    use crate::ad::StoredAd;
    use crate::routing::View;
    let g = Geo::new(
        Some(test_db()),
        vec![],
        vec![],
        vec![("fixed".to_string(), coord(1.0, 2.0))],
    );
    let mut ads = Vec::new();
    for (name, url) in [
        ("fixed", "http://81.2.69.1:8443"),
        ("declared", "http://81.2.69.1:8443"),
        ("by-ip", "http://81.2.69.1:8443"),
        ("by-ipv6", "https://[2001:4860::5]"),
        ("loopback", "http://127.0.0.1:9"),
        ("by-name", "http://localhost:9"),
    ] {
        let mut ad = crate::fixtures::ad(name, ServerKind::Cache, &["/ns"], 1, 1);
        ad.data_url = url.into();
        if name == "fixed" || name == "declared" {
            // The ad's own location: after this director's config, before the address.
            ad.location = Some(coord(52.37, 4.9));
        }
        let signed = ad.sign(&crate::fixtures::key_for(name));
        ads.push(StoredAd::new(signed, 2, 900_000));
    }
    let view = View::from_ads(ads);
    let mut dns = std::collections::HashMap::new();
    let map = servers::compute(&g, &view, &mut dns, std::time::Duration::from_secs(60)).await;
    assert_eq!(map.get("fixed").unwrap().location, coord(1.0, 2.0));
    assert_eq!(
        map.get("fixed").unwrap().located_by,
        ServerLocatedBy::Config
    );
    assert_eq!(map.get("declared").unwrap().location, coord(52.37, 4.9));
    assert_eq!(map.get("declared").unwrap().located_by, ServerLocatedBy::Ad);
    assert_eq!(
        serde_json::to_value(*map.get("declared").unwrap()).unwrap(),
        serde_json::json!({ "lat": 52.37, "lon": 4.9, "located_by": "ad" })
    );
    assert_eq!(map.get("by-ip").unwrap().location, coord(51.51, -0.13));
    assert_eq!(
        serde_json::to_value(*map.get("by-ip").unwrap()).unwrap(),
        serde_json::json!({ "lat": 51.51, "lon": -0.13, "located_by": "address", "address": "81.2.69.1" })
    );
    assert_eq!(map.get("by-ipv6").unwrap().location, coord(37.39, -122.08));
    assert!(map.get("loopback").is_none());
    assert!(map.get("by-name").is_none(), "localhost is not public");
    // The redirect path reads the same places by server slot, for either kind of server.
    for name in ["fixed", "declared", "by-ip", "by-ipv6", "loopback"] {
        for kind in [ServerKind::Origin, ServerKind::Cache] {
            let slot = crate::routing::slots::slot_of(kind, name);
            assert_eq!(map.at_slot(slot), map.get(name), "{name} ({kind})");
        }
    }
    assert!(
        dns.contains_key("localhost"),
        "names are resolved and cached"
    );
}

fn routing(extra: &str) -> crate::config::RoutingConfig {
    crate::config::DirectorConfig::from_toml(&format!(
        "name = \"d\"\nadvertise_url = \"http://d:8444\"\n[identity]\nkey = \"k\"\n\
         [federation]\ntrust = \"t\"\n{extra}"
    ))
    .unwrap()
    .routing
}

/// A reload reads the database file again and swaps every table; a file that does not
/// read keeps the database in force (the error names the file) while the tables change.
#[tokio::test]
async fn a_reload_reads_the_database_again_and_keeps_it_when_the_file_is_bad() {
    use crate::routing::sort::SortMethod;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, city_db(&[(net("81.2.69.0/24"), 51.51, -0.13)])).unwrap();
    let london = ip("81.2.69.7");
    let g = Geo::default();
    assert_eq!(g.sort(), SortMethod::Affinity);
    assert_eq!(g.locate_ip(london), (None, LocatedBy::NoDatabase));
    let full = routing(&format!(
        "[routing]\ngeoip_db = {path:?}\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [[routing.geoip_override]]\nnetwork = \"192.168.0.0/16\"\nlat = 43.07\nlon = -89.4\n\
         [[routing.server_location]]\nname = \"cache-1\"\nlat = 1.0\nlon = 2.0\n"
    ));
    let report = g.apply(&full).await.unwrap();
    assert!(report.db.unwrap().contains("city.mmdb"));
    assert_eq!(report.sort, SortMethod::Distance);
    assert_eq!(
        g.locate_ip(london),
        (Some(coord(51.51, -0.13)), LocatedBy::Database)
    );
    assert_eq!(g.locate_ip(ip("192.168.3.4")).1, LocatedBy::Override);
    assert!(g.is_trusted_proxy(ip("10.1.2.3")));
    assert_eq!(g.fixed_locations()["cache-1"], coord(1.0, 2.0));
    // The file changed on disk: the same config reads it again.
    std::fs::write(&path, city_db(&[(net("81.2.69.0/24"), 48.85, 2.35)])).unwrap();
    g.apply(&full).await.unwrap();
    assert_eq!(g.locate_ip(london).0, Some(coord(48.85, 2.35)));
    // A damaged file: refused with its path; the database read before stays in force,
    // and the other settings still change.
    std::fs::write(&path, b"not a database").unwrap();
    let bare = routing(&format!(
        "[routing]\ngeoip_db = {path:?}\nsort = \"random\"\n"
    ));
    let error = g.apply(&bare).await.unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(g.locate_ip(london).0, Some(coord(48.85, 2.35)));
    assert_eq!(g.sort(), SortMethod::Random);
    assert_eq!(g.locate_ip(ip("192.168.3.4")).1, LocatedBy::NotPublic);
    assert!(!g.is_trusted_proxy(ip("10.1.2.3")));
    assert!(g.fixed_locations().is_empty());
    // A missing file likewise; no database configured drops it.
    let gone = routing("[routing]\ngeoip_db = \"/nonexistent/city.mmdb\"\n");
    assert!(g.apply(&gone).await.is_err());
    assert!(g.has_db());
    let report = g.apply(&routing("")).await.unwrap();
    assert_eq!(report.db, None);
    assert_eq!(report.sort, SortMethod::Affinity);
    assert_eq!(g.locate_ip(london).1, LocatedBy::NoDatabase);
}

#[test]
fn routing_places_a_server_by_its_own_ad_before_the_worker_has_seen_it() {
    use crate::ad::ServerKind;
    use servers::{LocationMap, ServerLocatedBy, ServerLocation, location_of};
    let mut ad = crate::fixtures::ad("c1", ServerKind::Cache, &["/ns"], 1, 1);
    let at = ServerLocation::new;
    let address = ServerLocatedBy::Address {
        address: IpAddr::from([192, 0, 2, 1]),
    };
    let empty = LocationMap::default();
    assert_eq!(location_of(&empty, &ad), None, "nothing known");

    // The worker found the host's address; the ad declares nothing.
    let found = LocationMap::from_iter([("c1".to_string(), at(coord(5.0, 6.0), address))]);
    assert_eq!(location_of(&found, &ad), Some(at(coord(5.0, 6.0), address)));

    // A first ad with a location is placed at once, ahead of the address.
    ad.location = Some(coord(10.0, 20.0));
    let by_ad = Some(at(coord(10.0, 20.0), ServerLocatedBy::Ad));
    assert_eq!(location_of(&empty, &ad), by_ad);
    assert_eq!(location_of(&found, &ad), by_ad);

    // The ad moved: its new location wins over the worker's older copy.
    let stale =
        LocationMap::from_iter([("c1".to_string(), at(coord(-1.0, -1.0), ServerLocatedBy::Ad))]);
    assert_eq!(location_of(&stale, &ad), by_ad);
    // The ad stopped declaring one: the stale copy is not used.
    ad.location = None;
    assert_eq!(location_of(&stale, &ad), None);

    // This director's config beats everything.
    ad.location = Some(coord(10.0, 20.0));
    let configured = LocationMap::from_iter([(
        "c1".to_string(),
        at(coord(30.0, 40.0), ServerLocatedBy::Config),
    )]);
    assert_eq!(
        location_of(&configured, &ad),
        Some(at(coord(30.0, 40.0), ServerLocatedBy::Config))
    );
}
