//! Hostile input through a real director on 127.0.0.1:0: every refusal answers with its
//! status and a JSON `{error, detail}` body, and the view is intact afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use skein::ad::{ServerKind, SignedAd, TokenIssuer};
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle, Options, StartError};
use skein::fixtures;
use skein::trust::Trust;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// Config lines for a director whose requests (headers and body) get one second.
const ONE_SECOND_REQUESTS: &str = "[limits]\nrequest_timeout = \"1s\"";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn trust() -> Trust {
    fixtures::trust(&[
        ("director-a", ServerKind::Director, &[]),
        ("director-b", ServerKind::Director, &[]),
        ("origin-1", ServerKind::Origin, &["/test"]),
    ])
}

/// Director config text; `extra` is appended (e.g. `[limits]`).
fn config_text(name: &str, addr: SocketAddr, scheme: &str, dir: &Path, extra: &str) -> String {
    config_with_peers(name, addr, scheme, dir, extra, &[])
}

fn config_with_peers(
    name: &str,
    addr: SocketAddr,
    scheme: &str,
    dir: &Path,
    extra: &str,
    peers: &[&str],
) -> String {
    format!(
        r#"
name = "{name}"
listen = "{addr}"
advertise_url = "{scheme}://{host}:{port}"
data_dir = "{data}"
[identity]
key = "{dir}/{name}.key"
[federation]
trust = "{dir}/trust.toml"
directors = {peers:?}
{extra}
"#,
        host = if scheme == "https" {
            "localhost".to_string()
        } else {
            addr.ip().to_string()
        },
        port = addr.port(),
        data = dir.join(format!("{name}-data")).display(),
        dir = dir.display(),
    )
}

async fn start(name: &str, dir: &Path, extra: &str) -> DirectorHandle {
    try_start(name, dir, "http", extra, &[]).await.unwrap()
}

/// Starts a director with the test trust and its fixture key.
async fn try_start(
    name: &str,
    dir: &Path,
    scheme: &str,
    extra: &str,
    peers: &[&str],
) -> Result<DirectorHandle, StartError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = config_with_peers(name, addr, scheme, dir, extra, peers);
    let config = DirectorConfig::from_toml(&text).unwrap();
    let options = Options {
        trust: Some(trust()),
        key: Some(fixtures::key_for(name)),
        ..Options::default()
    };
    Director::start_with(config, options, listener, CancellationToken::new()).await
}

/// An ad from origin-1 serving `namespaces`, started `age_ms` ago.
fn origin_ad(namespaces: &[&str], started_at: u64, generation: u64) -> skein::ad::Ad {
    fixtures::ad(
        "origin-1",
        ServerKind::Origin,
        namespaces,
        started_at,
        generation,
    )
}

fn signed_by(ad: skein::ad::Ad, signer: &str) -> SignedAd {
    ad.sign(&fixtures::key_for(signer))
}

struct Answer {
    status: u16,
    body: Value,
}

async fn post_raw(url: &str, body: Vec<u8>) -> Answer {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer { status, body }
}

async fn register(director: &DirectorHandle, ad: &SignedAd) -> Answer {
    let url = format!("{}/api/v1.0/director/registerOrigin", director.url());
    post_raw(&url, serde_json::to_vec(ad).unwrap()).await
}

fn assert_refused(answer: &Answer, status: u16, error: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    assert_eq!(answer.body["error"], error, "body: {}", answer.body);
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "no detail: {}",
        answer.body
    );
}

/// What the director routes and lists: (kind, name, started_at, generation) of each ad.
async fn snapshot(director: &DirectorHandle) -> Vec<(String, String, u64, u64)> {
    let url = format!("{}/api/v1.0/director/ads", director.url());
    let listing: Vec<Value> = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let mut ads: Vec<_> = listing
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or_default().to_string(),
                a["name"].as_str().unwrap_or_default().to_string(),
                a["instance_id"]["started_at"].as_u64().unwrap_or_default(),
                a["generation"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    ads.sort();
    ads
}

/// The redirect for /test/x still points at origin-1.
async fn still_routes(director: &DirectorHandle) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/test/x", director.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "http://origin-1.example:8443/test/x");
}

