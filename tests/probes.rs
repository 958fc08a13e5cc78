//! Health probes and presence checks against real servers on 127.0.0.1 port 0: a cache
//! whose disk dies or whose process stops loses its redirects and gets them back; with two
//! origins, clients go to the one holding the object; `?prefercached` prefers the cache
//! holding it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::eventually;
use common::services::service;
use skein::ad::ServerKind;
use skein::client::{Client, Located};
use skein::director::DirectorHandle;
use skein::fixtures;
use skein::servers::{ServerHandle, cache, origin};

const DEADLINE: Duration = Duration::from_secs(20);

/// A director probing every 200 ms, with presence answers kept for `ttl`.
async fn director(root: &Path, ttl: &str) -> anyhow::Result<DirectorHandle> {
    common::services::director(
        root,
        &[
            ("origin-1", ServerKind::Origin, &["/test"]),
            ("origin-2", ServerKind::Origin, &["/test"]),
            ("cache-1", ServerKind::Cache, &["/test"]),
            ("cache-2", ServerKind::Cache, &["/test"]),
        ],
        &format!(
            "[health]\ninterval = \"200ms\"\ntimeout = \"500ms\"\n\
             [presence]\npresent_ttl = \"{ttl}\"\nabsent_ttl = \"{ttl}\"\n"
        ),
    )
    .await
}

const NAMESPACE: &str = "[[namespace]]\npath = \"/test\"\npublic_reads = true\n";

/// A real origin named `name` exporting `files` (name, body) from its own directory.
async fn start_origin(
    root: &Path,
    name: &str,
    director: &str,
    files: &[&str],
) -> anyhow::Result<(ServerHandle, PathBuf)> {
    let export = root.join(format!("{name}-export"));
    std::fs::create_dir_all(&export)?;
    for file in files {
        std::fs::write(export.join(file), format!("{file} from {name}\n"))?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let extra = format!("export = {:?}\n{NAMESPACE}", export.display().to_string());
    let config = service(root, name, &url, director, &extra)?;
    Ok((
        origin::start(config, listener, CancellationToken::new()).await?,
        export,
    ))
}

/// A real cache named `name`, keeping objects in its own directory.
async fn start_cache(
    root: &Path,
    name: &str,
    director: &str,
) -> anyhow::Result<(ServerHandle, PathBuf)> {
    let dir = root.join(format!("{name}-dir"));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let extra = format!("cache_dir = {:?}\n{NAMESPACE}", dir.display().to_string());
    let config = service(root, name, &url, director, &extra)?;
    Ok((
        cache::start(config, listener, CancellationToken::new()).await?,
        dir,
    ))
}

async fn locate(director: &DirectorHandle, path: &str) -> Option<Located> {
    Client::new(Duration::from_secs(5), None)
        .ok()?
        .locate(director.url(), path)
        .await
        .ok()
}

/// True once a GET of `path` is redirected to a URL under `base`.
async fn goes_to(director: &DirectorHandle, path: &str, base: &str) -> bool {
    locate(director, path)
        .await
        .and_then(|l| l.location)
        .is_some_and(|l| l.starts_with(base))
}

/// Waits until redirects for `path` list both `a` and `b`.
async fn listed_both(director: &DirectorHandle, path: &str, a: &ServerHandle, b: &ServerHandle) {
    eventually(DEADLINE, "both servers routed", || async {
        let links = locate(director, path)
            .await
            .map(|l| l.links)
            .unwrap_or_default();
        links.iter().any(|l| l.starts_with(&a.url()))
            && links.iter().any(|l| l.starts_with(&b.url()))
    })
    .await;
}

async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

async fn get_text(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.text().await?)
}

/// The `/servers` entry of `name`.
async fn server_entry(director: &DirectorHandle, name: &str) -> anyhow::Result<serde_json::Value> {
    let servers = get_json(&format!("{}/api/v1.0/director/servers", director.url())).await?;
    let Some(list) = servers.as_array() else {
        bail!("servers is not an array: {servers}");
    };
    match list.iter().find(|s| s["name"] == name) {
        Some(entry) => Ok(entry.clone()),
        None => bail!("{name} not listed: {servers}"),
    }
}

/// `/servers` says `name` is up (`Some(true)`), down, or not probed yet (`None`).
async fn probed_up(director: &DirectorHandle, name: &str) -> Option<bool> {
    server_entry(director, name).await.ok()?["health"]["up"].as_bool()
}

