//! Health probes of origins and caches, and object-presence checks: what routing knows
//! of servers beyond their ads, published through [`Signals`].
//!
//! [`Probes`] is the one owner: [`Probes::start`] spawns the probe scheduler on the
//! director's task tracker under its cancellation token; handlers read the health board
//! and the presence cache lock-free, and [`Probes::prepare`] runs the presence checks a
//! redirect needs (the one network wait the redirect path allows) and orders the route.

pub mod health;
mod http;
pub mod presence;
pub mod schedule;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ad::{AdKey, ServerKind};
use crate::client::{Client, ClientError};
use crate::config::{HealthConfig, PresenceConfig};
use crate::ledger::Ledger;
use crate::routing::signals::{KeyBuf, Presence, Seen, ServerHealth, Signals};
use crate::routing::{Candidate, Route};

pub use health::{Board, Outcome, ProbeResult, Status};
pub use presence::{AllAbsent, Ask, PresenceCache};
pub use schedule::{Prober, Scheduler, Settings};

const PRESENCE_LABELS: [&str; 4] = ["present", "absent", "unknown", "skipped"];

/// Probe and presence counters (bounded labels only).
#[derive(Debug, Default)]
pub struct Counters {
    probes: [AtomicU64; 4],
    presence: [AtomicU64; 4],
}