#[tokio::test]
async fn refused_ads_answer_json_and_leave_the_view_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = start("director-a", dir.path(), "[limits]\nmax_body = \"64KiB\"").await;
    let t0 = now_ms() - 60_000;
    let good = signed_by(origin_ad(&["/test"], t0, 5), "origin-1");
    let answer = register(&d, &good).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["status"], "accepted");
    let before = snapshot(&d).await;
    assert!(before.iter().any(|a| a.1 == "origin-1" && a.3 == 5));
    still_routes(&d).await;

    // Unknown signer.
    let stranger = fixtures::ad("stranger", ServerKind::Origin, &["/test"], t0, 1);
    assert_refused(
        &register(&d, &signed_by(stranger, "stranger")).await,
        403,
        "untrusted",
    );
    // A namespace outside the trusted prefixes.
    let greedy = signed_by(origin_ad(&["/test", "/secret"], t0, 6), "origin-1");
    assert_refused(&register(&d, &greedy).await, 403, "forbidden_namespace");
    // A field changed after signing.
    let mut tampered = signed_by(origin_ad(&["/test"], t0, 7), "origin-1");
    tampered.ad.data_url = "http://evil.example:8443".into();
    assert_refused(&register(&d, &tampered).await, 403, "bad_signature");
    // Signed with somebody else's key.
    let forged = signed_by(origin_ad(&["/test"], t0, 8), "mallory");
    assert_refused(&register(&d, &forged).await, 403, "bad_signature");
    // A director's key does not make an origin.
    let wrong_kind = signed_by(
        fixtures::ad("director-b", ServerKind::Origin, &["/test"], t0, 1),
        "director-b",
    );
    assert_refused(&register(&d, &wrong_kind).await, 403, "untrusted");
    // Replay of the accepted ad: duplicate, nothing changes.
    let replay = register(&d, &good).await;
    assert_eq!(
        (replay.status, replay.body["status"].as_str()),
        (200, Some("duplicate"))
    );
    // An older instance of the same server: stale.
    let older = signed_by(origin_ad(&["/test"], t0 - 1000, 99), "origin-1");
    let answer = register(&d, &older).await;
    assert_eq!(
        (answer.status, answer.body["status"].as_str()),
        (200, Some("stale"))
    );
    // A start time far in the future would win every comparison: refused.
    let future = signed_by(origin_ad(&["/test"], now_ms() + 3_600_000, 1), "origin-1");
    assert_refused(&register(&d, &future).await, 400, "invalid_ad");
    // Already expired.
    let mut expired = origin_ad(&["/test"], t0, 9);
    expired.expires_at = now_ms() - 1;
    assert_refused(
        &register(&d, &signed_by(expired, "origin-1")).await,
        400,
        "invalid_ad",
    );
    // Hostile token issuer (would land in X-Pelican-Authorization).
    for url in [
        "javascript:alert(1)",
        "https://issuer.example/a, issuer=https://evil.example",
        "https://issuer.example/\r\nSet-Cookie: x=1",
    ] {
        let mut ad = origin_ad(&["/test"], t0, 10);
        ad.namespaces[0].issuers.push(TokenIssuer {
            issuer_url: url.into(),
            base_paths: vec!["/test".into()],
        });
        assert_refused(
            &register(&d, &signed_by(ad, "origin-1")).await,
            400,
            "invalid_ad",
        );
    }
    // A data URL that is not http(s).
    let mut ad = origin_ad(&["/test"], t0, 11);
    ad.data_url = "file:///etc/passwd".into();
    assert_refused(
        &register(&d, &signed_by(ad, "origin-1")).await,
        400,
        "invalid_ad",
    );
    // A namespace with a dot segment.
    let ad = origin_ad(&["/test/../etc"], t0, 12);
    assert_refused(
        &register(&d, &signed_by(ad, "origin-1")).await,
        400,
        "invalid_ad",
    );
    // An origin ad at the cache endpoint.
    let url = format!("{}/api/v1.0/director/registerCache", d.url());
    let answer = post_raw(&url, serde_json::to_vec(&good).unwrap()).await;
    assert_refused(&answer, 400, "wrong_endpoint");
    // Bodies: too large, not JSON, JSON of the wrong shape, empty.
    let register_url = format!("{}/api/v1.0/director/registerOrigin", d.url());
    let mut huge = serde_json::to_vec(&good).unwrap();
    huge.extend(std::iter::repeat_n(b' ', 80 * 1024));
    assert_refused(
        &post_raw(&register_url, huge).await,
        413,
        "payload_too_large",
    );
    for body in [
        &b"{\"name\": \"origin-1\", "[..],
        b"[1, 2, 3]",
        b"{\"name\": 5}",
        b"",
        b"\xff\xfe\x00",
    ] {
        let answer = post_raw(&register_url, body.to_vec()).await;
        assert_refused(&answer, 400, "malformed_json");
    }
    let forward_url = format!("{}/api/v1.0/director/forward", d.url());
    let answer = post_raw(&forward_url, b"{\"nope\": true}".to_vec()).await;
    assert_refused(&answer, 400, "malformed_json");

    assert_eq!(snapshot(&d).await, before, "the view changed");
    still_routes(&d).await;
    d.shutdown().await;
}

