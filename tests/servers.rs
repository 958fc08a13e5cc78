//! The origin and cache servers against a real director, all in one process on
//! 127.0.0.1 port 0 with temp dirs: the client flow, hits, failures, path safety, writes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use skein::ad::{AdStatus, ServerKind};
use skein::advertiser::Advertiser;
use skein::client::Client;
use skein::config::ServiceConfig;
use skein::director::DirectorHandle;
use skein::eckey::EcKey;
use skein::fixtures;
use skein::scitokens::WLCG_ANY_AUDIENCE;
use skein::servers::{ServerHandle, cache, origin};

use common::services::service;

const HELLO: &[u8] = b"hello from the origin\n";
/// The token issuer of `/up` (keys from a JWKS file) and `/secret` (keys from a URL).
const ISSUER: &str = "https://issuer.test";
/// Largest upload the origin takes.
const MAX_UPLOAD: usize = 1 << 20;

/// A director, an origin (`/test` read-only with listings, `/up` writable with tokens,
/// `/secret` readable with tokens only) and a cache for `/test` and `/secret`.
struct Federation {
    dir: tempfile::TempDir,
    issuer: EcKey,
    jwks_server: tokio::task::JoinHandle<()>,
    director: Option<DirectorHandle>,
    origin: Option<ServerHandle>,
    cache: Option<ServerHandle>,
    client: Client,
}

impl Federation {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let export = root.join("export");
        std::fs::create_dir_all(export.join("sub"))?;
        std::fs::write(export.join("hello.txt"), HELLO)?;
        std::fs::write(export.join("sub/big.bin"), big())?;
        std::fs::create_dir_all(export.join("private"))?;
        std::fs::write(export.join("private/data.txt"), "classified")?;
        let issuer = EcKey::generate();
        let jwks_file = root.join("issuer-jwks.json");
        std::fs::write(&jwks_file, issuer.public_jwks().to_string())?;
        let (jwks_url, jwks_server) = serve_jwks(issuer.public_jwks()).await?;

        let director = common::services::director(
            root,
            &[
                ("origin-1", ServerKind::Origin, &["/test", "/up", "/secret"]),
                ("origin-2", ServerKind::Origin, &["/test"]),
                ("cache-1", ServerKind::Cache, &["/test", "/secret"]),
            ],
            "",
        )
        .await?;
        let federation = director.url().to_string();

        let origin_listener = TcpListener::bind("127.0.0.1:0").await?;
        let origin_url = format!("http://{}", origin_listener.local_addr()?);
        let origin_config = service(
            root,
            "origin-1",
            &origin_url,
            &federation,
            &format!(
                r#"export = "{}"
max_upload = {MAX_UPLOAD}
[[namespace]]
path = "/test"
public_reads = true
listings = true
[[namespace]]
path = "/up"
public_reads = true
writes = true
issuer = "{ISSUER}"
jwks = "{}"
[[namespace]]
path = "/secret"
listings = true
issuer = "{ISSUER}"
jwks_url = "{jwks_url}"
"#,
                export.display(),
                jwks_file.display(),
            ),
        )?;
        let origin =
            origin::start(origin_config, origin_listener, CancellationToken::new()).await?;

        let cache_listener = TcpListener::bind("127.0.0.1:0").await?;
        let cache_url = format!("http://{}", cache_listener.local_addr()?);
        let cache_config = service(
            root,
            "cache-1",
            &cache_url,
            &federation,
            &format!(
                r#"cache_dir = "{}"
# A dead director first: the cache must fail over to the live one.
directors = ["http://127.0.0.1:1", "{federation}"]
[[namespace]]
path = "/test"
public_reads = true
listings = true
[[namespace]]
path = "/secret"
listings = true
"#,
                root.join("cache").display(),
            ),
        )?;
        let cache = cache::start(cache_config, cache_listener, CancellationToken::new()).await?;

