//! Unit tests for the view and redirect decision.

use super::*;
use crate::ad::StoredAd;
use crate::ad::{AdStatus, ServerKind};
use crate::fixtures;

const NOW: u64 = 1_000_000;

fn stored(name: &str, kind: ServerKind, namespaces: &[&str]) -> Arc<StoredAd> {
    let ad = fixtures::ad(name, kind, namespaces, NOW - 10, 1);
    let signed = ad.sign(&fixtures::key_for(name));
    Arc::new(StoredAd::new(signed, NOW - 5, 15 * 60 * 1000))
}

#[test]
fn caches_first_then_origin_longest_prefix() {
    let view = View::default()
        .with_ad(stored("origin-1", ServerKind::Origin, &["/ligo"]))
        .with_ad(stored("origin-2", ServerKind::Origin, &["/ligo/frames"]))
        .with_ad(stored("cache-1", ServerKind::Cache, &["/ligo/frames"]))
        .with_ad(stored("cache-2", ServerKind::Cache, &["/ligo/frames"]));
    let route = view
        .route("/ligo/frames/x.gwf", Purpose::Read, NOW)
        .unwrap();
    assert_eq!(route.prefix, "/ligo/frames");
    let kinds: Vec<_> = route.candidates.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ServerKind::Cache, ServerKind::Cache, ServerKind::Origin]
    );
    assert_eq!(route.candidates[2].name(), "origin-2");

    let other = view.route("/ligo/other", Purpose::Read, NOW).unwrap();
    assert_eq!(other.prefix, "/ligo");
    assert_eq!(other.candidates[0].name(), "origin-1");

    let origin = view
        .route("/ligo/frames/x", Purpose::OriginRead, NOW)
        .unwrap();
    assert!(
        origin
            .candidates
            .iter()
            .all(|c| c.kind == ServerKind::Origin)
    );
    assert_eq!(
        view.route("/ligox", Purpose::Read, NOW),
        Err(NoRoute::NoNamespace)
    );
}

#[test]
fn replacing_and_removing_updates_the_index() {
    let view = View::default().with_ad(stored("origin-1", ServerKind::Origin, &["/a"]));
    let moved = view.with_ad(stored("origin-1", ServerKind::Origin, &["/b"]));
    assert!(moved.route("/a/x", Purpose::Read, NOW).is_err());
    assert!(moved.route("/b/x", Purpose::Read, NOW).is_ok());
    assert!(
        view.route("/a/x", Purpose::Read, NOW).is_ok(),
        "old snapshot unchanged"
    );
    let gone = moved.without(&AdKey {
        kind: ServerKind::Origin,
        name: "origin-1".into(),
    });
    assert!(gone.is_empty());
    assert!(gone.namespaces(NOW).is_empty());
}

#[test]
fn expired_and_withdrawn_servers_get_no_traffic() {
    let live = stored("cache-1", ServerKind::Cache, &["/a"]);
    let mut withdrawn = (*stored("cache-2", ServerKind::Cache, &["/a"])).clone();
    withdrawn.ad.status = AdStatus::ShuttingDown;
    let view = View::default()
        .with_ad(live.clone())
        .with_ad(Arc::new(withdrawn))
        .with_ad(stored("origin-1", ServerKind::Origin, &["/a"]));
    let route = view.route("/a/x", Purpose::Read, NOW).unwrap();
    let names: Vec<_> = route.candidates.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["cache-1", "origin-1"]);
    let after_expiry = view.route("/a/x", Purpose::Read, live.expires_at);
    assert_eq!(after_expiry, Err(NoRoute::NoNamespace));
}

#[test]
fn writes_need_a_writable_origin() {
    let mut writable = (*stored("origin-w", ServerKind::Origin, &["/w"])).clone();
    writable.ad.namespaces[0].caps.writes = true;
    let view = View::default()
        .with_ad(stored("origin-r", ServerKind::Origin, &["/r"]))
        .with_ad(Arc::new(writable));
    assert_eq!(
        view.route("/r/x", Purpose::Write, NOW),
        Err(NoRoute::NotAllowed {
            prefix: "/r".into()
        })
    );
    assert_eq!(
        view.route("/w/x", Purpose::Write, NOW).unwrap().candidates[0].name(),
        "origin-w"
    );
}

#[test]
fn same_object_same_cache() {
    let view = (0..10).fold(View::default(), |v, i| {
        v.with_ad(stored(&format!("cache-{i}"), ServerKind::Cache, &["/ns"]))
    });
    let first = view.route("/ns/object", Purpose::Read, NOW).unwrap();
    for _ in 0..5 {
        assert_eq!(view.route("/ns/object", Purpose::Read, NOW).unwrap(), first);
    }
}

#[test]
fn deep_paths_find_shallow_and_newly_deeper_prefixes() {
    let shallow = View::default().with_ad(stored("origin-1", ServerKind::Origin, &["/a"]));
    let route = shallow.route("/a/b/c/d/e.dat", Purpose::Read, NOW).unwrap();
    assert_eq!(route.prefix, "/a");
    let deeper = shallow.with_ad(stored("origin-2", ServerKind::Origin, &["/a/b/c"]));
    let route = deeper.route("/a/b/c/d/e.dat", Purpose::Read, NOW).unwrap();
    assert_eq!(route.prefix, "/a/b/c");
    // Gone again: the shallower one serves.
    let key = AdKey {
        kind: ServerKind::Origin,
        name: "origin-2".into(),
    };
    let shallower = deeper.without(&key);
    let route = shallower
        .route("/a/b/c/d/e.dat", Purpose::Read, NOW)
        .unwrap();
    assert_eq!(route.prefix, "/a");
}