/// Sends raw bytes and reads the whole answer (the request asks to close).
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[tokio::test]
async fn hostile_paths_are_refused_without_header_injection() {
    let dir = tempfile::tempdir().unwrap();
    let d = start("director-a", dir.path(), "").await;
    let t0 = now_ms() - 60_000;
    assert_eq!(
        register(&d, &signed_by(origin_ad(&["/test"], t0, 1), "origin-1"))
            .await
            .status,
        200
    );
    let before = snapshot(&d).await;
    let long = format!("/test/{}", "a".repeat(5000));
    let paths = [
        "/test/../etc/passwd",
        "/test/%2e%2e/etc/passwd",
        "/test/%2E%2e/%2e%2E/etc",
        "/api/v1.0/director/object/test/..%2f..%2fetc",
        "/api/v1.0/director/origin/test/%2e%2e",
        "/test/a%00b",
        "/test/a%0d%0aSet-Cookie:%20pwned=1",
        "/test/a%0aLocation:%20http://evil.example",
        "/test/%ff%fe",
        "/test/%c0%ae%c0%ae/etc",
        long.as_str(),
    ];
    let addr = d.addr();
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, request.as_bytes()))
            .await
            .unwrap();
        assert_eq!(status_of(&answer), 400, "{path}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert!(!head.contains("set-cookie"), "{path}: {head}");
        assert!(!head.contains("location"), "{path}: {head}");
        assert!(!head.contains("pwned"), "{path}: {head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "bad_path", "{path}");
    }
    // Raw control bytes in the request line never reach the router: hyper answers 400.
    for request in [
        &b"GET /test/a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /test/a\rSet-Cookie: x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /test/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let request = request.to_vec();
        let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, &request))
            .await
            .unwrap();
        assert_eq!(status_of(&answer), 400, "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("set-cookie"));
    }
    // A header flood is refused by hyper before any handler runs.
    let mut flood = String::from("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        flood.push_str(&format!("X-Flood-{i}: {}\r\n", "y".repeat(100)));
    }
    flood.push_str("\r\n");
    let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, flood.as_bytes()))
        .await
        .unwrap();
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(snapshot(&d).await, before);
    still_routes(&d).await;
    d.shutdown().await;
}

#[tokio::test]
async fn slow_body_gets_408_and_slow_headers_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = start("director-a", dir.path(), ONE_SECOND_REQUESTS).await;
    let addr = d.addr();
    // Headers promise 100 bytes; a few arrive, then nothing.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = slow_post(addr);
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"], "timeout");

    // Half a request, then nothing: the connection is closed (no handler ran).
    let closed =
        tokio::task::spawn_blocking(move || is_cut(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n"));
    assert!(closed.await.unwrap(), "a slow client kept its connection");
    // Nothing sent at all after connecting: cut as well.
    let silent = tokio::task::spawn_blocking(move || is_cut(addr, b""));
    assert!(silent.await.unwrap(), "a silent client kept its connection");
    // And the director still answers, in HTTP/1.1 and in HTTP/2 with prior knowledge.
    let health = reqwest::get(format!("{}/health", d.url())).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let health = h2c.get(format!("{}/health", d.url())).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status().as_u16(), 200);
    d.shutdown().await;
}

/// Starts a registration whose body (100 bytes promised) never finishes.
fn slow_post(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            b"POST /api/v1.0/director/registerOrigin HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":\"",
        )
        .unwrap();
    stream
}

