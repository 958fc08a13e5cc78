//! Ordering tests with known places. Expected orders are computed by hand from
//! great-circle distances (mean Earth radius 6371 km), not by the code under test.

use std::collections::HashMap;

use super::*;
use crate::ad::{AdKey, ServerKind};
use crate::clock::UnixMillis;
use crate::fixtures;
use crate::geo::servers::{LocationMap, ServerLocatedBy, ServerLocation};
use crate::routing::rank_by;
use crate::routing::signals::NoSignals;

const NOW: UnixMillis = 1_000_000;
const MADISON: (f64, f64) = (43.07, -89.40);

/// Distances from Madison, km: San Diego 2677, London 6371, Moscow 7952, (0,0) 9959,
/// Daejeon 10431, McMurdo 14989.
const PLACES: [(&str, f64, f64); 6] = [
    ("mcmurdo", -77.85, 166.67),
    ("london", 51.51, -0.13),
    ("null-island", 0.0, 0.0),
    ("daejeon", 36.35, 127.38),
    ("san-diego", 32.72, -117.16),
    ("moscow", 55.76, 37.62),
];
const BY_HAND: [&str; 6] = [
    "san-diego",
    "london",
    "moscow",
    "null-island",
    "daejeon",
    "mcmurdo",
];

fn candidate(name: &str, kind: ServerKind) -> Candidate<'static> {
    fixtures::candidate(name, kind)
}

fn located(places: &[(&str, f64, f64)]) -> LocationMap {
    places
        .iter()
        .map(|(name, lat, lon)| {
            (
                name.to_string(),
                ServerLocation::new(Coord::new(*lat, *lon).unwrap(), ServerLocatedBy::Config),
            )
        })
        .collect()
}

#[derive(Default)]
struct FakeSignals {
    health: HashMap<String, ServerHealth>,
    present: Vec<String>,
    absent: Vec<String>,
}

impl FakeSignals {
    fn down(self, name: &str) -> Self {
        self.with(name, health(false, 0.0, 10.0))
    }

    fn with(mut self, name: &str, health: ServerHealth) -> Self {
        self.health.insert(name.into(), health);
        self
    }
}

fn health(up: bool, ewma: f64, latency_ms: f64) -> ServerHealth {
    ServerHealth {
        up,
        ewma,
        latency_ms,
        checked_at: NOW,
    }
}

impl Signals for FakeSignals {
    fn health(&self, key: &AdKey) -> Option<ServerHealth> {
        self.health.get(&key.name).copied()
    }
    fn presence(&self, key: &AdKey, _path: &str) -> Presence {
        if self.present.contains(&key.name) {
            Presence::Present
        } else if self.absent.contains(&key.name) {
            Presence::Absent
        } else {
            Presence::Unknown
        }
    }
}

fn input<'a>(
    method: SortMethod,
    client: Option<(f64, f64)>,
    path: &'a str,
    signals: &'a dyn Signals,
    locations: &'a LocationMap,
) -> SortInput<'a> {
    SortInput {
        method,
        client: client.and_then(|(lat, lon)| Coord::new(lat, lon)),
        client_addr: None,
        path,
        signals,
        locations,
        prefer_cached: false,
        object_presence: false,
    }
}

/// `names` as caches, ordered for a client in Madison asking for `/ns/o`.
fn from_madison(
    names: &[&str],
    method: SortMethod,
    signals: &dyn Signals,
    locations: &LocationMap,
) -> Vec<Candidate<'static>> {
    let mut c = caches(names);
    order(
        &mut c,
        &input(method, Some(MADISON), "/ns/o", signals, locations),
    );
    c
}

fn names<'v>(c: &[Candidate<'v>]) -> Vec<&'v str> {
    c.iter().map(|c| c.name()).collect()
}

fn caches(names: &[&str]) -> Vec<Candidate<'static>> {
    names
        .iter()
        .map(|n| candidate(n, ServerKind::Cache))
        .collect()
}

