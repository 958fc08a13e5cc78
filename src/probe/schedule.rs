//! The probe scheduler: one owner task probes every origin and cache in the view, each at
//! most once per interval, with at most `concurrency` probes in flight.
//!
//! A server's first probe falls at a random offset within one interval (so a director
//! that starts with 10,000 ads spreads them out instead of probing all at once); each
//! later one `interval` plus up to 10% jitter after the previous one started. A server is
//! never probed twice at once. So N servers cost at most N probes per interval, and the
//! semaphore caps the work in flight whatever the servers do. The set of servers follows
//! the view: it is re-read every [`SYNC_EVERY`] (or interval, if shorter), new ads join,
//! expired or withdrawn ones leave (and leave the board).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Counters;
use super::health::{Board, Outcome, ProbeResult};
use crate::ad::{AdKey, AdStatus, ServerKind};
use crate::clock::SharedClock;
use crate::routing::View;

/// Longest time before a new ad in the view is noticed.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Sends one probe. The scheduler adds the timeout, so a prober may hang forever.
pub trait Prober: Send + Sync + 'static {
    /// Probes `url` (the server's data URL joined with the probe path).
    fn probe(&self, url: String) -> BoxFuture<'static, Outcome>;
}

/// Reads the current view.
pub type ViewSource = Arc<dyn Fn() -> Arc<View> + Send + Sync>;

/// The scheduler's settings (from `[health]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between two probes of one server.
    pub interval: Duration,
    /// Longest wait for one probe.
    pub timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Path appended to each data URL.
    pub path: String,
    /// Consecutive failures before a server is down.
    pub failures: u32,
}

/// The owner of the probes of one director.
pub struct Scheduler<P> {
    /// Sends probes.
    pub prober: Arc<P>,
    /// Where the servers come from.
    pub view: ViewSource,
    /// Wall clock for `checked_at`.
    pub clock: SharedClock,
    /// Where results go.
    pub board: Arc<Board>,
    /// Probe counters.
    pub counters: Arc<Counters>,
    /// Timing and limits.
    pub settings: Settings,
}

struct Slot {
    url: String,
    /// When the next probe is due; `None` while one is in flight.
    due: Option<Instant>,
}

type Done = (AdKey, String, Instant, Outcome);

/// The servers a view asks to probe: origins and caches with a live, serving ad.
fn targets(view: &View, now_ms: u64, path: &str) -> HashMap<AdKey, String> {
    view.ads()
        .filter(|a| a.ad.kind != ServerKind::Director)
        .filter(|a| a.ad.status == AdStatus::Ok && a.expires_at > now_ms)
        .map(|a| {
            let url = format!("{}{path}", a.ad.data_url.trim_end_matches('/'));
            (a.ad.key(), url)
        })
        .collect()
}

impl<P: Prober> Scheduler<P> {
    /// Probes until `cancel`; in-flight probes are dropped at cancellation.
    pub async fn run(self, cancel: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut slots: HashMap<AdKey, Slot> = HashMap::new();
        let mut due: BTreeSet<(Instant, AdKey)> = BTreeSet::new();
        let mut running: JoinSet<Done> = JoinSet::new();
        let mut seen: Option<Arc<View>> = None;
        let mut resync = tokio::time::interval(SYNC_EVERY.min(self.settings.interval));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.launch_due(&mut slots, &mut due, &permits, &mut running);
            // With no permit free, only a finishing probe can make progress.
            let next = due
                .first()
                .map(|(at, _)| *at)
                .filter(|_| permits.available_permits() > 0);
            tokio::select! {
                _ = cancel.cancelled() => {
                    running.abort_all();
                    return;
                }
                _ = resync.tick() => self.sync(&mut seen, &mut slots, &mut due),
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok(done) = done {
                        self.finish(done, &mut slots, &mut due);
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
        }
    }

    fn launch_due(
        &self,
        slots: &mut HashMap<AdKey, Slot>,
        due: &mut BTreeSet<(Instant, AdKey)>,
        permits: &Arc<Semaphore>,
        running: &mut JoinSet<Done>,
    ) {
        let now = Instant::now();
        while let Some((at, _)) = due.first() {
            if *at > now {
                return;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return;
            };
            let Some((_, key)) = due.pop_first() else {
                return;
            };
            let Some(slot) = slots.get_mut(&key) else {
                continue;
            };
            slot.due = None;
            let url = slot.url.clone();
            let probe = self.prober.probe(url.clone());
            let timeout = self.settings.timeout;
            running.spawn(async move {
                let _permit = permit;
                let started = Instant::now();
                let outcome = match tokio::time::timeout(timeout, probe).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::failed(
                        ProbeResult::Timeout,
                        format!("no answer within {}", humantime::format_duration(timeout)),
                    ),
                };
                (key, url, started, outcome)
            });
        }
    }

    fn finish(
        &self,
        (key, url, started, outcome): Done,
        slots: &mut HashMap<AdKey, Slot>,
        due: &mut BTreeSet<(Instant, AdKey)>,
    ) {
        self.counters.probed(outcome.result);
        let Some(slot) = slots.get_mut(&key) else {
            return; // left the view while probed
        };
        let was_up = self.board.health(&key).map(|h| h.up);
        let now = self.clock.now_ms();
        let status = self
            .board
            .record(&key, &outcome, &url, now, self.settings.failures);
        match (was_up, status.health.up) {
            (Some(true) | None, false) => {
                tracing::warn!(server = %key, %url, error = %outcome.error, "server is down");
            }
            (Some(false), true) => tracing::info!(server = %key, %url, "server is up again"),
            _ => {}
        }
        let interval = self.settings.interval;
        let jitter = rand::thread_rng().gen_range(Duration::ZERO..=interval / 10);
        let at = started + interval + jitter;
        slot.due = Some(at);
        due.insert((at, key));
    }

    fn sync(
        &self,
        seen: &mut Option<Arc<View>>,
        slots: &mut HashMap<AdKey, Slot>,
        due: &mut BTreeSet<(Instant, AdKey)>,
    ) {
        let view = (self.view)();
        if seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &view)) {
            return;
        }
        let mut wanted = targets(&view, self.clock.now_ms(), &self.settings.path);
        *seen = Some(view);
        let mut gone = Vec::new();
        slots.retain(|key, slot| match wanted.remove(key) {
            Some(url) => {
                slot.url = url;
                true
            }
            None => {
                if let Some(at) = slot.due {
                    due.remove(&(at, key.clone()));
                }
                gone.push(key.clone());
                false
            }
        });
        self.board.forget(&gone);
        let now = Instant::now();
        let mut rng = rand::thread_rng();
        for (key, url) in wanted {
            let at = now + rng.gen_range(Duration::ZERO..self.settings.interval);
            due.insert((at, key.clone()));
            slots.insert(key, Slot { url, due: Some(at) });
        }
    }
}

#[cfg(test)]
mod tests;