        let fed = Self {
            dir,
            issuer,
            jwks_server,
            director: Some(director),
            origin: Some(origin),
            cache: Some(cache),
            client: Client::new(Duration::from_secs(10), None)?,
        };
        fed.wait_until_routed().await?;
        Ok(fed)
    }

    fn director_url(&self) -> String {
        self.director
            .as_ref()
            .map(|d| d.url().to_string())
            .unwrap_or_default()
    }

    fn origin_url(&self) -> String {
        self.origin.as_ref().map(|o| o.url()).unwrap_or_default()
    }

    fn cache_url(&self) -> String {
        self.cache.as_ref().map(|c| c.url()).unwrap_or_default()
    }

    fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    /// Polls until reads of `/test` go to the cache, origin reads and writes to the origin.
    async fn wait_until_routed(&self) -> anyhow::Result<()> {
        let director = self.director_url();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let read = self.client.locate(&director, "/test/hello.txt").await;
            let origin = self
                .client
                .locate(&director, "/api/v1.0/director/origin/test/hello.txt")
                .await;
            let write = self
                .client
                .locate_with(reqwest::Method::PUT, &director, "/up/x")
                .await;
            let starts = |r: &Result<skein::client::Located, _>, base: &str| {
                r.as_ref()
                    .ok()
                    .and_then(|l| l.location.as_deref())
                    .is_some_and(|l| l.starts_with(base))
            };
            if starts(&read, &self.cache_url())
                && starts(&origin, &self.origin_url())
                && starts(&write, &self.origin_url())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "director never routed the namespaces: read {read:?}, origin {origin:?}, write {write:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(cache) = self.cache.take() {
            cache.shutdown().await?;
        }
        if let Some(origin) = self.origin.take() {
            origin.shutdown().await?;
        }
        if let Some(director) = self.director.take() {
            director.shutdown().await;
        }
        self.jwks_server.abort();
        Ok(())
    }

    /// A token from the namespaces' issuer with `scope`, valid for the next minute.
    fn token(&self, scope: &str) -> String {
        mint(&self.issuer, ISSUER, scope, WLCG_ANY_AUDIENCE, -60, 60)
    }
}