#[test]
fn madison_goes_by_geography_in_distance_and_adaptive() {
    let locations = located(&PLACES);
    let all: Vec<&str> = PLACES.iter().map(|p| p.0).collect();
    for method in [SortMethod::Distance, SortMethod::Adaptive] {
        let mut c = caches(&all);
        order(
            &mut c,
            &input(method, Some(MADISON), "/ns/obj", &NoSignals, &locations),
        );
        assert_eq!(names(&c), BY_HAND, "{method:?}");
    }
}

#[test]
fn order_does_not_depend_on_input_order() {
    let locations = located(&PLACES);
    let mut all: Vec<&str> = PLACES.iter().map(|p| p.0).collect();
    for method in [
        SortMethod::Distance,
        SortMethod::Adaptive,
        SortMethod::Random,
        SortMethod::Affinity,
    ] {
        let mut a = caches(&all);
        order(
            &mut a,
            &input(method, Some(MADISON), "/ns/o", &NoSignals, &locations),
        );
        all.reverse();
        let mut b = caches(&all);
        order(
            &mut b,
            &input(method, Some(MADISON), "/ns/o", &NoSignals, &locations),
        );
        assert_eq!(names(&a), names(&b), "{method:?}");
    }
}

#[test]
fn a_down_server_goes_after_every_up_server_in_every_method() {
    let locations = located(&PLACES);
    let signals = FakeSignals::default().down("san-diego");
    let mut servers: Vec<&str> = PLACES.iter().map(|p| p.0).collect();
    servers.push("origin-far");
    for method in [
        SortMethod::Distance,
        SortMethod::Adaptive,
        SortMethod::Random,
        SortMethod::Affinity,
    ] {
        let mut c = caches(&PLACES.map(|p| p.0));
        c.push(candidate("origin-far", ServerKind::Origin));
        order(
            &mut c,
            &input(method, Some(MADISON), "/ns/o", &signals, &locations),
        );
        assert_eq!(c.len(), 7, "never removed");
        assert_eq!(c.last().unwrap().name(), "san-diego", "{method:?}");
        assert_eq!(
            c[5].name(),
            "origin-far",
            "origins after up caches ({method:?})"
        );
    }
}

