//! Test harness: real directors on 127.0.0.1 port 0 with temp sled directories.
#![allow(dead_code)]

pub mod services;
pub mod tmpfs;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use skein::ad::{AdKey, ServerKind, SignedAd, encode_public_key};
use skein::client::{Client, Faults};
use skein::clock::SharedClock;
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle, Options};
use skein::fixtures;
use skein::routing::Purpose;
use skein::trust::Trust;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Servers every test federation trusts.
pub fn trust(directors: usize) -> Trust {
    let names: Vec<String> = (0..directors).map(director_name).collect();
    let mut servers: Vec<(&str, ServerKind, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), ServerKind::Director, &[][..]))
        .collect();
    servers.push(("origin-1", ServerKind::Origin, &["/ns", "/other"]));
    servers.push(("origin-2", ServerKind::Origin, &["/ns"]));
    servers.push(("cache-1", ServerKind::Cache, &["/ns"]));
    for name in GEO_CACHES {
        servers.push((name, ServerKind::Cache, &["/geo"]));
    }
    let mut trust = fixtures::trust(&servers);
    // An operator key that signs downtime and ban records.
    trust.insert_admin("ops", fixtures::key_for("ops").verifying_key());
    trust
}

/// Trust-file TOML for fixture servers (keys from `fixtures::key_for`): (name, kind,
/// namespaces).
pub fn trust_toml(servers: &[(&str, &str, &[&str])]) -> String {
    let mut out = String::new();
    for (name, kind, namespaces) in servers {
        let key = encode_public_key(&fixtures::key_for(name).verifying_key());
        out.push_str(&format!(
            "[[server]]\nname = {name:?}\nkind = {kind:?}\npublic_key = {key:?}\nnamespaces = {namespaces:?}\n\n"
        ));
    }
    out
}

/// Caches serving `/geo`, named for where they are (see `tests/geo_cluster.rs`).
pub const GEO_CACHES: [&str; 6] = [
    "cache-san-diego",
    "cache-london",
    "cache-moscow",
    "cache-daejeon",
    "cache-mcmurdo",
    "cache-null-island",
];

/// `director-0`, `director-1`, ...
pub fn director_name(i: usize) -> String {
    format!("director-{i}")
}

/// Changes director i's trust before it starts.
pub type TrustEdit = Arc<dyn Fn(usize, &mut Trust) + Send + Sync>;

/// Tunables for test directors: fast polling, optional slow announce.
#[derive(Clone)]
pub struct Tuning {
    pub poll_interval: &'static str,
    pub announce_interval: &'static str,
    /// `peers.forward_delay` (the shipped default unless a test says otherwise).
    pub forward_delay: &'static str,
    pub clock: Option<SharedClock>,
    /// Every director uses this director's URL as its `federation.discovery_url`.
    pub discovery_from: Option<usize>,
    /// Extra lines of the `[limits]` section.
    pub limits: &'static str,
    /// Extra lines of the `[ads]` section.
    pub ads: &'static str,
    /// Extra TOML appended to every director's config (e.g. a `[routing]` section).
    pub extra: String,
    /// Changes director i's trust (e.g. adds `[[pelican]]` entries).
    pub trust_edit: Option<TrustEdit>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            poll_interval: "300ms",
            announce_interval: "1h",
            forward_delay: "2s",
            clock: None,
            discovery_from: None,
            limits: "",
            ads: "",
            extra: String::new(),
            trust_edit: None,
        }
    }
}

/// One director slot: its port and data dir survive restarts.
pub struct Node {
    pub index: usize,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    pub seeds: Vec<String>,
    pub faults: Faults,
    pub handle: Option<DirectorHandle>,
    /// This director's clock from its next (re)start, instead of `Tuning::clock`.
    pub clock: Option<SharedClock>,
}

/// Several directors in one process.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub trust_size: usize,
    pub tuning: Tuning,
    _dirs: tempfile::TempDir,
}

impl Cluster {
    /// `n` directors; `seeds(i)` gives the indexes director i is configured with.
    pub async fn start(n: usize, tuning: Tuning, seeds: impl Fn(usize) -> Vec<usize>) -> Self {
        Self::start_seeded(n, n, tuning, |i, urls| {
            seeds(i).into_iter().map(|j| urls[j].clone()).collect()
        })
        .await
    }

