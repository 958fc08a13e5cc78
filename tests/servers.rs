//! The origin and cache servers against a real director, all in one process on
//! 127.0.0.1 port 0 with temp dirs: the client flow, hits, failures, path safety, writes.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use skein::ad::{AdStatus, ServerKind};
use skein::advertiser::Advertiser;
use skein::client::Client;
use skein::director::DirectorHandle;
use skein::servers::{ServerHandle, cache, origin};

use common::services::service;

const HELLO: &[u8] = b"hello from the origin\n";

/// A director, an origin (`/test` read-only with listings, `/up` writable) and a
/// cache for `/test`.
struct Federation {
    dir: tempfile::TempDir,
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

        let director = common::services::director(
            root,
            &[
                ("origin-1", ServerKind::Origin, &["/test", "/up"]),
                ("origin-2", ServerKind::Origin, &["/test"]),
                ("cache-1", ServerKind::Cache, &["/test"]),
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
[[namespace]]
path = "/test"
public_reads = true
listings = true
[[namespace]]
path = "/up"
public_reads = true
writes = true
"#,
                export.display()
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
"#,
                root.join("cache").display(),
            ),
        )?;
        let cache = cache::start(cache_config, cache_listener, CancellationToken::new()).await?;

        let fed = Self {
            dir,
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
        Ok(())
    }
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
    let created = http.put(&target).body(body.clone()).send().await?;
    assert_eq!(created.status(), 201);
    let back = get(&target).await?;
    assert_eq!(back.bytes().await?.as_ref(), body.as_slice());
    let replaced = http.put(&target).body("short").send().await?;
    assert_eq!(replaced.status(), 204);
    assert_eq!(get(&target).await?.text().await?, "short");
    assert_eq!(
        std::fs::read_to_string(fed.export().join("new/data.bin"))?,
        "short"
    );

    let head = http.head(&target).send().await?;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5");

    let deleted = http.delete(&target).send().await?;
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
