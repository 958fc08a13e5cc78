//! The scheduler against fake and hanging probers, with paused tokio time where it counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ad::StoredAd;
use crate::clock::{ManualClock, SharedClock};
use crate::fixtures;

fn view_of(names: &[String], data_url: impl Fn(&str) -> String) -> Arc<View> {
    Arc::new(View::from_ads(names.iter().map(|name| {
        let mut ad = fixtures::ad(name, ServerKind::Cache, &["/ns"], 1, 1);
        ad.data_url = data_url(name);
        StoredAd {
            ad,
            signature: String::new(),
            received_at: 1,
            expires_at: u64::MAX,
            attestation: None,
        }
    })))
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cache-{i}")).collect()
}

/// Records every probe start and the most probes in flight; each takes `takes`.
struct Recorder {
    starts: Mutex<Vec<(String, Instant)>>,
    in_flight: Arc<AtomicUsize>,
    most: AtomicUsize,
    takes: Duration,
}

impl Prober for Recorder {
    fn probe(&self, url: String) -> BoxFuture<'static, Outcome> {
        self.starts
            .lock()
            .unwrap()
            .push((url.clone(), Instant::now()));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let takes = self.takes;
        let in_flight = self.in_flight.clone();
        async move {
            tokio::time::sleep(takes).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Outcome::ok(takes.as_secs_f64() * 1000.0)
        }
        .boxed()
    }
}

fn scheduler<P: Prober>(
    prober: Arc<P>,
    view: Arc<ArcSwap<View>>,
    settings: Settings,
) -> (Scheduler<P>, Arc<Board>) {
    let board = Arc::new(Board::default());
    let clock: SharedClock = ManualClock::new(1_000);
    let scheduler = Scheduler {
        prober,
        view: Arc::new(move || view.load_full()),
        clock,
        board: board.clone(),
        counters: Arc::default(),
        settings,
    };
    (scheduler, board)
}

fn settings(interval: Duration, timeout: Duration, concurrency: usize) -> Settings {
    Settings {
        interval,
        timeout,
        concurrency,
        path: "/api/v1.0/health".into(),
        failures: 1,
    }
}

impl Recorder {
    fn new(takes: Duration) -> Arc<Self> {
        Arc::new(Self {
            starts: Mutex::default(),
            in_flight: Arc::default(),
            most: AtomicUsize::new(0),
            takes,
        })
    }
}

/// 10,000 servers, interval 10 s, 64 at once, 50 ms per probe, one virtual minute: every
/// server is probed about every interval and never sooner, the whole rate stays near
/// N / interval per second, and never more than `concurrency` run at once.
#[tokio::test(start_paused = true)]
async fn ten_thousand_servers_keep_the_probe_budget() {
    const N: usize = 10_000;
    let interval = Duration::from_secs(10);
    let view = Arc::new(ArcSwap::new(view_of(&names(N), |n| format!("http://{n}"))));
    let recorder = Recorder::new(Duration::from_millis(50));
    let (scheduler, board) = scheduler(
        recorder.clone(),
        view,
        settings(interval, Duration::from_secs(5), 64),
    );
    let cancel = CancellationToken::new();
    let began = Instant::now();
    let task = tokio::spawn(scheduler.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    cancel.cancel();
    task.await.unwrap();

    let starts = recorder.starts.lock().unwrap().clone();
    assert!(
        recorder.most.load(Ordering::SeqCst) <= 64,
        "in flight beyond the limit"
    );
    assert_eq!(board.snapshot().len(), N, "every server probed");
    // Each server at most once per interval: at most 60 / 10 + 1 probes, and gaps >= interval.
    let mut by_server: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (url, at) in &starts {
        by_server.entry(url.as_str()).or_default().push(*at);
    }
    for (url, times) in &by_server {
        assert!(
            times.len() <= 7 && times.len() >= 5,
            "{url}: {} probes",
            times.len()
        );
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval,
                "{url} probed twice within an interval"
            );
        }
    }
    assert!(starts.len() <= N * 7, "{} probes in a minute", starts.len());
    // Per second: N / interval = 1,000 on average; allow random clumping, not bursts.
    let mut per_second = vec![0usize; 61];
    for (_, at) in &starts {
        per_second[(*at - began).as_secs() as usize] += 1;
    }
    let busiest = per_second.iter().max().copied().unwrap_or(0);
    println!(
        "probes in 60 s: {}, busiest second: {busiest}",
        starts.len()
    );
    assert!(busiest <= 2 * N / 10, "busiest second had {busiest} probes");
}

