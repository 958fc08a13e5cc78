//! How long a connection thread may keep its core without a rest: one that has answered
//! requests for [`MOST_HELD`] without once finding nothing to do gives the core up
//! (`sched_yield`) between two requests.
//!
//! A connection thread sleeps when none of its connections has a request waiting. Under
//! a load that keeps every core busy, one of them may always have a request waiting:
//! the thread then never sleeps, and the kernel takes the core back only at its tick
//! (4 ms at `HZ=250`). Every other thread waiting for that core waits that long: the
//! clients on the same host, the other connection thread if the two share a core, the
//! director's own probes and replication (whose round trips feed the routing). Seen in
//! `scripts/bench.sh`: a tenth of the redirects waited 3 ms or more, most waits one tick.
//! Yielding after [`MOST_HELD`] lets them run sooner; a thread that finds its
//! connections idle sleeps anyway, and then nothing here happens.
//!
//! The runtime's park hooks tell when the thread slept (a park that lasted at least
//! [`RESTED`]: one that finds events waiting returns at once); the connection loop asks,
//! once its answers are written and it has no request left, whether to yield.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A park at least this long was a sleep (a park that finds events ready returns in a
/// microsecond or two; a sleep and a wake take longer).
pub(super) const RESTED: Duration = Duration::from_micros(10);

/// The longest a connection thread answers requests without a rest before it yields:
/// well under a kernel tick (1 ms at `HZ=1000`, 4 ms at `HZ=250`), and long enough that a
/// thread that keeps being busy yields at most once per millisecond.
pub(super) const MOST_HELD: Duration = Duration::from_millis(1);

/// When the thread parked and when it last rested.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rest {
    parked_at: Option<Instant>,
    rested_at: Option<Instant>,
}

impl Rest {
    /// The thread parks at `now`.
    pub(super) fn parking(&mut self, now: Instant) {
        self.parked_at = Some(now);
    }

    /// The thread is back from a park at `now`: a rest if it was away [`RESTED`].
    pub(super) fn unparked(&mut self, now: Instant) {
        if let Some(at) = self.parked_at.take() {
            if now.saturating_duration_since(at) >= RESTED {
                self.rested_at = Some(now);
            }
        }
    }

    /// True if the thread, between two requests at `now`, has gone [`MOST_HELD`] without
    /// a rest: it should yield, and the yield counts as its rest.
    pub(super) fn should_yield(&mut self, now: Instant) -> bool {
        match self.rested_at {
            Some(at) if now.saturating_duration_since(at) < MOST_HELD => false,
            Some(_) => {
                self.rested_at = Some(now);
                true
            }
            // The first request of this thread: held from now.
            None => {
                self.rested_at = Some(now);
                false
            }
        }
    }
}

thread_local! {
    static REST: Cell<Rest> = Cell::new(Rest::default());
}

/// The runtime's `on_thread_park` hook.
pub(super) fn parking() {
    update(|rest| rest.parking(Instant::now()));
}

/// The runtime's `on_thread_unpark` hook.
pub(super) fn unparked() {
    update(|rest| rest.unparked(Instant::now()));
}

/// Yields the core if this thread has held it [`MOST_HELD`] without a rest (see the
/// module documentation); true if it yielded. For the connection loop, between requests.
pub(super) fn yield_if_held(now: Instant) -> bool {
    let held = REST
        .try_with(|cell| {
            let mut rest = cell.get();
            let held = rest.should_yield(now);
            cell.set(rest);
            held
        })
        .unwrap_or(false);
    if held {
        std::thread::yield_now();
    }
    held
}

fn update(change: impl FnOnce(&mut Rest)) {
    let _ = REST.try_with(|cell| {
        let mut rest = cell.get();
        change(&mut rest);
        cell.set(rest);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, micros: u64) -> Instant {
        start + Duration::from_micros(micros)
    }

    #[test]
    fn a_thread_that_keeps_finding_work_yields_once_per_most_held() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(
            !rest.should_yield(start),
            "the first request starts the count"
        );
        // Parks that find events ready at once are no rest.
        let mut yields = Vec::new();
        for step in 1..=50u64 {
            let now = at(start, step * 100);
            rest.parking(now);
            rest.unparked(at(now, 2));
            if rest.should_yield(at(now, 3)) {
                yields.push(step * 100);
            }
        }
        // Held from 0: the first answer 1 ms on yields, then one every 1 ms after it.
        assert_eq!(yields, [1000, 2000, 3000, 4000, 5000]);
    }

    #[test]
    fn a_thread_that_sleeps_between_requests_never_yields() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start));
        for step in 1..=100u64 {
            let now = at(start, step * 100);
            rest.parking(now);
            rest.unparked(at(now, 50));
            assert!(!rest.should_yield(at(now, 60)), "step {step}");
        }
    }

    #[test]
    fn one_sleep_starts_the_count_again() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start));
        assert!(!rest.should_yield(at(start, 900)));
        rest.parking(at(start, 950));
        rest.unparked(at(start, 950 + RESTED.as_micros() as u64));
        assert!(!rest.should_yield(at(start, 1500)));
        assert!(rest.should_yield(at(start, 2100)));
    }

    #[test]
    fn an_unpark_without_a_park_is_no_rest() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start));
        rest.unparked(at(start, 500));
        assert!(rest.should_yield(at(start, 1001)));
    }
}
