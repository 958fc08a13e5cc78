//! Handler tests through `router(state).oneshot(...)`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::{AppState, HttpLimits, router};
use crate::ad::{ServerKind, SignedAd};
use crate::client::Client;
use crate::clock::{ManualClock, SharedClock};
use crate::fixtures;
use crate::identity::Identity;
use crate::ledger::{AdLimits, Ledger};
use crate::metrics::Metrics;
use crate::peers::PeerSet;
use crate::replication::Replicator;
use crate::store::Store;

const NOW: u64 = 1_800_000_000_000;

struct Harness {
    app: axum::Router,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clock: SharedClock = ManualClock::new(NOW);
    let trust = fixtures::trust(&[
        ("director-a", ServerKind::Director, &[]),
        ("origin-1", ServerKind::Origin, &["/ns"]),
        ("origin-w", ServerKind::Origin, &["/w"]),
        ("cache-1", ServerKind::Cache, &["/ns"]),
    ]);
    let limits = AdLimits {
        max_lifetime: Duration::from_secs(900),
        max_clock_skew: Duration::from_secs(300),
    };
    let ledger = Arc::new(
        Ledger::open(store.clone(), trust, clock.clone(), limits)
            .unwrap()
            .0,
    );
    let identity = Arc::new(Identity::new(
        "director-a",
        ServerKind::Director,
        NOW,
        fixtures::key_for("director-a"),
    ));
    let (peers, _added) = PeerSet::load(
        "http://director-a:8444",
        identity.instance().uuid,
        store,
        clock,
    );
    let peers = Arc::new(peers);
    let metrics = Arc::new(Metrics::default());
    let replicator = Replicator::new(
        ledger.clone(),
        peers.clone(),
        Client::new(Duration::from_secs(1), None).unwrap(),
        metrics.clone(),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    let state = Arc::new(AppState {
        name: "director-a".into(),
        advertise_url: "http://director-a:8444".into(),
        replicator,
        ledger,
        peers,
        metrics,
        identity,
        signals: Arc::new(crate::routing::signals::NoSignals),
        ready: AtomicBool::new(true),
        access_log: AtomicBool::new(false),
    });
    let limits = HttpLimits {
        max_body: 64 * 1024,
        request_timeout: Duration::from_secs(5),
        max_concurrent: 64,
    };
    Harness {
        app: router(state.clone(), limits),
        state,
        _dir: dir,
    }
}

fn ad(name: &str, kind: ServerKind, namespaces: &[&str], generation: u64) -> SignedAd {
    fixtures::ad(name, kind, namespaces, NOW - 1000, generation).sign(&fixtures::key_for(name))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: serde_json::Value,
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, body: Option<String>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn register(&self, ad: &SignedAd) -> Answer {
        let endpoint = if ad.ad.kind == ServerKind::Cache {
            "registerCache"
        } else {
            "registerOrigin"
        };
        self.call(
            Method::POST,
            &format!("/api/v1.0/director/{endpoint}"),
            Some(serde_json::to_string(ad).unwrap()),
        )
        .await
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn redirects_carry_pelican_headers() {
    let h = harness();
    assert_eq!(
        h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
            .await
            .json["status"],
        "accepted"
    );
    assert_eq!(
        h.register(&ad("cache-1", ServerKind::Cache, &["/ns"], 1))
            .await
            .json["status"],
        "accepted"
    );

    let a = h
        .call(Method::GET, "/ns/dir/file.txt?authz=abc", None)
        .await;
    assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        header(&a, "location"),
        "http://cache-1.example:8443/ns/dir/file.txt?authz=abc"
    );
    assert_eq!(
        header(&a, "link"),
        "<http://cache-1.example:8443/ns/dir/file.txt>; rel=\"duplicate\"; pri=1; depth=1, \
         <http://origin-1.example:8443/ns/dir/file.txt>; rel=\"duplicate\"; pri=2; depth=1"
    );
    assert_eq!(
        header(&a, "x-pelican-namespace"),
        "namespace=/ns, require-token=false, collections-url=http://origin-1.example:8443"
    );
    assert!(header(&a, "server").starts_with("pelican/"));

    let head = h.call(Method::HEAD, "/ns/dir/file.txt", None).await;
    assert_eq!(head.status, StatusCode::TEMPORARY_REDIRECT);
    let object_api = h
        .call(Method::GET, "/api/v1.0/director/object/ns/a", None)
        .await;
    assert_eq!(
        header(&object_api, "location"),
        "http://cache-1.example:8443/ns/a"
    );
    let origin_api = h
        .call(Method::GET, "/api/v1.0/director/origin/ns/a", None)
        .await;
    assert_eq!(
        header(&origin_api, "location"),
        "http://origin-1.example:8443/ns/a"
    );

    // pelicanfs lists by PROPFIND to the director and reads Link + collections-url.
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let listing = h.call(propfind, "/ns/dir", None).await;
    assert_eq!(listing.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        header(&listing, "location"),
        "http://origin-1.example:8443/ns/dir"
    );
    assert!(header(&listing, "x-pelican-namespace").contains("collections-url="));

    let no_redirect = h.call(Method::GET, "/ns/a?redirect=false", None).await;
    assert_eq!(no_redirect.status, StatusCode::OK);
    assert_eq!(no_redirect.json["namespace"], "/ns");
    assert_eq!(
        header(&no_redirect, "location"),
        "http://cache-1.example:8443/ns/a"
    );
}

#[tokio::test]
async fn unknown_paths_and_bad_methods_get_json_errors() {
    let h = harness();
    h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
        .await;
    let missing = h.call(Method::GET, "/nowhere/x", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json["error"], "not_found");
    let put = h.call(Method::PUT, "/ns/x", None).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.json["error"], "not_allowed");
    let post = h.call(Method::POST, "/ns/x", None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let hostile = h.call(Method::GET, "/ns/%2e%2e/etc/passwd", None).await;
    assert_eq!(hostile.status, StatusCode::BAD_REQUEST);
    assert_eq!(hostile.json["error"], "bad_path");
    let crlf = h
        .call(Method::GET, "/ns/a%0d%0aSet-Cookie:%20x", None)
        .await;
    assert_eq!(crlf.status, StatusCode::BAD_REQUEST);
    assert!(crlf.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn writes_go_to_a_writable_origin() {
    let h = harness();
    let mut writable = fixtures::ad("origin-w", ServerKind::Origin, &["/w"], NOW - 1000, 1);
    writable.namespaces[0].caps.writes = true;
    h.register(&writable.sign(&fixtures::key_for("origin-w")))
        .await;
    for method in [Method::PUT, Method::DELETE] {
        let a = h.call(method, "/w/new.dat", None).await;
        assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            header(&a, "location"),
            "http://origin-w.example:8443/w/new.dat"
        );
    }
}

#[tokio::test]
async fn registration_answers_accepted_duplicate_stale_and_refusals_keep_the_view() {
    let h = harness();
    let v2 = ad("origin-1", ServerKind::Origin, &["/ns"], 2);
    assert_eq!(h.register(&v2).await.json["status"], "accepted");
    assert_eq!(h.register(&v2).await.json["status"], "duplicate");
    assert_eq!(
        h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
            .await
            .json["status"],
        "stale"
    );

    let wrong_endpoint = h
        .call(
            Method::POST,
            "/api/v1.0/director/registerOrigin",
            Some(serde_json::to_string(&ad("cache-1", ServerKind::Cache, &["/ns"], 1)).unwrap()),
        )
        .await;
    assert_eq!(wrong_endpoint.status, StatusCode::BAD_REQUEST);

    let unknown = ad("stranger", ServerKind::Origin, &["/ns"], 9);
    let a = h.register(&unknown).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("untrusted"))
    );

    let mut tampered = ad("origin-1", ServerKind::Origin, &["/ns"], 9);
    tampered.ad.data_url = "http://evil.example".into();
    let a = h.register(&tampered).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("bad_signature"))
    );

    let forbidden = ad("origin-1", ServerKind::Origin, &["/secret"], 9);
    let a = h.register(&forbidden).await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_namespace"))
    );

    let malformed = h
        .call(
            Method::POST,
            "/api/v1.0/director/registerOrigin",
            Some("{\"name\":".into()),
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );

    let huge = h
        .call(
            Method::POST,
            "/api/v1.0/director/registerOrigin",
            Some("x".repeat(200 * 1024)),
        )
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.json["error"], "payload_too_large");

    let held = h.state.ledger.view();
    assert_eq!(held.len(), 1);
    assert_eq!(held.ads().next().unwrap().ad.generation, 2);
    let a = h.call(Method::GET, "/ns/x", None).await;
    assert_eq!(header(&a, "location"), "http://origin-1.example:8443/ns/x");
}