/// True if the director has answered (or closed) a [`slow_post`] connection, without
/// waiting for it.
fn was_answered(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let answered =
        !matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    answered
}

/// Sends `bytes` and waits: true if the director closes the connection.
fn is_cut(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    // Ok(_) at EOF, an error on reset; a read timeout means it was never cut.
    match stream.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Polls `/health` until it answers `status`.
async fn health_until(d: &DirectorHandle, status: u16) -> reqwest::Response {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let response = client
            .get(format!("{}/health", d.url()))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == status {
            return response;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "/health never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an ingest-class request (an empty forward batch, harmless when admitted) until it
/// answers `status`.
async fn ingest_until(d: &DirectorHandle, status: u16) -> reqwest::Response {
    ingest_until_held(d, &mut [], || unreachable!("no holder to replace"), status).await
}

/// [`ingest_until`] while `holders` hold ingest places. A probe can reach the director
/// before a holder's head does (on a loaded machine), and that holder is then the one
/// refused: every holder answered meanwhile is replaced with a new one from `open`.
async fn ingest_until_held(
    d: &DirectorHandle,
    holders: &mut [TcpStream],
    open: impl Fn() -> TcpStream,
    status: u16,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let response = client
            .post(format!("{}/api/v1.0/director/forward", d.url()))
            .json(&serde_json::json!([]))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == status {
            return response;
        }
        for holder in holders.iter_mut() {
            if was_answered(holder) {
                *holder = open();
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "an empty forward never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_route_class_sheds_with_503_on_its_own_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        "director-a",
        dir.path(),
        "[limits]\nmax_concurrent_ingest = 1\nrequest_timeout = \"30s\"",
    )
    .await;
    let ad = signed_by(origin_ad(&["/test"], now_ms() - 60_000, 1), "origin-1");
    assert_eq!(register(&d, &ad).await.status, 200);
    let addr = d.addr();
    // Hold the only ingest slot: a registration whose body never finishes.
    let mut holder = [slow_post(addr)];
    let shed = ingest_until_held(&d, &mut holder, || slow_post(addr), 503).await;
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    // Redirects, listings and health have budgets of their own.
    still_routes(&d).await;
    health_until(&d, 200).await;
    let ads = reqwest::get(format!("{}/api/v1.0/director/ads", d.url()))
        .await
        .unwrap();
    assert_eq!(ads.status().as_u16(), 200);
    // Releasing the slot restores ingest.
    drop(holder);
    ingest_until(&d, 200).await;
    d.shutdown().await;
}

#[tokio::test]
async fn one_client_gets_only_its_share_of_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        "director-a",
        dir.path(),
        "[limits]\nmax_ingest_per_client = 3\nrequest_timeout = \"30s\"",
    )
    .await;
    let addr = d.addr();
    let mut holders =
        tokio::task::spawn_blocking(move || (0..3).map(|_| slow_post(addr)).collect::<Vec<_>>())
            .await
            .unwrap();
    let refused = ingest_until_held(&d, &mut holders, || slow_post(addr), 429).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    assert!(
        body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    drop(holders);
    ingest_until(&d, 200).await;
    d.shutdown().await;
}

/// 1,100 connections trickle registration bodies (more than the whole ingest budget);
/// redirects keep answering 307 from their own budget, none shed. The latencies are
/// printed, not asserted (speed belongs in benchmarks).
#[tokio::test]
async fn a_flood_of_slow_bodies_leaves_redirects_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        "director-a",
        dir.path(),
        "[limits]\nmax_ingest_per_client = 100000\nrequest_timeout = \"30s\"",
    )
    .await;
    let ad = signed_by(origin_ad(&["/test"], now_ms() - 60_000, 1), "origin-1");
    assert_eq!(register(&d, &ad).await.status, 200);
    let addr = d.addr();
    let slow =
        tokio::task::spawn_blocking(move || (0..1100).map(|_| slow_post(addr)).collect::<Vec<_>>())
            .await
            .unwrap();
    // The flood holds the whole ingest budget...
    ingest_until(&d, 503).await;
    // ...and redirects do not notice.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let response = client
            .get(format!("{}/test/x", d.url()))
            .send()
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(response.status().as_u16(), 307);
    }
    latencies.sort();
    println!(
        "redirects during 1,100 slow bodies: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    drop(slow);
    ingest_until(&d, 200).await;
    d.shutdown().await;
}

#[tokio::test]
async fn body_limit_is_413_json_through_the_router() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let d = start("director-a", dir.path(), "").await;
    let limits = skein::http::HttpLimits {
        max_body: 1024,
        request_timeout: Duration::from_secs(5),
        budgets: skein::http::BudgetLimits {
            redirect: 8,
            ingest: 8,
            bulk: 8,
            ingest_per_client: 8,
        },
    };
    let app = skein::http::router(d.state().clone(), limits);
    let request = axum::http::Request::post("/api/v1.0/director/registerOrigin")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(vec![b' '; 4096]))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "payload_too_large");
    d.shutdown().await;
}