/// A probe that never answers fails at the timeout and frees its permit: with one permit,
/// every hung server still gets its failure recorded, and the server comes back up when
/// its probe answers again.
#[tokio::test(start_paused = true)]
async fn hung_probes_time_out_and_free_their_permit() {
    struct Hang(Arc<std::sync::atomic::AtomicBool>);
    impl Prober for Hang {
        fn probe(&self, _url: String) -> BoxFuture<'static, Outcome> {
            if self.0.load(Ordering::SeqCst) {
                futures::future::pending().boxed()
            } else {
                async { Outcome::ok(1.0) }.boxed()
            }
        }
    }
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let view = Arc::new(ArcSwap::new(view_of(&names(5), |n| format!("http://{n}"))));
    let (scheduler, board) = scheduler(
        Arc::new(Hang(hang.clone())),
        view,
        settings(Duration::from_secs(1), Duration::from_millis(300), 1),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let table = board.snapshot();
    assert_eq!(table.len(), 5);
    for (key, status) in table.iter() {
        assert!(!status.health.up, "{key} should be down");
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("no answer")
        );
    }
    hang.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        board.snapshot().values().all(|s| s.health.up),
        "back up after a good probe"
    );
    cancel.cancel();
    task.await.unwrap();
}

/// The set of probed servers follows the view: a dropped ad leaves the board, a new one
/// is probed.
#[tokio::test(start_paused = true)]
async fn probed_servers_follow_the_view() {
    let view = Arc::new(ArcSwap::new(view_of(&names(3), |n| format!("http://{n}"))));
    let recorder = Recorder::new(Duration::from_millis(1));
    let (scheduler, board) = scheduler(
        recorder.clone(),
        view.clone(),
        settings(Duration::from_secs(2), Duration::from_secs(1), 4),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(board.snapshot().len(), 3);
    let next = vec!["cache-1".to_string(), "cache-9".to_string()];
    view.store(view_of(&next, |n| format!("http://{n}")));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut probed: Vec<String> = board.snapshot().keys().map(|k| k.name.clone()).collect();
    probed.sort();
    assert_eq!(probed, next);
    let urls: Vec<String> = recorder
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    assert!(urls.contains(&"http://cache-9/api/v1.0/health".to_string()));
    cancel.cancel();
    task.await.unwrap();
}

/// The real HTTP prober against a listener that accepts and never answers: the probe
/// fails at the timeout on a single-threaded runtime (no thread is held while it waits).
#[tokio::test(flavor = "current_thread")]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let view = Arc::new(ArcSwap::new(view_of(&names(6), move |_| {
        format!("http://{addr}")
    })));
    let http = reqwest::Client::builder().build().unwrap();
    let prober = Arc::new(super::super::http::HttpProber::new(http));
    let (scheduler, board) = scheduler(
        prober,
        view,
        settings(Duration::from_millis(200), Duration::from_millis(200), 2),
    );
    let counters = scheduler.counters.clone();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(cancel.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while board.snapshot().len() < 6 || board.snapshot().values().any(|s| s.health.up) {
        assert!(
            std::time::Instant::now() < deadline,
            "probes never timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counters.probes(ProbeResult::Timeout) >= 6);
    cancel.cancel();
    task.await.unwrap();
    held.abort();
}
