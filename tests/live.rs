//! Operating without restarts: trust reloads through the handle and on file change,
//! revocation at reload and at start, metrics present.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, now_ms, signed, trust_toml};
use skein::ad::{AdKey, ServerKind, SignedAd};
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle, Options};
use skein::fixtures;
use skein::routing::Purpose;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const FULL: &[(&str, &str, &[&str])] = &[
    ("director-0", "director", &[]),
    ("origin-1", "origin", &["/ns", "/other"]),
    ("cache-1", "cache", &["/ns"]),
];

/// One director on port 0 whose trust file lives at `dir/trust.toml`.
struct Single {
    dir: tempfile::TempDir,
    port: u16,
    handle: Option<DirectorHandle>,
}

impl Single {
    async fn start(trust: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trust.toml"), trust).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut single = Self {
            dir,
            port,
            handle: None,
        };
        single.boot(listener).await;
        single
    }

    /// A director trusting [`FULL`] that holds cache-1's ad.
    async fn with_cache() -> Self {
        let single = Self::start(&trust_toml(FULL)).await;
        single
            .register("cache-1", ServerKind::Cache, &["/ns"])
            .await;
        single
    }

    fn trust_path(&self) -> PathBuf {
        self.dir.path().join("trust.toml")
    }

    fn config(&self) -> DirectorConfig {
        let text = format!(
            r#"
name = "director-0"
listen = "127.0.0.1:{port}"
advertise_url = "http://127.0.0.1:{port}"
data_dir = {data:?}
[identity]
key = "unused-in-tests"
[federation]
trust = {trust:?}
trust_poll_interval = "100ms"
[peers]
announce_interval = "1h"
"#,
            port = self.port,
            data = self.dir.path().join("data"),
            trust = self.trust_path(),
        );
        DirectorConfig::from_toml(&text).unwrap()
    }

    async fn boot(&mut self, listener: TcpListener) {
        let options = Options {
            key: Some(fixtures::key_for("director-0")),
            ..Options::default()
        };
        let handle =
            Director::start_with(self.config(), options, listener, CancellationToken::new())
                .await
                .unwrap();
        self.handle = Some(handle);
    }

    async fn restart(&mut self) {
        self.handle.take().unwrap().shutdown().await;
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.boot(listener).await;
    }

    fn d(&self) -> &DirectorHandle {
        self.handle.as_ref().unwrap()
    }

    fn write_trust(&self, text: &str) {
        write_atomically(&self.trust_path(), text);
    }

    async fn register(&self, name: &str, kind: ServerKind, namespaces: &[&str]) {
        let ad = signed(name, kind, namespaces, now_ms() - 1000, 1);
        let outcome = self.d().state().replicator.accept(ad, None).await.unwrap();
        assert_eq!(outcome.status(), "accepted");
    }

    /// Names of the servers a read of `path` is sent to.
    fn candidates(&self, path: &str) -> Vec<String> {
        let now = now_ms();
        self.d()
            .state()
            .ledger
            .view()
            .route(path, Purpose::Read, now)
            .map(|r| r.candidates.iter().map(|c| c.name().to_string()).collect())
            .unwrap_or_default()
    }

    fn stored(&self, name: &str, kind: ServerKind) -> bool {
        let key = AdKey {
            kind,
            name: name.into(),
        };
        self.d()
            .state()
            .ledger
            .store()
            .get_ad(&key)
            .unwrap()
            .is_some()
    }

    fn metrics(&self) -> String {
        let state = self.d().state();
        state.metrics.render(state.ledger.view().len(), 1)
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_removed_server_stops_routing_at_once_on_reload() {
    let single = Single::start(&trust_toml(FULL)).await;
    single
        .register("origin-1", ServerKind::Origin, &["/ns", "/other"])
        .await;
    single
        .register("cache-1", ServerKind::Cache, &["/ns"])
        .await;
    assert_eq!(single.candidates("/ns/x"), ["cache-1", "origin-1"]);

    // cache-1 leaves the federation; origin-1 loses /other.
    single.write_trust(&trust_toml(&[
        ("director-0", "director", &[]),
        ("origin-1", "origin", &["/ns"]),
    ]));
    let report = single.d().reload().await.unwrap();
    let mut revoked: Vec<String> = report.revoked.iter().map(|r| r.key.to_string()).collect();
    revoked.sort();
    assert_eq!(revoked, ["cache/cache-1", "origin/origin-1"]);
    assert!(report.self_trusted);
    assert!(
        single.candidates("/ns/x").is_empty(),
        "nothing routes at once"
    );
    assert!(
        !single.stored("cache-1", ServerKind::Cache),
        "removed from the store"
    );
    assert!(single.metrics().contains("skein_ads_revoked_total 2"));
    assert!(
        single
            .metrics()
            .contains("skein_trust_reloads_total{result=\"applied\"} 1")
    );

    // origin-1 re-advertises within its allowed namespace and routes again.
    let resend = |name, kind| {
        let ad = signed(name, kind, &["/ns"], now_ms() - 500, 2);
        single.d().state().replicator.accept(ad, None)
    };
    resend("origin-1", ServerKind::Origin).await.unwrap();
    assert_eq!(single.candidates("/ns/x"), ["origin-1"]);
    // A revoked signer's ad is now refused at ingest.
    assert!(resend("cache-1", ServerKind::Cache).await.is_err());
    single.handle.unwrap().shutdown().await;
}

#[tokio::test]
async fn an_invalid_trust_file_is_refused_whole_and_the_old_trust_stays() {
    let single = Single::with_cache().await;
    for bad in [
        "this is not toml [[[".to_string(),
        // One good entry and one bad one: the whole file is refused.
        trust_toml(&[("director-0", "director", &[])])
            + "[[server]]\nname = \"x\"\nkind = \"cache\"\npublic_key = \"not-a-key\"\n",
    ] {
        single.write_trust(&bad);
        assert!(single.d().reload().await.is_err());
        assert_eq!(single.candidates("/ns/x"), ["cache-1"]);
        assert_eq!(single.d().state().ledger.trust().len(), 3);
    }
    std::fs::remove_file(single.trust_path()).unwrap();
    assert!(
        single.d().reload().await.is_err(),
        "a missing file is refused too"
    );
    assert_eq!(single.candidates("/ns/x"), ["cache-1"]);
    assert!(
        single
            .metrics()
            .contains("skein_trust_reloads_total{result=\"refused\"} 3")
    );
    single.handle.unwrap().shutdown().await;
}

#[tokio::test]
async fn a_server_removed_while_stopped_is_dropped_at_start() {
    let mut single = Single::with_cache().await;
    // Written while running, but the watcher could apply it first: stop it from
    // mattering by restarting straight away (either path must drop the ad).
    single.write_trust(&trust_toml(&[
        ("director-0", "director", &[]),
        ("origin-1", "origin", &["/ns"]),
    ]));
    single.restart().await;
    assert!(single.candidates("/ns/x").is_empty());
    assert!(!single.stored("cache-1", ServerKind::Cache));
    single.handle.unwrap().shutdown().await;
}

#[tokio::test]
async fn a_trust_file_without_this_director_keeps_it_serving() {
    let single = Single::with_cache().await;
    single.write_trust(&trust_toml(&[("cache-1", "cache", &["/ns"])]));
    let report = single.d().reload().await.unwrap();
    assert!(!report.self_trusted);
    // Its own ad is revoked like any other; redirects go on.
    assert!(report.revoked.iter().any(|r| r.key.name == "director-0"));
    assert_eq!(single.candidates("/ns/x"), ["cache-1"]);
    let url = format!("http://127.0.0.1:{}", single.port);
    assert!(common::client().ready(&url).await.unwrap());
    single.handle.unwrap().shutdown().await;
}

#[tokio::test]
async fn a_changed_trust_file_is_picked_up_without_a_signal() {
    let single = Single::with_cache().await;
    single.write_trust(&trust_toml(&[("director-0", "director", &[])]));
    eventually(
        Duration::from_secs(10),
        "cache-1 revoked by the watcher",
        || {
            let counted = single.metrics().contains("skein_ads_revoked_total 1");
            async move { counted }
        },
    )
    .await;
    assert!(single.candidates("/ns/x").is_empty());
    single.handle.unwrap().shutdown().await;
}

#[tokio::test]
async fn reload_storms_coalesce_and_change_nothing_when_the_file_is_the_same() {
    let single = Single::with_cache().await;
    let d = single.d();
    let reloads = (0..100).map(|_| d.reload());
    // Scrapes during the storm are answered as usual.
    let url = format!("http://127.0.0.1:{}", single.port);
    let scrapes = (0..10).map(|_| scrape(&url));
    let (reloaded, scraped) = futures::future::join(
        futures::future::join_all(reloads),
        futures::future::join_all(scrapes),
    )
    .await;
    for result in reloaded {
        assert!(result.unwrap().revoked.is_empty());
    }
    assert!(scraped.iter().all(|text| text.contains("skein_build_info")));
    assert_eq!(single.candidates("/ns/x"), ["cache-1"]);
    let metrics = single.metrics();
    let applied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skein_trust_reloads_total{result=\"applied\"} "))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap();
    assert!(applied < 10, "100 requests at once made {applied} reloads");
    single.handle.unwrap().shutdown().await;
}