#[test]
fn each_kind_is_ranked_by_rendezvous_caches_first() {
    let view = (0..6).fold(View::default(), |v, i| {
        v.with_ad(stored(&format!("cache-{i}"), ServerKind::Cache, &["/ns"]))
            .with_ad(stored(&format!("origin-{i}"), ServerKind::Origin, &["/ns"]))
    });
    for i in 0..200 {
        let object = format!("/ns/object-{i}");
        let route = view.route(&object, Purpose::Read, NOW).unwrap();
        let names: Vec<&str> = route.candidates.iter().map(|c| c.name()).collect();
        let mut caches: Vec<String> = (0..6).map(|i| format!("cache-{i}")).collect();
        let mut origins: Vec<String> = (0..6).map(|i| format!("origin-{i}")).collect();
        rank_by(&mut caches, &object, |s| s);
        rank_by(&mut origins, &object, |s| s);
        let expected: Vec<&str> = caches.iter().chain(&origins).map(String::as_str).collect();
        assert_eq!(names, expected, "{object}");
    }
}

#[test]
fn a_new_version_keeping_some_namespaces_is_indexed_exactly_once() {
    let old = View::default()
        .with_ad(stored("origin-1", ServerKind::Origin, &["/a", "/b"]))
        .with_ad(stored("origin-2", ServerKind::Origin, &["/b"]));
    let mut newer = fixtures::ad(
        "origin-1",
        ServerKind::Origin,
        &["/b", "/c", "/b"],
        NOW - 10,
        2,
    );
    newer.data_url = "http://moved.example:8443".into();
    let newer = Arc::new(StoredAd::new(
        newer.sign(&fixtures::key_for("origin-1")),
        NOW - 5,
        15 * 60 * 1000,
    ));
    let view = old.with_ad(newer);
    assert!(view.route("/a/x", Purpose::Read, NOW).is_err());
    assert_eq!(view.namespaces(NOW), ["/b", "/c"]);
    let route = view.route("/b/x", Purpose::Read, NOW).unwrap();
    let mut urls: Vec<_> = route.candidates.iter().map(|c| c.data_url()).collect();
    urls.sort();
    assert_eq!(
        urls,
        ["http://moved.example:8443", "http://origin-2.example:8443"]
    );
    assert_eq!(
        old.route("/a/x", Purpose::Read, NOW).unwrap().candidates[0].data_url(),
        "http://origin-1.example:8443",
        "old snapshot unchanged"
    );
}

fn record(kind: ServerKind, about: &str, window: (u64, u64)) -> Arc<StoredAd> {
    let record = crate::ad::Record {
        signer: "ops".into(),
        active: true,
        start: window.0,
        end: window.1,
        reason: String::new(),
    };
    let ad = record
        .into_ad(kind, about, NOW - 10, window.1)
        .sign(&fixtures::key_for("ops"));
    Arc::new(StoredAd::new(ad, NOW - 5, u64::MAX))
}

#[test]
fn records_hold_their_server_back_until_the_last_one_goes() {
    let key = |kind| crate::ad::AdKey {
        kind,
        name: "cache-1".into(),
    };
    let first = |view: &View| {
        view.route("/ns/x", Purpose::Read, NOW)
            .map(|r| r.candidates[0].name().to_string())
            .unwrap()
    };
    let base = View::default()
        .with_ad(stored("origin-1", ServerKind::Origin, &["/ns"]))
        .with_ad(stored("cache-1", ServerKind::Cache, &["/ns"]));
    assert_eq!(first(&base), "cache-1");
    // A downtime window in the future holds nothing back yet.
    let later = base.with_ad(record(
        ServerKind::Downtime,
        "cache-1",
        (NOW + 10, NOW + 20),
    ));
    assert_eq!(first(&later), "cache-1");
    assert!(later.held_back("cache-1", NOW + 10));
    let both = base
        .with_ad(record(ServerKind::Downtime, "cache-1", (NOW - 1, NOW + 20)))
        .with_ad(record(ServerKind::Ban, "cache-1", (0, u64::MAX)));
    assert_eq!(first(&both), "origin-1");
    let banned = both.without(&key(ServerKind::Downtime));
    assert_eq!(first(&banned), "origin-1", "the ban still holds");
    assert_eq!(first(&banned.without(&key(ServerKind::Ban))), "cache-1");
    // Records are never routed to and list no namespace.
    assert_eq!(both.namespaces(NOW), ["/ns"]);
}

#[test]
fn a_route_carries_its_namespace_terms() {
    let mut ad = fixtures::ad(
        "origin-1",
        ServerKind::Origin,
        &["/open", "/closed"],
        NOW - 10,
        1,
    );
    let closed = &mut ad.namespaces[1];
    closed.caps.public_reads = false;
    closed.issuers.push(crate::ad::TokenIssuer {
        issuer_url: "https://issuer.example".into(),
        base_paths: vec!["/closed".into()],
    });
    let signed = ad.sign(&fixtures::key_for("origin-1"));
    let view = View::default().with_ad(Arc::new(StoredAd::new(signed, NOW - 5, 60_000)));
    for (path, public, names_tokens) in [("/open/x", true, false), ("/closed/x", false, true)] {
        let route = view.route(path, Purpose::Read, NOW).unwrap();
        let terms = route.terms();
        assert_eq!(terms, Terms::of(route.namespace()), "{path}");
        assert_eq!(
            (terms.caps.public_reads, terms.names_tokens),
            (public, names_tokens),
            "{path}"
        );
    }
}
