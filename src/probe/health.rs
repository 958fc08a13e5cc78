//! The health board: each probed server's status, written by the scheduler, read lock-free.
//!
//! The rule: a probe succeeds when the server answers `health.path` with a status below
//! 500 within `health.timeout` (a server that answers at all but lacks the endpoint, like
//! a plain WebDAV origin answering 404, is alive; Skein's own servers answer 503 when
//! their storage is unusable). A server is down after `health.failures` consecutive
//! failed probes and up again at its first success. The EWMA of successes (weight
//! [`EWMA_WEIGHT`] for the newest probe) is published as a hint for ranking.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ad::{AdKey, ServerKind};
use crate::clock::UnixMillis;
use crate::routing::signals::ServerHealth;
use crate::routing::slots::{BySlot, Slot, slot_of_key};

/// Weight of the newest probe in the success EWMA.
pub const EWMA_WEIGHT: f64 = 0.3;

/// What one probe found, with a bounded label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Answered below 500 in time.
    Ok,
    /// Answered 5xx.
    Status,
    /// No answer within the timeout.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Unreachable,
}

impl ProbeResult {
    /// Every result, in metrics order.
    pub const ALL: [ProbeResult; 4] = [Self::Ok, Self::Status, Self::Timeout, Self::Unreachable];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Status => "error_status",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
        }
    }
}

/// How one probe went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result class.
    pub result: ProbeResult,
    /// Round trip, milliseconds (meaningful for `Ok`).
    pub latency_ms: f64,
    /// What went wrong (empty for `Ok`).
    pub error: String,
}

impl Outcome {
    /// A success after `latency_ms`.
    pub fn ok(latency_ms: f64) -> Self {
        Self {
            result: ProbeResult::Ok,
            latency_ms,
            error: String::new(),
        }
    }

    /// A failure.
    pub fn failed(result: ProbeResult, error: impl Into<String>) -> Self {
        Self {
            result,
            latency_ms: 0.0,
            error: error.into(),
        }
    }
}

/// One server as the probes see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// What routing reads.
    pub health: ServerHealth,
    /// Failed probes in a row.
    pub failures: u32,
    /// The last failure's message, kept after recovery for operators.
    pub last_error: Option<String>,
    /// The URL probed.
    pub url: String,
}

impl Status {
    /// `previous` (if any) updated with `outcome` at `now`; down after `threshold`
    /// consecutive failures, up at the first success.
    pub fn next(
        previous: Option<&Status>,
        outcome: &Outcome,
        url: &str,
        now: UnixMillis,
        threshold: u32,
    ) -> Status {
        let success = outcome.result == ProbeResult::Ok;
        let sample = if success { 1.0 } else { 0.0 };
        let ewma = match previous {
            Some(p) => EWMA_WEIGHT * sample + (1.0 - EWMA_WEIGHT) * p.health.ewma,
            None => sample,
        };
        let failures = if success {
            0
        } else {
            previous.map_or(0, |p| p.failures).saturating_add(1)
        };
        let latency_ms = if success {
            outcome.latency_ms
        } else {
            previous.map_or(0.0, |p| p.health.latency_ms)
        };
        let last_error = if success {
            previous.and_then(|p| p.last_error.clone())
        } else {
            Some(outcome.error.clone())
        };
        Status {
            health: ServerHealth {
                up: failures < threshold,
                ewma,
                latency_ms,
                checked_at: now,
            },
            failures,
            last_error,
            url: url.to_string(),
        }
    }
}

/// Every probed server's status, keyed by ad key. Hashed with FxHash: every redirect
/// looks up each of its candidates, and the keys are names of servers held in the view.
pub type Table = imbl::HashMap<AdKey, Arc<Status>, rustc_hash::FxBuildHasher>;

/// The published table: one writer (the scheduler), any number of lock-free readers.
#[derive(Debug, Default)]
pub struct Board {
    table: ArcSwap<Published>,
}

/// One publication of the board: the statuses, and the health routing reads by server
/// slot (a redirect indexes an array per candidate instead of hashing its name).
#[derive(Debug, Default)]
pub struct Published {
    statuses: Arc<Table>,
    health: BySlot<ServerHealth>,
}

impl Published {
    /// The health of the server in `slot`, if it was probed.
    pub fn health(&self, slot: Slot) -> Option<ServerHealth> {
        self.health.get(slot).copied()
    }
}

