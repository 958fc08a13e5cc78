//! Load while faults happen: services re-advertising (every ad a new version) and
//! clients looking up with failover across directors. Records every acknowledged ad.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use skein::ad::{AdKey, AdStatus, AdVersion};
use skein::advertiser::Advertiser;
use skein::client::{Client, ClientError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause between two ads of one load server.
const AD_PERIOD: Duration = Duration::from_millis(100);
/// Pause between two lookups of one client.
const LOOKUP_PERIOD: Duration = Duration::from_millis(20);
/// How long the load servers' first ads may take to reach every director.
const WARM_UP: Duration = Duration::from_secs(30);
/// Per-request timeout of the load clients (a dead director costs at most this).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Counters, cumulative since the load started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups made.
    pub lookups: AtomicU64,
    /// Lookups for which no director redirected (after trying all of them).
    pub failed_lookups: AtomicU64,
    /// Attempts that failed on one director (the client moved on, or gave up after the last).
    pub failed_attempts: AtomicU64,
    /// Attempts answered 404 (a director without the view).
    pub not_found: AtomicU64,
    /// Ads signed.
    pub ads_sent: AtomicU64,
    /// Director answers `accepted`.
    pub acks: AtomicU64,
    /// Sends that failed (director down or cut off).
    pub send_errors: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn read(&self) -> [u64; 7] {
        [
            &self.lookups,
            &self.failed_lookups,
            &self.failed_attempts,
            &self.not_found,
            &self.ads_sent,
            &self.acks,
            &self.send_errors,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }

    /// One line of figures.
    pub fn line(&self) -> String {
        let [
            lookups,
            failed,
            failed_attempts,
            not_found,
            sent,
            acks,
            errors,
        ] = self.read();
        format!(
            "lookups={lookups} failed_lookups={failed} failed_attempts={failed_attempts} not_found={not_found} \
             ads_signed={sent} acks={acks} send_errors={errors}"
        )
    }
}

/// The highest version each director acknowledged (`accepted`) per ad key.
pub type AckBook = Arc<Mutex<HashMap<AdKey, AdVersion>>>;

/// Running load; stop with [`Load::stop_ads`] and [`Load::stop`].
pub struct Load {
    ads: CancellationToken,
    lookups: CancellationToken,
    tasks: JoinSet<()>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Every acknowledged version.
    pub book: AckBook,
    /// First failed lookups (for the report).
    pub failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Starts one advertising loop per advertiser, waits until every director holds an
    /// ad of each (so that a lookup can succeed at all), then starts `clients` lookup loops.
    pub async fn start(
        advertisers: &[Arc<Advertiser>],
        directors: &[String],
        clients: usize,
    ) -> anyhow::Result<Self> {
        let ads = CancellationToken::new();
        let lookups = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let book: AckBook = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        for advertiser in advertisers {
            tasks.spawn(advertise(
                advertiser.clone(),
                directors.to_vec(),
                stats.clone(),
                book.clone(),
                ads.clone(),
            ));
        }
        let deadline = tokio::time::Instant::now() + WARM_UP;
        while book.lock().map(|b| b.len()).unwrap_or(0) < advertisers.len() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the load servers' ads were not acknowledged within {WARM_UP:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, missing) = super::await_no_lost_acks(directors, &book, WARM_UP).await;
        anyhow::ensure!(
            missing == 0,
            "{missing} load ads not on every director after {WARM_UP:?}"
        );
        for i in 0..clients {
            tasks.spawn(look_up(
                i,
                directors.to_vec(),
                stats.clone(),
                failures.clone(),
                lookups.clone(),
            ));
        }
        Ok(Self {
            ads,
            lookups,
            tasks,
            stats,
            book,
            failures,
        })
    }

    /// Stops advertising (lookups go on).
    pub fn stop_ads(&self) {
        self.ads.cancel();
    }

    /// Stops everything and waits for the loops.
    pub async fn stop(mut self) -> (Arc<Stats>, AckBook, Vec<String>) {
        self.ads.cancel();
        self.lookups.cancel();
        while self.tasks.join_next().await.is_some() {}
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.stats, self.book, failures)
    }
}

fn client() -> Client {
    Client::new(TIMEOUT, None).expect("a plain HTTP client")
}

/// A service: every period a new ad version to every director at once.
async fn advertise(
    advertiser: Arc<Advertiser>,
    directors: Vec<String>,
    stats: Arc<Stats>,
    book: AckBook,
    cancel: CancellationToken,
) {
    let client = client();
    while !cancel.is_cancelled() {
        let ad = advertiser.sign(AdStatus::Ok).expect("a Skein ad");
        Stats::bump(&stats.ads_sent);
        let results = join_all(directors.iter().map(|d| client.register(d, &ad))).await;
        for result in results {
            match result {
                Ok(answer) if answer.status == "accepted" => {
                    Stats::bump(&stats.acks);
                    if let Ok(mut book) = book.lock() {
                        let held = book.entry(ad.ad.key()).or_insert(ad.ad.version());
                        *held = (*held).max(ad.ad.version());
                    }
                }
                Ok(_) => {}
                Err(_) => Stats::bump(&stats.send_errors),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(AD_PERIOD) => {}
        }
    }
}

/// A client: looks up `/load/obj-N`, trying the directors in turn until one redirects.
async fn look_up(
    id: usize,
    directors: Vec<String>,
    stats: Arc<Stats>,
    failures: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
) {
    let client = client();
    let mut n = id;
    while !cancel.is_cancelled() {
        n += 1;
        let path = format!("/load/obj-{n}");
        Stats::bump(&stats.lookups);
        let mut errors = Vec::new();
        let mut found = false;
        for k in 0..directors.len() {
            let director = &directors[(n + k) % directors.len()];
            match client.locate(director, &path).await {
                Ok(located) if located.location.is_some() => {
                    found = true;
                    break;
                }
                Ok(_) => errors.push(format!("{director}: 200 without a location")),
                Err(ClientError::Status { status: 404, .. }) => {
                    Stats::bump(&stats.not_found);
                    errors.push(format!("{director}: 404"));
                }
                Err(error) => errors.push(error.to_string()),
            }
            Stats::bump(&stats.failed_attempts);
        }
        if !found {
            Stats::bump(&stats.failed_lookups);
            if let Ok(mut f) = failures.lock() {
                if f.len() < 10 {
                    f.push(format!("{path}: {}", errors.join("; ")));
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(LOOKUP_PERIOD) => {}
        }
    }
}