    /// `n` directors trusting `trust_size` director keys; `seeds(i, urls)` gives the
    /// URLs director i is configured with.
    pub async fn start_seeded(
        n: usize,
        trust_size: usize,
        tuning: Tuning,
        seeds: impl Fn(usize, &[String]) -> Vec<String>,
    ) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            trust_size,
            tuning,
            _dirs: dirs,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let node = Node {
                index: i,
                port: listener.local_addr().unwrap().port(),
                url: urls[i].clone(),
                data_dir: cluster._dirs.path().join(format!("d{i}")),
                seeds: seeds(i, &urls),
                faults: Faults::default(),
                handle: None,
                clock: None,
            };
            cluster.nodes.push(node);
            cluster.boot(i, listener).await;
        }
        cluster
    }

    /// Every director knows every other (static lists).
    pub async fn full_mesh(n: usize) -> Self {
        Self::start(n, Tuning::default(), move |i| {
            (0..n).filter(|j| *j != i).collect()
        })
        .await
    }

    /// Director i's configuration (as it was started).
    pub fn config(&self, i: usize) -> DirectorConfig {
        let node = &self.nodes[i];
        let seeds = node
            .seeds
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let discovery = self
            .tuning
            .discovery_from
            .map(|k| format!("discovery_url = {:?}", self.nodes[k].url))
            .unwrap_or_default();
        let text = format!(
            r#"
name = "{name}"
listen = "127.0.0.1:{port}"
advertise_url = "{url}"
data_dir = {dir:?}
[identity]
key = "unused-in-tests"
[federation]
{discovery}
trust = "unused-in-tests"
directors = [{seeds}]
[peers]
poll_interval = "{poll}"
forward_timeout = "1s"
announce_interval = "{announce}"
forward_delay = "{forward_delay}"
[ads]
prune_interval = "200ms"
{ads}
[limits]
{limits}
{extra}
"#,
            name = director_name(i),
            port = node.port,
            url = node.url,
            dir = node.data_dir,
            poll = self.tuning.poll_interval,
            announce = self.tuning.announce_interval,
            forward_delay = self.tuning.forward_delay,
            limits = self.tuning.limits,
            ads = self.tuning.ads,
            extra = self.tuning.extra,
        );
        DirectorConfig::from_toml(&text).unwrap()
    }

    async fn boot(&mut self, i: usize, listener: TcpListener) {
        let mut node_trust = trust(self.trust_size);
        if let Some(edit) = &self.tuning.trust_edit {
            edit(i, &mut node_trust);
        }
        let options = Options {
            clock: self.nodes[i]
                .clock
                .clone()
                .or_else(|| self.tuning.clock.clone()),
            trust: Some(node_trust),
            key: Some(fixtures::key_for(&director_name(i))),
            faults: self.nodes[i].faults.clone(),
        };
        let handle =
            Director::start_with(self.config(i), options, listener, CancellationToken::new())
                .await
                .unwrap();
        self.nodes[i].handle = Some(handle);
    }

    /// Restarts a stopped director on its old port and data dir.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].handle.is_none(), "director {i} is running");
        let addr = format!("127.0.0.1:{}", self.nodes[i].port);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        self.boot(i, listener).await;
    }

    /// Abrupt stop (no withdrawal).
    pub async fn crash(&mut self, i: usize) {
        self.nodes[i].handle.take().expect("running").crash().await;
    }

    /// Graceful stop.
    pub async fn stop(&mut self, i: usize) {
        self.nodes[i]
            .handle
            .take()
            .expect("running")
            .shutdown()
            .await;
    }

    pub fn handle(&self, i: usize) -> &DirectorHandle {
        self.nodes[i].handle.as_ref().expect("running")
    }

    pub fn running(&self) -> impl Iterator<Item = &DirectorHandle> {
        self.nodes.iter().filter_map(|n| n.handle.as_ref())
    }

    /// Cuts the links between `i` and `j` in both directions.
    pub fn cut(&self, i: usize, j: usize) {
        self.nodes[i].faults.cut(&self.nodes[j].url);
        self.nodes[j].faults.cut(&self.nodes[i].url);
    }

    /// Restores the links between `i` and `j`.
    pub fn heal(&self, i: usize, j: usize) {
        self.nodes[i].faults.heal(&self.nodes[j].url);
        self.nodes[j].faults.heal(&self.nodes[i].url);
    }

    /// Total forward attempts made by running directors.
    pub fn forwards_total(&self) -> u64 {
        self.running()
            .map(|d| d.state().metrics.forwards_total())
            .sum()
    }

    /// Ads waiting in any running director's forward queues.
    pub fn backlog(&self) -> usize {
        self.running().map(|d| d.state().replicator.backlog()).sum()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].handle.is_some() {
                self.stop(i).await;
            }
        }
    }
}

/// Version (generation) of `key` held by director `d`, if any.
pub fn held_generation(d: &DirectorHandle, key: &AdKey) -> Option<u64> {
    d.state().ledger.view().get(key).map(|a| a.ad.generation)
}

/// The first server `d` routes `path` to (reads), if any.
pub fn routes_to(d: &DirectorHandle, path: &str) -> Option<String> {
    let now = d.state().ledger.clock().now_ms();
    d.state()
        .ledger
        .view()
        .route(path, Purpose::Read, now)
        .ok()
        .map(|r| r.candidates[0].name().to_string())
}