/// Servers up and down of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Last probe says up.
    pub up: u64,
    /// Last probe says down.
    pub down: u64,
}

impl Board {
    /// The current table.
    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load().statuses.clone()
    }

    /// The current publication, for several lookups in a row (one redirect's candidates).
    pub fn current(&self) -> arc_swap::Guard<Arc<Published>> {
        self.table.load()
    }

    /// `key`'s health, if it was probed.
    pub fn health(&self, key: &AdKey) -> Option<ServerHealth> {
        self.table.load().statuses.get(key).map(|s| s.health)
    }

    /// Records a probe of `key`. In a director the scheduler is the only writer (a
    /// second writer could lose updates); public for benchmarks and tests.
    pub fn record(
        &self,
        key: &AdKey,
        outcome: &Outcome,
        url: &str,
        now: UnixMillis,
        threshold: u32,
    ) -> Arc<Status> {
        let current = self.table.load();
        let mut table = Table::clone(&current.statuses);
        let status = Arc::new(Status::next(
            table.get(key).map(|s| s.as_ref()),
            outcome,
            url,
            now,
            threshold,
        ));
        table.insert(key.clone(), status.clone());
        let mut health = current.health.clone();
        health.set(slot_of_key(key), Some(status.health));
        self.table.store(Arc::new(Published {
            statuses: Arc::new(table),
            health,
        }));
        status
    }

    /// Drops servers no longer in the view.
    pub(super) fn forget(&self, keys: &[AdKey]) {
        if keys.is_empty() {
            return;
        }
        let current = self.table.load();
        let mut table = Table::clone(&current.statuses);
        let mut health = current.health.clone();
        for key in keys {
            table.remove(key);
            health.set(slot_of_key(key), None);
        }
        self.table.store(Arc::new(Published {
            statuses: Arc::new(table),
            health,
        }));
    }

    /// Up and down counts for `kind`.
    pub fn counts(&self, kind: ServerKind) -> Counts {
        let table = self.snapshot();
        let mut counts = Counts::default();
        for (_, status) in table.iter().filter(|(k, _)| k.kind == kind) {
            if status.health.up {
                counts.up += 1;
            } else {
                counts.down += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AdKey {
        AdKey {
            kind: ServerKind::Cache,
            name: "cache-1".into(),
        }
    }

    #[test]
    fn down_after_threshold_failures_and_up_at_first_success() {
        let board = Board::default();
        let fail = Outcome::failed(ProbeResult::Timeout, "no answer");
        let s = board.record(&key(), &Outcome::ok(3.0), "http://c", 1, 2);
        assert!(s.health.up);
        assert_eq!(s.health.ewma, 1.0);
        let s = board.record(&key(), &fail, "http://c", 2, 2);
        assert!(s.health.up, "one failure of two allowed");
        assert_eq!(s.health.latency_ms, 3.0, "latency of the last success kept");
        let s = board.record(&key(), &fail, "http://c", 3, 2);
        assert!(!s.health.up);
        assert!(s.health.ewma < 0.5);
        assert_eq!(board.counts(ServerKind::Cache), Counts { up: 0, down: 1 });
        let s = board.record(&key(), &Outcome::ok(4.0), "http://c", 4, 2);
        assert!(s.health.up);
        assert_eq!(s.failures, 0);
        assert_eq!(s.last_error.as_deref(), Some("no answer"));
        assert_eq!(board.health(&key()).map(|h| h.checked_at), Some(4));
        let slot = slot_of_key(&key());
        assert_eq!(
            board.current().health(slot),
            board.health(&key()),
            "by slot too"
        );
        board.forget(&[key()]);
        assert_eq!(board.health(&key()), None);
        assert_eq!(board.current().health(slot), None, "forgotten by slot too");
    }

    #[test]
    fn ewma_moves_by_its_weight() {
        let first = Status::next(
            None,
            &Outcome::failed(ProbeResult::Status, "503"),
            "u",
            0,
            1,
        );
        assert!(!first.health.up, "threshold 1: down at once");
        assert_eq!(first.health.ewma, 0.0);
        let second = Status::next(Some(&first), &Outcome::ok(1.0), "u", 1, 1);
        assert!((second.health.ewma - EWMA_WEIGHT).abs() < 1e-9);
    }
}
