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
use crate::peers::{PeerTiming, SelfInfo};
use crate::replication::Replicator;
use crate::store::Store;

const NOW: u64 = 1_800_000_000_000;

pub(super) struct Harness {
    pub(super) app: super::App,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

pub(super) fn harness() -> Harness {
    harness_with(
        crate::geo::Geo::default(),
        crate::routing::sort::SortMethod::Affinity,
        Arc::new(crate::routing::signals::NoSignals),
    )
}

fn harness_with(
    geo: crate::geo::Geo,
    sort: crate::routing::sort::SortMethod,
    signals: Arc<dyn crate::routing::signals::Signals>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = geo.settings();
    settings.sort = Some(sort);
    geo.set(settings);
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
    let clock_for_gate = clock.clone();
    let metrics = Arc::new(Metrics::default());
    let replicator = Replicator::new(
        ledger.clone(),
        SelfInfo {
            url: "http://director-a:8444".into(),
            uuid: identity.instance().uuid,
            name: "director-a".into(),
        },
        PeerTiming {
            poll_interval: Duration::from_secs(60),
            max_candidates: 8,
            forget_after: Duration::from_secs(3600),
            forward_delay: Duration::from_secs(2),
        },
        Client::new(Duration::from_secs(1), None).unwrap(),
        metrics.clone(),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    let peers = replicator.peers().clone();
    let config = crate::config::DirectorConfig::from_toml(
        "name = \"director-a\"\nadvertise_url = \"http://director-a:8444\"\n\
         [identity]\nkey = \"k\"\n[federation]\ntrust = \"t\"\n[health]\nenabled = false\n",
    )
    .unwrap();
    let probes = crate::probe::Probes::start(
        &config.health,
        &config.presence,
        None,
        ledger.clone(),
        &TaskTracker::new(),
        CancellationToken::new(),
    )
    .unwrap();
    let state = Arc::new(AppState {
        name: "director-a".into(),
        advertise_url: "http://director-a:8444".into(),
        replicator,
        ledger,
        peers,
        metrics,
        identity,
        signals,
        probes,
        geo: Arc::new(geo),
        ready: AtomicBool::new(true),
        pelican: Arc::new(crate::pelican::Gate::new(
            "director-a",
            fixtures::key_for("director-a"),
            Default::default(),
            clock_for_gate,
            60,
            vec!["http://director-a:8444".into()],
        )),
        access_log: AtomicBool::new(false),
    });
    let limits = HttpLimits {
        max_body: 64 * 1024,
        request_timeout: Duration::from_secs(5),
        budgets: super::BudgetLimits {
            redirect: 64,
            ingest: 64,
            bulk: 64,
            ingest_per_client: 64,
        },
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
    // A director that accepts the binary page gets the same ad in it.
    let request = Request::post("/api/v1.0/director/ads/fetch")
        .header("content-type", "application/json")
        .header("accept", crate::ad::page::ACCEPT)
        .body(Body::from(
            r#"{"keys":[{"kind":"origin","name":"origin-1"},{"kind":"cache","name":"nobody"}]}"#,
        ))
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        crate::ad::page::MEDIA_TYPE
    );
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let binary = crate::ad::page::decode(&body, 2).unwrap();
    assert_eq!(
        serde_json::to_value(&binary).unwrap(),
        fetch.json,
        "the binary page holds what the JSON one does"
    );

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
    let request = Request::get("/").body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let page = String::from_utf8_lossy(&page);
    for needle in [
        "origin-1",
        "http://origin-1.example:8443",
        "just now",
        "in 14 min",
        "ready",
    ] {
        assert!(
            page.contains(needle),
            "{needle} missing from the status page"
        );
    }
    let status = h.call(Method::GET, "/api/v1.0/director/status", None).await;
    assert_eq!(status.json["director"]["name"], "director-a");
    assert_eq!(status.json["servers"][0]["name"], "origin-1");
    assert_eq!(status.json["servers"][0]["kind"], "origin");
}

#[tokio::test]
async fn pelican_api_gaps_listings_discovery_cors_and_unknown_endpoints() {
    let h = harness();
    h.register(&ad("origin-1", ServerKind::Origin, &["/ns"], 1))
        .await;
    h.register(&ad("cache-1", ServerKind::Cache, &["/ns"], 1))
        .await;

    let v1 = h
        .call(Method::GET, "/api/v1.0/director/listNamespaces", None)
        .await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.json[0]["path"], "/ns");
    assert_eq!(v1.json[0]["requireToken"], false);
    assert!(header(&v1, "warning").starts_with("299"));

    let sd = h
        .call(Method::GET, "/api/v1.0/director/discoverServers", None)
        .await;
    assert_eq!(sd.status, StatusCode::OK);
    let groups = sd.json.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{}", sd.json);
    assert_eq!(groups[0]["targets"][0], "origin-1.example:8443");
    assert_eq!(groups[0]["labels"]["server_type"], "Origin");
    assert_eq!(groups[1]["labels"]["server_type"], "Cache");
    assert_eq!(groups[1]["labels"]["server_name"], "cache-1");
    assert_eq!(
        groups[1]["labels"]["server_web_url"],
        "http://cache-1.example:8443"
    );

    let redirect = h.call(Method::GET, "/ns/x", None).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&redirect, "access-control-allow-origin"), "*");
    assert!(header(&redirect, "access-control-expose-headers").contains("X-Pelican-Namespace"));
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
    ] {
        let values = redirect.headers.get_all(name).iter().count();
        assert_eq!(values, 1, "{name} once, not {values} times");
    }
    // Refusals on client routes carry them too, so a web page can read why.
    let missing = h.call(Method::GET, "/no/such/namespace", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "access-control-allow-origin"), "*");
    let explained = h.call(Method::GET, "/ns/x?explain", None).await;
    assert_eq!(explained.status, StatusCode::OK);
    assert_eq!(header(&explained, "access-control-allow-origin"), "*");
    for path in ["/ns/x", "/api/v1.0/director/object/ns/x", "/anything"] {
        let preflight = h.call(Method::OPTIONS, path, None).await;
        assert_eq!(preflight.status, StatusCode::OK, "{path}");
        assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
        assert!(header(&preflight, "allow").contains("PROPFIND"));
    }

    let preflight = h
        .call(Method::OPTIONS, "/api/v1.0/director/registerOrigin", None)
        .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    let wrong = h
        .call(Method::DELETE, "/api/v1.0/director/registerOrigin", None)
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.json["error"], "method_not_allowed");
    assert!(
        header(&wrong, "allow").contains("POST"),
        "{:?}",
        wrong.headers
    );

    for path in ["/api/v1.0/director/nope", "/api/v3/x", "/api/"] {
        let unknown = h.call(Method::GET, path, None).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(unknown.json["error"], "unknown_endpoint", "{path}");
    }
    let object_api = h
        .call(Method::GET, "/api/v1.0/director/object/nope/x", None)
        .await;
    assert_eq!(object_api.json["error"], "not_found");
}