#[tokio::test]
async fn a_withdrawn_server_gets_no_more_traffic() {
    let h = harness();
    h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
        .await;
    h.register(&ad("cache-1", ServerKind::Cache, &["/ns"], 1))
        .await;
    let mut leaving = fixtures::ad("cache-1", ServerKind::Cache, &["/ns"], NOW - 1000, 2);
    leaving.status = crate::ad::AdStatus::ShuttingDown;
    assert_eq!(
        h.register(&leaving.sign(&fixtures::key_for("cache-1")))
            .await
            .json["status"],
        "accepted"
    );
    let a = h.call(Method::GET, "/ns/x", None).await;
    assert_eq!(header(&a, "location"), "http://origin-1.example:8443/ns/x");
    assert!(!header(&a, "link").contains("cache-1"));
}

#[tokio::test]
async fn discovery_listings_and_operations() {
    let h = harness();
    h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
        .await;
    let d = h
        .call(Method::GET, "/.well-known/pelican-configuration", None)
        .await;
    assert_eq!(d.json["director_endpoint"], "http://director-a:8444");
    assert_eq!(
        d.json["director_advertise_endpoints"][0],
        "http://director-a:8444"
    );
    for key in [
        "discovery_endpoint",
        "namespace_registration_endpoint",
        "jwks_uri",
        "broker_endpoint",
    ] {
        assert!(d.json.get(key).is_some(), "missing {key}");
    }
    let ns = h
        .call(Method::GET, "/api/v2.0/director/listNamespaces", None)
        .await;
    assert_eq!(ns.json[0]["path"], "/ns");
    assert_eq!(ns.json[0]["Caps"]["PublicRead"], true);
    let directors = h
        .call(Method::GET, "/api/v1.0/director/directors", None)
        .await;
    assert_eq!(directors.json[0]["advertise_url"], "http://director-a:8444");
    assert_eq!(directors.json[0]["self"], true);
    let ads = h.call(Method::GET, "/api/v1.0/director/ads", None).await;
    assert_eq!(ads.json[0]["name"], "origin-1");
    assert!(ads.json[0]["signature"].is_string());
    let digest = h.call(Method::GET, "/api/v1.0/director/digest", None).await;
    assert_eq!(digest.json[0]["key"]["name"], "origin-1");
    let fetch = h
        .call(
            Method::POST,
            "/api/v1.0/director/ads/fetch",
            Some(r#"{"keys":[{"kind":"origin","name":"origin-1"},{"kind":"cache","name":"nobody"}]}"#.into()),
        )
        .await;
    assert_eq!(fetch.json.as_array().unwrap().len(), 1);

    assert_eq!(
        h.call(Method::GET, "/health", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.call(Method::GET, "/api/v1.0/health", None).await.status,
        StatusCode::OK
    );
    assert_eq!(h.call(Method::GET, "/ready", None).await.json["ads"], 1);
    h.call(Method::GET, "/ns/x", None).await;
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let text = String::from_utf8(
        to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        "skein_ads_live 1",
        "skein_ads_received_total{result=\"accepted\"} 1",
        "skein_redirects_total{result=\"redirected\"} 1",
        "skein_peers_known 1",
        "skein_forwards_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let page = h.call(Method::GET, "/", None).await;
    assert_eq!(page.status, StatusCode::OK);
}