/// A signed ad for a fixture server with a given instance start and generation.
pub fn signed(
    name: &str,
    kind: ServerKind,
    namespaces: &[&str],
    started_at: u64,
    generation: u64,
) -> SignedAd {
    let mut ad = fixtures::ad(name, kind, namespaces, started_at, generation);
    ad.expires_at = started_at + 600_000 + generation;
    ad.sign(&fixtures::key_for(name))
}

/// Current wall-clock milliseconds.
pub fn now_ms() -> u64 {
    skein::clock::Clock::now_ms(&skein::clock::SystemClock)
}

/// A client for tests.
pub fn client() -> Client {
    Client::new(Duration::from_secs(5), None).unwrap()
}

pub type Shared<T> = Arc<T>;

/// A stand-in director on port 0: serves a fixed signed director ad (or none), a fixed
/// `/directors` list, an empty digest, and takes forwards up to `max_body` bytes (413
/// beyond). Counts every request and records the names of ads forwarded to it.
pub struct FakePeer {
    pub url: String,
    pub state: Arc<FakeState>,
    cancel: CancellationToken,
}

#[derive(Default)]
pub struct FakeState {
    pub requests: std::sync::atomic::AtomicUsize,
    pub too_large: std::sync::atomic::AtomicUsize,
    pub forwarded: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub ad: std::sync::Mutex<Option<SignedAd>>,
    pub list: std::sync::Mutex<Vec<skein::wire::DirectorInfo>>,
    pub max_body: std::sync::atomic::AtomicUsize,
    /// Paths it has no route for (404), in order: what an older director would refuse.
    pub unknown_paths: std::sync::Mutex<Vec<String>>,
}

impl FakeState {
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl FakePeer {
    pub async fn start() -> Self {
        use axum::routing::{get, post};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FakeState {
            max_body: usize::MAX.into(),
            ..FakeState::default()
        });
        let count = |s: &FakeState| {
            s.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        };
        let app = axum::Router::new()
            .route(
                "/api/v1.0/director/self",
                get(move |axum::extract::State(s): axum::extract::State<Arc<FakeState>>| async move {
                    count(&s);
                    match s.ad.lock().unwrap().clone() {
                        Some(ad) => axum::Json(ad).into_response(),
                        None => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                }),
            )
            .route(
                "/api/v1.0/director/directors",
                get(move |axum::extract::State(s): axum::extract::State<Arc<FakeState>>| async move {
                    count(&s);
                    axum::Json(s.list.lock().unwrap().clone())
                }),
            )
            .route(
                "/api/v1.0/director/digest",
                get(move |axum::extract::State(s): axum::extract::State<Arc<FakeState>>| async move {
                    count(&s);
                    axum::Json(Vec::<skein::wire::DigestEntry>::new())
                }),
            )
            .route(
                "/api/v1.0/director/forward",
                post(
                    move |axum::extract::State(s): axum::extract::State<Arc<FakeState>>,
                          body: axum::body::Bytes| async move {
                        count(&s);
                        if body.len() > s.max_body.load(std::sync::atomic::Ordering::SeqCst) {
                            s.too_large
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
                        }
                        // One ad (a director's own withdrawal) or a batch.
                        if let Ok(ad) = serde_json::from_slice::<SignedAd>(&body) {
                            s.forwarded.lock().unwrap().insert(ad.ad.name.clone());
                            let status = "accepted".to_string();
                            return axum::Json(skein::wire::RegisterResponse { status })
                                .into_response();
                        }
                        let ads: Vec<SignedAd> = serde_json::from_slice(&body).unwrap();
                        let results: Vec<skein::wire::ForwardResult> = ads
                            .iter()
                            .map(|ad| {
                                s.forwarded.lock().unwrap().insert(ad.ad.name.clone());
                                skein::wire::ForwardResult {
                                    status: "accepted".into(),
                                    detail: None,
                                }
                            })
                            .collect();
                        axum::Json(results).into_response()
                    },
                ),
            )
            .fallback(
                move |axum::extract::State(s): axum::extract::State<Arc<FakeState>>,
                      uri: axum::http::Uri| async move {
                    count(&s);
                    s.unknown_paths.lock().unwrap().push(uri.path().to_string());
                    axum::http::StatusCode::NOT_FOUND
                },
            )
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
        Self { url, state, cancel }
    }

    /// Serves a director ad of `name` (signed with its fixture key) for this URL.
    pub fn sign_as(&self, name: &str) {
        let now = now_ms();
        let mut ad = fixtures::ad(name, ServerKind::Director, &[], now, 1);
        ad.data_url = self.url.clone();
        ad.web_url = self.url.clone();
        ad.expires_at = now + 600_000;
        *self.state.ad.lock().unwrap() = Some(ad.sign(&fixtures::key_for(name)));
    }

    /// Serves `urls` as its `/directors` list.
    pub fn list(&self, urls: &[String]) {
        *self.state.list.lock().unwrap() = urls
            .iter()
            .map(|u| skein::peers::unverified_listing(u))
            .collect();
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