/// Serves `jwks` at `/jwks` on a port of its own; returns the URL.
async fn serve_jwks(
    jwks: serde_json::Value,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/jwks", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

/// An ES256 WLCG-style token: `nbf` and `exp` relative to now, in seconds.
fn mint(key: &EcKey, iss: &str, scope: &str, aud: &str, nbf: i64, exp: i64) -> String {
    fixtures::access_token(key, iss, scope, aud, nbf, exp).expect("a token")
}

fn big() -> Vec<u8> {
    (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Sends a request line as given (no URL normalisation) and returns status and body.
async fn raw(addr: SocketAddr, method: &str, target: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let status = text.get(9..12).context("short response")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

fn is_error_json(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"].is_string() && v["detail"].is_string())
}

async fn get(url: &str) -> anyhow::Result<reqwest::Response> {
    Ok(reqwest::Client::new().get(url).send().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_reads_through_the_cache_which_keeps_serving_without_the_origin()
-> anyhow::Result<()> {
    let mut fed = Federation::start().await?;
    let located = fed
        .client
        .locate(&fed.director_url(), "/test/hello.txt")
        .await?;
    let location = located.location.context("no Location")?;
    assert_eq!(location, format!("{}/test/hello.txt", fed.cache_url()));

    let first = get(&location).await?;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["content-length"], HELLO.len().to_string());
    assert_eq!(first.bytes().await?, HELLO);

    let second = get(&location).await?;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.bytes().await?, HELLO);

    let ranged = reqwest::Client::new()
        .get(&location)
        .header("range", "bytes=6-9")
        .send()
        .await?;
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 6-9/{}", HELLO.len())
    );
    assert_eq!(ranged.bytes().await?, &HELLO[6..10]);

    // Concurrent misses for one bigger object: everyone gets the same whole bytes.
    let big_url = format!("{}/test/sub/big.bin", fed.cache_url());
    let reads = (0..8).map(|_| get(&big_url));
    let want = big();
    for response in futures::future::join_all(reads).await {
        let response = response?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await?.as_ref(), want.as_slice());
    }

    // The origin goes away; what the cache holds is still served.
    fed.origin.take().context("origin")?.shutdown().await?;
    let after = get(&location).await?;
    assert_eq!(after.status(), 200);
    assert_eq!(after.headers()["x-cache"], "HIT");
    assert_eq!(after.bytes().await?, HELLO);

    // Something it never fetched now fails cleanly, as JSON.
    std::fs::write(fed.export().join("late.txt"), "late")?;
    let late = get(&format!("{}/test/late.txt", fed.cache_url())).await?;
    assert!(late.status().is_client_error() || late.status().is_server_error());
    assert!(is_error_json(&late.text().await?));
    fed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_paths_get_json_errors() -> anyhow::Result<()> {
    let fed = Federation::start().await?;
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("secret"), "secret")?;
    std::os::unix::fs::symlink(outside.path(), fed.export().join("escape"))?;
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        fed.export().join("secret-link"),
    )?;

    let origin = fed.origin.as_ref().context("origin")?.addr();
    let cache = fed.cache.as_ref().context("cache")?.addr();
    for addr in [origin, cache] {
        for target in [
            "/test/../secret",
            "/test/%2e%2e/%2e%2e/etc/passwd",
            "/test/a%00b",
            "/test/a%0d%0aSet-Cookie:x",
            "/test/sub/./big.bin",
            "/test/.skein-tmp-0123",
        ] {
            let (status, body) = raw(addr, "GET", target).await?;
            assert_eq!(status, 400, "{addr} {target}: {body}");
            assert!(is_error_json(&body), "{target}: {body}");
        }
    }
    for target in ["/test/escape/secret", "/test/secret-link"] {
        let (status, body) = raw(origin, "GET", target).await?;
        assert_eq!(status, 403, "{target}: {body}");
        assert!(is_error_json(&body));
        assert!(!body.contains("secret\""), "{body}");
    }
    let (status, body) = raw(origin, "PUT", "/up/escape/planted").await?;
    assert_eq!(status, 401, "anonymous: {body}");
    let token = fed.token("storage.modify:/");
    let (status, body) = raw(origin, "PUT", &format!("/up/escape/planted?authz={token}")).await?;
    assert_eq!(status, 403, "{body}");
    assert!(!outside.path().join("planted").exists());

    let (status, body) = raw(origin, "GET", "/test/missing.txt").await?;
    assert_eq!(status, 404);
    assert!(is_error_json(&body));
    let (status, body) = raw(origin, "GET", "/elsewhere/x").await?;
    assert_eq!(status, 404);
    assert!(is_error_json(&body));
    fed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_lists_over_webdav_propfind() -> anyhow::Result<()> {
    let fed = Federation::start().await?;
    let outside = tempfile::tempdir()?;
    std::os::unix::fs::symlink(outside.path(), fed.export().join("escape"))?;
    let origin = fed.origin.as_ref().context("origin")?.addr();

    let (status, body) = raw(origin, "PROPFIND", "/test").await?;
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("<D:href>/test/</D:href>"), "{body}");
    assert!(body.contains("<D:href>/test/hello.txt</D:href>"), "{body}");
    assert!(
        body.contains(&format!(
            "<D:getcontentlength>{}</D:getcontentlength>",
            HELLO.len()
        )),
        "{body}"
    );
    assert!(
        body.contains("<D:href>/test/sub/</D:href><D:propstat><D:prop><D:displayname>sub</D:displayname><D:resourcetype><D:collection/>"),
        "{body}"
    );
    assert!(
        !body.contains("escape"),
        "a symlink out of the export is listed: {body}"
    );

    let (status, body) = raw(origin, "PROPFIND", "/test/hello.txt").await?;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body.matches("<D:response>").count(), 1, "{body}");
    let (status, _) = raw(origin, "PROPFIND", "/test/missing").await?;
    assert_eq!(status, 404);
    let (status, body) = raw(origin, "PROPFIND", "/up").await?;
    assert_eq!(status, 403, "listings are off for /up: {body}");

    // The cache relays what it does not hold and describes what it does from disk.
    let cache = fed.cache.as_ref().context("cache")?.addr();
    let (status, body) = raw(cache, "PROPFIND", "/test").await?;
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("<D:href>/test/hello.txt</D:href>"), "{body}");
    let (status, _) = raw(cache, "PROPFIND", "/test/missing").await?;
    assert_eq!(status, 404);
    assert_eq!(
        get(&format!("{}/test/hello.txt", fed.cache_url()))
            .await?
            .status(),
        200
    );
    let (status, body) = raw(cache, "PROPFIND", "/test/hello.txt").await?;
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("<D:resourcetype></D:resourcetype>"), "{body}");
    fed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_round_trip_where_allowed() -> anyhow::Result<()> {
    let fed = Federation::start().await?;
    let http = reqwest::Client::new();
    let put = fed
        .client
        .locate_with(
            reqwest::Method::PUT,
            &fed.director_url(),
            "/up/new/data.bin",
        )
        .await?;
    let target = put.location.context("no Location for PUT")?;
    assert_eq!(target, format!("{}/up/new/data.bin", fed.origin_url()));

    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let token = fed.token("storage.create:/new storage.modify:/new");
    let created = http
        .put(&target)
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let back = get(&target).await?;
    assert_eq!(back.bytes().await?.as_ref(), body.as_slice());
    let replaced = http
        .put(&target)
        .bearer_auth(&token)
        .body("short")
        .send()
        .await?;
    assert_eq!(replaced.status(), 204);
    assert_eq!(get(&target).await?.text().await?, "short");
    assert_eq!(
        std::fs::read_to_string(fed.export().join("new/data.bin"))?,
        "short"
    );

    let head = http.head(&target).send().await?;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5");

    let deleted = http.delete(&target).bearer_auth(&token).send().await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(get(&target).await?.status(), 404);

    let refused = http
        .put(format!("{}/test/nope.txt", fed.origin_url()))
        .body("x")
        .send()
        .await?;
    assert_eq!(refused.status(), 405);
    assert!(is_error_json(&refused.text().await?));
    assert!(!fed.export().join("nope.txt").exists());
    let refused = http
        .put(format!("{}/test/nope.txt", fed.cache_url()))
        .body("x")
        .send()
        .await?;
    assert_eq!(refused.status(), 405);
    assert!(is_error_json(&refused.text().await?));

    let listing: serde_json::Value = get(&format!("{}/test/", fed.origin_url()))
        .await?
        .json()
        .await?;
    let names: Vec<&str> = listing
        .as_array()
        .context("listing is an array")?
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"hello.txt") && names.contains(&"sub"),
        "{listing}"
    );
    let forbidden = get(&format!("{}/up/", fed.origin_url())).await?;
    assert_eq!(forbidden.status(), 403);
    fed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_fails_over_from_a_dead_origin() -> anyhow::Result<()> {
    let fed = Federation::start().await?;
    // origin-2 advertises /test but nothing listens at its data URL.
    let dead = "http://127.0.0.1:1";
    let config = service(
        fed.dir.path(),
        "origin-2",
        dead,
        &fed.director_url(),
        "[[namespace]]\npath = \"/test\"\npublic_reads = true\n",
    )?;
    let advertiser = Advertiser::new(config)?;
    assert!(
        advertiser
            .advertise_once(AdStatus::Ok)
            .await
            .iter()
            .any(|d| d.held())
    );
    // Find an object the director ranks the dead origin first for.
    let mut chosen = None;
    for i in 0..40 {
        let path = format!("/test/f{i}.txt");
        let api = format!("/api/v1.0/director/origin{path}");
        let located = fed.client.locate(&fed.director_url(), &api).await?;
        if located.location.is_some_and(|l| l.starts_with(dead)) && located.links.len() == 2 {
            chosen = Some(path);
            break;
        }
    }
    let path = chosen.context("the dead origin was never ranked first")?;
    std::fs::write(fed.export().join(&path["/test/".len()..]), "failover")?;
    let response = get(&format!("{}{path}", fed.cache_url())).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(response.text().await?, "failover");
    fed.stop().await
}

