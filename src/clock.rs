//! Wall-clock time as an injectable service, so expiry and ordering are testable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in Unix milliseconds.
    fn now_ms(&self) -> UnixMillis;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: UnixMillis) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicU64::new(start),
        })
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// The current reading.
    pub fn now(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: UnixMillis) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }
}

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that never reads earlier than a recorded time plus the time elapsed since:
/// after a restart with the clock set back, a director keeps the time its previous life
/// had reached (see "Restarts and clocks" in `docs/replication.md`).
#[derive(Debug)]
pub struct Floor {
    inner: SharedClock,
    floor: UnixMillis,
    since: std::time::Instant,
}

impl Floor {
    /// `inner`, but never earlier than `floor` + the time elapsed from now on.
    pub fn new(inner: SharedClock, floor: UnixMillis) -> Arc<Self> {
        Arc::new(Self {
            inner,
            floor,
            since: std::time::Instant::now(),
        })
    }
}

impl Clock for Floor {
    fn now_ms(&self) -> UnixMillis {
        let floor = self
            .floor
            .saturating_add(self.since.elapsed().as_millis() as u64);
        self.inner.now_ms().max(floor)
    }
}

/// The system clock shifted by a fixed offset: only for fault tests, which set
/// `FAULT_CLOCK_OFFSET_MS` to give one director in a container a wrong clock.
#[derive(Debug, Clone, Copy)]
pub struct Offset {
    /// Milliseconds added to the system clock (negative: behind).
    pub offset_ms: i64,
}

impl Clock for Offset {
    fn now_ms(&self) -> UnixMillis {
        SystemClock.now_ms().saturating_add_signed(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_holds_a_clock_that_went_back_and_yields_to_one_that_is_ahead() {
        let behind = ManualClock::new(1_000);
        let floored = Floor::new(behind.clone(), 5_000);
        let read = floored.now_ms();
        assert!((5_000..6_000).contains(&read), "{read}");
        behind.set(1_000_000);
        assert_eq!(floored.now_ms(), 1_000_000);
    }
}