#[tokio::test]
async fn exposed_private_keys_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("director-a.key");
    skein::keys::generate(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config =
        DirectorConfig::from_toml(&config_text("director-a", addr, "http", dir.path(), ""))
            .unwrap();
    let refused = Director::start(config, listener, CancellationToken::new()).await;
    match refused {
        Err(StartError::Key(error)) => assert!(error.to_string().contains("chmod 600")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started with a group-readable key"),
    }
    // Same for the TLS key.
    let (_, cert, tls_key) = test_pki();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, tls_key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    match try_start("director-a", dir.path(), "https", &extra, &[]).await {
        Err(StartError::Tls(error)) => assert!(error.to_string().contains("chmod 600")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started with a world-readable TLS key"),
    }
}

/// A test CA and a certificate for localhost and 127.0.0.1 signed by it (PEM):
/// (CA certificate, server certificate, server key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "skein test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "director-a");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn tls_director_accepts_ads_from_an_advertiser_trusting_the_ca() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    write_private(&dir.path().join("tls.key"), &key);
    let extra = format!(
        "[tls]\ncert = \"{0}/tls.crt\"\nkey = \"{0}/tls.key\"",
        dir.path().display()
    );
    let d = try_start("director-a", dir.path(), "https", &extra, &[])
        .await
        .unwrap();
    let port = d.addr().port();
    assert!(d.url().starts_with("https://localhost:"));

    // Without the CA the handshake fails; plain HTTP on the TLS port gets nothing.
    let untrusting = skein::client::Client::new(Duration::from_secs(5), None).unwrap();
    assert!(untrusting.ready(d.url()).await.is_err());
    let plain = format!("http://127.0.0.1:{port}/health");
    assert!(reqwest::get(&plain).await.is_err());

    // An advertiser with the CA bundle delivers its ad over TLS.
    let seed = fixtures::key_for("origin-1").to_bytes();
    write_private(
        &dir.path().join("origin-1.key"),
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
    );
    let service = skein::config::ServiceConfig::from_toml(&format!(
        r#"
name = "origin-1"
kind = "origin"
data_url = "https://origin-1.example:8443"
web_url = "https://origin-1.example:8443"
key = "{dir}/origin-1.key"
directors = ["{url}"]
ca_bundle = "{dir}/ca.pem"
[[namespace]]
path = "/test"
public_reads = true
"#,
        dir = dir.path().display(),
        url = d.url(),
    ))
    .unwrap();
    let advertiser = skein::advertiser::Advertiser::new(service).unwrap();
    let deliveries = advertiser.advertise_once(skein::ad::AdStatus::Ok).await;
    assert!(
        deliveries.iter().any(|x| x.held()),
        "not delivered: {deliveries:?}"
    );
    // The typed client with the bundle sees it, over HTTP/2 or HTTP/1.1 alike.
    let client = skein::client::Client::new(Duration::from_secs(5), Some(&ca_path)).unwrap();
    assert!(client.ready(d.url()).await.unwrap());
    let ads = client.ads(d.url()).await.unwrap();
    assert!(ads.iter().any(|a| a.signed.ad.name == "origin-1"));
    // HTTP/1.1 over TLS (no h2 in ALPN) is served too.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    let health = http1
        .get(format!("{}/health", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    assert_eq!(health.status().as_u16(), 200);
    let located = client.locate(d.url(), "/test/x").await.unwrap();
    assert_eq!(
        located.location.as_deref(),
        Some("https://origin-1.example:8443/test/x")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn damaged_values_and_stores_are_set_aside_and_refilled_from_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let b = start("director-b", dir.path(), "").await;
    let peers = [b.url()];
    let a = try_start("director-a", dir.path(), "http", "", &peers)
        .await
        .unwrap();
    let t0 = now_ms() - 60_000;
    let ad = signed_by(origin_ad(&["/test"], t0, 3), "origin-1");
    assert_eq!(register(&a, &ad).await.status, 200);
    assert_eq!(register(&b, &ad).await.status, 200);
    a.shutdown().await;

    // 1. One damaged value: the store no longer matches its manifest, so it is moved
    // aside (its sound ads kept) and the damaged one is refetched from the peer.
    let data = dir.path().join("director-a-data");
    {
        let store = skein::store::Store::open(&data).unwrap();
        let mut bytes = skein::ad::StoredAd::new(ad.clone(), t0, 900_000).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        store.overwrite_raw_ad(&ad.ad.key(), &bytes).unwrap();
        store.flush_blocking().unwrap();
    }
    let a = try_start("director-a", dir.path(), "http", "", &peers)
        .await
        .unwrap();
    wait_for_origin(&a).await;
    {
        let listing = reqwest::get(format!("{}/health", a.url())).await.unwrap();
        assert_eq!(listing.status().as_u16(), 200);
    }
    a.shutdown().await;

    // 2. A store that cannot be opened: moved aside, the director starts empty and
    // catches up from its peer.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"this is not a sled file").unwrap();
        }
    }
    let a = try_start("director-a", dir.path(), "http", "", &peers)
        .await
        .unwrap();
    wait_for_origin(&a).await;
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt-"))
        .collect();
    assert_eq!(aside.len(), 2, "a damaged store was not kept aside");
    a.shutdown().await;
    b.shutdown().await;
}

async fn wait_for_origin(d: &DirectorHandle) {
    let started = Instant::now();
    loop {
        if snapshot(d).await.iter().any(|a| a.1 == "origin-1") {
            still_routes(d).await;
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "never caught up from the peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_store_in_use_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let a = start("director-a", dir.path(), "").await;
    // A second director pointed at the same data directory.
    match try_start("director-a", dir.path(), "http", "", &[]).await {
        Err(StartError::Store(error)) => assert!(error.to_string().contains("lock"), "{error}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("two directors share one store"),
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt-")), "{names:?}");
    let health = reqwest::get(format!("{}/ready", a.url())).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    a.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_drains_in_flight_requests_and_keeps_their_ads() {
    let dir = tempfile::tempdir().unwrap();
    // One ingest slot, so that a shed forward proves the registration reached its handler
    // (a connection still in the accept queue is reset when the listener closes).
    let d = start(
        "director-a",
        dir.path(),
        "[limits]\nmax_concurrent_ingest = 1",
    )
    .await;
    let addr = d.addr();
    let ad = signed_by(origin_ad(&["/test"], now_ms() - 60_000, 1), "origin-1");
    let body = serde_json::to_vec(&ad).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    // A registration in flight: headers and half the body sent.
    let open = || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let head = format!(
            "POST /api/v1.0/director/registerOrigin HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&first).unwrap();
        stream
    };
    let mut held = [open()];
    ingest_until_held(&d, &mut held, open, 503).await;
    let [mut stream] = held;
    let stopping = tokio::spawn(d.shutdown());
    // New connections are refused once the listener is closed.
    let started = Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(started.elapsed() < DEADLINE, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The request in flight still completes and is acknowledged.
    let answer = tokio::task::spawn_blocking(move || {
        stream.write_all(&rest).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("accepted"), "{answer}");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("shutdown never returned")
        .unwrap();
    // What was acknowledged survived the stop.
    let d = start("director-a", dir.path(), "").await;
    assert!(snapshot(&d).await.iter().any(|a| a.1 == "origin-1"));
    still_routes(&d).await;
    d.shutdown().await;
}

#[tokio::test]
async fn a_request_outliving_the_drain_is_cut_and_shutdown_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = start("director-a", dir.path(), ONE_SECOND_REQUESTS).await;
    let addr = d.addr();
    // Never finishes its body; the drain is bounded, so shutdown still returns.
    let stream = tokio::task::spawn_blocking(move || slow_post(addr))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, d.shutdown())
        .await
        .expect("shutdown waited for a stuck client");
    drop(stream);
}