#[tokio::test]
async fn digests_come_whole_summarised_or_by_bucket() {
    let h = harness();
    let origin = ad("origin-1", ServerKind::Origin, &["/ns"], 1);
    assert_eq!(h.register(&origin).await.status, StatusCode::OK);
    let whole = h.call(Method::GET, "/api/v1.0/director/digest", None).await;
    assert_eq!(whole.status, StatusCode::OK);
    let held = whole.json.as_array().unwrap().len();
    assert!(held >= 1, "{:?}", whole.json);
    let summary = h
        .call(Method::GET, "/api/v1.0/director/digest?buckets=256", None)
        .await;
    let buckets = summary.json["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 256);
    let bucket = crate::replication::digest::bucket_of(&origin.ad.key());
    assert_ne!(buckets[bucket], 0);
    let only = h
        .call(
            Method::GET,
            &format!("/api/v1.0/director/digest?buckets=256&only={bucket}"),
            None,
        )
        .await;
    let entries = only.json.as_array().unwrap();
    assert!(entries.iter().any(|e| e["key"]["name"] == "origin-1"));
    assert!(entries.len() <= held);
    for bad in ["?buckets=7", "?buckets=256&only=256", "?buckets=256&only=x"] {
        let answer = h
            .call(
                Method::GET,
                &format!("/api/v1.0/director/digest{bad}"),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.json["error"], "bad_buckets", "{bad}");
    }
}

#[tokio::test]
async fn an_offer_is_answered_with_the_entries_newer_than_held() {
    let h = harness();
    let held = ad("origin-1", ServerKind::Origin, &["/ns"], 2);
    assert_eq!(h.register(&held).await.status, StatusCode::OK);
    let entry = |signed: &SignedAd| crate::wire::DigestEntry {
        key: signed.ad.key(),
        version: signed.ad.version(),
    };
    let offer = vec![
        entry(&ad("origin-1", ServerKind::Origin, &["/ns"], 1)), // older: not wanted
        entry(&held),                                            // the same: not wanted
        entry(&ad("origin-1", ServerKind::Origin, &["/ns"], 3)), // newer: wanted
        entry(&ad("cache-1", ServerKind::Cache, &["/ns"], 1)),   // not held: wanted
    ];
    let answer = h
        .call(
            Method::POST,
            "/api/v1.0/director/forward/offer",
            Some(serde_json::to_string(&offer).unwrap()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    assert_eq!(answer.json, serde_json::json!({"wanted": [2, 3]}));
    let malformed = h
        .call(
            Method::POST,
            "/api/v1.0/director/forward/offer",
            Some("[{\"key\": 1}]".into()),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json["error"].is_string());
    // Bounded (a peer's worker offers at most 2,048 at once): 10,001 entries are refused
    // by the body limit (1 MiB) if not by the handler's own bound.
    let too_many = vec![entry(&held); 10_001];
    let answer = h
        .call(
            Method::POST,
            "/api/v1.0/director/forward/offer",
            Some(serde_json::to_string(&too_many).unwrap()),
        )
        .await;
    assert!(
        matches!(
            (answer.status.as_u16(), answer.json["error"].as_str()),
            (413, Some("payload_too_large")) | (400, Some("too_many_entries"))
        ),
        "{:?} {:?}",
        answer.status,
        answer.json
    );
}

#[tokio::test]
async fn ad_listings_come_in_pages_that_cover_every_ad_once() {
    let h = harness();
    for (name, kind, ns) in [
        ("origin-1", ServerKind::Origin, "/ns"),
        ("origin-w", ServerKind::Origin, "/w"),
        ("cache-1", ServerKind::Cache, "/ns"),
    ] {
        assert_eq!(
            h.register(&ad(name, kind, &[ns], 1)).await.status,
            StatusCode::OK
        );
    }
    let whole = h.call(Method::GET, "/api/v1.0/director/ads", None).await;
    let total = whole.json.as_array().unwrap().len();
    assert!(total >= 3);
    let mut seen = Vec::new();
    let mut uri = "/api/v1.0/director/ads?limit=2".to_string();
    loop {
        let page = h.call(Method::GET, &uri, None).await;
        assert_eq!(page.status, StatusCode::OK);
        let ads = page.json.as_array().unwrap();
        assert!(ads.len() <= 2);
        seen.extend(ads.iter().map(|a| format!("{}/{}", a["kind"], a["name"])));
        let link = header(&page, "link");
        if link.is_empty() {
            break;
        }
        uri = link
            .trim_start_matches('<')
            .split_once('>')
            .unwrap()
            .0
            .to_string();
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(seen.len(), total, "{seen:?}");
    assert_eq!(unique, seen, "in key order, none twice");
    for bad in [
        "?limit=0",
        "?limit=10001",
        "?after=nokind",
        "?after=planet/x",
    ] {
        let answer = h
            .call(Method::GET, &format!("/api/v1.0/director/ads{bad}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

impl Harness {
    /// Registers `origin-1` and `cache-1` for `/ns`.
    pub(super) async fn register_origin_and_cache(&self) {
        for (name, kind) in [
            ("origin-1", ServerKind::Origin),
            ("cache-1", ServerKind::Cache),
        ] {
            let answer = self.register(&ad(name, kind, &["/ns"], 1)).await;
            assert_eq!(answer.json["status"], "accepted");
        }
    }
}

#[tokio::test]
async fn directread_goes_to_an_origin_and_conflicting_flags_are_refused() {
    let h = harness();
    h.register_origin_and_cache().await;
    let direct = h.call(Method::GET, "/ns/a?directread", None).await;
    assert_eq!(direct.status, StatusCode::TEMPORARY_REDIRECT);
    // Forwarded, as Pelican's director does.
    assert_eq!(
        header(&direct, "location"),
        "http://origin-1.example:8443/ns/a?directread"
    );
    let cached = h.call(Method::GET, "/ns/a?prefercached", None).await;
    assert_eq!(
        header(&cached, "location"),
        "http://cache-1.example:8443/ns/a?prefercached"
    );
    for both in [
        "/ns/a?directread&prefercached",
        "/ns/a?prefercached=1&directread=",
    ] {
        let a = h.call(Method::GET, both, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{both}");
        assert_eq!(a.json["error"], "invalid_query");
        assert!(
            a.json["detail"]
                .as_str()
                .unwrap()
                .contains("cannot have both directread and prefercached query parameters")
        );
    }
}

#[tokio::test]
async fn explain_says_who_the_client_is_and_why_each_server_ranks_where_it_does() {
    use crate::geo::{Coord, Geo, GeoDb, mmdb};
    use crate::routing::sort::SortMethod;
    let db = mmdb::city_db(&[("81.2.69.0/24".parse().unwrap(), 51.51, -0.13)]);
    let geo = Geo::new(
        Some(GeoDb::from_bytes(db, std::path::Path::new("t.mmdb")).unwrap()),
        vec![],
        vec!["127.0.0.0/8".parse().unwrap()],
        vec![
            ("cache-1".into(), Coord::new(48.85, 2.35).unwrap()),
            ("origin-1".into(), Coord::new(43.07, -89.40).unwrap()),
        ],
    );
    let h = harness_with(
        geo,
        SortMethod::Adaptive,
        Arc::new(crate::routing::signals::NoSignals),
    );
    h.register_origin_and_cache().await;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/ns/obj?explain&authz=x")
        .header("x-forwarded-for", "81.2.69.7")
        .body(Body::empty())
        .unwrap();
    let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["client"]["address"], "81.2.69.7");
    assert_eq!(json["client"]["address_from"], "trusted_xff");
    assert_eq!(json["client"]["located_by"], "database");
    assert_eq!(json["client"]["location"]["lat"], 51.51);
    assert_eq!(json["sort"], "adaptive");
    assert_eq!(json["namespace"], "/ns");
    assert!(json["geoip_db"].as_str().unwrap().contains("t.mmdb"));
    assert_eq!(json["order"], serde_json::json!(["cache-1", "origin-1"]));
    let first = &json["candidates"][0];
    assert_eq!(first["name"], "cache-1");
    assert_eq!(first["location"]["located_by"], "config");
    // London to Paris, by hand: 344.4 km.
    assert_eq!(first["distance_km"].as_f64().unwrap(), 344.4);
    assert_eq!(first["up"], true);
    assert_eq!(first["presence"], "unknown");
    assert_eq!(first["generation"], 1);
    assert!(first["score"].as_f64().unwrap() > 0.0);
    assert!(first["bucket"].is_u64());
    assert_eq!(
        json["location"], "http://cache-1.example:8443/ns/obj?authz=x",
        "explain is not forwarded"
    );
}

/// Every kind of request the object handler answers gets the same answer straight from
/// it as through the router (status, headers in order, body).
#[tokio::test]
async fn unrouted_requests_are_answered_as_the_router_would() {
    let h = harness();
    h.register_origin_and_cache().await;
    let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let requests = [
        (Method::GET, "/ns/obj"),
        (Method::HEAD, "/ns/obj"),
        (Method::GET, "/ns/a%20b?authz=t&redirect=false"),
        (Method::GET, "/ns/obj?explain"),
        (Method::GET, "/ns/obj?directread&prefercached"),
        (Method::PUT, "/w/obj"),
        (Method::DELETE, "/ns/obj"),
        (propfind, "/api/v1.0/director/origin/ns"),
        (Method::GET, "/api/v1.0/director/object/ns/obj"),
        (Method::OPTIONS, "/ns/obj"),
        (Method::PATCH, "/ns/obj"),
        (Method::GET, "/elsewhere/obj"),
        (Method::GET, "/ns/../etc"),
        (Method::GET, "/api/v9/unknown"),
        (Method::HEAD, "/api/v9/unknown"),
    ];
    for (method, uri) in requests {
        let request = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        };
        let direct = h.app.clone().oneshot(request()).await.unwrap();
        let routed = h.app.routed().oneshot(request()).await.unwrap();
        assert_eq!(direct.status(), routed.status(), "{method} {uri}");
        let headers = |r: &axum::response::Response| -> Vec<(String, String)> {
            r.headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        };
        assert_eq!(headers(&direct), headers(&routed), "{method} {uri}");
        let direct = to_bytes(direct.into_body(), 1 << 20).await.unwrap();
        let routed = to_bytes(routed.into_body(), 1 << 20).await.unwrap();
        assert_eq!(direct, routed, "{method} {uri}");
    }
}