#[test]
fn servers_in_one_bucket_follow_affinity() {
    // Two caches near Milwaukee, 121.1 and 118.5 km from Madison (one 100 km band).
    let locations = located(&[
        ("chicago-a", 43.04, -87.91),
        ("chicago-b", 43.20, -87.95),
        ("london", 51.51, -0.13),
    ]);
    let mut firsts = HashMap::new();
    for i in 0..200 {
        let path = format!("/ns/object-{i}");
        let mut c = caches(&["london", "chicago-a", "chicago-b"]);
        order(
            &mut c,
            &input(
                SortMethod::Distance,
                Some(MADISON),
                &path,
                &NoSignals,
                &locations,
            ),
        );
        let mut expected = vec!["chicago-a", "chicago-b"];
        rank_by(&mut expected, &path, |s| s);
        assert_eq!(names(&c)[..2], expected[..], "{path}");
        assert_eq!(c[2].name(), "london");
        *firsts.entry(c[0].name().to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        firsts.len(),
        2,
        "both nearby caches get a share: {firsts:?}"
    );
}

#[test]
fn unlocated_servers_go_after_located_ones() {
    let locations = located(&[("london", 51.51, -0.13)]);
    for method in [SortMethod::Distance, SortMethod::Adaptive] {
        let mut c = caches(&["nowhere-1", "london", "nowhere-2"]);
        order(
            &mut c,
            &input(method, Some(MADISON), "/ns/o", &NoSignals, &locations),
        );
        assert_eq!(c[0].name(), "london", "{method:?}");
    }
}

#[test]
fn without_a_client_location_every_method_but_random_is_affinity() {
    let locations = located(&PLACES);
    let all: Vec<&str> = PLACES.iter().map(|p| p.0).collect();
    let mut expected = all.clone();
    rank_by(&mut expected, "/ns/o", |s| s);
    for method in [
        SortMethod::Distance,
        SortMethod::Adaptive,
        SortMethod::Affinity,
    ] {
        let mut c = caches(&all);
        order(
            &mut c,
            &input(method, None, "/ns/o", &NoSignals, &locations),
        );
        assert_eq!(names(&c), expected, "{method:?}");
    }
}

#[test]
fn prefercached_puts_caches_holding_the_object_first() {
    let locations = located(&PLACES);
    let signals = FakeSignals {
        present: vec!["mcmurdo".into()],
        ..FakeSignals::default()
    };
    let mut c = caches(&PLACES.map(|p| p.0));
    let mut i = input(
        SortMethod::Distance,
        Some(MADISON),
        "/ns/o",
        &signals,
        &locations,
    );
    i.prefer_cached = true;
    order(&mut c, &i);
    assert_eq!(c[0].name(), "mcmurdo");
    assert_eq!(names(&c)[1..], BY_HAND[..5]);
}

#[test]
fn adaptive_weighs_load_and_health() {
    // Moscow is 1581 km (4.9 halvings of 321.9 km) farther than London; a London whose
    // probes take 1300 ms is (1300 - 100) / 200 = 6 halvings down, so Moscow wins.
    let locations = located(&PLACES);
    let signals = FakeSignals::default()
        .with("london", health(true, 1.0, 1300.0))
        .with("moscow", health(true, 1.0, 10.0));
    let c = from_madison(
        &["london", "moscow"],
        SortMethod::Adaptive,
        &signals,
        &locations,
    );
    assert_eq!(names(&c), ["moscow", "london"]);
    // Distance alone ignores load.
    let c = from_madison(
        &["london", "moscow"],
        SortMethod::Distance,
        &signals,
        &locations,
    );
    assert_eq!(names(&c), ["london", "moscow"]);
}

#[test]
fn random_is_stable_per_client_and_spreads_across_clients() {
    let locations = LocationMap::default();
    let all = ["a", "b", "c", "d"];
    let mut firsts = HashMap::new();
    for i in 0..200u32 {
        let addr: std::net::IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
        let mut i1 = input(SortMethod::Random, None, "/ns/o", &NoSignals, &locations);
        i1.client_addr = Some(addr);
        let mut a = caches(&all);
        order(&mut a, &i1);
        let mut b = caches(&all);
        order(&mut b, &i1);
        assert_eq!(names(&a), names(&b));
        *firsts.entry(a[0].name().to_string()).or_insert(0) += 1;
    }
    assert_eq!(firsts.len(), 4, "{firsts:?}");
}

#[test]
fn ten_thousand_servers_sort_without_trouble() {
    let mut places = Vec::new();
    let names_owned: Vec<String> = (0..10_000).map(|i| format!("cache-{i}")).collect();
    for (i, name) in names_owned.iter().enumerate() {
        let lat = (i % 180) as f64 - 89.0;
        let lon = (i % 360) as f64 - 179.5;
        places.push((name.as_str(), lat, lon));
    }
    let locations = located(&places);
    let signals = FakeSignals::default().down("cache-0");
    // One signed template, renamed (signatures play no part in ordering).
    let template = candidate("template", ServerKind::Cache);
    let mut c: Vec<Candidate> = names_owned
        .iter()
        .map(|n| {
            let mut stored = template.ad.clone();
            stored.ad.name = n.clone();
            Candidate::new(fixtures::leaked(stored))
        })
        .collect();
    let explained = explain(
        &mut c,
        &input(
            SortMethod::Adaptive,
            Some(MADISON),
            "/ns/o",
            &signals,
            &locations,
        ),
    );
    assert_eq!(c.len(), 10_000);
    assert_eq!(explained.len(), 10_000);
    assert_eq!(c.last().unwrap().name(), "cache-0");
    let d: Vec<f64> = explained[..9_999]
        .iter()
        .map(|s| s.distance_km.unwrap())
        .collect();
    // Buckets are 100 km wide: nothing later is more than one bucket nearer.
    for pair in d.windows(2) {
        assert!(pair[1] + BUCKET_KM >= pair[0], "{pair:?}");
    }
}

#[test]
fn explain_matches_order_and_reports_each_factor() {
    let locations = located(&PLACES);
    let signals = FakeSignals::default().with("london", health(true, 0.5, 50.0));
    let mut a = caches(&PLACES.map(|p| p.0));
    let mut b = caches(&PLACES.map(|p| p.0));
    let i = input(
        SortMethod::Adaptive,
        Some(MADISON),
        "/ns/o",
        &signals,
        &locations,
    );
    let scored = explain(&mut a, &i);
    order(&mut b, &i);
    assert_eq!(names(&a), names(&b));
    let london = scored.iter().find(|s| s.name == "london").unwrap();
    assert_eq!(london.distance_km.map(f64::round), Some(6371.0));
    assert_eq!(london.health.unwrap().ewma, 0.5);
    assert_eq!(london.weights.unwrap().health, 0.5);
    assert_eq!(london.presence, "unknown");
    assert!(london.score.unwrap() > 0.0);
    assert_eq!(london.generation, 1);
}

#[test]
fn nonsense_signals_never_make_a_server_best() {
    let locations = located(&PLACES);
    let signals = FakeSignals::default().with("mcmurdo", health(true, f64::NAN, f64::INFINITY));
    let c = from_madison(
        &PLACES.map(|p| p.0),
        SortMethod::Adaptive,
        &signals,
        &locations,
    );
    assert_eq!(c.last().unwrap().name(), "mcmurdo");
}

/// With the object's presence counting (a read of an object), the sort does what the
/// presence demotion does after it: origins known to lack the object after every other
/// server, servers known to hold it first, the rest in the method's order. `?explain`
/// runs the same sort, so it shows the order served.
#[test]
fn object_presence_demotes_absent_origins_and_promotes_holders_in_every_method() {
    let signals = FakeSignals {
        present: vec!["moscow".into()],
        absent: vec!["origin-near".into()],
        ..FakeSignals::default()
    };
    let mut places = PLACES.to_vec();
    places.push(("origin-near", 43.0, -89.5));
    places.push(("origin-far", -77.0, 166.0));
    let locations = located(&places);
    let mut all = caches(&["san-diego", "london", "moscow"]);
    all.push(candidate("origin-near", ServerKind::Origin));
    all.push(candidate("origin-far", ServerKind::Origin));
    for method in [
        SortMethod::Distance,
        SortMethod::Adaptive,
        SortMethod::Random,
        SortMethod::Affinity,
    ] {
        let counted = SortInput {
            object_presence: true,
            ..input(method, Some(MADISON), "/ns/o", &signals, &locations)
        };
        let mut served = all.clone();
        order(&mut served, &counted);
        assert_eq!(served[0].name(), "moscow", "{method:?}: the holder first");
        assert_eq!(
            served[served.len() - 1].name(),
            "origin-near",
            "{method:?}: the origin lacking it last, however near"
        );
        // The same as sorting without presence, then demoting (stable), as before.
        let mut route = fixtures::route_in(fixtures::public_namespace("/ns"), all.clone());
        order(
            &mut route.candidates,
            &input(method, Some(MADISON), "/ns/o", &signals, &locations),
        );
        let demoted = crate::probe::presence::order(
            &mut route,
            &signals,
            Some("/ns/o"),
            crate::routing::Purpose::Read,
        );
        assert_eq!(demoted, Ok(()));
        assert_eq!(names(&served), names(&route.candidates), "{method:?}");
        let mut explained = all.clone();
        let scored = explain(&mut explained, &counted);
        assert_eq!(names(&explained), names(&served), "{method:?}");
        let scored_names: Vec<&str> = scored.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(scored_names, names(&served), "{method:?}");
    }
}

#[test]
fn reorder_puts_items_in_every_order_ranks_give() {
    // Every permutation of six places (more than a redirect's usual candidates).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for shorter in permutations(n - 1) {
            for at in 0..n {
                let mut p = shorter.clone();
                p.insert(at, n - 1);
                all.push(p);
            }
        }
        all
    }
    let all = permutations(6);
    assert_eq!(all.len(), 720);
    for ranks in all {
        let mut items: Vec<char> = "abcdef".chars().collect();
        reorder(&mut items, &ranks);
        let expected: Vec<char> = ranks.iter().map(|&i| (b'a' + i as u8) as char).collect();
        assert_eq!(items, expected, "{ranks:?}");
    }
    // Fewer places than items: the rest are left out, as the ranking left them.
    let mut items = vec!['a', 'b', 'c'];
    reorder(&mut items, &[1, 0]);
    assert_eq!(items, ['b', 'a']);
}