/// The sum of a metric's samples whose line starts with `prefix`.
async fn metric(director: &DirectorHandle, prefix: &str) -> u64 {
    get_text(&format!("{}/metrics", director.url()))
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_whose_disk_dies_loses_its_redirects_until_it_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let director = director(root, "30s").await?;
    let (origin, _) = start_origin(root, "origin-1", director.url(), &["hello.txt"]).await?;
    let (cache, cache_dir) = start_cache(root, "cache-1", director.url()).await?;
    let (origin_url, cache_url) = (origin.url(), cache.url());
    let path = "/test/hello.txt";
    eventually(DEADLINE, "reads go to the cache", || {
        goes_to(&director, path, &cache_url)
    })
    .await;
    eventually(DEADLINE, "the cache is probed up", || async {
        probed_up(&director, "cache-1").await == Some(true)
    })
    .await;

    // The disk dies: the cache's health answer turns 503, and reads move to the origin.
    let dead = root.join("cache-1-dead");
    std::fs::rename(&cache_dir, &dead)?;
    let died = Instant::now();
    eventually(DEADLINE, "reads move to the origin", || {
        goes_to(&director, path, &origin_url)
    })
    .await;
    println!("reads left the dead cache after {:?}", died.elapsed());
    let entry = server_entry(&director, "cache-1").await?;
    assert_eq!(entry["kind"], "cache");
    assert_eq!(entry["status"], "ok");
    assert_eq!(entry["namespaces"], serde_json::json!(["/test"]));
    assert_eq!(entry["health"]["up"], false, "{entry}");
    assert!(entry["health"]["failures"].as_u64() >= Some(1));
    let error = entry["health"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("503"), "last error: {error}");
    assert!(entry["health"]["last_probe"].as_u64() > Some(0));
    assert_eq!(
        server_entry(&director, "origin-1").await?["health"]["up"],
        true
    );
    assert_eq!(
        metric(&director, "skein_server_down{kind=\"cache\"}").await,
        1
    );
    assert_eq!(
        metric(&director, "skein_server_up{kind=\"origin\"}").await,
        1
    );
    assert!(metric(&director, "skein_probes_total{result=\"error_status\"}").await >= 1);
    let page = get_text(&format!("{}/", director.url())).await?;
    assert!(page.contains(">down<"), "status page shows the cache down");
    // Down servers are ranked last, never dropped.
    let located = locate(&director, path).await.expect("located");
    assert!(located.links.iter().any(|l| l.starts_with(&cache.url())));

    // The disk is back: so are the redirects.
    std::fs::rename(&dead, &cache_dir)?;
    eventually(DEADLINE, "reads go back to the cache", || {
        goes_to(&director, path, &cache_url)
    })
    .await;
    assert_eq!(probed_up(&director, "cache-1").await, Some(true));

    cache.shutdown().await?;
    origin.shutdown().await?;
    director.shutdown().await;
    Ok(())
}