/// Sends `method` to `url` with an optional bearer token; returns status, headers and body.
async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<reqwest::Body>,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, String)> {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_enforces_tokens_and_upload_limits() -> anyhow::Result<()> {
    use reqwest::Method;
    let fed = Federation::start().await?;
    let origin = fed.origin_url();
    let up = format!("{origin}/up/a.txt");
    std::fs::write(fed.export().join("keep.txt"), "keep")?;

    // Anonymous writes and deletes: 401 JSON with WWW-Authenticate, nothing changes.
    let (status, headers, body) = send(Method::PUT, &up, None, Some("x".into())).await?;
    assert_eq!(status, 401, "{body}");
    assert!(
        is_error_json(&body) && body.contains("token_required"),
        "{body}"
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(!fed.export().join("a.txt").exists());
    let (status, _, body) =
        send(Method::DELETE, &format!("{origin}/up/keep.txt"), None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(fed.export().join("keep.txt").exists());

    // Scopes: read does not write, create does not overwrite, paths are confined.
    let read = fed.token("storage.read:/");
    let create = fed.token("storage.create:/");
    let modify = fed.token("storage.modify:/a.txt");
    let elsewhere = fed.token("storage.modify:/other");
    for (token, expected) in [
        (&read, 403),
        (&elsewhere, 403),
        (&create, 201),
        (&create, 403),
        (&modify, 204),
    ] {
        let (status, _, body) = send(Method::PUT, &up, Some(token), Some("data".into())).await?;
        assert_eq!(status, expected, "{body}");
        assert!(expected < 300 || is_error_json(&body), "{body}");
    }
    let (status, _, body) = send(Method::DELETE, &up, Some(&create), None).await?;
    assert_eq!(status, 403, "create does not delete: {body}");
    let (status, _, _) = send(Method::DELETE, &up, Some(&modify), None).await?;
    assert_eq!(status, 204);
    let (status, _, _) = send(
        Method::PUT,
        &format!("{up}?authz={create}"),
        None,
        Some("q".into()),
    )
    .await?;
    assert_eq!(status, 201, "?authz= carries the token too");

    // Tokens that must not pass: expired, not yet valid, wrong audience, wrong issuer,
    // signed by another key, HMAC, unsigned, garbage.
    let stranger = EcKey::generate();
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": ISSUER, "aud": WLCG_ANY_AUDIENCE, "scope": "storage.modify:/", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )?;
    let unsigned = {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            part(serde_json::json!({"alg": "none", "typ": "JWT"})),
            part(
                serde_json::json!({"iss": ISSUER, "aud": WLCG_ANY_AUDIENCE, "scope": "storage.modify:/", "exp": 4_000_000_000u64})
            )
        )
    };
    let bad = [
        mint(
            &fed.issuer,
            ISSUER,
            "storage.modify:/",
            WLCG_ANY_AUDIENCE,
            -120,
            -60,
        ),
        mint(
            &fed.issuer,
            ISSUER,
            "storage.modify:/",
            WLCG_ANY_AUDIENCE,
            300,
            600,
        ),
        mint(
            &fed.issuer,
            ISSUER,
            "storage.modify:/",
            "https://elsewhere.test",
            -60,
            60,
        ),
        mint(
            &fed.issuer,
            "https://other-issuer.test",
            "storage.modify:/",
            WLCG_ANY_AUDIENCE,
            -60,
            60,
        ),
        mint(
            &stranger,
            ISSUER,
            "storage.modify:/",
            WLCG_ANY_AUDIENCE,
            -60,
            60,
        ),
        hmac,
        unsigned,
        "not-a-jwt".to_string(),
    ];
    for token in &bad {
        let (status, _, body) = send(Method::PUT, &up, Some(token), Some("evil".into())).await?;
        assert_eq!(status, 401, "{token}: {body}");
        assert!(body.contains("invalid_token"), "{body}");
    }
    // The origin's own URL is an accepted audience.
    let own = mint(&fed.issuer, ISSUER, "storage.read:/", &origin, -60, 60);
    let (status, _, _) = send(
        Method::GET,
        &format!("{origin}/secret/private/data.txt"),
        Some(&own),
        None,
    )
    .await?;
    assert_eq!(status, 200);

    // Upload limit: announced or streamed, 413 and nothing stored.
    let too_big = vec![7u8; MAX_UPLOAD + 1];
    let big_url = format!("{origin}/up/big.bin");
    let modify_all = fed.token("storage.modify:/");
    let (status, _, body) = send(
        Method::PUT,
        &big_url,
        Some(&modify_all),
        Some(too_big.clone().into()),
    )
    .await?;
    assert_eq!(status, 413, "{body}");
    assert!(is_error_json(&body));
    let chunks = futures::stream::iter(
        too_big
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _, body) = send(
        Method::PUT,
        &big_url,
        Some(&modify_all),
        Some(reqwest::Body::wrap_stream(chunks)),
    )
    .await?;
    assert_eq!(status, 413, "chunked: {body}");
    assert!(!fed.export().join("big.bin").exists());

    // Non-public reads (keys from a JWKS URL): GET, listings and PROPFIND need read scope.
    let secret = format!("{origin}/secret/private/data.txt");
    let (status, _, body) = send(Method::GET, &secret, None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("classified"));
    let (status, _, body) = send(Method::GET, &format!("{origin}/secret/"), None, None).await?;
    assert_eq!(status, 401, "listing: {body}");
    let propfind = Method::from_bytes(b"PROPFIND")?;
    let (status, _, _) = send(
        propfind.clone(),
        &format!("{origin}/secret/private"),
        None,
        None,
    )
    .await?;
    assert_eq!(status, 401);
    let reader = fed.token("storage.read:/private");
    let (status, _, body) = send(Method::GET, &secret, Some(&reader), None).await?;
    assert_eq!((status, body.as_str()), (200, "classified"));
    let (status, _, _) = send(
        propfind,
        &format!("{origin}/secret/private"),
        Some(&reader),
        None,
    )
    .await?;
    assert_eq!(status, 207);
    let narrow = fed.token("storage.read:/elsewhere");
    let (status, _, body) = send(Method::GET, &secret, Some(&narrow), None).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");
    // Public namespaces still read anonymously.
    let (status, _, _) = send(Method::GET, &format!("{origin}/test/hello.txt"), None, None).await?;
    assert_eq!(status, 200);
    fed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_namespaces_pass_through_the_cache_and_the_director_says_so() -> anyhow::Result<()>
{
    use reqwest::Method;
    let fed = Federation::start().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let located = loop {
        let located = fed
            .client
            .locate(&fed.director_url(), "/secret/private/data.txt")
            .await;
        if let Ok(located) = located {
            break located;
        }
        if Instant::now() > deadline {
            bail!("the director never routed /secret: {located:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ns = located.namespace.context("X-Pelican-Namespace")?;
    assert!(
        ns.contains("namespace=/secret") && ns.contains("require-token=true"),
        "{ns}"
    );
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{}/secret/private/data.txt", fed.director_url()))
        .send()
        .await?;
    assert_eq!(
        raw.headers()["x-pelican-authorization"],
        format!("issuer={ISSUER}")
    );
    let up = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{}/up/x", fed.director_url()))
        .send()
        .await?;
    let up_ns = up.headers()["x-pelican-namespace"].to_str()?.to_string();
    assert!(
        up_ns.contains("require-token=false"),
        "public reads, token writes: {up_ns}"
    );

    let cached = format!("{}/secret/private/data.txt", fed.cache_url());
    let (status, headers, body) = send(Method::GET, &cached, None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let reader = fed.token("storage.read:/");
    for _ in 0..2 {
        let (status, headers, body) = send(Method::GET, &cached, Some(&reader), None).await?;
        assert_eq!((status, body.as_str()), (200, "classified"));
        assert_eq!(headers["x-cache"], "MISS", "never stored");
    }
    let (status, _, body) = send(
        Method::GET,
        &cached,
        Some(&fed.token("storage.read:/other")),
        None,
    )
    .await?;
    assert_eq!(status, 403, "the origin's refusal is relayed: {body}");
    let stored = walk(&fed.dir.path().join("cache"));
    assert!(stored.iter().all(|p| !p.contains("data.txt")), "{stored:?}");
    fed.stop().await
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.display().to_string());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pelican_protocol_posts_origin_advertise_with_advertise_tokens() -> anyhow::Result<()> {
    type Posts = std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;
    let posts: Posts = Default::default();
    let director = TcpListener::bind("127.0.0.1:0").await?;
    let director_url = format!("http://{}", director.local_addr()?);
    let app = {
        let posts = posts.clone();
        axum::Router::new().route(
            "/api/v1.0/director/{endpoint}",
            axum::routing::post(
                move |axum::extract::Path(endpoint): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap,
                      axum::Json(body): axum::Json<serde_json::Value>| {
                    let posts = posts.clone();
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        posts.lock().unwrap().push((endpoint, auth, body));
                        axum::Json(serde_json::json!({"status": "success"}))
                    }
                },
            ),
        )
    };
    let fake = tokio::spawn(async move {
        let _ = axum::serve(director, app).await;
    });

    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("origin.pem");
    let key = skein::eckey::generate(&key_path)?;
    std::fs::create_dir_all(dir.path().join("export"))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = ServiceConfig::from_toml(&format!(
        r#"name = "pelican-origin"
kind = "origin"
protocol = "pelican"
data_url = "{url}"
key = "{}"
directors = ["{director_url}"]
interval = "200ms"
export = "{}"
[[namespace]]
path = "/pel"
public_reads = true
"#,
        key_path.display(),
        dir.path().join("export").display()
    ))?;
    let origin = origin::start(config, listener, CancellationToken::new()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while posts.lock().unwrap().len() < 2 {
        if Instant::now() > deadline {
            bail!("the origin never advertised twice");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its issuer metadata and keys, as a Pelican server serves them.
    let metadata: serde_json::Value = get(&format!("{url}/.well-known/openid-configuration"))
        .await?
        .json()
        .await?;
    assert_eq!(metadata["issuer"], url.as_str());
    let jwks: jsonwebtoken::jwk::JwkSet = get(metadata["jwks_uri"].as_str().context("jwks_uri")?)
        .await?
        .json()
        .await?;
    origin.shutdown().await?;
    fake.abort();

    let posts = posts.lock().unwrap().clone();
    let (last_endpoint, _, last) = posts.last().context("posts")?;
    assert_eq!(last["status"], "shutting down", "withdrawn at shutdown");
    assert_eq!(last_endpoint, "registerOrigin");
    let mut generation = 0;
    for (endpoint, auth, body) in &posts {
        assert_eq!(endpoint, "registerOrigin");
        assert_eq!(body["name"], "pelican-origin");
        assert_eq!(body["data-url"], url.as_str());
        assert_eq!(body["namespaces"][0]["path"], "/pel");
        assert_eq!(
            body["registry-prefix"],
            format!("/origins/{}", &url["http://".len()..])
        );
        assert!(body["instanceID"] == posts[0].2["instanceID"]);
        assert!(body["startTime"].as_i64().unwrap_or_default() > 1_700_000_000);
        let this = body["generationID"].as_u64().context("generationID")?;
        assert!(this > generation, "generationID increases");
        generation = this;
        let token = auth.strip_prefix("Bearer ").context("Bearer")?;
        let header = jsonwebtoken::decode_header(token)?;
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let jwk = jwks
            .find(key.kid())
            .context("the served JWKS holds the kid")?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[director_url.as_str()]);
        validation.set_issuer(&[url.as_str()]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk)?,
            &validation,
        )?
        .claims;
        assert_eq!(claims["scope"], "pelican.advertise");
        assert!(
            claims["exp"].as_i64().unwrap_or_default() - claims["iat"].as_i64().unwrap_or_default()
                <= 60
        );
    }
    Ok(())
}