impl Counters {
    /// Counts one finished probe.
    pub fn probed(&self, result: ProbeResult) {
        self.probes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Probes finished with `result`.
    pub fn probes(&self, result: ProbeResult) -> u64 {
        self.probes[result as usize].load(Ordering::Relaxed)
    }

    fn presence_checked(&self, presence: Presence) {
        let i = match presence {
            Presence::Present => 0,
            Presence::Absent => 1,
            Presence::Unknown => 2,
        };
        self.presence[i].fetch_add(1, Ordering::Relaxed);
    }

    fn presence_skipped(&self) {
        self.presence[3].fetch_add(1, Ordering::Relaxed);
    }
}

/// Health and presence for one director.
pub struct Probes {
    board: Arc<Board>,
    presence: PresenceCache,
    prober: http::HttpProber,
    /// Presence `HEAD`s in flight, over all requests (`presence.max_in_flight`).
    in_flight: tokio::sync::Semaphore,
    counters: Arc<Counters>,
    health_enabled: bool,
}

impl Probes {
    /// Builds the probes and, if `health.enabled`, starts the scheduler on `tracker`
    /// until `cancel`.
    pub fn start(
        health: &HealthConfig,
        presence: &PresenceConfig,
        ca_bundle: Option<&std::path::Path>,
        ledger: Arc<Ledger>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, ClientError> {
        let timeout = health.timeout.max(presence.timeout);
        let prober = http::HttpProber::new(Client::new(timeout, ca_bundle)?.http().clone());
        let probes = Arc::new(Self {
            board: Arc::default(),
            presence: PresenceCache::new(presence.clone()),
            prober: prober.clone(),
            in_flight: tokio::sync::Semaphore::new(presence.max_in_flight),
            counters: Arc::default(),
            health_enabled: health.enabled,
        });
        if health.enabled {
            let clock = ledger.clock().clone();
            let scheduler = Scheduler {
                prober: Arc::new(prober),
                view: Arc::new(move || ledger.view()),
                clock,
                board: probes.board.clone(),
                counters: probes.counters.clone(),
                settings: Settings {
                    interval: health.interval,
                    timeout: health.timeout,
                    concurrency: health.concurrency,
                    path: health.path.clone(),
                    failures: health.failures,
                },
            };
            tracker.spawn(scheduler.run(cancel));
        }
        Ok(probes)
    }

    /// The health board (for the servers endpoint and the status page).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Probe and presence counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Before a redirect: asks the servers whose presence matters and is not cached (at
    /// most one round of `HEAD`s, each within `presence.timeout`). `Err` when every origin
    /// lacks the object. The route is left in its order: the sort that follows weighs
    /// health and presence (`SortInput::object_presence`).
    pub async fn prepare(&self, route: &Route<'_>, ask: &Ask<'_>) -> Result<(), AllAbsent> {
        let servers = presence::to_check(self.presence.config(), route, ask);
        if !servers.is_empty() {
            // Never wait for room: past the limit, route on what is already known.
            match self.in_flight.try_acquire_many(servers.len() as u32) {
                Ok(_permits) => {
                    let answers =
                        presence::check(&self.prober, &self.presence, &servers, ask).await;
                    for (_, answer) in answers {
                        self.counters.presence_checked(answer);
                    }
                }
                Err(_) => {
                    tracing::debug!(
                        path = ask.path,
                        "presence checks at their limit; not checked"
                    );
                    self.counters.presence_skipped();
                }
            }
        }
        self.verdict(route, ask)
    }

    /// [`Probes::prepare`] when it has nothing to ask: what it would answer, at once;
    /// `None` when a presence check is due (the caller then waits for `prepare`).
    pub fn prepare_now(&self, route: &Route, ask: &Ask<'_>) -> Option<Result<(), AllAbsent>> {
        presence::to_check(self.presence.config(), route, ask)
            .is_empty()
            .then(|| self.verdict(route, ask))
    }

    /// `Err` when every origin of `route` is known to lack the object.
    fn verdict(&self, route: &Route, ask: &Ask<'_>) -> Result<(), AllAbsent> {
        if presence::all_absent(route, self, presence_counts(ask), ask.purpose) {
            Err(AllAbsent)
        } else {
            Ok(())
        }
    }

    /// Prometheus text: servers up and down by kind, probes by result, presence answers.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skein_server_up Probed servers whose last probes say up, by kind.\n# TYPE skein_server_up gauge"
        );
        let counts = [ServerKind::Origin, ServerKind::Cache].map(|k| (k, self.board.counts(k)));
        for (kind, c) in &counts {
            let _ = writeln!(out, "skein_server_up{{kind=\"{kind}\"}} {}", c.up);
        }
        let _ = writeln!(
            out,
            "# HELP skein_server_down Probed servers whose last probes say down, by kind.\n# TYPE skein_server_down gauge"
        );
        for (kind, c) in &counts {
            let _ = writeln!(out, "skein_server_down{{kind=\"{kind}\"}} {}", c.down);
        }
        let _ = writeln!(
            out,
            "# HELP skein_probes_total Health probes finished, by result.\n# TYPE skein_probes_total counter"
        );
        for result in ProbeResult::ALL {
            let _ = writeln!(
                out,
                "skein_probes_total{{result=\"{}\"}} {}",
                result.label(),
                self.counters.probes(result)
            );
        }
        let _ = writeln!(
            out,
            "# HELP skein_presence_checks_total Object presence answers from servers, by result (skipped: requests not checked, at presence.max_in_flight).\n# TYPE skein_presence_checks_total counter"
        );
        for (i, label) in PRESENCE_LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "skein_presence_checks_total{{result=\"{label}\"}} {}",
                self.counters.presence[i].load(Ordering::Relaxed)
            );
        }
        out
    }

    /// True if the health scheduler runs.
    pub fn health_enabled(&self) -> bool {
        self.health_enabled
    }
}

impl Signals for Probes {
    fn health(&self, key: &AdKey) -> Option<ServerHealth> {
        self.board.health(key)
    }

    fn presence(&self, key: &AdKey, path: &str) -> Presence {
        self.presence.get(key, path)
    }

    fn read(&self, candidates: &[Candidate], path: Option<&str>, out: &mut [Seen]) {
        let health = self.board.current();
        let presence = path.and_then(|path| self.presence.remembered(path));
        let mut key = KeyBuf::default();
        for (c, seen) in candidates.iter().zip(out) {
            *seen = Seen {
                health: health.health(c.slot()),
                presence: presence
                    .as_ref()
                    .map_or(Presence::Unknown, |p| p.of(key.of(c.kind, c.name()))),
            };
        }
    }
}

/// The object whose presence counts for `ask`: reads of an object, not writes or listings.
fn presence_counts<'a>(ask: &Ask<'a>) -> Option<&'a str> {
    ask.object_presence().then_some(ask.path)
}