/// A cache that is only a health endpoint, on `listener`, until `cancel`.
fn serve_health(listener: TcpListener, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    let app = Router::new().route(skein::servers::HEALTH_PATH, get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_ranked_last_until_it_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let director = director(root, "30s").await?;
    let (origin, _) = start_origin(root, "origin-1", director.url(), &["hello.txt"]).await?;
    // A cache whose process dies without withdrawing its ad: its ad stays live.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let now = common::now_ms();
    let mut ad = fixtures::ad("cache-1", ServerKind::Cache, &["/test"], now, 1);
    ad.data_url = url.clone();
    ad.web_url = url.clone();
    ad.expires_at = now + 600_000;
    common::client()
        .register(director.url(), &ad.sign(&fixtures::key_for("cache-1")))
        .await?;
    let stop = CancellationToken::new();
    let server = serve_health(listener, stop.clone());
    let path = "/test/hello.txt";
    let origin_url = origin.url();
    eventually(DEADLINE, "reads go to the cache", || {
        goes_to(&director, path, &url)
    })
    .await;
    eventually(DEADLINE, "the cache is probed up", || async {
        probed_up(&director, "cache-1").await == Some(true)
    })
    .await;

    stop.cancel();
    server.await?;
    eventually(DEADLINE, "reads move to the origin", || {
        goes_to(&director, path, &origin_url)
    })
    .await;
    let entry = server_entry(&director, "cache-1").await?;
    assert_eq!(entry["health"]["up"], false, "{entry}");
    assert!(metric(&director, "skein_probes_total{result=\"unreachable\"}").await >= 1);

    // The process comes back on its port.
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let stop = CancellationToken::new();
    let server = serve_health(listener, stop.clone());
    eventually(DEADLINE, "reads go back to the cache", || {
        goes_to(&director, path, &url)
    })
    .await;

    stop.cancel();
    server.await?;
    origin.shutdown().await?;
    director.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_go_to_the_origin_holding_the_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let director = director(root, "60s").await?;
    let (one, one_export) =
        start_origin(root, "origin-1", director.url(), &["only1.txt", "both.txt"]).await?;
    let (two, two_export) =
        start_origin(root, "origin-2", director.url(), &["only2.txt", "both.txt"]).await?;
    listed_both(&director, "/test/both.txt", &one, &two).await;

    // A redirect answered after its checks carries the CORS headers once, like one
    // answered at once.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let checked = no_follow
        .get(format!("{}/test/only2.txt", director.url()))
        .send()
        .await?;
    assert_eq!(checked.status(), 307);
    let cors = checked.headers().get_all("access-control-allow-origin");
    assert_eq!(cors.iter().collect::<Vec<_>>(), ["*"]);

    let origin_api = "/api/v1.0/director/origin";
    for (file, holder) in [("only1.txt", &one), ("only2.txt", &two)] {
        for path in [format!("/test/{file}"), format!("{origin_api}/test/{file}")] {
            let located = locate(&director, &path).await.expect("located");
            assert_eq!(located.status, 307, "{path}");
            let location = located.location.unwrap_or_default();
            assert!(
                location.starts_with(&holder.url()),
                "{path} sent to {location}"
            );
        }
    }
    // Neither holds it: 404 JSON, not a redirect to nowhere.
    let response = reqwest::get(format!("{}/test/none.txt", director.url())).await?;
    assert_eq!(response.status(), 404);
    let cors = response.headers().get_all("access-control-allow-origin");
    assert_eq!(cors.iter().collect::<Vec<_>>(), ["*"]);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["error"], "not_found");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("none.txt")
    );

    // Answers are cached: asking again sends no HEAD, and the cached answer stands even
    // after the object moves (until its TTL passes).
    let asked = metric(&director, "skein_presence_checks_total").await;
    assert!(asked >= 6, "{asked} presence answers");
    std::fs::rename(two_export.join("only2.txt"), one_export.join("only2.txt"))?;
    let located = locate(&director, "/test/only2.txt").await.expect("located");
    assert!(
        located.location.unwrap_or_default().starts_with(&two.url()),
        "the cached answers are used"
    );
    assert_eq!(
        metric(&director, "skein_presence_checks_total").await,
        asked
    );

    one.shutdown().await?;
    two.shutdown().await?;
    director.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefercached_prefers_the_cache_holding_the_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let director = director(root, "60s").await?;
    let (origin, _) = start_origin(root, "origin-1", director.url(), &["a.txt", "b.txt"]).await?;
    let (c1, c1_dir) = start_cache(root, "cache-1", director.url()).await?;
    let (c2, c2_dir) = start_cache(root, "cache-2", director.url()).await?;
    listed_both(&director, "/test/a.txt", &c1, &c2).await;
    // Warm a.txt in cache-1 and b.txt in cache-2.
    for (cache, file) in [(&c1, "a.txt"), (&c2, "b.txt")] {
        let body = get_text(&format!("{}/test/{file}", cache.url())).await?;
        assert_eq!(body, format!("{file} from origin-1\n"));
    }
    // A cold cache asked only-if-cached answers 504 and does not fetch.
    let cold = reqwest::Client::new()
        .head(format!("{}/test/a.txt", c2.url()))
        .header("cache-control", "only-if-cached")
        .send()
        .await?;
    assert_eq!(cold.status(), 504);
    assert!(!c2_dir.join("test/a.txt").exists());
    assert!(c1_dir.join("test/a.txt").exists());

    for (file, holder) in [("a.txt", &c1), ("b.txt", &c2)] {
        let located = locate(&director, &format!("/test/{file}?prefercached"))
            .await
            .expect("located");
        let location = located.location.unwrap_or_default();
        assert!(
            location.starts_with(&holder.url()),
            "{file} sent to {location}"
        );
        assert!(
            location.ends_with("?prefercached"),
            "query passed on: {location}"
        );
    }

    c1.shutdown().await?;
    c2.shutdown().await?;
    origin.shutdown().await?;
    director.shutdown().await;
    Ok(())
}