async fn scrape(url: &str) -> String {
    common::client()
        .http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_build_latency_peers_store_and_ads_by_kind() {
    let cluster = common::Cluster::full_mesh(2).await;
    let me = cluster.handle(0);
    let ad = signed("cache-1", ServerKind::Cache, &["/ns"], now_ms() - 1000, 1);
    common::client().register(me.url(), &ad).await.unwrap();
    common::client().locate(me.url(), "/ns/x").await.unwrap();
    let peer = cluster.nodes[1].url.clone();
    let url = me.url().to_string();
    eventually(Duration::from_secs(20), "peer in sync", || {
        let (url, peer) = (url.clone(), peer.clone());
        async move {
            scrape(&url)
                .await
                .contains(&format!("skein_peer_in_sync{{peer=\"{peer}\"}} 1"))
        }
    })
    .await;
    let text = scrape(&url).await;
    for expected in [
        format!(
            "skein_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "skein_request_duration_seconds_bucket{class=\"redirect\",le=\"+Inf\"} ".into(),
        "skein_request_duration_seconds_count{class=\"register\"} 1".into(),
        "skein_request_duration_seconds_sum{class=\"forward\"}".into(),
        "skein_request_duration_seconds_count{class=\"bulk\"}".into(),
        "skein_ads{kind=\"cache\",status=\"ok\"} 1".into(),
        "skein_ads{kind=\"director\",status=\"ok\"} 2".into(),
        format!("skein_peer_forward_backlog{{peer=\"{peer}\"}} "),
        format!("skein_peer_last_success_timestamp_seconds{{peer=\"{peer}\"}} "),
        "skein_store_disk_bytes ".into(),
        "# TYPE skein_trust_reloads_total counter".into(),
        "skein_ads_revoked_total 0".into(),
    ] {
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample: {line}");
    }
    cluster.shutdown().await;
}

/// A downtime or ban record about `server`, made at `at` and signed by `signer`.
fn record(
    kind: ServerKind,
    server: &str,
    signer: &str,
    active: bool,
    window: (u64, u64),
    at: u64,
) -> SignedAd {
    let record = skein::ad::Record {
        signer: signer.into(),
        active,
        start: window.0,
        end: window.1,
        reason: "disk swap".into(),
    };
    let expires_at = if active { window.1 } else { u64::MAX };
    record
        .into_ad(kind, server, at, expires_at)
        .sign(&fixtures::key_for(signer))
}

async fn all_route_to(cluster: &common::Cluster, name: &str) -> bool {
    cluster
        .running()
        .all(|d| common::routes_to(d, "/ns/x").as_deref() == Some(name))
}

fn http_status(error: &skein::client::ClientError) -> u16 {
    match error {
        skein::client::ClientError::Status { status, .. } => *status,
        other => panic!("not an HTTP refusal: {other}"),
    }
}

/// Sends `record` to director `at`, then waits until every director routes `/ns/x`
/// to `then`.
async fn send_record(cluster: &common::Cluster, at: usize, record: &SignedAd, then: &str) {
    let answer = common::client()
        .register(cluster.handle(at).url(), record)
        .await
        .unwrap();
    assert_eq!(answer.status, "accepted");
    let what = format!("every director routes to {then}");
    eventually(Duration::from_secs(20), &what, || {
        all_route_to(cluster, then)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_and_bans_are_honoured_by_every_director() {
    let cluster = common::Cluster::full_mesh(3).await;
    let client = common::client();
    let now = now_ms();
    for (name, kind) in [
        ("origin-1", ServerKind::Origin),
        ("cache-1", ServerKind::Cache),
    ] {
        let ad = signed(name, kind, &["/ns"], now - 1000, 1);
        client.register(cluster.handle(0).url(), &ad).await.unwrap();
    }
    eventually(Duration::from_secs(20), "all route to cache-1", || {
        all_route_to(&cluster, "cache-1")
    })
    .await;
    let (downtime, ban, always) = (ServerKind::Downtime, ServerKind::Ban, (0, u64::MAX));

    // Downtime added at director 1: all three send reads to the origin instead.
    let window = (now - 1000, now + 3_600_000);
    let added = record(downtime, "cache-1", "ops", true, window, now);
    send_record(&cluster, 1, &added, "origin-1").await;
    // cache-1 is still listed, with the record beside it.
    let listed = client.ads(cluster.handle(2).url()).await.unwrap();
    let kinds_of_cache_1: Vec<ServerKind> = listed
        .iter()
        .filter(|a| a.signed.ad.name == "cache-1")
        .map(|a| a.signed.ad.kind)
        .collect();
    assert!(kinds_of_cache_1.contains(&ServerKind::Cache) && kinds_of_cache_1.contains(&downtime));
    // The status page shows the downtime beside the server, and no record as a server row.
    let page = reqwest::get(format!("{}/", cluster.handle(2).url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("downtime "), "no downtime on the status page");
    assert!(
        !page.contains("class=\"kind\">downtime<"),
        "a record shown as a server"
    );

    // Removed at director 2: routing returns everywhere.
    let removed = record(downtime, "cache-1", "ops", false, always, now + 1);
    send_record(&cluster, 2, &removed, "cache-1").await;
    // A replay of the removed record is stale: the order refuses it.
    let replay = client
        .register(cluster.handle(0).url(), &added)
        .await
        .unwrap();
    assert_eq!(replay.status, "stale");
    assert!(all_route_to(&cluster, "cache-1").await);

    // Bad input: a server's own key is no admin (403); a downtime ending before it
    // starts (400). Nothing held changes.
    let forged = record(downtime, "origin-1", "cache-1", true, window, now + 2);
    let error = client
        .register(cluster.handle(0).url(), &forged)
        .await
        .unwrap_err();
    assert_eq!(http_status(&error), 403, "{error}");
    let backwards = record(
        downtime,
        "cache-1",
        "ops",
        true,
        (now + 10, now + 5),
        now + 3,
    );
    let error = client
        .register(cluster.handle(0).url(), &backwards)
        .await
        .unwrap_err();
    assert_eq!(http_status(&error), 400, "{error}");
    assert!(all_route_to(&cluster, "cache-1").await);

    // A ban holds until it is lifted.
    send_record(
        &cluster,
        0,
        &record(ban, "cache-1", "ops", true, always, now + 4),
        "origin-1",
    )
    .await;
    send_record(
        &cluster,
        1,
        &record(ban, "cache-1", "ops", false, always, now + 5),
        "cache-1",
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_config_reload_applies_live_settings_and_names_the_others() {
    let single = Single::with_cache().await;
    let mut config = single.config();
    config.ads.max_lifetime = Duration::from_secs(60);
    config.peers.poll_interval = Duration::from_secs(5);
    config.log.access = true;
    let reloaded = single.d().reload_config(config).await;
    assert_eq!(reloaded.needs_restart, ["peers"]);
    assert!(reloaded.trust.is_ok());
    assert!(reloaded.routing.is_ok());
    let state = single.d().state();
    assert_eq!(state.ledger.limits().max_lifetime, Duration::from_secs(60));
    assert!(state.access_log.load(std::sync::atomic::Ordering::Relaxed));
    single.handle.unwrap().shutdown().await;
}
